// The message, offline and carbons modules against a real router, store and
// directory, with sessions whose priority the test sets (what the presence
// module does in a running server).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../../src/store/db.ts';
import { EmbeddedDirectory } from '../../src/store/directory.ts';
import { OfflineStore } from '../../src/store/offline.ts';
import { Router, type Routable } from '../../src/router/router.ts';
import { ServerInfo } from '../../src/modules/server-info.ts';
import { loadModules, type LoadedModules } from '../../src/modules/loader.ts';
import { message, mostAvailable } from '../../src/modules/message.ts';
import { offline, isStorable, addDelay } from '../../src/modules/offline.ts';
import { carbons, isCarbonEligible } from '../../src/modules/carbons.ts';
import { Element, x } from '../../src/xmpp/element.ts';
import { parseElement } from '../../src/xmpp/parser.ts';
import { parseJID, type JID } from '../../src/xmpp/jid.ts';
import { NS } from '../../src/xmpp/ns.ts';
import type { Logger } from '../../src/admin/log.ts';

const D = 'localhost';
const quiet: Logger = { error() {}, warn() {}, info() {}, debug() {}, child: () => quiet };

class FakeSession implements Routable {
  readonly jid: JID;
  priority: number | null = null;
  presence: Element | null = null;
  interested = false;
  carbons = false;
  closed = false;
  readonly data = new Map<string, unknown>();
  readonly got: Element[] = [];
  /** The very objects sent (what an XEP-0198 queue would hold). */
  readonly sent: Element[] = [];
  constructor(jid: string, priority: number | null = null) {
    this.jid = parseJID(jid);
    this.priority = priority;
  }
  send(el: Element): void {
    if (this.closed) return;
    this.sent.push(el);
    this.got.push(parseElement(el.toString()));
  }
  messages(): Element[] {
    return this.got.filter((e) => e.name === 'message' && e.attrs.type !== 'error');
  }
  errors(): Element[] {
    return this.got.filter((e) => e.attrs.type === 'error');
  }
  bodies(): string[] {
    return this.messages().map((e) => e.getChildText('body') ?? '');
  }
}

interface Env {
  dir: string;
  store: Store;
  router: Router;
  modules: LoadedModules;
  add(jid: string, priority?: number | null): FakeSession;
  send(from: FakeSession, stanza: Element): Promise<void>;
  stop(): Promise<void>;
}

async function env(config: Record<string, unknown> = {}): Promise<Env> {
  const dir = await mkdtemp(join(tmpdir(), 'imnode-message-'));
  const store = await Store.open(dir);
  const directory = new EmbeddedDirectory(store, { iterations: 32 });
  for (const u of ['alice', 'bob']) await directory.create(u, 'pw');
  const router = new Router({ domain: D, log: quiet });
  const modules = await loadModules([message, offline, carbons], {
    domain: D, router, store, directory, config, log: quiet, info: new ServerInfo(),
  });
  return {
    dir, store, router, modules,
    add(jid, priority = null) {
      const s = new FakeSession(jid, priority);
      router.addSession(s);
      return s;
    },
    async send(from, stanza) {
      stanza.attrs.from = from.jid.toString();
      await router.routeFromClient(stanza, from);
    },
    async stop() {
      await modules.stop();
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function msg(to: string, body: string | null, type?: string, ...extra: Element[]): Element {
  const attrs: Record<string, string> = { to, id: 'm' + Math.random().toString(36).slice(2) };
  if (type) attrs.type = type;
  return x('message', attrs, body === null ? null : x('body', null, body), ...extra);
}

async function withEnv(fn: (e: Env) => Promise<void>, config?: Record<string, unknown>): Promise<void> {
  const e = await env(config);
  try {
    await fn(e);
  } finally {
    await e.stop();
  }
}

function condition(err: Element): string | undefined {
  return err.getChild('error')?.elements.find((c) => c.getNS() === NS.stanzas)?.getName();
}

async function initialPresence(e: Env, s: FakeSession, priority: number): Promise<void> {
  s.priority = priority;
  await e.router.hooks.emit('initial-presence', s);
}

// ---- pure rules ------------------------------------------------------------------

test('mostAvailable: highest non-negative priority, ties kept, negative and unavailable never', () => {
  const a = new FakeSession('bob@localhost/a', 5);
  const b = new FakeSession('bob@localhost/b', 5);
  const c = new FakeSession('bob@localhost/c', 1);
  const n = new FakeSession('bob@localhost/n', -1);
  const u = new FakeSession('bob@localhost/u', null);
  assert.equal(mostAvailable([c, a, n, b, u]), [a, b]);
  assert.equal(mostAvailable([c, n]), [c]);
  assert.equal(mostAvailable([n, u]), []);
});

test('isStorable follows XEP-0160 §3 and XEP-0334 hints', () => {
  assert.ok(isStorable(msg('b@l', 'hi')));
  assert.ok(isStorable(msg('b@l', 'hi', 'chat')));
  assert.not.ok(isStorable(msg('b@l', 'hi', 'groupchat')));
  assert.not.ok(isStorable(msg('b@l', 'hi', 'headline')));
  assert.not.ok(isStorable(msg('b@l', 'hi', 'error')));
  const state = () => x('composing', { xmlns: 'http://jabber.org/protocol/chatstates' });
  assert.not.ok(isStorable(msg('b@l', null, 'chat', state())), 'chat state only');
  assert.not.ok(isStorable(msg('b@l', null, 'chat', state(), x('thread', null, 't'))), 'chat state and thread');
  assert.ok(isStorable(msg('b@l', null, 'chat', state(), x('store', { xmlns: NS.hints }))), '<store/> wins');
  assert.not.ok(isStorable(msg('b@l', 'hi', 'chat', x('no-store', { xmlns: NS.hints }))), '<no-store/>');
  assert.ok(isStorable(msg('b@l', null, 'chat', x('received', { xmlns: 'urn:xmpp:receipts', id: 'x' }))), 'receipt');
  assert.ok(isStorable(msg('b@l', null, 'chat', x('encrypted', { xmlns: 'eu.siacs.conversations.axolotl' }))), 'OMEMO');
  assert.not.ok(isStorable(msg('b@l', null)), 'empty');
});

test('isCarbonEligible follows XEP-0280 §6 and §9', () => {
  assert.ok(isCarbonEligible(msg('b@l', 'hi', 'chat'), 'received'));
  assert.ok(isCarbonEligible(msg('b@l', null, 'chat', x('active', { xmlns: 'http://jabber.org/protocol/chatstates' })), 'received'));
  assert.ok(isCarbonEligible(msg('b@l', 'hi'), 'received'));
  assert.not.ok(isCarbonEligible(msg('b@l', null), 'received'), 'normal without body');
  assert.not.ok(isCarbonEligible(msg('b@l', 'hi', 'groupchat'), 'received'));
  assert.not.ok(isCarbonEligible(msg('b@l', 'hi', 'headline'), 'received'));
  assert.not.ok(isCarbonEligible(msg('b@l', 'hi', 'error'), 'received'));
  assert.not.ok(isCarbonEligible(msg('b@l', 'hi', 'chat', x('private', { xmlns: NS.carbons })), 'sent'));
  assert.not.ok(isCarbonEligible(msg('b@l', 'hi', 'chat', x('no-copy', { xmlns: NS.hints })), 'sent'));
  assert.not.ok(isCarbonEligible(msg('b@l', 'hi', 'chat', x('x', { xmlns: 'http://jabber.org/protocol/muc#user' })), 'received'));
});

test('addDelay stamps once per server', () => {
  const m = msg('b@l', 'hi');
  addDelay(m, D, new Date('2020-01-02T03:04:05Z'));
  addDelay(m, D);
  const delays = m.getChildren('delay', NS.delay);
  assert.is(delays.length, 1);
  assert.is(delays[0].attrs.from, D);
  assert.is(delays[0].attrs.stamp, '2020-01-02T03:04:05.000Z');
});

// ---- RFC 6121 §8.5.2: bare JID ---------------------------------------------------

test('bare JID: chat goes to the highest priority resource only', () => withEnv(async (e) => {
  const alice = e.add('alice@localhost/a', 0);
  const hi = e.add('bob@localhost/hi', 10);
  const lo = e.add('bob@localhost/lo', 1);
  const neg = e.add('bob@localhost/neg', -1);
  await e.send(alice, msg('bob@localhost', 'one', 'chat'));
  assert.equal(hi.bodies(), ['one']);
  assert.equal(lo.got, []);
  assert.equal(neg.got, []);
  assert.equal(alice.got, []);
}));

test('bare JID: tied priorities all get it; normal like chat', () => withEnv(async (e) => {
  const alice = e.add('alice@localhost/a', 0);
  const a = e.add('bob@localhost/a', 3);
  const b = e.add('bob@localhost/b', 3);
  await e.send(alice, msg('bob@localhost', 'two'));
  assert.equal(a.bodies(), ['two']);
  assert.equal(b.bodies(), ['two']);
}));

test('bare JID: only negative resources means offline storage, delivered at initial presence', () => withEnv(async (e) => {
  const alice = e.add('alice@localhost/a', 0);
  const neg = e.add('bob@localhost/neg', -5);
  const connected = e.add('bob@localhost/c', null);
  await e.send(alice, msg('bob@localhost', 'stored', 'chat'));
  assert.equal(neg.got, []);
  assert.equal(connected.got, []);
  assert.equal(alice.got, [], 'no error: stored');
  assert.is(await new OfflineStore(e.store).count('bob'), 1);
  // A negative initial presence gets nothing (XEP-0160 §2).
  await initialPresence(e, neg, -5);
  assert.equal(neg.got, []);
  await initialPresence(e, connected, 0);
  assert.equal(connected.bodies(), ['stored']);
  const delay = connected.messages()[0].getChild('delay', NS.delay);
  assert.ok(delay);
  assert.is(delay!.attrs.from, D);
  assert.ok(!Number.isNaN(Date.parse(delay!.attrs.stamp)));
  assert.is(await new OfflineStore(e.store).count('bob'), 0);
}));

test('bare JID: unknown user gets service-unavailable and nothing is stored', () => withEnv(async (e) => {
  const alice = e.add('alice@localhost/a', 0);
  await e.send(alice, msg('nobody@localhost', 'hello?', 'chat'));
  assert.is(alice.errors().length, 1);
  assert.is(condition(alice.errors()[0]), 'service-unavailable');
  assert.is(alice.errors()[0].attrs.from, 'nobody@localhost');
  assert.is(await new OfflineStore(e.store).count('nobody'), 0);
}));

test('bare JID: groupchat is refused, online or not', () => withEnv(async (e) => {
  const alice = e.add('alice@localhost/a', 0);
  const bob = e.add('bob@localhost/a', 0);
  await e.send(alice, msg('bob@localhost', 'gc', 'groupchat'));
  assert.equal(bob.got, []);
  assert.is(condition(alice.errors()[0]), 'service-unavailable');
}));

test('bare JID: headline to every non-negative resource; with none, silently dropped', () => withEnv(async (e) => {
  const alice = e.add('alice@localhost/a', 0);
  const a = e.add('bob@localhost/a', 5);
  const b = e.add('bob@localhost/b', 0);
  const n = e.add('bob@localhost/n', -1);
  await e.send(alice, msg('bob@localhost', 'news', 'headline'));
  assert.equal(a.bodies(), ['news']);
  assert.equal(b.bodies(), ['news']);
  assert.equal(n.got, []);
  a.priority = -1;
  b.priority = null;
  await e.send(alice, msg('bob@localhost', 'more news', 'headline'));
  assert.equal(alice.got, []);
  assert.is(await new OfflineStore(e.store).count('bob'), 0);
}));

test('bare JID: error messages are dropped', () => withEnv(async (e) => {
  const alice = e.add('alice@localhost/a', 0);
  const bob = e.add('bob@localhost/a', 0);
  await e.send(alice, msg('bob@localhost', 'err', 'error'));
  assert.equal(bob.got, []);
  assert.equal(alice.got, []);
}));

// ---- RFC 6121 §8.5.3: full JID ---------------------------------------------------

test('full JID: delivered to that resource even without presence or with negative priority', () => withEnv(async (e) => {
  const alice = e.add('alice@localhost/a', 0);
  const top = e.add('bob@localhost/top', 10);
  const quiet = e.add('bob@localhost/quiet', null);
  const neg = e.add('bob@localhost/neg', -1);
  await e.send(alice, msg('bob@localhost/quiet', 'q', 'chat'));
  await e.send(alice, msg('bob@localhost/neg', 'n', 'groupchat'));
  await e.send(alice, msg('bob@localhost/neg', 'h', 'headline'));
  assert.equal(quiet.bodies(), ['q']);
  assert.equal(neg.bodies(), ['n', 'h']);
  assert.equal(top.got, []);
}));

test('full JID, resource gone: chat/normal by bare rules, groupchat refused, headline/error dropped', () => withEnv(async (e) => {
  const alice = e.add('alice@localhost/a', 0);
  const top = e.add('bob@localhost/top', 10);
  await e.send(alice, msg('bob@localhost/gone', 'c', 'chat'));
  await e.send(alice, msg('bob@localhost/gone', 'n'));
  await e.send(alice, msg('bob@localhost/gone', 'h', 'headline'));
  await e.send(alice, msg('bob@localhost/gone', 'e', 'error'));
  assert.equal(top.bodies(), ['c', 'n']);
  assert.equal(alice.got, []);
  await e.send(alice, msg('bob@localhost/gone', 'g', 'groupchat'));
  assert.is(condition(alice.errors()[0]), 'service-unavailable');
}));

test('full JID, nobody online: stored offline; unknown user: service-unavailable', () => withEnv(async (e) => {
  const alice = e.add('alice@localhost/a', 0);
  await e.send(alice, msg('bob@localhost/gone', 'later', 'chat'));
  assert.equal(alice.got, []);
  assert.is(await new OfflineStore(e.store).count('bob'), 1);
  await e.send(alice, msg('nobody@localhost/x', 'x', 'chat'));
  assert.is(condition(alice.errors()[0]), 'service-unavailable');
}));

// ---- RFC 6120 §10.5.1: the server itself ----------------------------------------------

test('messages to the server are not delivered; chat gets service-unavailable', () => withEnv(async (e) => {
  const alice = e.add('alice@localhost/a', 0);
  const bob = e.add('bob@localhost/a', 0);
  await e.send(alice, msg('localhost', 'headline', 'headline'));
  await e.send(alice, msg('localhost', 'normal'));
  assert.equal(alice.got, []);
  await e.send(alice, msg('localhost', 'chat', 'chat'));
  assert.is(condition(alice.errors()[0]), 'service-unavailable');
  assert.equal(bob.got, []);
}));

// ---- XEP-0160 -----------------------------------------------------------------------

test('offline: order kept, delivered once, to the first non-negative resource only', () => withEnv(async (e) => {
  const alice = e.add('alice@localhost/a', 0);
  for (let i = 0; i < 12; i++) await e.send(alice, msg('bob@localhost', `m${i}`, 'chat'));
  const first = e.add('bob@localhost/first', null);
  const second = e.add('bob@localhost/second', null);
  await initialPresence(e, first, 1);
  await initialPresence(e, second, 1);
  assert.equal(first.bodies(), Array.from({ length: 12 }, (_, i) => `m${i}`));
  assert.equal(second.got, []);
}));

test('offline: a full queue answers service-unavailable (XEP-0160 §2)', () => withEnv(async (e) => {
  const alice = e.add('alice@localhost/a', 0);
  await e.send(alice, msg('bob@localhost', '1', 'chat'));
  await e.send(alice, msg('bob@localhost', '2', 'chat'));
  assert.equal(alice.got, []);
  await e.send(alice, msg('bob@localhost', '3', 'chat'));
  assert.is(alice.errors().length, 1);
  assert.is(condition(alice.errors()[0]), 'service-unavailable');
  assert.is(await new OfflineStore(e.store).count('bob'), 2);
}, { 'max-offline-messages': 2 }));

test('offline: what is not stored is refused (RFC 6121 §8.5.2.2.1), <store/> is kept', () => withEnv(async (e) => {
  const alice = e.add('alice@localhost/a', 0);
  const composing = () => x('composing', { xmlns: 'http://jabber.org/protocol/chatstates' });
  await e.send(alice, msg('bob@localhost', null, 'chat', composing()));
  await e.send(alice, msg('bob@localhost', 'secret', 'chat', x('no-store', { xmlns: NS.hints })));
  assert.equal(alice.errors().map(condition), ['service-unavailable', 'service-unavailable']);
  await e.send(alice, msg('bob@localhost', null, 'chat', composing(), x('store', { xmlns: NS.hints })));
  assert.is(alice.errors().length, 2);
  assert.is(await new OfflineStore(e.store).count('bob'), 1);
  // headline and groupchat to an offline user: dropped / refused, never stored.
  await e.send(alice, msg('bob@localhost', 'h', 'headline'));
  await e.send(alice, msg('bob@localhost', 'g', 'groupchat'));
  assert.is(alice.errors().length, 3);
  assert.is(await new OfflineStore(e.store).count('bob'), 1);
}));

test('offline: a message stored while a resource gets its queue still reaches it', () => withEnv(async (e) => {
  const alice = e.add('alice@localhost/a', 0);
  const bob = e.add('bob@localhost/a', null);
  await e.send(alice, msg('bob@localhost', 'before', 'chat'));
  // The message decided "offline" before bob's presence, and is stored after his queue was flushed.
  await initialPresence(e, bob, 0);
  bob.priority = null;
  const late = e.send(alice, msg('bob@localhost', 'late', 'chat'));
  bob.priority = 0;
  await late;
  assert.equal(bob.bodies(), ['before', 'late']);
  assert.is(await new OfflineStore(e.store).count('bob'), 0);
}));

test('offline: a removed account takes its queue with it', () => withEnv(async (e) => {
  const alice = e.add('alice@localhost/a', 0);
  await e.send(alice, msg('bob@localhost', 'gone soon', 'chat'));
  assert.is(await new OfflineStore(e.store).count('bob'), 1);
  await e.router.hooks.emit('account-removed', { username: 'bob' });
  assert.is(await new OfflineStore(e.store).count('bob'), 0);
}));

// ---- XEP-0198 hand-off ----------------------------------------------------------------

test('sm-unacked: re-delivered to the other resource, or stored; never when another holds it', () => withEnv(async (e) => {
  const alice = e.add('alice@localhost/a', 0);
  const a = e.add('bob@localhost/a', 5);
  const b = e.add('bob@localhost/b', 1);
  await e.send(alice, msg('bob@localhost', 'lost?', 'chat'));
  assert.equal(a.bodies(), ['lost?']);
  const unacked = a.sent[0];
  a.closed = true;
  e.router.removeSession(a);
  assert.ok(await e.router.hooks.fire('sm-unacked', { session: a, stanza: unacked }));
  assert.equal(b.bodies(), ['lost?']);
  // b ends too without acknowledging: nobody left, so it is stored.
  b.closed = true;
  e.router.removeSession(b);
  await e.router.hooks.fire('sm-unacked', { session: b, stanza: b.sent[0] });
  const c = e.add('bob@localhost/c', null);
  await initialPresence(e, c, 0);
  assert.equal(c.bodies(), ['lost?']);
  assert.is(c.messages()[0].getChildren('delay', NS.delay).length, 1);
  // Tied resources both got it: one ending unacked changes nothing for the other.
  const t1 = e.add('bob@localhost/t1', 7);
  const t2 = e.add('bob@localhost/t2', 7);
  await e.send(alice, msg('bob@localhost', 'tie', 'chat'));
  t1.closed = true;
  e.router.removeSession(t1);
  await e.router.hooks.fire('sm-unacked', { session: t1, stanza: t1.sent[0] });
  assert.equal(t2.bodies(), ['tie']);
  assert.is(await new OfflineStore(e.store).count('bob'), 0);
  // Headlines and chat states are not handed on.
  const h = msg('bob@localhost/t2', 'h', 'headline');
  assert.ok(await e.router.hooks.fire('sm-unacked', { session: t1, stanza: h }));
  assert.equal(t2.bodies(), ['tie']);
}));

test('sm-unacked: a <no-store/> message with nobody left goes back to its sender as an error', () => withEnv(async (e) => {
  const alice = e.add('alice@localhost/a', 0);
  const bob = e.add('bob@localhost/a', 0);
  await e.send(alice, msg('bob@localhost', 'ephemeral', 'chat', x('no-store', { xmlns: NS.hints })));
  await e.send(alice, msg('bob@localhost', null, 'chat', x('gone', { xmlns: 'http://jabber.org/protocol/chatstates' })));
  assert.is(bob.sent.length, 2);
  bob.closed = true;
  e.router.removeSession(bob);
  for (const st of bob.sent) await e.router.hooks.fire('sm-unacked', { session: bob, stanza: st });
  // The chat state is dropped quietly; the no-store message is refused.
  assert.equal(alice.errors().map(condition), ['service-unavailable']);
  assert.is(alice.errors()[0].getChildText('body'), 'ephemeral');
  assert.is(await new OfflineStore(e.store).count('bob'), 0);
}));

// ---- XEP-0280 ---------------------------------------------------------------------------

async function enableCarbons(e: Env, s: FakeSession, enable = true): Promise<Element> {
  const before = s.got.length;
  await e.send(s, x('iq', { type: 'set', id: 'c' + before }, x(enable ? 'enable' : 'disable', { xmlns: NS.carbons })));
  const reply = s.got[before];
  assert.ok(reply, 'an IQ reply');
  return reply;
}

test('carbons: enable/disable IQ sets the session flag and answers result', () => withEnv(async (e) => {
  const a = e.add('bob@localhost/a', 0);
  const r = await enableCarbons(e, a);
  assert.is(r.attrs.type, 'result');
  assert.ok(a.carbons);
  assert.is((await enableCarbons(e, a)).attrs.type, 'result', 'enabling twice is no error');
  assert.is((await enableCarbons(e, a, false)).attrs.type, 'result');
  assert.not.ok(a.carbons);
  // To another account: not offered.
  const before = a.got.length;
  await e.send(a, x('iq', { type: 'set', id: 'z', to: 'alice@localhost' }, x('enable', { xmlns: NS.carbons })));
  assert.is(a.got[before].attrs.type, 'error');
  assert.not.ok(a.carbons);
}));

test('carbons: received copies to the other enabled resources, sent copies to the sender\'s', () => withEnv(async (e) => {
  const alice = e.add('alice@localhost/a', 0);
  const alice2 = e.add('alice@localhost/b', 0);
  const bobTop = e.add('bob@localhost/top', 5);
  const bobLow = e.add('bob@localhost/low', 1);
  const bobOff = e.add('bob@localhost/off', 1);
  for (const s of [alice, alice2, bobTop, bobLow]) await enableCarbons(e, s);
  for (const s of [alice, alice2, bobTop, bobLow, bobOff]) s.got.length = 0;

  await e.send(alice, msg('bob@localhost', 'hello', 'chat'));
  assert.equal(bobTop.bodies(), ['hello']);
  assert.is(bobTop.messages().length, 1, 'the recipient gets no carbon of its own message');
  assert.equal(bobOff.got, [], 'carbons not enabled');
  const rc = bobLow.messages()[0];
  assert.is(rc.attrs.from, 'bob@localhost');
  assert.is(rc.attrs.to, 'bob@localhost/low');
  assert.is(rc.attrs.type, 'chat');
  const fwd = rc.getChild('received', NS.carbons)?.getChild('forwarded', NS.forward)?.getChild('message');
  assert.ok(fwd);
  assert.is(fwd!.getNS(), NS.client);
  assert.is(fwd!.attrs.from, 'alice@localhost/a');
  assert.is(fwd!.getChildText('body'), 'hello');

  const sc = alice2.messages()[0];
  assert.is(sc.attrs.from, 'alice@localhost');
  assert.is(sc.attrs.to, 'alice@localhost/b');
  const sent = sc.getChild('sent', NS.carbons)?.getChild('forwarded', NS.forward)?.getChild('message');
  assert.is(sent?.attrs.to, 'bob@localhost');
  assert.is(sent?.getChildText('body'), 'hello');
  assert.equal(alice.got, [], 'the sender gets no copy');

  // Full JID: the other enabled resources get received copies too.
  for (const s of [alice, alice2, bobTop, bobLow]) s.got.length = 0;
  await e.send(alice, msg('bob@localhost/low', 'direct', 'chat'));
  assert.equal(bobLow.bodies(), ['direct']);
  assert.ok(bobTop.messages()[0].getChild('received', NS.carbons));
}));

test('carbons: <private/> and <no-copy/> are not copied; private is stripped', () => withEnv(async (e) => {
  const alice = e.add('alice@localhost/a', 0);
  const alice2 = e.add('alice@localhost/b', 0);
  const bob = e.add('bob@localhost/a', 5);
  const bob2 = e.add('bob@localhost/b', 1);
  for (const s of [alice, alice2, bob, bob2]) await enableCarbons(e, s);
  for (const s of [alice, alice2, bob, bob2]) s.got.length = 0;
  await e.send(alice, msg('bob@localhost', 'p', 'chat', x('private', { xmlns: NS.carbons })));
  await e.send(alice, msg('bob@localhost/a', 'nc', 'chat', x('no-copy', { xmlns: NS.hints })));
  assert.equal(bob.bodies(), ['p', 'nc']);
  assert.not.ok(bob.messages()[0].getChild('private', NS.carbons));
  assert.equal(bob2.got, []);
  assert.equal(alice2.got, []);
}));

test.run();
