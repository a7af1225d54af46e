// XEP-0280 Message Carbons against the real server, with xmpp.js clients: two
// resources of bob, received and sent copies, <private/>, disabling.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startServer, trustServerCert, type TestServer } from '../helpers/imnode.ts';
import { connect, xml, type TestClient, type XmlEl } from '../helpers/xmppjs.ts';

const CARBONS = 'urn:xmpp:carbons:2';
const FORWARD = 'urn:xmpp:forward:0';

let server: TestServer;
let alice: TestClient;
let bobA: TestClient;
let bobB: TestClient;

test.before(async () => {
  server = await startServer({ users: { alice: 'pw-alice', bob: 'pw-bob' } });
  trustServerCert(server);
  alice = await connect(server, { username: 'alice', password: 'pw-alice', resource: 'a' });
  bobA = await connect(server, { username: 'bob', password: 'pw-bob', resource: 'a' });
  bobB = await connect(server, { username: 'bob', password: 'pw-bob', resource: 'b' });
});

test.after(async () => {
  await alice?.stop();
  await bobA?.stop();
  await bobB?.stop();
  await server?.stop();
});

const bodyIs = (text: string) => (s: XmlEl) => s.is('message') && s.getChildText('body') === text;

function carbon(kind: 'received' | 'sent', text: string) {
  return (s: XmlEl) => {
    const inner = s.getChild(kind, CARBONS)?.getChild('forwarded', FORWARD)?.getChild('message');
    return s.is('message') && inner?.getChildText('body') === text;
  };
}

function innerOf(s: XmlEl, kind: 'received' | 'sent'): XmlEl {
  return s.getChild(kind, CARBONS)!.getChild('forwarded', FORWARD)!.getChild('message')!;
}

function chat(to: string, body: string, ...extra: XmlEl[]): XmlEl {
  return xml('message', { to, type: 'chat', id: 'id-' + body.replace(/\W/g, '') }, xml('body', {}, body), ...extra);
}

test('the server advertises urn:xmpp:carbons:2', async () => {
  const r = await alice.iq(xml('iq', { type: 'get', to: server.domain }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
  const features = r.getChild('query')!.getChildren('feature').map((f) => f.attrs.var);
  assert.ok(features.includes(CARBONS), features.join(' '));
});

test('enable: an empty result, also when asked twice', async () => {
  for (let i = 0; i < 2; i++) {
    const r = await bobB.iq(xml('iq', { type: 'set' }, xml('enable', { xmlns: CARBONS })));
    assert.is(r.attrs.type, 'result');
  }
});

test('received: a message to bob/a reaches bob/a and a forwarded copy reaches bob/b', async () => {
  await alice.send(chat('bob@localhost/a', 'to a'));
  const direct = await bobA.waitFor(bodyIs('to a'), 5000, 'the message');
  assert.is(direct.attrs.from, 'alice@localhost/a');
  assert.not.ok(direct.getChild('received', CARBONS));
  const copy = await bobB.waitFor(carbon('received', 'to a'), 5000, 'a received carbon');
  assert.is(copy.attrs.from, 'bob@localhost');
  assert.is(copy.attrs.to, 'bob@localhost/b');
  assert.is(copy.attrs.type, 'chat');
  const inner = innerOf(copy, 'received');
  assert.is(inner.attrs.from, 'alice@localhost/a');
  assert.is(inner.attrs.to, 'bob@localhost/a');
  assert.is(inner.attrs.xmlns, 'jabber:client');
});

test('sent: what bob/a sends is copied to bob/b, not back to bob/a', async () => {
  await bobA.send(chat('alice@localhost/a', 'from a'));
  await alice.waitFor(bodyIs('from a'), 5000, 'the message');
  const copy = await bobB.waitFor(carbon('sent', 'from a'), 5000, 'a sent carbon');
  assert.is(copy.attrs.from, 'bob@localhost');
  assert.is(copy.attrs.to, 'bob@localhost/b');
  const inner = innerOf(copy, 'sent');
  assert.is(inner.attrs.from, 'bob@localhost/a');
  assert.is(inner.attrs.to, 'alice@localhost/a');
  // A later message proves nothing else came to bob/a meanwhile.
  await alice.send(chat('bob@localhost/a', 'marker 1'));
  await bobA.waitFor(bodyIs('marker 1'));
  await bobB.waitFor(carbon('received', 'marker 1'));
  assert.not.ok(bobA.received.some((s) => s.getChild('sent', CARBONS)), 'bob/a got a copy of its own message');
});

test('<private/>: delivered, but no copy on either side', async () => {
  await alice.send(chat('bob@localhost/a', 'private in', xml('private', { xmlns: CARBONS })));
  const got = await bobA.waitFor(bodyIs('private in'));
  assert.not.ok(got.getChild('private', CARBONS), 'the receiving server strips <private/> (§9)');
  await bobA.send(chat('alice@localhost/a', 'private out', xml('private', { xmlns: CARBONS })));
  await alice.waitFor(bodyIs('private out'));
  // The next carbon bob/b sees must be of the next ordinary message.
  await alice.send(chat('bob@localhost/a', 'after private'));
  const next = await bobB.waitFor((s) => s.is('message'), 5000, 'the next carbon');
  assert.ok(carbon('received', 'after private')(next), 'unexpected: ' + next.toString());
});

test('received, to the bare JID: the top resource gets it, the lower one a copy', async () => {
  for (const [c, prio] of [[bobA, 5], [bobB, 1]] as const) {
    await c.send(xml('presence', {}, xml('priority', {}, String(prio))));
    await c.iq(xml('iq', { type: 'get', to: server.domain }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
  }
  await alice.send(chat('bob@localhost', 'to the account'));
  const direct = await bobA.waitFor(bodyIs('to the account'), 5000, 'the message');
  assert.is(direct.attrs.to, 'bob@localhost');
  const copy = await bobB.waitFor(carbon('received', 'to the account'), 5000, 'a received carbon');
  assert.is(copy.attrs.to, 'bob@localhost/b');
  assert.is(innerOf(copy, 'received').attrs.to, 'bob@localhost');
  assert.not.ok(bobB.received.some(bodyIs('to the account')), 'bob/b got the original too');
});

test('disable: no more copies', async () => {
  const r = await bobB.iq(xml('iq', { type: 'set' }, xml('disable', { xmlns: CARBONS })));
  assert.is(r.attrs.type, 'result');
  bobB.received.length = 0;
  await alice.send(chat('bob@localhost/a', 'not copied'));
  await bobA.waitFor(bodyIs('not copied'));
  await bobA.send(chat('alice@localhost/a', 'not copied either'));
  await alice.waitFor(bodyIs('not copied either'));
  await alice.send(chat('bob@localhost/b', 'direct to b'));
  const next = await bobB.waitFor((s) => s.is('message'), 5000, 'the next message');
  assert.ok(bodyIs('direct to b')(next), 'unexpected: ' + next.toString());
});

test.run();
