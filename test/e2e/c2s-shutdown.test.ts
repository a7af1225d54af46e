// Orderly shutdown: on SIGTERM or SIGINT every client stream ends with the
// <system-shutdown/> stream error (RFC 6120 §4.9.3.22), whatever state it is
// in (before TLS, authenticated, bound, with XEP-0198 resumption, not reading
// at all), the process exits 0 within a few seconds, and a message a
// resumable session never acknowledged is not lost with it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpSync, rmSync } from 'node:fs';
import { startServer, prepareTemplate, tempDir, type TestServer } from '../helpers/imnode.ts';
import { connect, type TestClient, type XmlEl } from '../helpers/xmppjs.ts';
import { slixLogin, type Slix } from '../helpers/slix.ts';
import { RawClient, trustOnly, NS_SM, NS_STREAMS } from '../helpers/raw.ts';

const USERS = { alice: 'wonderland', bob: 'builder' };

interface Exit { code: number | null; signal: NodeJS.Signals | null; ms: number }

/** Sends the signal and waits for the process to exit. */
function signalAndWait(server: TestServer, signal: NodeJS.Signals, ms = 10_000): Promise<Exit> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const timer = setTimeout(() => reject(new Error(`imnode did not exit within ${ms} ms of ${signal}:\n${server.output().slice(-3000)}`)), ms);
    server.proc.once('exit', (code, sig) => {
      clearTimeout(timer);
      resolve({ code, signal: sig, ms: performance.now() - t0 });
    });
    server.proc.kill(signal);
  });
}

async function shutdownWithClients(signal: NodeJS.Signals): Promise<void> {
  const server = await startServer({ template: await prepareTemplate(USERS) });
  trustOnly(server);
  const raws: RawClient[] = [];
  let js: TestClient | null = null;
  let py: Slix | null = null;
  try {
    // A stream that has not even started TLS.
    const fresh = await RawClient.to(server);
    raws.push(fresh);
    fresh.open();
    await fresh.features();
    // Bound, with resumption enabled: shutdown must not leave it waiting to be resumed.
    const resumable = await RawClient.to(server);
    raws.push(resumable);
    await resumable.login('alice', USERS.alice, 'resumable');
    resumable.send(`<enable xmlns='${NS_SM}' resume='true'/>`);
    await resumable.nextNamed('enabled', NS_SM);
    // Bound, plain.
    const bound = await RawClient.to(server);
    raws.push(bound);
    await bound.login('bob', USERS.bob, 'plain');
    // Direct TLS.
    const direct = await RawClient.to(server, { tls: true });
    raws.push(direct);
    await direct.login('bob', USERS.bob, 'direct');
    // Clients written by others.
    js = await connect(server, { username: 'alice', password: USERS.alice, resource: 'js', mechanism: 'PLAIN' });
    const jsErrors: string[] = [];
    js.xmpp.on('element', (el: XmlEl) => {
      if (el.name === 'stream:error') jsErrors.push(el.children.map((c) => (typeof c === 'string' ? '' : c.name)).filter((n) => n && n !== 'text').join(' '));
    });
    py = await slixLogin(server, { username: 'bob', password: USERS.bob, resource: 'py', mechanism: 'SCRAM-SHA-256' });
    // One that stopped reading: it must not hold the shutdown up.
    const lazy = await RawClient.to(server);
    raws.push(lazy);
    await lazy.login('alice', USERS.alice, 'lazy');
    lazy.socket.pause();

    const exit = await signalAndWait(server, signal);
    assert.is(exit.code, 0, `exit code after ${signal}:\n${server.output().slice(-2000)}`);
    assert.ok(exit.ms < 5000, `shutdown took ${exit.ms.toFixed(0)} ms`);
    assert.match(server.output(), new RegExp(`${signal}: shutting down`));

    for (const [name, c] of [['before TLS', fresh], ['resumable', resumable], ['bound', bound], ['direct TLS', direct]] as const) {
      const err = await c.next((el) => el.name === 'stream:error', 3000, `${name}: the stream error`);
      assert.ok(err.getChild('system-shutdown', NS_STREAMS), `${name}: ${err.toString()}`);
      await c.waitEnded(3000);
      assert.is(c.parseError, null, `${name}: the server's output was cut in the middle`);
    }
    lazy.socket.resume();
    await lazy.waitClosed(3000);
    assert.equal(jsErrors, ['system-shutdown'], 'xmpp.js should have seen the stream error');
    const ev = await py.waitFor((e) => e.ev === 'stream_error', 3000, 'the stream error in slixmpp');
    assert.is(ev.condition, 'system-shutdown');
  } finally {
    for (const c of raws) c.destroy();
    await js?.stop();
    await py?.stop();
    await server.stop();
  }
}

test('SIGTERM: every client gets system-shutdown, exit 0 within seconds', () => shutdownWithClients('SIGTERM'));

test('SIGINT: the same', () => shutdownWithClients('SIGINT'));

test('SIGTERM with nobody connected: exit 0 at once', async () => {
  const server = await startServer({ template: await prepareTemplate(USERS) });
  try {
    const exit = await signalAndWait(server, 'SIGTERM');
    assert.is(exit.code, 0);
    assert.ok(exit.ms < 3000, `shutdown took ${exit.ms.toFixed(0)} ms`);
  } finally {
    await server.stop();
  }
});

test('a message a resumable session never acknowledged survives the shutdown', async () => {
  // Our own data dir, kept across the restart.
  const dataDir = tempDir();
  cpSync(await prepareTemplate(USERS), dataDir, { recursive: true });
  let server = await startServer({ dataDir });
  const clients: RawClient[] = [];
  try {
    const alice = await RawClient.to(server);
    clients.push(alice);
    const jid = await alice.login('alice', USERS.alice, 'phone');
    alice.send('<presence/>');
    alice.send(`<enable xmlns='${NS_SM}' resume='true'/>`);
    await alice.nextNamed('enabled', NS_SM);
    const bob = await RawClient.to(server);
    clients.push(bob);
    await bob.login('bob', USERS.bob, 'desk');
    bob.send(`<message to='${jid}' type='chat' id='keep'><body>do not lose me</body></message>`);
    await alice.next((el) => el.name === 'message' && el.attrs.id === 'keep');
    // The network drops before alice acknowledges it; then the server stops.
    alice.destroy();
    bob.send(`<message to='${jid}' type='chat' id='queued'><body>queued while away</body></message>`);
    bob.send("<iq type='get' to='localhost' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>");
    await bob.next((el) => el.attrs.id === 'sync');
    const exit = await signalAndWait(server, 'SIGTERM');
    assert.is(exit.code, 0);
    await server.stop();

    server = await startServer({ dataDir });
    const back = await RawClient.to(server);
    clients.push(back);
    await back.login('alice', USERS.alice, 'phone');
    back.send('<presence/>');
    for (const id of ['keep', 'queued']) {
      await back.next((el) => el.name === 'message' && el.getChildText('body') !== undefined && el.attrs.id === id, 5000, `message ${id} after the restart`);
    }
  } finally {
    for (const c of clients) c.destroy();
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test.run();
