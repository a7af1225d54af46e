// RFC 6121 §3 (subscriptions) and §4 (presence) against the real server, driven
// by xmpp.js: the subscription handshake with the roster pushes of each step,
// probes at login, broadcasts, directed presence, unavailable presence on
// disconnect, requests stored for offline users, pre-approval, unsubscribing,
// and priority errors.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startServer, trustServerCert, type TestServer } from '../helpers/imnode.ts';
import { connect, xml, type TestClient, type XmlEl } from '../helpers/xmppjs.ts';

const ROSTER = 'jabber:iq:roster';
const STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';

let server: TestServer;
const clients: TestClient[] = [];
const USERS: Record<string, string> = {};
for (const u of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'gus', 'hal', 'ida', 'jo', 'kim', 'lee', 'max', 'ned', 'olga', 'pat', 'quin']) USERS[u] = `pw-${u}`;

test.before(async () => {
  // A short resumption window: a client dropped without closing its stream goes
  // unavailable soon even if stream management is offered.
  server = await startServer({ users: USERS, args: ['--sm-resume-timeout', '1s'] });
  trustServerCert(server);
});

test.after.each(async () => {
  for (const c of clients.splice(0)) await c.stop();
});

test.after(async () => {
  await server?.stop();
});

const bare = (user: string) => `${user}@${server.domain}`;

/** Logs in, asks for the roster (so it gets pushes) and, unless told otherwise, sends initial presence. */
async function login(user: string, resource: string, opts: { presence?: boolean } = {}): Promise<TestClient> {
  const c = await connect(server, { username: user, password: USERS[user], resource });
  clients.push(c);
  c.xmpp.iqCallee.set(ROSTER, 'query', () => ({}));
  await c.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: ROSTER })));
  if (opts.presence !== false) await c.send(xml('presence', {}));
  return c;
}

function pushOf(jid: string, check: (item: XmlEl) => boolean = () => true) {
  return (s: XmlEl) => {
    if (s.name !== 'iq' || s.attrs.type !== 'set') return false;
    const item = s.getChild('query', ROSTER)?.getChild('item');
    return item?.attrs.jid === jid && check(item);
  };
}

/** Waits for a roster push about `jid` and returns its item. */
async function push(c: TestClient, jid: string, what: string, check?: (item: XmlEl) => boolean): Promise<XmlEl> {
  const s = await c.waitFor(pushOf(jid, check), 5000, `${what} (push for ${jid})`);
  return s.getChild('query', ROSTER)!.getChild('item')!;
}

function presenceFrom(from: string, type?: string) {
  return (s: XmlEl) => s.name === 'presence' && s.attrs.from === from && s.attrs.type === type;
}

function state(item: XmlEl): string {
  return `${item.attrs.subscription}${item.attrs.ask ? '+ask' : ''}${item.attrs.approved === 'true' ? '+approved' : ''}`;
}

async function quiet(ms = 400): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

async function rosterItem(c: TestClient, jid: string): Promise<XmlEl | undefined> {
  const r = await c.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: ROSTER })));
  return r.getChild('query', ROSTER)!.getChildren('item').find((i) => i.attrs.jid === jid);
}

/** Mutual subscription between two logged-in, available clients (§3.1 both ways). */
async function befriend(a: TestClient, aUser: string, b: TestClient, bUser: string): Promise<void> {
  await a.send(xml('presence', { to: bare(bUser), type: 'subscribe' }));
  await b.waitFor(presenceFrom(bare(aUser), 'subscribe'));
  await b.send(xml('presence', { to: bare(aUser), type: 'subscribed' }));
  await push(a, bare(bUser), 'to', (i) => i.attrs.subscription === 'to');
  await b.send(xml('presence', { to: bare(aUser), type: 'subscribe' }));
  await a.waitFor(presenceFrom(bare(bUser), 'subscribe'));
  await a.send(xml('presence', { to: bare(bUser), type: 'subscribed' }));
  await push(a, bare(bUser), 'both', (i) => i.attrs.subscription === 'both');
  await push(b, bare(aUser), 'both', (i) => i.attrs.subscription === 'both');
  await a.waitFor(presenceFrom(b.jid), 5000, 'presence after the handshake');
  await b.waitFor(presenceFrom(a.jid), 5000, 'presence after the handshake');
  // What the handshake left behind must not satisfy later checks.
  await quiet(100);
  a.received.length = 0;
  b.received.length = 0;
}

test('the subscription handshake, both ways, state by state; then presence flows', async () => {
  const alice = await login('alice', 'a1');
  const bob = await login('bob', 'b1');

  // §3.1.2: alice asks; her roster shows the request pending (ask="subscribe").
  await alice.send(xml('presence', { to: bare('bob'), type: 'subscribe', id: 's1' }, xml('status', {}, 'Hi Bob')));
  assert.is(state(await push(alice, bare('bob'), 'alice asks')), 'none+ask');
  // §3.1.3: bob gets the request from alice's bare JID, status included.
  const req = await bob.waitFor(presenceFrom(bare('alice'), 'subscribe'), 5000, 'subscribe at bob');
  assert.is(req.getChildText('status'), 'Hi Bob');
  await quiet(200);
  assert.not.ok(bob.received.some(pushOf(bare('alice'))), 'a request alone puts nobody on bob\'s roster');

  // §3.1.5: bob approves: "from" for him, "to" for alice, who gets subscribed and bob's presence.
  await bob.send(xml('presence', { to: bare('alice'), type: 'subscribed' }));
  assert.is(state(await push(bob, bare('alice'), 'bob approves')), 'from');
  assert.is(state(await push(alice, bare('bob'), 'alice is subscribed')), 'to');
  await alice.waitFor(presenceFrom(bare('bob'), 'subscribed'), 5000, 'subscribed at alice');
  await alice.waitFor(presenceFrom(`${bare('bob')}/b1`), 5000, 'bob\'s presence at alice');

  // The other way round.
  await bob.send(xml('presence', { to: bare('alice'), type: 'subscribe' }));
  assert.is(state(await push(bob, bare('alice'), 'bob asks')), 'from+ask');
  await alice.waitFor(presenceFrom(bare('bob'), 'subscribe'), 5000, 'subscribe at alice');
  await alice.send(xml('presence', { to: bare('bob'), type: 'subscribed' }));
  assert.is(state(await push(alice, bare('bob'), 'alice approves')), 'both');
  assert.is(state(await push(bob, bare('alice'), 'bob is subscribed')), 'both');
  await bob.waitFor(presenceFrom(bare('alice'), 'subscribed'), 5000, 'subscribed at bob');
  await bob.waitFor(presenceFrom(`${bare('alice')}/a1`), 5000, 'alice\'s presence at bob');

  // §4.4: updates reach the contact, and the user's own resource.
  await alice.send(xml('presence', {}, xml('show', {}, 'away'), xml('status', {}, 'lunch')));
  const upd = await bob.waitFor((s) => presenceFrom(`${bare('alice')}/a1`)(s) && s.getChildText('show') === 'away', 5000, 'update at bob');
  assert.is(upd.getChildText('status'), 'lunch');
  await alice.waitFor((s) => presenceFrom(`${bare('alice')}/a1`)(s) && s.getChildText('show') === 'away', 5000, 'own update reflected');

  // Asking again while subscribed: bob's server answers for him (A.3.1), and
  // alice's server, already subscribed, keeps that answer to itself (A.3.3).
  await alice.send(xml('presence', { to: bare('bob'), type: 'subscribe' }));
  await quiet(300);
  assert.not.ok(bob.received.some(presenceFrom(bare('alice'), 'subscribe')), 'bob is not asked again');
  assert.not.ok(alice.received.some(presenceFrom(bare('bob'), 'subscribed')), 'no second subscribed');
  assert.is(state((await rosterItem(alice, bare('bob')))!), 'both');
  assert.is(state((await rosterItem(bob, bare('alice')))!), 'both');
});

test('probes at login: the newcomer sees available contacts at once; an unavailable broadcast on a plain disconnect', async () => {
  let carol = await login('carol', 'c1');
  const dave = await login('dave', 'd1');
  await befriend(carol, 'carol', dave, 'dave');
  await dave.send(xml('presence', {}, xml('status', {}, 'here')));
  // carol leaves without unavailable presence: her contact is told (§4.5.2).
  await carol.stop();
  await dave.waitFor(presenceFrom(`${bare('carol')}/c1`, 'unavailable'), 5000, 'unavailable at dave');
  // She comes back: the probe answer is dave's last presence.
  carol = await login('carol', 'c2');
  const p = await carol.waitFor(presenceFrom(`${bare('dave')}/d1`), 5000, 'dave\'s presence from the probe');
  assert.is(p.getChildText('status'), 'here');
  await dave.waitFor(presenceFrom(`${bare('carol')}/c2`), 5000, 'carol\'s new resource at dave');
});

test('own resources: each sees the other; a second resource learns of the first at once', async () => {
  const e1 = await login('erin', 'e1');
  await e1.send(xml('presence', {}, xml('priority', {}, '5')));
  const e2 = await login('erin', 'e2');
  const first = await e2.waitFor(presenceFrom(`${bare('erin')}/e1`), 5000, 'e1 at e2');
  assert.is(first.getChildText('priority'), '5');
  await e1.waitFor(presenceFrom(`${bare('erin')}/e2`), 5000, 'e2 at e1');
  // Its own initial presence comes back too (§4.2.2).
  await e2.waitFor(presenceFrom(`${bare('erin')}/e2`), 5000, 'e2 reflected');
  await e2.send(xml('presence', { type: 'unavailable' }));
  await e1.waitFor(presenceFrom(`${bare('erin')}/e2`, 'unavailable'), 5000, 'e2 unavailable at e1');
});

test('an abrupt disconnect still ends in unavailable presence', async () => {
  const frank = await login('frank', 'f1');
  const gus = await login('gus', 'g1');
  await befriend(frank, 'frank', gus, 'gus');
  // Under STARTTLS xmpp.js wraps the TLS socket; drop it without a closing handshake.
  const sock = frank.xmpp.socket;
  (sock.socket ?? sock).destroy();
  await gus.waitFor(presenceFrom(`${bare('frank')}/f1`, 'unavailable'), 8000, 'unavailable after the socket died');
});

test('directed presence: delivered, remembered, and answered with unavailable when the sender goes', async () => {
  const hal = await login('hal', 'h1');
  const ida = await login('ida', 'i1');
  const ida2 = await login('ida', 'i2');
  // No subscription between them: only directed presence reaches ida.
  await hal.send(xml('presence', { to: `${bare('ida')}/i1` }, xml('status', {}, 'psst')));
  const got = await ida.waitFor(presenceFrom(`${bare('hal')}/h1`), 5000, 'directed presence');
  assert.is(got.getChildText('status'), 'psst');
  await quiet(200);
  assert.not.ok(ida2.received.some(presenceFrom(`${bare('hal')}/h1`)), 'only the addressed resource');
  // To a bare JID: every available resource (§8.5.2.1.1).
  await hal.send(xml('presence', { to: bare('ida') }));
  await ida2.waitFor(presenceFrom(`${bare('hal')}/h1`), 5000, 'directed presence to the bare JID');
  await hal.stop();
  await ida.waitFor(presenceFrom(`${bare('hal')}/h1`, 'unavailable'), 5000, 'unavailable to the directed-presence recipient');
  await ida2.waitFor(presenceFrom(`${bare('hal')}/h1`, 'unavailable'), 5000, 'unavailable to the bare-JID recipient');
});

test('a directed unavailable presence takes the recipient off the list', async () => {
  const jo = await login('jo', 'j1');
  const kim = await login('kim', 'k1');
  await jo.send(xml('presence', { to: `${bare('kim')}/k1` }));
  await kim.waitFor(presenceFrom(`${bare('jo')}/j1`));
  await jo.send(xml('presence', { to: `${bare('kim')}/k1`, type: 'unavailable' }));
  await kim.waitFor(presenceFrom(`${bare('jo')}/j1`, 'unavailable'));
  await jo.stop();
  await quiet(500);
  assert.not.ok(kim.received.some(presenceFrom(`${bare('jo')}/j1`, 'unavailable')), 'no second unavailable');
});

test('a request to a user who is offline is kept and delivered at each initial presence until answered', async () => {
  const lee = await login('lee', 'l1');
  await lee.send(xml('presence', { to: bare('max'), type: 'subscribe' }, xml('status', {}, 'remember me')));
  await push(lee, bare('max'), 'pending out', (i) => i.attrs.ask === 'subscribe');
  // max logs in without presence: nothing yet (only available resources get it).
  let max = await login('max', 'm1', { presence: false });
  await quiet(300);
  assert.not.ok(max.received.some(presenceFrom(bare('lee'), 'subscribe')));
  await max.send(xml('presence', {}));
  const r1 = await max.waitFor(presenceFrom(bare('lee'), 'subscribe'), 5000, 'stored request');
  assert.is(r1.getChildText('status'), 'remember me');
  await max.stop();
  // Not answered: it comes again.
  max = await login('max', 'm2');
  await max.waitFor(presenceFrom(bare('lee'), 'subscribe'), 5000, 'stored request, again');
  await max.send(xml('presence', { to: bare('lee'), type: 'subscribed' }));
  assert.is(state(await push(lee, bare('max'), 'approved')), 'to');
  await lee.waitFor(presenceFrom(`${bare('max')}/m2`), 5000, 'max\'s presence');
  await max.stop();
  max = await login('max', 'm3');
  await quiet(400);
  assert.not.ok(max.received.some(presenceFrom(bare('lee'), 'subscribe')), 'an answered request is not redelivered');
});

test('a request denied with unsubscribed: the asker is told, nothing stays pending', async () => {
  const ned = await login('ned', 'n1');
  const olga = await login('olga', 'o1');
  await ned.send(xml('presence', { to: bare('olga'), type: 'subscribe' }));
  await olga.waitFor(presenceFrom(bare('ned'), 'subscribe'));
  await olga.send(xml('presence', { to: bare('ned'), type: 'unsubscribed' }));
  await ned.waitFor(presenceFrom(bare('olga'), 'unsubscribed'), 5000, 'denial');
  assert.is(state(await push(ned, bare('olga'), 'denied', (i) => !i.attrs.ask)), 'none');
});

test('pre-approval (§3.4): approved before asking, the request is granted without reaching the user', async () => {
  const pat = await login('pat', 'p1');
  const bob = await login('bob', 'b9');
  // pat pre-approves bob, who is not even on her roster.
  await pat.send(xml('presence', { to: bare('bob'), type: 'subscribed' }));
  assert.is(state(await push(pat, bare('bob'), 'pre-approval')), 'none+approved');
  await quiet(200);
  assert.not.ok(bob.received.some(presenceFrom(bare('pat'), 'subscribed')), 'a pre-approval is not routed');
  await bob.send(xml('presence', { to: bare('pat'), type: 'subscribe' }));
  await bob.waitFor(presenceFrom(bare('pat'), 'subscribed'), 5000, 'granted at once');
  assert.is(state(await push(bob, bare('pat'), 'bob subscribed', (i) => i.attrs.subscription === 'to')), 'to');
  assert.is(state(await push(pat, bare('bob'), 'pat\'s side', (i) => i.attrs.subscription === 'from')), 'from');
  await bob.waitFor(presenceFrom(`${bare('pat')}/p1`), 5000, 'pat\'s presence at bob');
  await quiet(200);
  assert.not.ok(pat.received.some(presenceFrom(bare('bob'), 'subscribe')), 'pat is never asked');
  // Cancelling a pre-approval: unsubscribed without a pending request.
  await pat.send(xml('presence', { to: bare('alice'), type: 'subscribed' }));
  assert.is(state(await push(pat, bare('alice'), 'pre-approval')), 'none+approved');
  await pat.send(xml('presence', { to: bare('alice'), type: 'unsubscribed' }));
  assert.is(state(await push(pat, bare('alice'), 'cancelled')), 'none');
});

test('unsubscribe and unsubscribed end each direction, with unavailable presence', async () => {
  const a = await login('alice', 'u1');
  const b = await login('dave', 'u2');
  await befriend(a, 'alice', b, 'dave');
  // §3.3: alice stops receiving dave's presence.
  await a.send(xml('presence', { to: bare('dave'), type: 'unsubscribe' }));
  assert.is(state(await push(a, bare('dave'), 'alice unsubscribes')), 'from');
  assert.is(state(await push(b, bare('alice'), 'dave loses a subscriber')), 'to');
  await b.waitFor(presenceFrom(bare('alice'), 'unsubscribe'), 5000, 'unsubscribe at dave');
  await a.waitFor(presenceFrom(`${bare('dave')}/u2`, 'unavailable'), 5000, 'dave unavailable for alice');
  // §3.2: alice cancels dave's subscription to her.
  await a.send(xml('presence', { to: bare('dave'), type: 'unsubscribed' }));
  assert.is(state(await push(a, bare('dave'), 'alice revokes')), 'none');
  assert.is(state(await push(b, bare('alice'), 'dave loses his subscription')), 'none');
  await b.waitFor(presenceFrom(bare('alice'), 'unsubscribed'), 5000, 'unsubscribed at dave');
  await b.waitFor(presenceFrom(`${bare('alice')}/u1`, 'unavailable'), 5000, 'alice unavailable for dave');
  // Presence no longer flows.
  await a.send(xml('presence', {}, xml('status', {}, 'secret')));
  await quiet(300);
  assert.not.ok(b.received.some((s) => presenceFrom(`${bare('alice')}/u1`)(s) && s.getChildText('status') === 'secret'));
});

test('removing a contact (§2.5.2) unsubscribes both ways', async () => {
  const a = await login('kim', 'r1');
  const b = await login('olga', 'r2');
  await befriend(a, 'kim', b, 'olga');
  await a.iq(xml('iq', { type: 'set' }, xml('query', { xmlns: ROSTER }, xml('item', { jid: bare('olga'), subscription: 'remove' }))));
  await push(a, bare('olga'), 'removed', (i) => i.attrs.subscription === 'remove');
  await push(b, bare('kim'), 'olga sees both subscriptions end', (i) => i.attrs.subscription === 'none');
  await b.waitFor(presenceFrom(`${bare('kim')}/r1`, 'unavailable'), 5000, 'kim unavailable for olga');
  assert.is(state((await rosterItem(b, bare('kim')))!), 'none');
  assert.is(await rosterItem(a, bare('olga')), undefined);
});

test('a deleted account (XEP-0077) leaves its contacts unsubscribed', async () => {
  const ned = await login('ned', 'd1');
  const quin = await login('quin', 'q1');
  await befriend(ned, 'ned', quin, 'quin');
  await quin.iq(xml('iq', { type: 'set' }, xml('query', { xmlns: 'jabber:iq:register' }, xml('remove', {}))));
  await ned.waitFor(presenceFrom(`${bare('quin')}/q1`, 'unavailable'), 5000, 'quin goes offline');
  await push(ned, bare('quin'), 'both subscriptions end', (i) => i.attrs.subscription === 'none');
  assert.is(state((await rosterItem(ned, bare('quin')))!), 'none');
});

test('presence errors: bad priority, bad show, unknown type, subscription without a to', async () => {
  const c = await login('gus', 'x1', { presence: false });
  const errorOf = async (el: XmlEl, what: string) => {
    const id = `e-${Math.random().toString(36).slice(2)}`;
    el.attrs.id = id;
    await c.send(el);
    const e = await c.waitFor((s) => s.name === 'presence' && s.attrs.type === 'error' && s.attrs.id === id, 5000, what);
    const err = e.getChild('error')!;
    return err.children.filter((n) => typeof n !== 'string').map((n) => (n as XmlEl)).find((n) => n.attrs.xmlns === STANZAS)!.name;
  };
  assert.is(await errorOf(xml('presence', {}, xml('priority', {}, '128')), 'priority 128'), 'bad-request');
  assert.is(await errorOf(xml('presence', {}, xml('priority', {}, 'high')), 'priority high'), 'bad-request');
  assert.is(await errorOf(xml('presence', {}, xml('show', {}, 'busy')), 'bad show'), 'bad-request');
  assert.is(await errorOf(xml('presence', { type: 'bogus' }), 'bad type'), 'bad-request');
  assert.is(await errorOf(xml('presence', { type: 'subscribe' }), 'subscribe without to'), 'bad-request');
  assert.is(await errorOf(xml('presence', { to: bare('hal') }, xml('priority', {}, '-200')), 'directed bad priority'), 'bad-request');
  // A rejected presence left the resource unavailable; a good one is accepted.
  await c.send(xml('presence', {}, xml('priority', {}, '-128')));
  const own = await c.waitFor(presenceFrom(`${bare('gus')}/x1`), 5000, 'own presence reflected');
  assert.is(own.getChildText('priority'), '-128');
});

test('the server logged no errors on the way', () => {
  const errors = server.output().split('\n').filter((l) => / ERROR /.test(l));
  assert.equal(errors, []);
});

test.run();
