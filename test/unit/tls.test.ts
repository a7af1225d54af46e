import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, rm, readFile, stat, writeFile, mkdir } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { loadTlsMaterial, secureContextOptions, type TlsMaterial } from '../../src/c2s/tls.ts';
import { ConfigError } from '../../src/admin/options.ts';

let dir: string;
test.before(async () => { dir = await mkdtemp(join(tmpdir(), 'imnode-tls-')); });
test.after(async () => { await rm(dir, { recursive: true, force: true }); });

async function rejectsConfig(p: Promise<unknown>, re: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, ConfigError, `expected ConfigError, got ${String(e)}`);
    assert.match((e as Error).message, re);
    assert.not.match((e as Error).message, /\n/);
    return;
  }
  assert.unreachable('accepted');
}

/** A real TLS handshake that verifies the certificate against itself as the only CA. */
async function handshake(m: TlsMaterial, servername: string): Promise<void> {
  const server = tls.createServer(secureContextOptions(m), (s) => s.end());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  try {
    await new Promise<void>((resolve, reject) => {
      const c = tls.connect({ port, host: '127.0.0.1', servername, ca: m.cert }, () => { c.end(); resolve(); });
      c.on('error', reject);
    });
  } finally {
    server.close();
  }
}

test('self-signed: generated on first start, for the domain, key file 0600', async () => {
  const dataDir = join(dir, 'a');
  const m = await loadTlsMaterial({ domain: 'chat.example', dataDir });
  assert.is(m.selfSigned, true);
  assert.is(m.certPath, join(dataDir, 'tls', 'cert.pem'));
  assert.is(m.keyPath, join(dataDir, 'tls', 'key.pem'));
  assert.is(await readFile(m.certPath, 'utf8'), m.cert);
  assert.is(await readFile(m.keyPath, 'utf8'), m.key);
  assert.is((await stat(m.keyPath)).mode & 0o777, 0o600);
  const x509 = new X509Certificate(m.cert);
  assert.is(x509.subject, 'CN=chat.example');
  assert.is(x509.subjectAltName, 'DNS:chat.example, DNS:*.chat.example');
  const years = (x509.validToDate.getTime() - Date.now()) / (365.25 * 86_400_000);
  assert.ok(years > 9.9 && years < 10.1, `valid for ${years} years`);
  await handshake(m, 'chat.example');
  await handshake(m, 'conference.chat.example');
});

test('self-signed: reused on the next start', async () => {
  const dataDir = join(dir, 'b');
  const first = await loadTlsMaterial({ domain: 'b.example', dataDir });
  const mtime = (await stat(first.certPath)).mtimeMs;
  const second = await loadTlsMaterial({ domain: 'b.example', dataDir });
  assert.is(second.cert, first.cert);
  assert.is(second.key, first.key);
  assert.is((await stat(second.certPath)).mtimeMs, mtime);
});

test('self-signed: regenerated when the domain changes', async () => {
  const dataDir = join(dir, 'c');
  const first = await loadTlsMaterial({ domain: 'old.example', dataDir });
  const second = await loadTlsMaterial({ domain: 'new.example', dataDir });
  assert.is.not(second.cert, first.cert);
  assert.is(new X509Certificate(second.cert).subjectAltName, 'DNS:new.example, DNS:*.new.example');
  assert.is(await readFile(second.certPath, 'utf8'), second.cert);
  // and a damaged pair is replaced rather than served
  await writeFile(second.keyPath, 'garbage');
  const third = await loadTlsMaterial({ domain: 'new.example', dataDir });
  assert.is.not(third.cert, second.cert);
  await handshake(third, 'new.example');
});

test('operator certificate: used as given when the key matches', async () => {
  const gen = await loadTlsMaterial({ domain: 'op.example', dataDir: join(dir, 'd') });
  const m = await loadTlsMaterial({ domain: 'op.example', dataDir: join(dir, 'unused'), cert: gen.certPath, key: gen.keyPath });
  assert.is(m.selfSigned, false);
  assert.is(m.cert, gen.cert);
  assert.is(m.certPath, gen.certPath);
  await handshake(m, 'op.example');
});

test('operator certificate: mismatched key refused', async () => {
  const one = await loadTlsMaterial({ domain: 'one.example', dataDir: join(dir, 'e1') });
  const two = await loadTlsMaterial({ domain: 'two.example', dataDir: join(dir, 'e2') });
  await rejectsConfig(
    loadTlsMaterial({ domain: 'one.example', dataDir: dir, cert: one.certPath, key: two.keyPath }),
    /^--key: .*e2\/tls\/key\.pem does not match the certificate in .*e1\/tls\/cert\.pem$/);
});

test('operator certificate: unreadable, unparseable, or half given', async () => {
  const ok = await loadTlsMaterial({ domain: 'f.example', dataDir: join(dir, 'f') });
  const missing = join(dir, 'missing.pem');
  await rejectsConfig(loadTlsMaterial({ domain: 'f.example', dataDir: dir, cert: missing, key: ok.keyPath }),
    new RegExp(`^--cert: cannot read ${missing} \\(ENOENT\\)$`));
  await rejectsConfig(loadTlsMaterial({ domain: 'f.example', dataDir: dir, cert: ok.certPath, key: missing }),
    /^--key: cannot read .*missing\.pem \(ENOENT\)$/);
  await mkdir(join(dir, 'adir'));
  await rejectsConfig(loadTlsMaterial({ domain: 'f.example', dataDir: dir, cert: join(dir, 'adir'), key: ok.keyPath }),
    /^--cert: cannot read .*adir \(EISDIR\)$/);
  const junk = join(dir, 'junk.pem');
  await writeFile(junk, 'not a pem\n');
  await rejectsConfig(loadTlsMaterial({ domain: 'f.example', dataDir: dir, cert: junk, key: ok.keyPath }),
    /^--cert: .*junk\.pem is not a PEM certificate$/);
  await rejectsConfig(loadTlsMaterial({ domain: 'f.example', dataDir: dir, cert: ok.certPath, key: junk }),
    /^--key: .*junk\.pem is not a PEM private key$/);
  await rejectsConfig(loadTlsMaterial({ domain: 'f.example', dataDir: dir, cert: ok.certPath }),
    /^--cert: given without --key/);
  await rejectsConfig(loadTlsMaterial({ domain: 'f.example', dataDir: dir, key: ok.keyPath }),
    /^--key: given without --cert/);
});

test('an unwritable data dir is a configuration error', async () => {
  const blocker = join(dir, 'blocker');
  await writeFile(blocker, 'a file where the data dir should be');
  await rejectsConfig(loadTlsMaterial({ domain: 'g.example', dataDir: blocker }),
    /^--data-dir: cannot write the self-signed certificate in .*blocker\/tls \((ENOTDIR|EEXIST)\)$/);
});

test.run();
