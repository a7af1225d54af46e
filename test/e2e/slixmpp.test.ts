// Whole conversations between two slixmpp clients (a library written by
// others, driven through test/helpers/slix.ts): RFC 6121 §2 roster get, set,
// pushes and removal; §3 the subscription handshake both ways and §4 the
// presence that follows it; §8.5 messages to full and bare JIDs; XEP-0160
// offline delivery with XEP-0203 delay; XEP-0280 carbons between two
// resources of one account.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startServer, prepareTemplate, type TestServer } from '../helpers/imnode.ts';
import { slixLogin, element, type Slix, type SlixLogin, type SlixEvent } from '../helpers/slix.ts';
import type { Element } from '../../src/xmpp/element.ts';

const USERS = { alice: 'wonderland', bob: 'builder' };
const NS_ROSTER = 'jabber:iq:roster';
const NS_CARBONS = 'urn:xmpp:carbons:2';
const NS_FORWARD = 'urn:xmpp:forward:0';

/** Runs fn with a fresh server and a way to log slixmpp clients in; everything is stopped after. */
async function scenario(fn: (login: (o: SlixLogin) => Promise<Slix>, server: TestServer) => Promise<void>): Promise<void> {
  const server = await startServer({ template: await prepareTemplate(USERS) });
  const clients: Slix[] = [];
  try {
    await fn(async (o) => {
      const s = await slixLogin(server, o);
      clients.push(s);
      return s;
    }, server);
  } finally {
    for (const c of clients) await c.stop();
    await server.stop();
  }
}

const is = (el: Element, name: string, attrs: Record<string, string | undefined> = {}) =>
  el.name === name && Object.entries(attrs).every(([k, v]) => el.attrs[k] === v);

/** A presence stanza from `from` (bare match when `from` has no resource) of `type` (undefined = available). */
function presenceFrom(from: string, type?: string): (el: Element) => boolean {
  return (el) => el.name === 'presence' && el.attrs.type === type &&
    (from.includes('/') ? el.attrs.from === from : (el.attrs.from ?? '').split('/')[0] === from);
}

function rosterItem(iq: Element, jid: string): Element | undefined {
  return iq.getChild('query', NS_ROSTER)?.getChildren('item').find((i) => i.attrs.jid === jid);
}

/** Waits for a roster push about `jid` (RFC 6121 §2.1.6) and returns its item. */
async function push(s: Slix, jid: string, pred: (item: Element) => boolean = () => true, what = 'a roster push'): Promise<Element> {
  const iq = await s.waitStanza((el) => {
    if (!is(el, 'iq', { type: 'set' })) return false;
    const item = rosterItem(el, jid);
    return item !== undefined && pred(item);
  }, 5000, `${what} for ${jid}`);
  return rosterItem(iq, jid)!;
}

async function rosterGet(s: Slix): Promise<Record<string, { name: string; subscription: string; ask: string; groups: string[] }>> {
  const r = await s.command('roster_get');
  assert.is(r.type, 'result', String(r.xml));
  return r.items as Record<string, { name: string; subscription: string; ask: string; groups: string[] }>;
}

function body(e: SlixEvent): string | undefined {
  return element(e).getChildText('body');
}

// ---- roster ---------------------------------------------------------------------------------

test('roster: get, set with name and groups, push to every interested resource, remove', () => scenario(async (login) => {
  const a1 = await login({ username: 'alice', password: USERS.alice, resource: 'one' });
  const a2 = await login({ username: 'alice', password: USERS.alice, resource: 'two' });
  assert.equal(await rosterGet(a1), {}, 'a new account has an empty roster');
  await rosterGet(a2); // interested too (§2.1.6)
  const set = await a1.command('roster_set', { jid: 'bob@localhost', name: 'Bob', groups: ['Friends', 'Work'] });
  assert.is(set.type, 'result', String(set.xml));
  for (const s of [a1, a2]) {
    const item = await push(s, 'bob@localhost', (i) => i.attrs.subscription !== 'remove');
    assert.is(item.attrs.name, 'Bob');
    assert.is(item.attrs.subscription ?? 'none', 'none');
    assert.equal(item.getChildren('group').map((g) => g.text()).sort(), ['Friends', 'Work']);
  }
  const items = await rosterGet(a2);
  assert.equal(items['bob@localhost'], { name: 'Bob', subscription: 'none', ask: '', groups: ['Friends', 'Work'] });
  // Renaming keeps one item.
  await a2.command('roster_set', { jid: 'bob@localhost', name: 'Robert', groups: ['Friends'] });
  await push(a1, 'bob@localhost', (i) => i.attrs.name === 'Robert');
  assert.equal(Object.keys(await rosterGet(a1)), ['bob@localhost']);
  // Removal (§2.5): a push with subscription='remove', then an empty roster.
  const rm = await a1.command('roster_remove', { jid: 'bob@localhost' });
  assert.is(rm.type, 'result', String(rm.xml));
  await push(a2, 'bob@localhost', (i) => i.attrs.subscription === 'remove', 'the removal push');
  assert.equal(await rosterGet(a1), {});
  // A roster set for another account is refused (§2.1.5: forbidden).
  const other = await a1.command('iq', { xml: `<iq type='set' to='bob@localhost'><query xmlns='${NS_ROSTER}'><item jid='eve@localhost'/></query></iq>` });
  assert.is(other.type, 'error', String(other.xml));
}));

// ---- subscriptions and presence -------------------------------------------------------------------

test('subscription handshake both ways, then mutual presence', () => scenario(async (login) => {
  const alice = await login({ username: 'alice', password: USERS.alice, resource: 'home' });
  const bob = await login({ username: 'bob', password: USERS.bob, resource: 'work' });
  for (const s of [alice, bob]) {
    await rosterGet(s);
    await s.command('presence', {});
  }
  // alice -> bob (§3.1): bob gets the request from alice's bare JID; alice's roster says ask=subscribe.
  await alice.command('subscribe', { to: 'bob@localhost' });
  const req = await bob.waitStanza(presenceFrom('alice@localhost', 'subscribe'), 5000, 'the subscription request');
  assert.is(req.attrs.from, 'alice@localhost', 'a subscription request comes from the bare JID (§3.1.3)');
  await push(alice, 'bob@localhost', (i) => i.attrs.ask === 'subscribe', 'the pending-out push');
  // bob approves (§3.1.5): alice learns it, her roster says 'to', and she gets bob's presence (§3.1.6).
  await bob.command('subscribed', { to: 'alice@localhost' });
  await alice.waitStanza(presenceFrom('bob@localhost', 'subscribed'), 5000, 'the approval');
  await push(alice, 'bob@localhost', (i) => i.attrs.subscription === 'to', "alice's 'to' push");
  await push(bob, 'alice@localhost', (i) => i.attrs.subscription === 'from', "bob's 'from' push");
  await alice.waitStanza(presenceFrom('bob@localhost/work'), 5000, "bob's available presence after the approval");
  // bob -> alice, the other way.
  await bob.command('subscribe', { to: 'alice@localhost' });
  await alice.waitStanza(presenceFrom('bob@localhost', 'subscribe'), 5000, "bob's request");
  await alice.command('subscribed', { to: 'bob@localhost' });
  await bob.waitStanza(presenceFrom('alice@localhost', 'subscribed'), 5000, "alice's approval");
  await bob.waitStanza(presenceFrom('alice@localhost/home'), 5000, "alice's presence after the approval");
  await push(alice, 'bob@localhost', (i) => i.attrs.subscription === 'both', "alice's 'both' push");
  await push(bob, 'alice@localhost', (i) => i.attrs.subscription === 'both', "bob's 'both' push");
  assert.is((await rosterGet(alice))['bob@localhost']?.subscription, 'both');
  assert.is((await rosterGet(bob))['alice@localhost']?.subscription, 'both');
  // Mutual presence (§4.4): a change of either reaches the other, with its content.
  await bob.command('presence', { show: 'away', status: 'lunch' });
  const away = await alice.waitStanza((el) => presenceFrom('bob@localhost/work')(el) && el.getChildText('show') === 'away', 5000, "bob's away");
  assert.is(away.getChildText('status'), 'lunch');
  await alice.command('presence', { status: 'reading' });
  await bob.waitStanza((el) => presenceFrom('alice@localhost/home')(el) && el.getChildText('status') === 'reading', 5000, "alice's status");
  // A new resource of bob gets alice's presence by probe (§4.3.2).
  const bob2 = await login({ username: 'bob', password: USERS.bob, resource: 'phone' });
  await bob2.command('presence', {});
  await bob2.waitStanza(presenceFrom('alice@localhost/home'), 5000, "alice's presence on bob's new resource");
  await alice.waitStanza(presenceFrom('bob@localhost/phone'), 5000, "bob's new resource");
  // Going away (§4.5): unavailable presence to the contact.
  await bob2.disconnect();
  await alice.waitStanza(presenceFrom('bob@localhost/phone', 'unavailable'), 5000, "bob's phone going offline");
}));

// ---- messages -------------------------------------------------------------------------------

test('messages to the full and to the bare JID', () => scenario(async (login) => {
  const alice = await login({ username: 'alice', password: USERS.alice, resource: 'home' });
  const bob = await login({ username: 'bob', password: USERS.bob, resource: 'work' });
  await bob.command('presence', {});
  await alice.command('presence', {});
  await alice.command('message', { to: 'bob@localhost/work', body: 'to your full JID', type: 'chat' });
  const m1 = await bob.waitFor((e) => e.ev === 'message' && e.body === 'to your full JID', 5000, 'the full-JID message');
  assert.is(m1.from, 'alice@localhost/home');
  assert.is(m1.to, 'bob@localhost/work');
  await alice.command('message', { to: 'bob@localhost', body: 'to your bare JID', type: 'chat' });
  const m2 = await bob.waitFor((e) => e.ev === 'message' && e.body === 'to your bare JID', 5000, 'the bare-JID message');
  assert.is(m2.from, 'alice@localhost/home');
  await alice.command('message', { to: 'bob@localhost', body: 'a normal one', type: 'normal' });
  await bob.waitFor((e) => e.ev === 'message' && e.body === 'a normal one', 5000, 'the normal message');
  // Replies go the other way just as well.
  await bob.command('message', { to: String(m2.from), body: 'got them', type: 'chat' });
  await alice.waitFor((e) => e.ev === 'message' && e.body === 'got them', 5000, "bob's reply");
  // A message to a user that does not exist: an error back (RFC 6121 §8.5.1).
  await alice.command('message', { to: 'nobody@localhost', body: 'hello?', type: 'chat' });
  const err = await alice.waitStanza((el) => el.name === 'message' && el.attrs.type === 'error' && el.attrs.from === 'nobody@localhost', 5000, 'the error');
  assert.ok(err.getChild('error'), err.toString());
}));

test('offline messages are delivered, in order and stamped, when the user comes back', () => scenario(async (login) => {
  const alice = await login({ username: 'alice', password: USERS.alice, resource: 'home' });
  const bob = await login({ username: 'bob', password: USERS.bob, resource: 'work' });
  await bob.command('presence', {});
  await bob.disconnect();
  await bob.stop();
  for (const n of [1, 2, 3]) await alice.command('message', { to: 'bob@localhost', body: `while you were away ${n}`, type: 'chat' });
  // Let the server store them (an error would come back to alice).
  await new Promise((r) => setTimeout(r, 300));
  assert.not.ok(alice.history.some((e) => e.ev === 'message' && element(e).attrs.type === 'error'), 'alice got an error back');
  const back = await login({ username: 'bob', password: USERS.bob, resource: 'work' });
  // Nothing before initial presence (XEP-0160 §2, RFC 6121 §8.5.2.2.1).
  await new Promise((r) => setTimeout(r, 200));
  assert.not.ok(back.history.some((e) => e.ev === 'message'), 'offline messages came before the initial presence');
  await back.command('presence', {});
  const got: SlixEvent[] = [];
  for (const n of [1, 2, 3]) got.push(await back.waitFor((e) => e.ev === 'message' && body(e) === `while you were away ${n}`, 5000, `offline message ${n}`));
  const order = back.history.filter((e) => e.ev === 'message').map(body);
  assert.equal(order, ['while you were away 1', 'while you were away 2', 'while you were away 3']);
  for (const e of got) {
    const el = element(e);
    assert.ok(el.attrs.from?.startsWith('alice@localhost'), el.toString());
    const delay = el.getChild('delay', 'urn:xmpp:delay');
    assert.ok(delay, 'no XEP-0203 delay: ' + el.toString());
    assert.ok(!Number.isNaN(Date.parse(delay.attrs.stamp ?? '')), 'bad stamp: ' + delay.toString());
  }
  // Delivered once: a second session does not get them again.
  const again = await login({ username: 'bob', password: USERS.bob, resource: 'again' });
  await again.command('presence', {});
  await new Promise((r) => setTimeout(r, 300));
  assert.not.ok(again.history.some((e) => e.ev === 'message' && (body(e) ?? '').startsWith('while you were away')), 'offline messages delivered twice');
}));

// ---- carbons ---------------------------------------------------------------------------------

test('carbons (XEP-0280) between two resources of one account', () => scenario(async (login) => {
  const a1 = await login({ username: 'alice', password: USERS.alice, resource: 'desktop', plugins: ['xep_0030', 'xep_0280'] });
  const a2 = await login({ username: 'alice', password: USERS.alice, resource: 'mobile', plugins: ['xep_0030', 'xep_0280'] });
  const bob = await login({ username: 'bob', password: USERS.bob, resource: 'work' });
  for (const s of [a1, a2, bob]) await s.command('presence', {});
  const disco = await a1.command('iq', { xml: "<iq type='get' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>" });
  assert.ok(element(disco).getChild('query')?.getChildren('feature').some((f) => f.attrs.var === NS_CARBONS), 'carbons not announced in disco#info');
  for (const s of [a1, a2]) {
    const r = await s.command('enable_carbons');
    assert.is(element(r).attrs.type, 'result');
  }
  // Received (§7): bob writes to the desktop; the mobile gets a copy.
  await bob.command('message', { to: 'alice@localhost/desktop', body: 'hi desktop', type: 'chat' });
  await a1.waitFor((e) => e.ev === 'message' && e.body === 'hi desktop', 5000, 'the original');
  const rc = await a2.waitFor((e) => e.ev === 'carbon_received', 5000, 'the received carbon');
  const rcEl = element(rc);
  assert.is(rcEl.attrs.from, 'alice@localhost', 'a carbon comes from the bare JID (§7)');
  const fwd = rcEl.getChild('received', NS_CARBONS)?.getChild('forwarded', NS_FORWARD)?.getChild('message');
  assert.ok(fwd, rcEl.toString());
  assert.is(fwd.getChildText('body'), 'hi desktop');
  assert.is(fwd.attrs.from, 'bob@localhost/work');
  // Sent (§8): the desktop writes to bob; the mobile gets a copy of what was sent.
  await a1.command('message', { to: 'bob@localhost/work', body: 'hi bob', type: 'chat' });
  await bob.waitFor((e) => e.ev === 'message' && e.body === 'hi bob', 5000, "alice's message");
  const sc = await a2.waitFor((e) => e.ev === 'carbon_sent', 5000, 'the sent carbon');
  const sent = element(sc).getChild('sent', NS_CARBONS)?.getChild('forwarded', NS_FORWARD)?.getChild('message');
  assert.ok(sent, String(sc.xml));
  assert.is(sent.getChildText('body'), 'hi bob');
  assert.is(sent.attrs.to, 'bob@localhost/work');
  // The sender itself gets no copy of its own message.
  await new Promise((r) => setTimeout(r, 200));
  assert.not.ok(a1.history.some((e) => e.ev === 'carbon_sent'), 'the sending resource got a carbon');
  // After disabling, the mobile gets no more copies.
  await a2.command('disable_carbons');
  await bob.command('message', { to: 'alice@localhost/desktop', body: 'after disable', type: 'chat' });
  await a1.waitFor((e) => e.ev === 'message' && e.body === 'after disable', 5000, 'the message after disabling');
  await new Promise((r) => setTimeout(r, 200));
  assert.is(a2.history.filter((e) => e.ev === 'carbon_received').length, 1, 'a carbon after disabling');
}));

test.run();
