// RFC 6121 §8.5 message delivery against the real server, with xmpp.js
// clients: full JIDs, bare JIDs by priority, negative priority, a resource that
// is not there, unknown users, groupchat and headline rules, the server itself.
// "Nothing arrived" is checked with a later sentinel message from the same
// sender: the server handles a client's stanzas in order, so once the sentinel
// is the next message the recipient sees, nothing else is on its way.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startServer, trustServerCert, type TestServer } from '../helpers/imnode.ts';
import { connect, xml, type TestClient, type XmlEl } from '../helpers/xmppjs.ts';

const STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';
const USERS = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'heidi', 'ivan'];

let server: TestServer;
let alice: TestClient;
const clients: TestClient[] = [];

test.before(async () => {
  server = await startServer({ users: Object.fromEntries(USERS.map((u) => [u, 'pw-' + u])) });
  trustServerCert(server);
  alice = await connect(server, { username: 'alice', password: 'pw-alice', resource: 'a' });
});

test.after(async () => {
  for (const c of clients) await c.stop();
  await alice?.stop();
  await server?.stop();
});

async function login(user: string, resource: string, priority?: number): Promise<TestClient> {
  const c = await connect(server, { username: user, password: 'pw-' + user, resource });
  clients.push(c);
  if (priority !== undefined) await available(c, priority);
  return c;
}

/** Initial presence with a priority; the ping after it returns once the server has handled it. */
async function available(c: TestClient, priority: number): Promise<void> {
  await c.send(xml('presence', {}, xml('priority', {}, String(priority))));
  await c.iq(xml('iq', { type: 'get', to: server.domain }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
}

let n = 0;
function message(to: string, body: string, type?: string): XmlEl {
  return xml('message', { to, id: `m${++n}`, ...(type ? { type } : {}) }, xml('body', {}, body));
}

const isMessage = (s: XmlEl) => s.is('message') && s.attrs.type !== 'error';
const bodyIs = (text: string) => (s: XmlEl) => isMessage(s) && s.getChildText('body') === text;

/** The next message `c` gets must be the sentinel alice now sends it. */
async function nothingElseFor(c: TestClient): Promise<void> {
  const text = `sentinel ${++n}`;
  await alice.send(message(c.jid, text, 'chat'));
  const next = await c.waitFor(isMessage, 5000, 'the sentinel');
  assert.is(next.getChildText('body'), text, `${c.jid} got an unexpected message: ${next.toString()}`);
}

async function errorFor(id: string): Promise<string | undefined> {
  const err = await alice.waitFor((s) => s.is('message') && s.attrs.type === 'error' && s.attrs.id === id, 5000, `an error for ${id}`);
  return err.getChild('error')?.children.find((c): c is XmlEl => typeof c !== 'string' && c.attrs.xmlns === STANZAS)?.name;
}

async function noErrorSoFar(): Promise<void> {
  // A round trip through the server: an error for anything sent before would be here by now.
  await alice.iq(xml('iq', { type: 'get', to: server.domain }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
  const errors = alice.received.filter((s) => s.attrs.type === 'error');
  assert.equal(errors.map((e) => e.toString()), []);
}

// ---- §8.5.3 full JID ---------------------------------------------------------------------

test('full JID: delivered to that resource although it sent no presence (§8.5.3.1)', async () => {
  const bob = await login('bob', 'quiet');
  await alice.send(message('bob@localhost/quiet', 'hello quiet', 'chat'));
  const got = await bob.waitFor(bodyIs('hello quiet'));
  assert.is(got.attrs.from, 'alice@localhost/a');
  assert.is(got.attrs.to, 'bob@localhost/quiet');
});

test('full JID, resource not there: groupchat refused, headline and error dropped (§8.5.3.2.1)', async () => {
  const carol = await login('carol', 'here');
  const gc = message('carol@localhost/gone', 'gc', 'groupchat');
  await alice.send(gc);
  assert.is(await errorFor(gc.attrs.id), 'service-unavailable');
  await alice.send(message('carol@localhost/gone', 'headline', 'headline'));
  await alice.send(message('carol@localhost/gone', 'error', 'error'));
  await noErrorSoFar();
  await nothingElseFor(carol);
});

test('unknown user: service-unavailable, to the bare and to a full JID (§8.5.1)', async () => {
  const m1 = message('nobody@localhost', 'anyone?', 'chat');
  const m2 = message('nobody@localhost/res', 'anyone?');
  await alice.send(m1);
  await alice.send(m2);
  assert.is(await errorFor(m1.attrs.id), 'service-unavailable');
  assert.is(await errorFor(m2.attrs.id), 'service-unavailable');
});

test('to the server itself: not delivered; chat gets service-unavailable', async () => {
  const chat = message(server.domain, 'hello server', 'chat');
  await alice.send(message(server.domain, 'headline', 'headline'));
  await alice.send(chat);
  assert.is(await errorFor(chat.attrs.id), 'service-unavailable');
});

// ---- §8.5.2 bare JID (needs the presence module for priorities) ----------------------------

test('bare JID: only the highest-priority resource gets chat and normal (§8.5.2.1.1)', async () => {
  const hi = await login('dave', 'hi', 10);
  const lo = await login('dave', 'lo', 1);
  await alice.send(message('dave@localhost', 'chat to dave', 'chat'));
  await alice.send(message('dave@localhost', 'normal to dave'));
  await hi.waitFor(bodyIs('chat to dave'));
  await hi.waitFor(bodyIs('normal to dave'));
  await nothingElseFor(lo);
});

test('bare JID: resources tied at the highest priority all get it', async () => {
  const a = await login('erin', 'a', 5);
  const b = await login('erin', 'b', 5);
  const c = await login('erin', 'c', 0);
  await alice.send(message('erin@localhost', 'to both', 'chat'));
  await a.waitFor(bodyIs('to both'));
  await b.waitFor(bodyIs('to both'));
  await nothingElseFor(c);
});

test('bare JID: a negative priority resource never gets it; the message is kept offline', async () => {
  const neg = await login('frank', 'neg', -1);
  await alice.send(message('frank@localhost', 'for later', 'chat'));
  await noErrorSoFar();
  await nothingElseFor(neg);
  const later = await login('frank', 'later', 0);
  const got = await later.waitFor(bodyIs('for later'));
  assert.ok(got.getChild('delay', 'urn:xmpp:delay'), got.toString());
});

test('full JID of a resource not there, chat: the bare JID rules pick the available one (§8.5.3.2.1)', async () => {
  const top = await login('grace', 'top', 3);
  await alice.send(message('grace@localhost/gone', 'redirected', 'chat'));
  const got = await top.waitFor(bodyIs('redirected'));
  assert.is(got.attrs.to, 'grace@localhost/gone');
});

test('bare JID: groupchat is refused; headline goes to every non-negative resource', async () => {
  const a = await login('heidi', 'a', 2);
  const b = await login('heidi', 'b', 0);
  const neg = await login('heidi', 'neg', -3);
  const gc = message('heidi@localhost', 'gc', 'groupchat');
  await alice.send(gc);
  assert.is(await errorFor(gc.attrs.id), 'service-unavailable');
  await alice.send(message('heidi@localhost', 'news', 'headline'));
  await a.waitFor(bodyIs('news'));
  await b.waitFor(bodyIs('news'));
  await nothingElseFor(neg);
  await nothingElseFor(a);
});

test('bare JID, nobody online: headline dropped without error, error dropped', async () => {
  await alice.send(message('ivan@localhost', 'news', 'headline'));
  await alice.send(message('ivan@localhost', 'err', 'error'));
  await noErrorSoFar();
  // Neither was stored: ivan's first message after logging in is the sentinel.
  const ivan = await login('ivan', 'x', 0);
  await nothingElseFor(ivan);
});

test.run();
