// XEP-0160 offline messages against the real server, with xmpp.js clients:
// stored in order with XEP-0203 delay stamps, delivered once at the next
// initial presence; a message the server acknowledged (XEP-0198) survives a
// SIGKILL; a message a resource never acknowledged is not lost when that
// resource goes away for good.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rmSync } from 'node:fs';
import { startServer, tempDir, trustServerCert, type TestServer } from '../helpers/imnode.ts';
import { connect, xml, type TestClient, type XmlEl } from '../helpers/xmppjs.ts';

const DELAY = 'urn:xmpp:delay';

let n = 0;
function chat(to: string, body: string): XmlEl {
  return xml('message', { to, type: 'chat', id: `m${++n}` }, xml('body', {}, body));
}

const isMessage = (s: XmlEl) => s.is('message') && s.attrs.type !== 'error';
const bodyIs = (text: string) => (s: XmlEl) => isMessage(s) && s.getChildText('body') === text;

async function ping(c: TestClient, domain: string): Promise<void> {
  // test/helpers/xmppjs.ts corrects xmpp.js's XEP-0198 count for IQ results.
  await c.iq(xml('iq', { type: 'get', to: domain }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
}

/** Initial presence; the ping after it returns once the server has handled it (and delivered the queue). */
async function available(c: TestClient, domain: string, priority = 0): Promise<void> {
  await c.send(xml('presence', {}, xml('priority', {}, String(priority))));
  await ping(c, domain);
}

async function stopAll(...cs: Array<TestClient | undefined>): Promise<void> {
  for (const c of cs) await c?.stop();
}

/**
 * Connects and waits until XEP-0198 is enabled when the server offers it.
 * xmpp.js reports "online" before it even sends <enable/>, and it starts counting
 * received stanzas only a tick after that: a stanza arriving in the same read
 * as <enabled/> would not be counted, so its acknowledgement would come short.
 */
async function login(server: TestServer, username: string, resource: string): Promise<TestClient> {
  // connect() waits until xmpp.js has enabled XEP-0198 when the server offers it.
  return connect(server, { username, password: 'pw-' + username, resource });
}

function smEnabled(c: TestClient): void {
  assert.ok(c.xmpp.streamManagement.enabled, 'xmpp.js did not enable XEP-0198: the server does not offer <sm xmlns="urn:xmpp:sm:3"/>');
}

test('stored in order with delay stamps, delivered at initial presence, exactly once', async () => {
  const server = await startServer({ users: { alice: 'pw-alice', bob: 'pw-bob' } });
  let alice: TestClient | undefined, bob: TestClient | undefined;
  try {
    trustServerCert(server);
    alice = await login(server, 'alice', 'a');
    const before = Date.now();
    for (let i = 1; i <= 3; i++) await alice.send(chat(`bob@${server.domain}`, `offline ${i}`));
    await ping(alice, server.domain);
    assert.equal(alice.received.filter((s) => s.attrs.type === 'error').map(String), [], 'no error: stored');

    bob = await login(server, 'bob', 'phone');
    // Nothing before initial presence (XEP-0160: at the next available presence).
    await ping(bob, server.domain);
    assert.equal(bob.received.filter(isMessage).map(String), []);
    await available(bob, server.domain, 1);
    const got: XmlEl[] = [];
    for (let i = 1; i <= 3; i++) got.push(await bob.waitFor(isMessage, 5000, `offline message ${i}`));
    assert.equal(got.map((m) => m.getChildText('body')), ['offline 1', 'offline 2', 'offline 3']);
    for (const m of got) {
      assert.is(m.attrs.from, `alice@${server.domain}/a`);
      const delay = m.getChild('delay', DELAY);
      assert.ok(delay, m.toString());
      assert.is(delay!.attrs.from, 'localhost');
      const stamp = Date.parse(delay!.attrs.stamp);
      assert.ok(stamp >= before - 1000 && stamp <= Date.now() + 1000, `stamp ${delay!.attrs.stamp}`);
    }
    await bob.stop();

    // Logging in again: the queue was emptied, the first message is the sentinel.
    bob = await login(server, 'bob', 'laptop');
    await available(bob, server.domain, 1);
    await alice.send(chat('bob@localhost/laptop', 'sentinel'));
    const next = await bob.waitFor(isMessage, 5000, 'the sentinel');
    assert.is(next.getChildText('body'), 'sentinel', 'delivered twice: ' + next.toString());
  } finally {
    await stopAll(alice, bob);
    await server.stop();
  }
});

test('an acknowledged message survives SIGKILL of the server (XEP-0198 ack after fsync)', async () => {
  const dataDir = tempDir();
  const domain = 'kill.test';
  let server: TestServer | undefined, again: TestServer | undefined;
  let alice: TestClient | undefined, bob: TestClient | undefined;
  try {
    server = await startServer({ dataDir, domain, users: { alice: 'pw-alice', bob: 'pw-bob' } });
    trustServerCert(server);
    alice = await login(server, 'alice', 'a');
    smEnabled(alice);
    const m = chat(`bob@${domain}`, 'must survive');
    const sm = alice.xmpp.streamManagement;
    const acked = new Promise<void>((resolve) => {
      sm.on('ack', (s: XmlEl) => { if (s.attrs.id === m.attrs.id) resolve(); });
    });
    await alice.send(m);
    await acked;
    await server.kill();
    await alice.stop();
    alice = undefined;

    again = await startServer({ dataDir, domain });
    bob = await login(again, 'bob', 'b');
    await available(bob, domain);
    const got = await bob.waitFor(bodyIs('must survive'), 5000, 'the message from before the crash');
    assert.ok(got.getChild('delay', DELAY));
  } finally {
    await stopAll(alice, bob);
    await server?.kill();
    await again?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

/** From now on the client handles what it gets but never acknowledges it (XEP-0198 <a/>). */
function neverAck(c: TestClient): void {
  const send = c.xmpp.send.bind(c.xmpp);
  c.xmpp.send = (el: XmlEl) => (el.is('a', 'urn:xmpp:sm:3') ? Promise.resolve() : send(el));
}

/** Drops the TCP connection without closing the stream or acknowledging anything. */
function dropConnection(c: TestClient): void {
  c.xmpp.reconnect.stop();
  // After STARTTLS xmpp.js wraps the TLS socket.
  const s = c.xmpp.socket;
  (typeof s.destroy === 'function' ? s : s.socket).destroy();
}

test('unacknowledged when the session ends: re-delivered to the other resource, else stored', async () => {
  // Each server generates its own certificate for its domain: one domain per test.
  const server = await startServer({ domain: 'unacked.test', users: { alice: 'pw-alice', bob: 'pw-bob' }, args: ['--sm-resume-timeout', '1s'] });
  let alice: TestClient | undefined, main: TestClient | undefined, other: TestClient | undefined, later: TestClient | undefined;
  try {
    trustServerCert(server);
    alice = await login(server, 'alice', 'a');
    main = await login(server, 'bob', 'main');
    other = await login(server, 'bob', 'other');
    smEnabled(main);
    smEnabled(other);
    neverAck(main);
    neverAck(other);
    await available(main, server.domain, 5);
    await available(other, server.domain, 0);

    await alice.send(chat(`bob@${server.domain}`, 'first'));
    await main.waitFor(bodyIs('first'));
    dropConnection(main);
    // The session waits 1 s for resumption, then hands the message on.
    const got = await other.waitFor(bodyIs('first'), 8000, 'the re-delivered message');
    assert.is(got.attrs.from, `alice@${server.domain}/a`);

    // Now other is the only resource; it goes too, without acknowledging
    // either message: both are stored, in the order other got them.
    await alice.send(chat(`bob@${server.domain}`, 'second'));
    await other.waitFor(bodyIs('second'));
    dropConnection(other);
    await new Promise((r) => setTimeout(r, 2500));
    later = await login(server, 'bob', 'later');
    await available(later, server.domain, 0);
    const stored = [await later.waitFor(isMessage, 5000, 'stored message 1'), await later.waitFor(isMessage, 5000, 'stored message 2')];
    assert.equal(stored.map((s) => s.getChildText('body')), ['first', 'second']);
    for (const s of stored) assert.is(s.getChildren('delay', DELAY).filter((d) => d.attrs.from === server.domain).length, 1, s.toString());
  } finally {
    await stopAll(alice, main, other, later);
    await server.stop();
  }
});

test.run();
