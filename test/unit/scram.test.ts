import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash, createHmac, pbkdf2Sync } from 'node:crypto';
import {
  deriveCredential, deriveCredentials, verifyPassword,
  type ScramHash, type StoredCredentials,
} from '../../src/xmpp/scram.ts';
import { createScramSession, SCRAM_SHA_1, SCRAM_SHA_256, unescapeSaslname } from '../../src/c2s/sasl/scram.ts';
import { PLAIN } from '../../src/c2s/sasl/plain.ts';
import { decodeBase64, decodeSaslPayload } from '../../src/c2s/sasl/mechanism.ts';
import type { SaslBackend, SaslSession, SaslStep } from '../../src/c2s/sasl/mechanism.ts';

// --- test backend --------------------------------------------------------------

const ITER = 64;

function makeBackend(users: Record<string, StoredCredentials>): SaslBackend & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    domain: 'example.com',
    secret: Buffer.from('pool secret for tests'),
    prepUsername(s) {
      // Enough of a localpart profile for these tests: lower-case, no JID separators or spaces.
      if (s === '' || /[@/\s"&'<>:]/.test(s)) return null;
      return s.toLowerCase();
    },
    async getCredentials(u) {
      calls.push(`get:${u}`);
      return users[u] ?? null;
    },
    async verifyPassword(u, p) {
      calls.push(`verify:${u}`);
      const c = users[u];
      return c ? verifyPassword(c, p) : false;
    },
  };
}

// --- a small, independent SCRAM client ------------------------------------------

const NODE: Record<ScramHash, string> = { 'SHA-1': 'sha1', 'SHA-256': 'sha256' };
const LEN: Record<ScramHash, number> = { 'SHA-1': 20, 'SHA-256': 32 };
const hmac = (h: ScramHash, k: Buffer, d: string) => createHmac(NODE[h], k).update(d).digest();
const sha = (h: ScramHash, d: Buffer) => createHash(NODE[h]).update(d).digest();
const xorb = (a: Buffer, b: Buffer) => Buffer.from(a.map((v, i) => v ^ b[i]));
const escape = (s: string) => s.replace(/=/g, '=3D').replace(/,/g, '=2C');

interface ClientOpts {
  user: string;
  password: string;
  gs2?: string; // the whole GS2 header, default 'n,,'
  cnonce?: string;
  tamperNonce?: boolean;
  cbind?: string; // c= value override
  rawUser?: string; // already-escaped n= value
}

interface ClientResult {
  first: SaslStep;
  final?: SaslStep;
  expectedV?: string;
  serverFirst?: string;
}

async function runClient(hash: ScramHash, session: SaslSession, o: ClientOpts): Promise<ClientResult> {
  const gs2 = o.gs2 ?? 'n,,';
  const cnonce = o.cnonce ?? 'clientnonce' + Math.random().toString(36).slice(2);
  const bare = `n=${o.rawUser ?? escape(o.user)},r=${cnonce}`;
  const first = await session.step(Buffer.from(gs2 + bare));
  if (first.kind !== 'challenge') return { first };
  const serverFirst = first.data.toString();
  const m = /^r=([^,]+),s=([^,]+),i=(\d+)$/.exec(serverFirst);
  assert.ok(m, `server-first syntax: ${serverFirst}`);
  const [, nonce, salt, iter] = m!;
  assert.ok(nonce.startsWith(cnonce), 'server nonce extends the client nonce');
  const salted = pbkdf2Sync(o.password, Buffer.from(salt, 'base64'), Number(iter), LEN[hash], NODE[hash]);
  const clientKey = hmac(hash, salted, 'Client Key');
  const storedKey = sha(hash, clientKey);
  const cbind = o.cbind ?? Buffer.from(gs2).toString('base64');
  const withoutProof = `c=${cbind},r=${o.tamperNonce ? nonce + 'x' : nonce}`;
  const authMessage = `${bare},${serverFirst},${withoutProof}`;
  const proof = xorb(clientKey, hmac(hash, storedKey, authMessage));
  const serverKey = hmac(hash, salted, 'Server Key');
  const expectedV = 'v=' + hmac(hash, serverKey, authMessage).toString('base64');
  const final = await session.step(Buffer.from(`${withoutProof},p=${proof.toString('base64')}`));
  return { first, final, expectedV, serverFirst };
}

function isFailure(s: SaslStep | undefined, condition: string): boolean {
  return s !== undefined && s.kind === 'failure' && s.condition === condition;
}

// --- key derivation: RFC vectors ----------------------------------------------

// Checks a derived credential against the proof and signature published in the RFC,
// without trusting any value computed by the code under test.
function checkAgainstVector(hash: ScramHash, cred: { storedKey: string; serverKey: string }, authMessage: string, proof: string, v: string) {
  const storedKey = Buffer.from(cred.storedKey, 'base64');
  const clientKey = xorb(Buffer.from(proof, 'base64'), hmac(hash, storedKey, authMessage));
  assert.ok(sha(hash, clientKey).equals(storedKey), 'StoredKey consistent with RFC ClientProof');
  assert.is(hmac(hash, Buffer.from(cred.serverKey, 'base64'), authMessage).toString('base64'), v);
}

const V1 = {
  salt: 'QSXCR+Q6sek8bf92', cnonce: 'fyko+d2lbbFgONRv9qkxdawL', snonce: '3rfcNHYJY1ZVvWVs7j',
  proof: 'v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=', v: 'rmF9pqV8S7suAoZWja4dJRkFsKQ=',
};
const V256 = {
  salt: 'W22ZaJ0SNY7soEsUEjb6gQ==', cnonce: 'rOprNGfwEbeRWgbNEkqO', snonce: '%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0',
  proof: 'dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=', v: '6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=',
};
const authMessageOf = (vec: typeof V1) =>
  `n=user,r=${vec.cnonce},r=${vec.cnonce}${vec.snonce},s=${vec.salt},i=4096,c=biws,r=${vec.cnonce}${vec.snonce}`;

test('deriveCredential matches RFC 5802 §5 (SHA-1, user/pencil)', async () => {
  const cred = await deriveCredential('SHA-1', 'pencil', Buffer.from(V1.salt, 'base64'), 4096);
  assert.is(cred.salt, V1.salt);
  assert.is(cred.iterations, 4096);
  checkAgainstVector('SHA-1', cred, authMessageOf(V1), V1.proof, V1.v);
});

test('deriveCredential matches RFC 7677 §3 (SHA-256, user/pencil)', async () => {
  const cred = await deriveCredential('SHA-256', 'pencil', Buffer.from(V256.salt, 'base64'), 4096);
  checkAgainstVector('SHA-256', cred, authMessageOf(V256), V256.proof, V256.v);
});

for (const [hash, vec] of [['SHA-1', V1], ['SHA-256', V256]] as const) {
  test(`server reproduces the RFC ${hash} exchange byte for byte`, async () => {
    const creds = {
      [hash]: await deriveCredential(hash, 'pencil', Buffer.from(vec.salt, 'base64'), 4096),
    } as StoredCredentials;
    const s = createScramSession(hash, makeBackend({ user: creds }), { serverNonce: vec.snonce });
    const first = await s.step(Buffer.from(`n,,n=user,r=${vec.cnonce}`));
    assert.equal(first.kind, 'challenge');
    if (first.kind !== 'challenge') return;
    assert.is(first.data.toString(), `r=${vec.cnonce}${vec.snonce},s=${vec.salt},i=4096`);
    const final = await s.step(Buffer.from(`c=biws,r=${vec.cnonce}${vec.snonce},p=${vec.proof}`));
    assert.equal(final, { kind: 'success', username: 'user', data: Buffer.from('v=' + vec.v) });
  });
}

test('deriveCredentials: random salts per hash, default 4096 iterations', async () => {
  const a = await deriveCredentials('secret');
  const b = await deriveCredentials('secret', ITER);
  assert.is(a['SHA-1'].iterations, 4096);
  assert.is(a['SHA-256'].iterations, 4096);
  assert.is(b['SHA-256'].iterations, ITER);
  assert.is(Buffer.from(a['SHA-1'].salt, 'base64').length, 16);
  assert.is.not(a['SHA-1'].salt, a['SHA-256'].salt);
  assert.is.not(a['SHA-256'].salt, b['SHA-256'].salt);
  assert.is(Buffer.from(a['SHA-256'].storedKey, 'base64').length, 32);
  assert.is(Buffer.from(a['SHA-1'].storedKey, 'base64').length, 20);
});

test('verifyPassword', async () => {
  const c = await deriveCredentials('correct horse', ITER);
  assert.ok(await verifyPassword(c, 'correct horse'));
  assert.not.ok(await verifyPassword(c, 'correct horsE'));
  assert.not.ok(await verifyPassword(c, ''));
  // A disallowed character is a mismatch, not a throw.
  assert.not.ok(await verifyPassword(c, 'correct\u0007horse'));
});

test('passwords are prepared: a non-ASCII space matches U+0020', async () => {
  const c = await deriveCredentials('correct horse', ITER);
  assert.ok(await verifyPassword(c, 'correct\u00a0horse'));
});

// --- SCRAM server --------------------------------------------------------------

let users: Record<string, StoredCredentials>;
const setup = async () => {
  if (!users) users = { alice: await deriveCredentials('wonderland', ITER), 'a,b=c': await deriveCredentials('esc', ITER) };
  return makeBackend(users);
};

for (const mech of [SCRAM_SHA_1, SCRAM_SHA_256]) {
  const hash: ScramHash = mech === SCRAM_SHA_1 ? 'SHA-1' : 'SHA-256';

  test(`${mech.name}: full exchange, server signature checks out`, async () => {
    assert.not.ok(mech.needsTls);
    const cnonce = 'fyko+d2lbbFgONRv9qkxdawL';
    const r = await runClient(hash, mech.start(await setup()), { user: 'alice', password: 'wonderland', cnonce });
    assert.is(r.final?.kind, 'success');
    if (r.final?.kind !== 'success') return;
    assert.is(r.final.username, 'alice');
    assert.is(r.final.data?.toString(), r.expectedV);
    // At least 18 random bytes of server nonce.
    const nonce = /^r=([^,]+)/.exec(r.serverFirst!)![1];
    const snonce = nonce.slice(cnonce.length);
    assert.ok(decodeBase64(snonce) !== null && decodeBase64(snonce)!.length >= 18, snonce);
  });

  test(`${mech.name}: username is prepared`, async () => {
    const r = await runClient(hash, mech.start(await setup()), { user: 'ALICE', password: 'wonderland' });
    assert.is(r.final?.kind === 'success' && r.final.username, 'alice');
  });

  test(`${mech.name}: wrong password -> not-authorized`, async () => {
    const r = await runClient(hash, mech.start(await setup()), { user: 'alice', password: 'Wonderland' });
    assert.ok(isFailure(r.final, 'not-authorized'));
  });

  test(`${mech.name}: unknown user continues with a stable fake salt, fails at the end`, async () => {
    const b = await setup();
    const r1 = await runClient(hash, mech.start(b), { user: 'mallory', password: 'x' });
    const r2 = await runClient(hash, mech.start(b), { user: 'mallory', password: 'y' });
    const r3 = await runClient(hash, mech.start(b), { user: 'trudy', password: 'x' });
    assert.is(r1.first.kind, 'challenge');
    const saltOf = (r: ClientResult) => /,s=([^,]+),i=(\d+)$/.exec(r.serverFirst!)!;
    assert.is(saltOf(r1)[1], saltOf(r2)[1], 'same salt for the same unknown user');
    assert.is.not(saltOf(r1)[1], saltOf(r3)[1], 'different salt for another unknown user');
    assert.is(saltOf(r1)[2], '4096');
    assert.is(Buffer.from(saltOf(r1)[1], 'base64').length, 16);
    assert.ok(isFailure(r1.final, 'not-authorized'));
    assert.ok(isFailure(r3.final, 'not-authorized'));
  });

  test(`${mech.name}: tampered nonce -> not-authorized`, async () => {
    const r = await runClient(hash, mech.start(await setup()), { user: 'alice', password: 'wonderland', tamperNonce: true });
    assert.ok(isFailure(r.final, 'not-authorized'));
  });

  test(`${mech.name}: channel binding must repeat the GS2 header`, async () => {
    const b = await setup();
    // 'y,,' header, c= claiming 'n,,': a flag downgrade.
    let r = await runClient(hash, mech.start(b), { user: 'alice', password: 'wonderland', gs2: 'y,,', cbind: 'biws' });
    assert.ok(isFailure(r.final, 'not-authorized'));
    r = await runClient(hash, mech.start(b), { user: 'alice', password: 'wonderland', gs2: 'n,,', cbind: 'eSws' });
    assert.ok(isFailure(r.final, 'not-authorized'));
    // And the matching one works.
    r = await runClient(hash, mech.start(b), { user: 'alice', password: 'wonderland', gs2: 'y,,', cbind: 'eSws' });
    assert.is(r.final?.kind, 'success');
    // With an authzid, c= is the base64 of the whole header.
    r = await runClient(hash, mech.start(b), { user: 'alice', password: 'wonderland', gs2: 'n,a=alice@example.com,', cbind: 'biws' });
    assert.ok(isFailure(r.final, 'not-authorized'));
  });

  test(`${mech.name}: p= (channel binding requested) is refused`, async () => {
    const s = mech.start(await setup());
    const step = await s.step(Buffer.from('p=tls-exporter,,n=alice,r=abcdef'));
    assert.ok(isFailure(step, 'not-authorized'));
    assert.is(step.kind === 'failure' && step.text, 'channel binding not supported');
  });

  test(`${mech.name}: bad base64 in the final message -> incorrect-encoding`, async () => {
    const b = await setup();
    let r = await runClient(hash, mech.start(b), { user: 'alice', password: 'wonderland', cbind: 'bi*s' });
    assert.ok(isFailure(r.final, 'incorrect-encoding'));
    const s = mech.start(b);
    const first = await s.step(Buffer.from('n,,n=alice,r=abcdef'));
    assert.is(first.kind, 'challenge');
    const nonce = first.kind === 'challenge' ? /^r=([^,]+)/.exec(first.data.toString())![1] : '';
    const final = await s.step(Buffer.from(`c=biws,r=${nonce},p=not!base64`));
    assert.ok(isFailure(final, 'incorrect-encoding'));
  });

  test(`${mech.name}: authzid must be the user's own bare JID`, async () => {
    const b = await setup();
    let r = await runClient(hash, mech.start(b), { user: 'alice', password: 'wonderland', gs2: 'n,a=alice@example.com,' });
    assert.is(r.final?.kind, 'success');
    r = await runClient(hash, mech.start(b), { user: 'alice', password: 'wonderland', gs2: 'n,a=ALICE@Example.COM,' });
    assert.is(r.final?.kind, 'success');
    for (const a of ['bob@example.com', 'alice@example.org', 'alice@example.com/res', 'alice', 'example.com']) {
      const step = await mech.start(b).step(Buffer.from(`n,a=${a},n=alice,r=abcdef`));
      assert.ok(isFailure(step, 'invalid-authzid'), a);
    }
  });

  test(`${mech.name}: saslname escapes`, async () => {
    const b = await setup();
    const r = await runClient(hash, mech.start(b), { user: 'a,b=c', password: 'esc' });
    assert.is(r.final?.kind === 'success' && r.final.username, 'a,b=c');
    for (const bad of ['a=2cb', 'a=', 'a=41', 'a=3', '']) {
      const step = await mech.start(b).step(Buffer.from(`n,,n=${bad},r=abcdef`));
      assert.ok(isFailure(step, 'malformed-request'), bad);
    }
    // Escapes in the authzid are decoded too, so this names user "a,b=c".
    const ok = await runClient(hash, mech.start(b), { user: 'a,b=c', password: 'esc', gs2: 'n,a=a=2Cb=3Dc@example.com,' });
    assert.is(ok.final?.kind, 'success');
  });

  test(`${mech.name}: malformed client-first messages`, async () => {
    const b = await setup();
    for (const bad of ['', 'n,,', 'x,,n=alice,r=abc', 'n,,r=abc,n=alice', 'n,,n=alice', 'n,,n=alice,r=',
      'n,,n=alice,r=ab c', 'n,,m=ext,n=alice,r=abc', 'n,b=x,n=alice,r=abc', 'n,,n=alice,r=abc,bogus']) {
      const s = mech.start(b);
      let step = await s.step(Buffer.from(bad));
      // An empty first message is a request for an empty challenge; the real message follows.
      if (bad === '') {
        assert.equal(step, { kind: 'challenge', data: Buffer.alloc(0) });
        step = await s.step(Buffer.from(bad));
      }
      assert.ok(isFailure(step, 'malformed-request'), JSON.stringify(bad));
    }
    assert.ok(isFailure(await mech.start(b).step(Buffer.from([0x6e, 0x2c, 0x2c, 0xff, 0xfe])), 'malformed-request'), 'invalid UTF-8');
    const big = Buffer.from('n,,n=alice,r=' + 'a'.repeat(5000));
    assert.ok(isFailure(await mech.start(b).step(big), 'malformed-request'), 'too long');
  });

  test(`${mech.name}: empty initial response, then the exchange`, async () => {
    const s = mech.start(await setup());
    assert.equal(await s.step(Buffer.alloc(0)), { kind: 'challenge', data: Buffer.alloc(0) });
    const r = await runClient(hash, s, { user: 'alice', password: 'wonderland' });
    assert.is(r.final?.kind, 'success');
  });

  test(`${mech.name}: malformed client-final and steps after the end`, async () => {
    const b = await setup();
    for (const bad of ['c=biws', 'r=x,c=biws,p=AAAA', 'c=biws,p=AAAA']) {
      const s = mech.start(b);
      await s.step(Buffer.from('n,,n=alice,r=abcdef'));
      assert.ok(isFailure(await s.step(Buffer.from(bad)), 'malformed-request'), bad);
      // The session is over: nothing more can succeed.
      assert.is((await s.step(Buffer.from('n,,n=alice,r=abcdef'))).kind, 'failure');
    }
  });

  test(`${mech.name}: a backend error is a temporary failure`, async () => {
    const b = await setup();
    b.getCredentials = async () => { throw new Error('storage down'); };
    assert.ok(isFailure(await mech.start(b).step(Buffer.from('n,,n=alice,r=abcdef')), 'temporary-auth-failure'));
  });
}

test('unescapeSaslname', () => {
  assert.is(unescapeSaslname('a=2Cb=3Dc'), 'a,b=c');
  assert.is(unescapeSaslname('=3D=3D'), '==');
  assert.is(unescapeSaslname('a=2c'), null);
  assert.is(unescapeSaslname('a=3'), null);
  assert.is(unescapeSaslname(''), null);
  assert.is(unescapeSaslname('a\0b'), null);
});

test('decodeBase64 is strict, decodeSaslPayload handles "=" and empty', () => {
  assert.is(decodeBase64('biws')?.toString(), 'n,,');
  assert.is(decodeBase64('QQ==')?.toString(), 'A');
  for (const bad of ['biw', 'bi ws', 'bi*s', 'QR==', 'Q===', 'QQ=']) assert.is(decodeBase64(bad), null, bad);
  assert.is(decodeSaslPayload('=')?.length, 0);
  assert.is(decodeSaslPayload('')?.length, 0);
  assert.is(decodeSaslPayload(' biws\n')?.toString(), 'n,,');
  assert.is(decodeSaslPayload('%%%'), null);
});

// --- PLAIN ----------------------------------------------------------------------

const plain = (...parts: string[]) => Buffer.from(parts.join('\0'));

test('PLAIN: good password', async () => {
  assert.ok(PLAIN.needsTls);
  const b = await setup();
  assert.equal(await PLAIN.start(b).step(plain('', 'alice', 'wonderland')), { kind: 'success', username: 'alice' });
  assert.equal(await PLAIN.start(b).step(plain('alice@example.com', 'Alice', 'wonderland')), { kind: 'success', username: 'alice' });
});

test('PLAIN: bad password or unknown user -> not-authorized', async () => {
  const b = await setup();
  assert.ok(isFailure(await PLAIN.start(b).step(plain('', 'alice', 'wrong')), 'not-authorized'));
  assert.ok(isFailure(await PLAIN.start(b).step(plain('', 'nobody', 'wonderland')), 'not-authorized'));
  assert.ok(isFailure(await PLAIN.start(b).step(plain('', 'bad@name', 'wonderland')), 'not-authorized'));
  assert.ok(isFailure(await PLAIN.start(b).step(plain('', 'alice', 'wonder\u0000land')), 'malformed-request'));
});

test('PLAIN: authzid mismatch -> invalid-authzid, password not even checked', async () => {
  const b = await setup();
  assert.ok(isFailure(await PLAIN.start(b).step(plain('bob@example.com', 'alice', 'wonderland')), 'invalid-authzid'));
  assert.not.ok(b.calls.includes('verify:alice'));
});

test('PLAIN: malformed messages', async () => {
  const b = await setup();
  for (const bad of [plain('alice', 'wonderland'), plain('', '', 'pw'), plain('', 'alice', ''), plain('', 'alice', 'a', 'b'),
    Buffer.from([0, 0x61, 0, 0xff]), Buffer.from('\0alice\0' + 'x'.repeat(5000))]) {
    assert.ok(isFailure(await PLAIN.start(b).step(bad), 'malformed-request'), JSON.stringify(bad.toString()));
  }
});

test('PLAIN: empty initial response gets an empty challenge', async () => {
  const s = PLAIN.start(await setup());
  assert.equal(await s.step(Buffer.alloc(0)), { kind: 'challenge', data: Buffer.alloc(0) });
  assert.equal(await s.step(plain('', 'alice', 'wonderland')), { kind: 'success', username: 'alice' });
  assert.is((await s.step(plain('', 'alice', 'wonderland'))).kind, 'failure');
});

test.run();
