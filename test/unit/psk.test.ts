// The pool key: derivation (scrypt, salt bound to the domain), the pnet key format,
// and proof that @libp2p/pnet with it lets same-key nodes connect and keeps others
// out (two libp2p nodes on loopback).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createLibp2p, type Libp2p } from 'libp2p';
import { tcp } from '@libp2p/tcp';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { preSharedKey } from '@libp2p/pnet';
import { derivePoolKey, normalizeDomain, pnetKeyFile, poolPsk, SCRYPT_PARAMS, KEY_LENGTH } from '../../src/pool/psk.ts';

const FAST = { N: 1024 };
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

test('the key is 32 bytes and deterministic', async () => {
  const a = await derivePoolKey('example.com', 'secret', FAST);
  const b = await derivePoolKey('example.com', 'secret', FAST);
  assert.is(a.length, KEY_LENGTH);
  assert.is(hex(a), hex(b));
});

test('another password or another domain gives another key', async () => {
  const base = hex(await derivePoolKey('example.com', 'secret', FAST));
  assert.is.not(hex(await derivePoolKey('example.com', 'secret2', FAST)), base);
  assert.is.not(hex(await derivePoolKey('example.org', 'secret', FAST)), base);
  // The salt is the domain: the same password on two domains must not collide.
  assert.is.not(hex(await derivePoolKey('a.example.com', 'secret', FAST)), hex(await derivePoolKey('b.example.com', 'secret', FAST)));
});

test('domain case and a trailing dot do not make another pool', async () => {
  assert.is(normalizeDomain(' Example.COM. '), 'example.com');
  assert.is(hex(await derivePoolKey('Example.COM.', 'secret', FAST)), hex(await derivePoolKey('example.com', 'secret', FAST)));
  assert.throws(() => normalizeDomain('  '));
});

test('without a password the key depends on the domain alone, and differs from any password', async () => {
  const open1 = hex(await derivePoolKey('example.com', undefined, FAST));
  assert.is(hex(await derivePoolKey('example.com', '', FAST)), open1, 'empty password = no password');
  assert.is.not(hex(await derivePoolKey('example.org', undefined, FAST)), open1);
  for (const pw of [' ', 'example.com', 'imnode/pool-psk/v1/open/example.com']) {
    assert.is.not(hex(await derivePoolKey('example.com', pw, FAST)), open1, `password ${JSON.stringify(pw)}`);
  }
});

test('the password is compared in NFC form', async () => {
  // "é" precomposed and decomposed are the same password typed on two systems.
  assert.is(hex(await derivePoolKey('example.com', 'caf\u00e9', FAST)), hex(await derivePoolKey('example.com', 'cafe\u0301', FAST)));
});

test('the default cost is scrypt N >= 2^15 and takes measurable time', async () => {
  assert.ok(SCRYPT_PARAMS.N >= 2 ** 15);
  const t0 = performance.now();
  await derivePoolKey('example.com', 'secret');
  const ms = performance.now() - t0;
  console.log(`  scrypt N=${SCRYPT_PARAMS.N} r=${SCRYPT_PARAMS.r}: ${ms.toFixed(0)} ms`);
  assert.ok(ms > 5, `derivation took ${ms} ms: is the KDF really slow?`);
});

test('pnetKeyFile writes the swarm key format', () => {
  const key = new Uint8Array(32).map((_, i) => i);
  const text = new TextDecoder().decode(pnetKeyFile(key));
  assert.is(text, '/key/swarm/psk/1.0.0/\n/base16/\n' + hex(key));
  assert.throws(() => pnetKeyFile(new Uint8Array(16)), /32 bytes/);
});

async function node(psk: Uint8Array): Promise<Libp2p> {
  return createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionProtector: preSharedKey({ psk, timeout: 1000 }),
    connectionMonitor: { enabled: false },
  });
}

test('pnet with the derived key: same key connects, another password or domain does not', async () => {
  const good = await poolPsk('example.com', 'secret', FAST);
  const nodes = [await node(good), await node(good), await node(await poolPsk('example.com', 'other', FAST)), await node(await poolPsk('example.org', 'secret', FAST))];
  try {
    const [a, b, wrongPw, wrongDomain] = nodes;
    const conn = await b.dial(a.getMultiaddrs()[0], { signal: AbortSignal.timeout(5000) });
    assert.is(conn.remotePeer.toString(), a.peerId.toString());
    await Promise.all(([['wrong password', wrongPw], ['wrong domain', wrongDomain]] as const).map(async ([name, n]) => {
      let failed = false;
      try {
        // Garbage from a wrong key either breaks the noise handshake at once or leaves it
        // waiting for bytes that never come: both end in a failed dial.
        await n.dial(a.getMultiaddrs()[0], { signal: AbortSignal.timeout(2500) });
      } catch {
        failed = true;
      }
      assert.ok(failed, `${name}: the connection must fail`);
      assert.is(n.getConnections(a.peerId).length, 0);
    }));
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
  }
});

test.run();
