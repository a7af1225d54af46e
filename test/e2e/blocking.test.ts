// XEP-0191 blocking command against the real server, driven by xmpp.js.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rmSync } from 'node:fs';
import { startServer, trustServerCert, tempDir, type TestServer } from '../helpers/imnode.ts';
import { connect, xml, type TestClient, type XmlEl, expectIqError } from '../helpers/xmppjs.ts';

// xmpp.js's iqCaller attaches its handler to an IQ's promise only after the
// socket write callback; an error answer that beats it is an "unhandled"
// rejection for a moment, and the caller still gets it. Only that is tolerated.
process.on('unhandledRejection', (e) => { if ((e as Error | undefined)?.name !== 'StanzaError') throw e; });

const BLOCKING = 'urn:xmpp:blocking';
const ERRORS = 'urn:xmpp:blocking:errors';
const STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';
const dataDir = tempDir();
let server: TestServer;
let alice: TestClient;
let alice2: TestClient;
let bob: TestClient;
let domain: string;
let bobJid: string;
let aliceJid: string;

async function start(users?: Record<string, string>): Promise<void> {
  server = await startServer({ dataDir, users });
  trustServerCert(server);
  domain = server.domain;
  bobJid = `bob@${domain}`;
  aliceJid = `alice@${domain}`;
  alice = await connect(server, { username: 'alice', password: 'pw-alice', resource: 'a1' });
  alice2 = await connect(server, { username: 'alice', password: 'pw-alice', resource: 'a2' });
  bob = await connect(server, { username: 'bob', password: 'pw-bob', resource: 'b1' });
}

async function stop(): Promise<void> {
  for (const c of [alice, alice2, bob]) await c?.stop();
  await server?.stop();
}

test.before(() => start({ alice: 'pw-alice', bob: 'pw-bob', carol: 'pw-carol', dave: 'pw-dave' }));
test.after(async () => {
  await stop();
  rmSync(dataDir, { recursive: true, force: true });
});


/** Everything the server got from `c` before this call has been processed once it resolves. */
async function barrier(c: TestClient): Promise<void> {
  await c.iq(xml('iq', { type: 'get', to: domain }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
  await new Promise((r) => setTimeout(r, 150));
}

async function blocklist(c: TestClient): Promise<string[]> {
  const r = await c.iq(xml('iq', { type: 'get' }, xml('blocklist', { xmlns: BLOCKING })));
  return r.getChild('blocklist', BLOCKING)!.getChildren('item').map((i) => i.attrs.jid).sort();
}

function blockCmd(name: 'block' | 'unblock', ...jids: string[]): XmlEl {
  return xml('iq', { type: 'set' }, xml(name, { xmlns: BLOCKING }, ...jids.map((jid) => xml('item', { jid }))));
}

function chat(to: string, body: string): XmlEl {
  return xml('message', { to, type: 'chat', id: 'm-' + body }, xml('body', {}, body));
}

function gotBody(c: TestClient, body: string): boolean {
  return c.received.some((s) => s.name === 'message' && s.getChildText('body') === body && s.attrs.type !== 'error');
}

function isPush(name: string) {
  return (s: XmlEl) => s.name === 'iq' && s.attrs.type === 'set' && !!s.getChild(name, BLOCKING);
}

test('the blocklist starts empty and the feature is announced', async () => {
  assert.equal(await blocklist(alice), []);
  const r = await alice.iq(xml('iq', { type: 'get', to: domain }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
  assert.ok(r.getChild('query')!.getChildren('feature').some((f) => f.attrs.var === BLOCKING));
});

test('malformed commands: bad-request and jid-malformed', async () => {
  assert.is((await expectIqError(alice, blockCmd('block'))).condition, 'bad-request');
  assert.is((await expectIqError(alice, blockCmd('block', 'not a@jid@'))).condition, 'jid-malformed');
  assert.is((await expectIqError(alice, xml('iq', { type: 'set' }, xml('item', { xmlns: BLOCKING })))).condition, 'bad-request');
  // Someone else's blocklist is none of bob's business.
  assert.is((await expectIqError(bob, xml('iq', { type: 'get', to: aliceJid }, xml('blocklist', { xmlns: BLOCKING })))).condition, 'service-unavailable');
  assert.equal(await blocklist(alice), []);
});

test('block: result, pushes only to the resources that asked for the list', async () => {
  // alice (a1) asked for the list above; alice2 has not, bob has not.
  const r = await alice.iq(blockCmd('block', bobJid));
  assert.is(r.attrs.type, 'result');
  const p = await alice.waitFor(isPush('block'), 3000, 'the block push');
  assert.equal(p.getChild('block', BLOCKING)!.getChildren('item').map((i) => i.attrs.jid), [bobJid]);
  assert.ok(!p.attrs.from || p.attrs.from === aliceJid, p.toString());
  await barrier(alice2);
  assert.not.ok(alice2.received.some(isPush('block')), 'a resource that never asked got a push');
  assert.equal(await blocklist(alice), [bobJid]);
  assert.equal(await blocklist(alice2), [bobJid]);
});

test('messages from a blocked user do not arrive; the sender gets service-unavailable', async () => {
  for (const to of [aliceJid, `${aliceJid}/a1`]) {
    const body = 'from-bob-' + to;
    await bob.send(chat(to, body));
    const err = await bob.waitFor((s) => s.name === 'message' && s.attrs.type === 'error' && s.attrs.id === 'm-' + body, 3000, 'the bounce');
    assert.ok(err.getChild('error')!.getChild('service-unavailable', STANZAS), err.toString());
    await barrier(bob);
    assert.not.ok(gotBody(alice, body) || gotBody(alice2, body), `${to}: the message was delivered`);
  }
});

test('presence from a blocked user does not arrive, and no error comes back', async () => {
  await bob.send(xml('presence', { to: `${aliceJid}/a1` }, xml('status', {}, 'directed-from-bob')));
  await barrier(bob);
  assert.not.ok(alice.received.some((s) => s.name === 'presence' && s.attrs.from?.startsWith(bobJid)), 'presence delivered');
  assert.not.ok(bob.received.some((s) => s.name === 'presence' && s.attrs.type === 'error'), 'presence bounced');
});

test('IQs from a blocked user: service-unavailable, to full and bare JIDs', async () => {
  const e1 = await expectIqError(bob, xml('iq', { type: 'get', to: `${aliceJid}/a1` }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
  assert.is(e1.condition, 'service-unavailable');
  const e2 = await expectIqError(bob, xml('iq', { type: 'get', to: aliceJid }, xml('vCard', { xmlns: 'vcard-temp' })));
  assert.is(e2.condition, 'service-unavailable');
  assert.not.ok(alice.received.some((s) => s.name === 'iq' && s.attrs.from?.startsWith(bobJid)), 'the IQ reached alice');
});

test('sending to a blocked user: not-acceptable with <blocked/>, nothing delivered', async () => {
  await alice.send(chat(bobJid, 'to-bob'));
  const err = await alice.waitFor((s) => s.name === 'message' && s.attrs.type === 'error' && s.attrs.id === 'm-to-bob', 3000, 'the blocked error');
  const e = err.getChild('error')!;
  assert.is(e.attrs.type, 'cancel');
  assert.ok(e.getChild('not-acceptable', STANZAS), err.toString());
  assert.ok(e.getChild('blocked', ERRORS), err.toString());
  const iqErr = await expectIqError(alice, xml('iq', { type: 'get', to: `${bobJid}/b1` }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
  assert.is(iqErr.condition, 'not-acceptable');
  assert.ok(iqErr.application?.is('blocked', ERRORS), 'no <blocked/> in the IQ error');
  // Directed presence: dropped without an error.
  await alice.send(xml('presence', { to: `${bobJid}/b1` }));
  await barrier(alice);
  assert.not.ok(gotBody(bob, 'to-bob'), 'the message was delivered');
  // (bob holds the errors of his own blocked requests from before: those are not alice's.)
  const leaked = bob.received.filter((s) => s.attrs.from?.startsWith(aliceJid) && s.attrs.type !== 'error');
  assert.is(leaked.length, 0, 'something from alice reached bob: ' + leaked.join(' '));
  assert.not.ok(alice.received.some((s) => s.name === 'presence' && s.attrs.type === 'error'), 'presence bounced');
});

test('the server itself stays reachable even with its domain blocked', async () => {
  await alice.iq(blockCmd('block', domain));
  await alice.waitFor(isPush('block'), 3000, 'the domain push');
  await barrier(alice); // a ping to the server still works
  await bob.send(chat(`${aliceJid}/a1`, 'domain-blocked'));
  await bob.waitFor((s) => s.name === 'message' && s.attrs.type === 'error' && s.attrs.id === 'm-domain-blocked', 3000, 'the bounce');
  assert.equal(await blocklist(alice), [bobJid, domain].sort());
  await alice.iq(blockCmd('unblock', domain));
  await alice.waitFor(isPush('unblock'), 3000, 'the unblock push');
});

test('the blocklist survives a restart', async () => {
  await stop();
  await start();
  assert.equal(await blocklist(alice), [bobJid]);
  await bob.send(chat(aliceJid, 'after-restart'));
  await bob.waitFor((s) => s.name === 'message' && s.attrs.type === 'error' && s.attrs.id === 'm-after-restart', 3000, 'the bounce');
});

test('unblock: pushes, and messages flow again both ways', async () => {
  await blocklist(alice2); // now interested too
  const r = await alice.iq(blockCmd('unblock', bobJid));
  assert.is(r.attrs.type, 'result');
  for (const c of [alice, alice2]) {
    const p = await c.waitFor(isPush('unblock'), 3000, 'the unblock push');
    assert.equal(p.getChild('unblock', BLOCKING)!.getChildren('item').map((i) => i.attrs.jid), [bobJid]);
  }
  assert.equal(await blocklist(alice), []);
  await bob.send(chat(`${aliceJid}/a1`, 'hello-again'));
  await alice.waitFor((s) => s.name === 'message' && s.getChildText('body') === 'hello-again', 3000, 'the message from bob');
  await alice.send(chat(`${bobJid}/b1`, 'hi-bob'));
  await bob.waitFor((s) => s.name === 'message' && s.getChildText('body') === 'hi-bob', 3000, 'the message from alice');
});

test('unblock all: an empty unblock push, everything unblocked', async () => {
  await alice.iq(blockCmd('block', bobJid, `carol@${domain}`));
  await alice.waitFor(isPush('block'), 3000, 'the block push');
  await alice2.waitFor(isPush('block'), 3000, 'the block push');
  await alice.iq(blockCmd('unblock'));
  for (const c of [alice, alice2]) {
    const p = await c.waitFor(isPush('unblock'), 3000, 'the unblock-all push');
    assert.is(p.getChild('unblock', BLOCKING)!.getChildren('item').length, 0, p.toString());
  }
  assert.equal(await blocklist(alice), []);
  await bob.send(chat(`${aliceJid}/a1`, 'after-unblock-all'));
  await alice.waitFor((s) => s.name === 'message' && s.getChildText('body') === 'after-unblock-all', 3000, 'the message from bob');
});

test('on block, the contact sees the user go unavailable', async () => {
  // Both online (RFC 6121 §8.5.2.1.3: presence reaches available resources only).
  await bob.send(xml('presence'));
  await alice.send(xml('presence', {}, xml('status', {}, 'here')));
  await barrier(bob);
  await barrier(alice);
  await alice.iq(blockCmd('block', bobJid));
  const p = await bob.waitFor((s) => s.name === 'presence' && s.attrs.from === `${aliceJid}/a1` && s.attrs.type === 'unavailable', 3000, 'unavailable presence from alice/a1');
  assert.ok(p);
  await alice.iq(blockCmd('unblock', bobJid));
});

function presenceFrom(jid: string, pred: (s: XmlEl) => boolean = () => true) {
  return (s: XmlEl) => s.name === 'presence' && s.attrs.from === jid && pred(s);
}

test('between subscribed contacts: presence stops both ways while blocked and comes back on unblock', async () => {
  const carol = await connect(server, { username: 'carol', password: 'pw-carol', resource: 'c1' });
  const dave = await connect(server, { username: 'dave', password: 'pw-dave', resource: 'd1' });
  const carolJid = `carol@${domain}`, daveJid = `dave@${domain}`;
  try {
    for (const c of [carol, dave]) await c.send(xml('presence'));
    // RFC 6121 §3.1: mutual subscription.
    await carol.send(xml('presence', { to: daveJid, type: 'subscribe' }));
    await dave.waitFor(presenceFrom(carolJid, (s) => s.attrs.type === 'subscribe'), 3000, 'subscribe at dave');
    await dave.send(xml('presence', { to: carolJid, type: 'subscribed' }));
    await dave.send(xml('presence', { to: carolJid, type: 'subscribe' }));
    await carol.waitFor(presenceFrom(daveJid, (s) => s.attrs.type === 'subscribe'), 3000, 'subscribe at carol');
    await carol.send(xml('presence', { to: daveJid, type: 'subscribed' }));
    await dave.waitFor(presenceFrom(`${carolJid}/c1`, (s) => !s.attrs.type), 3000, "carol's presence at dave");
    await carol.waitFor(presenceFrom(`${daveJid}/d1`, (s) => !s.attrs.type), 3000, "dave's presence at carol");

    await carol.iq(blockCmd('block', daveJid));
    await dave.waitFor(presenceFrom(`${carolJid}/c1`, (s) => s.attrs.type === 'unavailable'), 3000, 'carol going unavailable at dave');
    // Broadcasts no longer cross, in either direction.
    await carol.send(xml('presence', {}, xml('show', {}, 'dnd'), xml('status', {}, 'busy')));
    await dave.send(xml('presence', {}, xml('status', {}, 'dave-while-blocked')));
    await barrier(carol);
    await barrier(dave);
    assert.not.ok(dave.received.some(presenceFrom(`${carolJid}/c1`, (s) => s.getChildText('status') === 'busy')), 'dave saw carol');
    assert.not.ok(carol.received.some(presenceFrom(`${daveJid}/d1`, (s) => s.getChildText('status') === 'dave-while-blocked')), 'carol saw dave');

    // §3.4: current presence again, both ways.
    await carol.iq(blockCmd('unblock', daveJid));
    const p = await dave.waitFor(presenceFrom(`${carolJid}/c1`, (s) => !s.attrs.type), 3000, "carol's presence after the unblock");
    assert.is(p.getChildText('status'), 'busy');
    const q = await carol.waitFor(presenceFrom(`${daveJid}/d1`, (s) => !s.attrs.type), 3000, "dave's presence after the unblock");
    assert.is(q.getChildText('status'), 'dave-while-blocked');
  } finally {
    await carol.stop();
    await dave.stop();
  }
});

test.run();
