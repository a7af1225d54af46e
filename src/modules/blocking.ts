// XEP-0191 Blocking Command.
//   §3.2 blocklist retrieval; the resource becomes "interested" in pushes.
//   §3.3 block: stored (one atomic batch, on disk) before the result, pushed to
//        every interested resource; the contact gets unavailable presence from
//        each available resource; afterwards nothing from the contact reaches the
//        user (presence dropped, messages and IQ get/set answered with
//        service-unavailable, IQ results and errors dropped), and the user's own
//        stanzas to the contact bounce with not-acceptable + <blocked/>.
//   §3.4 unblock, §3.5 unblock all: pushes; the contact's and the user's presence
//        are asked for again with probes, so the presence module answers them under
//        the usual subscription rules (RFC 6121 §4.3).
//   §"JID Matching" (XEP-0016 order): full JID, bare JID, domain/resource, domain
//        (and its subdomains).
// Choices where the XEP leaves room or the brief asked otherwise:
//   - Directed presence from the user to a blocked contact is dropped without an
//     error (a presence error would mark the contact as failed in the user's own
//     roster); unsubscribe/unsubscribed still pass, so a roster can be cleaned up.
//   - Stanzas between the user and their own server (its domain, the own account)
//     are never blocked, even when the user blocks the server's domain: the user
//     could not unblock it otherwise.
import { KeyedLock } from '../store/keyed-lock.ts';
import { x } from '../xmpp/element.ts';
import type { Element } from '../xmpp/element.ts';
import { NS } from '../xmpp/ns.ts';
import { StanzaError, errorReply } from '../xmpp/errors.ts';
import { parseJID, InvalidJIDError } from '../xmpp/jid.ts';
import type { JID } from '../xmpp/jid.ts';
import { BlocklistStore } from '../store/blocking.ts';
import type { Routable, StanzaEvent } from '../router/router.ts';
import type { Session } from '../c2s/session.ts';
import type { Module, ModuleContext } from './api.ts';
import type { AccountRemovedEvent } from './register.ts';

/** session.data key: the resource asked for the blocklist, so it gets pushes (§3.2). */
export const BLOCKLIST_INTERESTED = 'blocking:interested';
/** Runs before the delivery modules (message, presence run at 0 or below). */
const PRIORITY = 100;

const EMPTY: ReadonlySet<string> = new Set();

export const blocking: Module = {
  name: 'blocking',
  load(m) {
    const store = new BlocklistStore(m.kv);
    const lists = new BlocklistCache(store);
    m.onStop(() => lists.close());
    // Stanzas this module generates on purpose (unavailable presence to a newly
    // blocked contact, <blocked/> errors "from" the contact): the filters let them through.
    const ours = new WeakSet<Element>();
    m.feature(NS.blocking);

    m.iq('get', 'bare', NS.blocking, async (ev) => {
      if (!sameAccount(ev.from, ev.to)) throw new StanzaError('service-unavailable');
      if (!ev.stanza.elements[0].is('blocklist')) throw new StanzaError('bad-request', 'expected <blocklist/>');
      if (ev.origin) ev.origin.data.set(BLOCKLIST_INTERESTED, true);
      const list = await lists.get(ev.from.local);
      return x('blocklist', { xmlns: NS.blocking }, [...list].sort().map((jid) => x('item', { jid })));
    });

    // A plain hook rather than m.iq: the result must go out before the pushes.
    m.hook<StanzaEvent<Session>>(`iq-set/bare/${NS.blocking}`, async (ev) => {
      if (!sameAccount(ev.from, ev.to)) throw new StanzaError('service-unavailable');
      const cmd = ev.stanza.elements[0];
      const user = ev.from.local;
      if (cmd.is('block')) {
        const items = parseItems(cmd);
        if (items.length === 0) throw new StanzaError('bad-request', '<block/> needs at least one <item/>');
        const added = await lists.block(user, items);
        m.router.sendResult(ev.stanza, null);
        push(m, ev.from.bare, 'block', items);
        for (const jid of added) sendUnavailable(m, ev.from.bare, jid, ours);
      } else if (cmd.is('unblock')) {
        const items = parseItems(cmd);
        const removed = items.length ? await lists.unblock(user, items) : await lists.unblockAll(user);
        m.router.sendResult(ev.stanza, null);
        push(m, ev.from.bare, 'unblock', items);
        for (const jid of removed) probeBothWays(m, ev.from.bare, jid);
      } else {
        throw new StanzaError('bad-request', 'expected <block/> or <unblock/>');
      }
      return true;
    });

    // ---- the filters ------------------------------------------------------------

    for (const kind of ['message', 'presence', 'iq']) {
      m.hook<StanzaEvent>(`out/${kind}`, (ev) => filterOutgoing(m, lists, ours, ev), PRIORITY);
      m.hook<StanzaEvent>(`${kind}/bare`, (ev) => filterIncoming(m, lists, ours, ev), PRIORITY);
      m.hook<StanzaEvent>(`${kind}/full`, (ev) => filterIncoming(m, lists, ours, ev), PRIORITY);
    }
    // Server-generated stanzas from a user to another domain (presence broadcasts).
    m.hook<StanzaEvent>('remote', (ev) => filterIncoming(m, lists, ours, ev), PRIORITY);

    m.hook<AccountRemovedEvent>('account-removed', async ({ username }) => {
      await lists.unblockAll(username);
      lists.forget(username);
    });
  },
};

// ---- matching ---------------------------------------------------------------------

/** Whether `jid` is covered by an entry of the list (XEP-0191 §"JID Matching"). */
export function matches(list: ReadonlySet<string>, jid: JID): boolean {
  if (list.size === 0) return false;
  if (list.has(jid.toString())) return true;
  if (jid.resource !== '' && list.has(jid.toBareString())) return true;
  if (jid.local !== '' && jid.resource !== '' && list.has(`${jid.domain}/${jid.resource}`)) return true;
  // The domain blocks itself, its users and resources, and its subdomains.
  let d = jid.domain;
  for (;;) {
    if (list.has(d)) return true;
    const dot = d.indexOf('.');
    if (dot === -1) return false;
    d = d.slice(dot + 1);
  }
}

function parseItems(cmd: Element): string[] {
  const out = new Set<string>();
  for (const item of cmd.getChildren('item')) {
    const raw = item.attrs.jid;
    if (raw === undefined || raw === '') throw new StanzaError('bad-request', 'an <item/> without a jid');
    try {
      out.add(parseJID(raw).toString());
    } catch (e) {
      if (!(e instanceof InvalidJIDError)) throw e;
      throw new StanzaError('jid-malformed', `not a JID: ${raw.slice(0, 100)}`);
    }
  }
  return [...out];
}

function sameAccount(a: JID, b: JID): boolean {
  return a.local === b.local && a.domain === b.domain;
}

// ---- filters -----------------------------------------------------------------------

type Verdict = boolean | Promise<boolean>;

/** A stanza from a local client: the sender's own blocklist first (§3.3, last rule). */
function filterOutgoing(m: ModuleContext, lists: BlocklistCache, ours: WeakSet<Element>, ev: StanzaEvent): Verdict {
  const { from, to, stanza } = ev;
  if (ours.has(stanza) || sameAccount(from, to) || isOwnServer(m, to)) return false;
  const decide = (own: ReadonlySet<string>, recipient: ReadonlySet<string>): boolean => {
    if (matches(own, to)) return bounceOutgoing(m, stanza, ours);
    // IQ requests to an account are answered by the server for it (iq-get/bare/...)
    // and never reach the bare-JID filter below, so the recipient's list is checked here.
    if (stanza.name === 'iq' && ev.scope === 'bare' && isRequest(stanza) && matches(recipient, from)) {
      m.router.sendError(stanza, new StanzaError('service-unavailable'));
      return true;
    }
    return false;
  };
  const recipientLocal = stanza.name === 'iq' && ev.scope === 'bare' && m.router.isLocalDomain(to.domain);
  const own = lists.peek(from.local);
  const other = recipientLocal ? lists.peek(to.local) : EMPTY;
  if (own && other) return decide(own, other);
  return Promise.all([lists.get(from.local), recipientLocal ? lists.get(to.local) : EMPTY]).then(([a, b]) => decide(a, b));
}

/**
 * A stanza on its way to a local account (or, for 'remote', leaving the domain):
 * the recipient's list (§3.3, inbound rules), and the sender's list when the
 * sender is a local user and the server generated the stanza for them
 * (presence broadcasts and probe answers must not reach a blocked contact).
 */
function filterIncoming(m: ModuleContext, lists: BlocklistCache, ours: WeakSet<Element>, ev: StanzaEvent): Verdict {
  const { from, to, stanza } = ev;
  if (ours.has(stanza) || sameAccount(from, to) || isOwnServer(m, from)) return false;
  const toLocal = to.local !== '' && m.router.isLocalDomain(to.domain);
  const fromLocal = from.local !== '' && m.router.isLocalDomain(from.domain);
  if (!toLocal && !fromLocal) return false;
  const decide = (recipient: ReadonlySet<string>, sender: ReadonlySet<string>): boolean => {
    if (matches(recipient, from)) return dropIncoming(m, stanza);
    if (matches(sender, to) && stanza.attrs.type !== 'error' && !isSubscriptionCleanup(stanza)) return true;
    return false;
  };
  const a = toLocal ? lists.peek(to.local) : EMPTY;
  const b = fromLocal ? lists.peek(from.local) : EMPTY;
  if (a && b) return decide(a, b);
  return Promise.all([toLocal ? lists.get(to.local) : EMPTY, fromLocal ? lists.get(from.local) : EMPTY])
    .then(([ra, rb]) => decide(ra, rb));
}

/** §3.3: the user's own stanza to a blocked contact. */
function bounceOutgoing(m: ModuleContext, stanza: Element, ours: WeakSet<Element>): boolean {
  const type = stanza.attrs.type;
  if (stanza.name === 'presence') {
    return !isSubscriptionCleanup(stanza);
  }
  if (type === 'error' || (stanza.name === 'iq' && type === 'result')) return true;
  // The error comes "from" the blocked contact: marked, or the user's own
  // blocklist would drop it on its way back.
  const reply = errorReply(stanza, new StanzaError('not-acceptable', undefined, {
    type: 'cancel', app: x('blocked', { xmlns: NS.blockingErrors }),
  }));
  ours.add(reply);
  void m.router.route(reply);
  return true;
}

/** §3.3: a stanza from a blocked contact to the user. */
function dropIncoming(m: ModuleContext, stanza: Element): boolean {
  if (stanza.name !== 'presence' && stanza.attrs.type !== 'error' && !(stanza.name === 'iq' && stanza.attrs.type === 'result')) {
    m.router.sendError(stanza, new StanzaError('service-unavailable'));
  }
  return true;
}

function isRequest(stanza: Element): boolean {
  return stanza.attrs.type === 'get' || stanza.attrs.type === 'set';
}

function isSubscriptionCleanup(stanza: Element): boolean {
  return stanza.name === 'presence' && (stanza.attrs.type === 'unsubscribe' || stanza.attrs.type === 'unsubscribed');
}

function isOwnServer(m: ModuleContext, jid: JID): boolean {
  return jid.local === '' && m.router.isLocalDomain(jid.domain);
}

// ---- effects -----------------------------------------------------------------------

function interested(s: Routable): boolean {
  // Local sessions carry module state in session.data.
  const data = (s as { data?: unknown }).data;
  return data instanceof Map && data.get(BLOCKLIST_INTERESTED) === true;
}

/** §3.3/§3.4/§3.5 pushes to every resource that asked for the blocklist. */
function push(m: ModuleContext, bare: JID, name: 'block' | 'unblock', items: readonly string[]): void {
  for (const s of m.router.sessionsOf(bare)) {
    if (s.closed || !interested(s)) continue;
    s.send(x('iq', { type: 'set', id: 'block-push-' + Math.random().toString(36).slice(2, 10), from: bare.toString(), to: s.jid.toString() },
      x(name, { xmlns: NS.blocking }, items.map((jid) => x('item', { jid })))));
  }
}

/** §3.3: the blocked contact sees each of the user's available resources go offline. */
function sendUnavailable(m: ModuleContext, bare: JID, item: string, ours: WeakSet<Element>): void {
  const to = parseJID(item);
  // A whole domain has no one address to tell; without server-to-server links a
  // remote contact cannot be told either (the error would come back to the user).
  if (to.local === '' || !m.router.isLocalDomain(to.domain)) return;
  for (const s of m.router.availableSessionsOf(bare)) {
    const p = x('presence', { type: 'unavailable', from: s.jid.toString(), to: item });
    ours.add(p);
    void m.router.route(p);
  }
}

/**
 * §3.4: the contact gets the user's current presence again, and the user the
 * contact's (dropped while blocked). Probes leave the subscription checks to the
 * presence module (RFC 6121 §4.3.2).
 */
function probeBothWays(m: ModuleContext, bare: JID, item: string): void {
  const contact = parseJID(item);
  if (contact.local === '' || !m.router.isLocalDomain(contact.domain)) return;
  void m.router.route(x('presence', { type: 'probe', from: contact.toBareString(), to: bare.toString() }));
  void m.router.route(x('presence', { type: 'probe', from: bare.toString(), to: contact.toBareString() }));
}

// ---- the blocklists in memory ----------------------------------------------------------

/**
 * Every stanza to or from a local user is checked, so blocklists are kept in
 * memory (bounded; the least recently loaded go first). Changes to one account
 * are serialised on this node, so the cache and the store never disagree; a
 * change another node of the pool made drops the account's list, and a load
 * that was running when it came is not cached.
 */
export class BlocklistCache {
  static readonly MAX = 10_000;
  readonly #store: BlocklistStore;
  readonly #lists = new Map<string, Set<string>>();
  readonly #loading = new Map<string, Promise<Set<string>>>();
  readonly #locks = new KeyedLock();
  /** Per account, bumped by remote changes. */
  readonly #gen = new Map<string, number>();
  readonly #unsubscribe: () => void;

  constructor(store: BlocklistStore) {
    this.#store = store;
    this.#unsubscribe = store.onRemoteChange((user) => {
      this.#gen.set(user, (this.#gen.get(user) ?? 0) + 1);
      this.#lists.delete(user);
      this.#loading.delete(user);
    });
  }

  close(): void {
    this.#unsubscribe();
  }

  peek(user: string): ReadonlySet<string> | undefined {
    return this.#lists.get(user);
  }

  get(user: string): Promise<Set<string>> {
    const hit = this.#lists.get(user);
    if (hit) return Promise.resolve(hit);
    let p = this.#loading.get(user);
    if (!p) {
      const gen = this.#gen.get(user);
      const loading: Promise<Set<string>> = this.#store.list(user).then((jids) => {
        const set = new Set(jids);
        if (this.#loading.get(user) === loading) this.#loading.delete(user);
        // Read before another node's change arrived: usable now, not worth keeping.
        if (this.#gen.get(user) !== gen) return set;
        if (this.#lists.size >= BlocklistCache.MAX) this.#evict();
        this.#lists.set(user, set);
        return set;
      }, (e: unknown) => {
        if (this.#loading.get(user) === loading) this.#loading.delete(user);
        throw e;
      });
      this.#loading.set(user, (p = loading));
    }
    return p;
  }

  forget(user: string): void {
    this.#lists.delete(user);
  }

  /** Returns the JIDs that were not blocked before. */
  block(user: string, jids: readonly string[]): Promise<string[]> {
    return this.#locks.run(user, async () => {
      const set = await this.get(user);
      const added = jids.filter((j) => !set.has(j));
      await this.#store.add(user, added);
      for (const j of added) set.add(j);
      return added;
    });
  }

  /** Returns the JIDs that were blocked before. */
  unblock(user: string, jids: readonly string[]): Promise<string[]> {
    return this.#locks.run(user, async () => {
      const set = await this.get(user);
      const removed = jids.filter((j) => set.has(j));
      await this.#store.remove(user, removed);
      for (const j of removed) set.delete(j);
      return removed;
    });
  }

  unblockAll(user: string): Promise<string[]> {
    return this.#locks.run(user, async () => {
      const set = await this.get(user);
      const removed = await this.#store.clear(user);
      set.clear();
      return removed;
    });
  }

  #evict(): void {
    let n = BlocklistCache.MAX / 10;
    for (const key of this.#lists.keys()) {
      this.#lists.delete(key);
      if (--n === 0) break;
    }
  }
}
