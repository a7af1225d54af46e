// XEP-0030 service discovery against the real server, driven by xmpp.js.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startServer, trustServerCert, type TestServer } from '../helpers/imnode.ts';
import { connect, xml, type TestClient, type XmlEl, expectIqError } from '../helpers/xmppjs.ts';

// xmpp.js's iqCaller attaches its handler to an IQ's promise only after the
// socket write callback; an error answer that beats it is an "unhandled"
// rejection for a moment, and the caller still gets it. Only that is tolerated.
process.on('unhandledRejection', (e) => { if ((e as Error | undefined)?.name !== 'StanzaError') throw e; });

const INFO = 'http://jabber.org/protocol/disco#info';
const ITEMS = 'http://jabber.org/protocol/disco#items';

let server: TestServer;
let alice: TestClient;
let bob: TestClient;

test.before(async () => {
  server = await startServer({ users: { alice: 'pw-alice', bob: 'pw-bob' } });
  trustServerCert(server);
  alice = await connect(server, { username: 'alice', password: 'pw-alice', resource: 'a1' });
  bob = await connect(server, { username: 'bob', password: 'pw-bob', resource: 'b1' });
});

test.after(async () => {
  await alice?.stop();
  await bob?.stop();
  await server?.stop();
});


function features(q: XmlEl): string[] {
  return q.getChildren('feature').map((f) => f.attrs.var);
}

test('disco#info of the server: server/im identity and the declared features', async () => {
  const r = await alice.iq(xml('iq', { type: 'get', to: server.domain }, xml('query', { xmlns: INFO })));
  assert.is(r.attrs.from, server.domain);
  const q = r.getChild('query', INFO)!;
  assert.ok(q, r.toString());
  const ids = q.getChildren('identity');
  assert.ok(ids.some((i) => i.attrs.category === 'server' && i.attrs.type === 'im'), r.toString());
  const f = features(q);
  for (const ns of [INFO, ITEMS, 'urn:xmpp:ping', 'jabber:iq:version', 'urn:xmpp:time', 'vcard-temp', 'urn:xmpp:blocking', 'jabber:iq:register']) {
    assert.ok(f.includes(ns), `missing feature ${ns}: ${r.toString()}`);
  }
  // XEP-0030 §3.1: each feature once.
  assert.is(new Set(f).size, f.length);
});

test('disco#info of the server with an unknown node: item-not-found', async () => {
  const err = await expectIqError(alice, xml('iq', { type: 'get', to: server.domain }, xml('query', { xmlns: INFO, node: 'no-such-node' })));
  assert.is(err.condition, 'item-not-found');
  assert.is(err.type, 'cancel');
});

test('disco#items of the server: the conference service, and nothing else', async () => {
  const r = await alice.iq(xml('iq', { type: 'get', to: server.domain }, xml('query', { xmlns: ITEMS })));
  const q = r.getChild('query', ITEMS)!;
  assert.ok(q, r.toString());
  assert.equal(q.getChildren('item').map((i) => i.attrs.jid), [`conference.${server.domain}`]);
  const err = await expectIqError(alice, xml('iq', { type: 'get', to: server.domain }, xml('query', { xmlns: ITEMS, node: 'x' })));
  assert.is(err.condition, 'item-not-found');
});

test('disco#info of the own account, with and without a to: account/registered', async () => {
  for (const attrs of [{ type: 'get' }, { type: 'get', to: `alice@${server.domain}` }]) {
    const r = await alice.iq(xml('iq', attrs, xml('query', { xmlns: INFO })));
    const q = r.getChild('query', INFO)!;
    assert.ok(q, r.toString());
    const id = q.getChild('identity')!;
    assert.is(id.attrs.category, 'account');
    assert.is(id.attrs.type, 'registered');
    assert.ok(features(q).includes(INFO), r.toString());
  }
});

test('disco#info of another existing account is answered by the server', async () => {
  const r = await alice.iq(xml('iq', { type: 'get', to: `bob@${server.domain}` }, xml('query', { xmlns: INFO })));
  assert.is(r.attrs.from, `bob@${server.domain}`);
  assert.is(r.getChild('query', INFO)!.getChild('identity')!.attrs.type, 'registered');
  // Not forwarded to bob's client.
  await new Promise((res) => setTimeout(res, 200));
  assert.not.ok(bob.received.some((s) => s.name === 'iq' && s.getChild('query', INFO)), 'the query reached the client');
});

test('disco of an account that does not exist: service-unavailable', async () => {
  const err = await expectIqError(alice, xml('iq', { type: 'get', to: `nobody@${server.domain}` }, xml('query', { xmlns: INFO })));
  assert.is(err.condition, 'service-unavailable');
  const err2 = await expectIqError(alice, xml('iq', { type: 'get', to: `nobody@${server.domain}` }, xml('query', { xmlns: ITEMS })));
  assert.is(err2.condition, 'service-unavailable');
});

test('disco#items of an account: empty', async () => {
  const r = await alice.iq(xml('iq', { type: 'get', to: `bob@${server.domain}` }, xml('query', { xmlns: ITEMS })));
  assert.is(r.getChild('query', ITEMS)!.getChildren('item').length, 0);
});

test('disco#info to a full JID goes to that client', async () => {
  const to = `bob@${server.domain}/b1`;
  const pending = alice.iq(xml('iq', { type: 'get', to, id: 'disco-full' }, xml('query', { xmlns: INFO })));
  const got = await bob.waitFor((s) => s.name === 'iq' && s.attrs.id === 'disco-full', 3000, 'the forwarded disco query');
  assert.is(got.attrs.from, alice.jid);
  assert.ok(got.getChild('query', INFO));
  // Whatever bob's client answers travels back to alice.
  try { await pending; } catch (e) { assert.ok((e as { condition?: string }).condition, String(e)); }
});

test.run();
