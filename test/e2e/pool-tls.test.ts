// A zero-config pool serves one certificate: nodes without --cert/--key adopt the
// oldest self-signed certificate of the pool, so a client that pinned the one of
// the first node it met trusts every node of the domain.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tls from 'node:tls';
import * as net from 'node:net';
import { X509Certificate } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { startServer, tempDir, type TestServer } from '../helpers/imnode.ts';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** The fingerprint of the certificate a node presents on its direct TLS port. */
function served(server: TestServer): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host: '127.0.0.1', port: server.tlsPort, servername: server.domain, rejectUnauthorized: false, ALPNProtocols: ['xmpp-client'] }, () => {
      const fp = sock.getPeerCertificate().fingerprint256;
      sock.destroy();
      resolve(fp);
    });
    sock.once('error', reject);
  });
}

function fileFingerprint(server: TestServer): string {
  return new X509Certificate(readFileSync(path.join(server.dataDir, 'tls', 'cert.pem'))).fingerprint256;
}

async function until<T>(what: string, ms: number, f: () => Promise<T | undefined>): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('nodes with their own self-signed certificates converge on the oldest, and keep it across a restart', async () => {
  const [p1, p2] = [await freePort(), await freePort()];
  const pool = (port: number, id: string, peer?: number) => [
    '--server-id', id, '--pool-password', 'tls-test', '--pool-listen', `/ip4/127.0.0.1/tcp/${port}`,
    ...(peer ? ['--peer', `/ip4/127.0.0.1/tcp/${peer}`] : []),
  ];
  let n1: TestServer | undefined, n2: TestServer | undefined;
  const dir = tempDir();
  try {
    n1 = await startServer({ args: pool(p1, 'n1') });
    const first = await served(n1);
    // A certificate generated a little later: the younger one must give way.
    await new Promise((r) => setTimeout(r, 1100));
    // The test owns this data dir, so that stop() keeps it for the restart.
    n2 = await startServer({ dataDir: dir, args: pool(p2, 'n2', p1) });
    const own2 = fileFingerprint(n2);
    assert.is.not(own2, first, 'the second node made its own certificate first');
    const fp = await until('both nodes to serve one certificate', 15_000, async () => {
      const [a, b] = [await served(n1!), await served(n2!)];
      return a === b ? a : undefined;
    });
    assert.is(fp, first, 'the pool serves the oldest certificate');
    assert.is(fileFingerprint(n2), first, 'the adopted certificate is kept in the data dir');
    assert.match(n2.output(), /serving the pool's self-signed certificate/);
    // After a restart the node still serves it.
    await n2.stop();
    n2 = await startServer({ dataDir: dir, args: pool(p2, 'n2', p1) });
    assert.is(await served(n2), first, 'after a restart the node serves the pool certificate at once');
  } finally {
    await n2?.stop();
    await n1?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
