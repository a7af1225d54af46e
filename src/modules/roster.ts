// RFC 6121 §2 roster management: §2.1.3 roster get (which makes a resource
// "interested"), §2.1.5 roster set, §2.1.6 roster pushes to every interested
// resource, §2.3-§2.5 adding, updating and deleting items with their error
// cases, §2.5.2 the unsubscribe/unsubscribed a deletion implies, and §2.6
// roster versioning (XEP-0237) with its urn:xmpp:features:rosterver stream
// feature. Also the subscription state machine of §3 as the tables of Appendix
// A (A.2 outbound, A.3 inbound) in pure functions, which the presence module
// applies.
import { randomBytes } from 'node:crypto';
import { Element, x } from '../xmpp/element.ts';
import { NS } from '../xmpp/ns.ts';
import { StanzaError } from '../xmpp/errors.ts';
import { JID, parseJID, InvalidJIDError } from '../xmpp/jid.ts';
import type { Router, StanzaEvent, Routable } from '../router/router.ts';
import type { Session } from '../c2s/session.ts';
import { declareOptions, type Config } from '../admin/options.ts';
import { rosterStore, type RosterChange, type RosterItem, type Subscription } from '../store/roster.ts';
import type { Module } from './api.ts';
import type { AccountRemovedEvent } from './register.ts';

declareOptions([
  { name: 'max-roster-items', type: 'int', default: 1000, min: 1, max: 1_000_000, group: 'roster', placeholder: 'N',
    description: 'Most items one roster may hold; adding more (roster set or subscription request) is refused with not-allowed.' },
]);

/** §2.3.3: server-configured limits on the name and on each group name (characters). */
export const MAX_NAME_LENGTH = 1024;
export const MAX_GROUP_LENGTH = 1024;

export function maxRosterItems(config: Config): number {
  const v = config['max-roster-items'];
  return typeof v === 'number' ? v : 1000;
}

// ---- Appendix A: the subscription state machine -----------------------------------

/**
 * The subscription state of one contact as §3 and Appendix A name it: the
 * subscription, pending out (ask="subscribe"), pending in (a stored request),
 * and the pre-approval flag of §3.4.
 */
export interface SubState {
  subscription: Subscription;
  pendingOut: boolean;
  pendingIn: boolean;
  approved: boolean;
}

export type SubscriptionType = 'subscribe' | 'subscribed' | 'unsubscribe' | 'unsubscribed';

export interface Transition {
  state: SubState;
  /** Outbound: route the stanza to the contact. Inbound: deliver it to the user's available resources. */
  forward: boolean;
  /** Inbound subscribe only: answer "subscribed" on the user's behalf (already subscribed, or pre-approved). */
  autoReply: boolean;
}

export function hasTo(s: Subscription): boolean {
  return s === 'to' || s === 'both';
}

export function hasFrom(s: Subscription): boolean {
  return s === 'from' || s === 'both';
}

function compose(to: boolean, from: boolean): Subscription {
  return to ? (from ? 'both' : 'to') : (from ? 'from' : 'none');
}

/** Pending out means nothing once subscribed to the contact, nor pending in once the contact is subscribed. */
export function normalize(s: SubState): SubState {
  return {
    subscription: s.subscription,
    pendingOut: s.pendingOut && !hasTo(s.subscription),
    pendingIn: s.pendingIn && !hasFrom(s.subscription),
    approved: s.approved && !hasFrom(s.subscription),
  };
}

/** Appendix A.1 state names ("None + Pending Out", ...). */
export function stateName(s: SubState): string {
  const n = normalize(s);
  const base = { none: 'None', to: 'To', from: 'From', both: 'Both' }[n.subscription];
  const pending = n.pendingOut && n.pendingIn ? 'Pending Out/In' : n.pendingOut ? 'Pending Out' : n.pendingIn ? 'Pending In' : '';
  return pending ? `${base} + ${pending}` : base;
}

/** A.2: the user's server on a subscription stanza the user sends. */
export function outbound(type: SubscriptionType, state: SubState): Transition {
  const s = normalize(state);
  const to = hasTo(s.subscription);
  const from = hasFrom(s.subscription);
  const same = { state: s, forward: false, autoReply: false };
  switch (type) {
    case 'subscribe':
      // A.2.1: always routed; "Pending Out" unless already subscribed.
      return { state: normalize({ ...s, pendingOut: !to }), forward: true, autoReply: false };
    case 'unsubscribe':
      // A.2.2: always routed; cancels the subscription to the contact and any pending request.
      return { state: { ...s, subscription: compose(false, from), pendingOut: false }, forward: true, autoReply: false };
    case 'subscribed':
      // A.2.3: approves a pending request; without one it is a pre-approval (§3.4), never routed.
      if (s.pendingIn) return { state: { ...s, subscription: compose(to, true), pendingIn: false, approved: false }, forward: true, autoReply: false };
      if (from) return same;
      return { ...same, state: { ...s, approved: true } };
    case 'unsubscribed':
      // A.2.4: denies a pending request or cancels the contact's subscription; otherwise only cancels a pre-approval.
      if (s.pendingIn || from) return { state: { ...s, subscription: compose(to, false), pendingIn: false, approved: false }, forward: true, autoReply: false };
      return { ...same, state: { ...s, approved: false } };
  }
}

/** A.3: the contact's server on a subscription stanza addressed to its user. */
export function inbound(type: SubscriptionType, state: SubState): Transition {
  const s = normalize(state);
  const to = hasTo(s.subscription);
  const from = hasFrom(s.subscription);
  const same = { state: s, forward: false, autoReply: false };
  switch (type) {
    case 'subscribe':
      // A.3.1: already subscribed: the server answers for the user.
      if (from) return { ...same, autoReply: true };
      if (s.pendingIn) return same;
      // §3.4.2: a pre-approved request is approved at once.
      if (s.approved) return { state: { ...s, subscription: compose(to, true), approved: false }, forward: false, autoReply: true };
      return { state: { ...s, pendingIn: true }, forward: true, autoReply: false };
    case 'unsubscribe':
      // A.3.2
      if (s.pendingIn || from) return { state: { ...s, subscription: compose(to, false), pendingIn: false }, forward: true, autoReply: false };
      return same;
    case 'subscribed':
      // A.3.3: only an answer to a request of ours counts.
      if (s.pendingOut) return { state: { ...s, subscription: compose(true, from), pendingOut: false }, forward: true, autoReply: false };
      return same;
    case 'unsubscribed':
      // A.3.4
      if (s.pendingOut || to) return { state: { ...s, subscription: compose(false, from), pendingOut: false }, forward: true, autoReply: false };
      return same;
  }
}

/** The state of a contact from its roster item (if any) and whether a request from it is pending. */
export function stateOf(item: RosterItem | undefined, pendingIn: boolean): SubState {
  return normalize({
    subscription: item?.subscription ?? 'none',
    pendingOut: item?.ask === 'subscribe',
    pendingIn,
    approved: item?.approved === true,
  });
}

/**
 * The roster item for a new state, or undefined when there is none to keep: a
 * request that is only pending in does not put the contact on the roster.
 */
export function itemFor(jid: string, old: RosterItem | undefined, s: SubState): RosterItem | undefined {
  if (!old && s.subscription === 'none' && !s.pendingOut && !s.approved) return undefined;
  const item: RosterItem = old ? { ...old, groups: [...old.groups] } : { jid, subscription: 'none', groups: [] };
  item.subscription = s.subscription;
  if (s.pendingOut) item.ask = 'subscribe';
  else delete item.ask;
  if (s.approved) item.approved = true;
  else delete item.approved;
  return item;
}

// ---- roster items on the wire ---------------------------------------------------------

export function itemElement(item: RosterItem): Element {
  const attrs: Record<string, string> = { jid: item.jid };
  if (item.name) attrs.name = item.name;
  attrs.subscription = item.subscription;
  if (item.ask) attrs.ask = item.ask;
  if (item.approved) attrs.approved = 'true';
  return x('item', attrs, item.groups.map((g) => x('group', null, g)));
}

let pushCounter = 0;
const pushPrefix = randomBytes(4).toString('hex');

function pushStanza(to: JID, change: RosterChange): Element {
  const item = change.item ? itemElement(change.item) : x('item', { jid: change.jid, subscription: 'remove' });
  // §2.1.6: no 'from' (it is implicitly the user's bare JID).
  return x('iq', { type: 'set', id: `push-${pushPrefix}-${++pushCounter}`, to: to.toString() },
    x('query', { xmlns: NS.roster, ver: change.ver }, item));
}

/** §2.1.6: each change to every interested resource of the user, in version order. */
export function pushChanges(router: Router, user: JID, changes: RosterChange[], only?: Routable): void {
  if (!changes.length) return;
  const targets = only ? [only] : router.sessionsOf(user.bare).filter((s) => s.interested && !s.closed);
  for (const c of changes) for (const s of targets) s.send(pushStanza(s.jid, c));
}

// ---- the module -----------------------------------------------------------------------

function ownSession(ev: StanzaEvent): Session {
  // §2.3.3: only the user's own resources may read or change the roster.
  if (!ev.origin || ev.to.toBareString() !== ev.from.toBareString()) {
    throw new StanzaError('forbidden', 'a roster belongs to its user alone');
  }
  return ev.origin as Session;
}

function rosterQuery(stanza: Element): Element {
  const q = stanza.elements[0];
  if (!q || !q.is('query', NS.roster)) throw new StanzaError('bad-request', 'expected <query xmlns="jabber:iq:roster"/>');
  return q;
}

interface ParsedSet {
  jid: JID;
  remove: boolean;
  name: string | undefined;
  groups: string[];
}

/** §2.1.5 and §2.3.3: one item; 'subscription' other than remove, 'ask' and 'approved' are ignored. */
export function parseRosterSet(q: Element): ParsedSet {
  const items = q.elements;
  if (items.length !== 1 || !items[0].is('item', NS.roster)) throw new StanzaError('bad-request', 'a roster set carries exactly one <item/>');
  const el = items[0];
  const raw = el.attrs.jid;
  if (raw === undefined || raw === '') throw new StanzaError('bad-request', 'the item has no jid');
  let jid: JID;
  try {
    jid = parseJID(raw);
  } catch (e) {
    if (e instanceof InvalidJIDError) throw new StanzaError('jid-malformed', 'the item jid is not a valid JID');
    throw e;
  }
  // A full JID is not forbidden (§2.1.2.3), though subscriptions, being between
  // bare JIDs (§3), never attach to such an item. The user's own JID is allowed too.
  const remove = el.attrs.subscription === 'remove';
  const name = el.attrs.name;
  if (name !== undefined && [...name].length > MAX_NAME_LENGTH) throw new StanzaError('not-acceptable', `the name is longer than ${MAX_NAME_LENGTH} characters`);
  const groups: string[] = [];
  for (const g of el.elements) {
    if (!g.is('group', NS.roster)) continue;
    const text = g.text();
    if (text.trim() === '') throw new StanzaError('not-acceptable', 'an empty group name');
    if ([...text].length > MAX_GROUP_LENGTH) throw new StanzaError('not-acceptable', `a group name is longer than ${MAX_GROUP_LENGTH} characters`);
    if (groups.includes(text)) throw new StanzaError('bad-request', `the group "${text}" is given twice`);
    groups.push(text);
  }
  return { jid, remove, name: name === '' ? undefined : name, groups };
}

export const roster: Module = {
  name: 'roster',
  load(m) {
    const router = m.router;
    const rosters = rosterStore(m.kv);
    const maxItems = maxRosterItems(m.config);

    m.feature(NS.roster);
    // §2.6.1: versioning is offered once the client is authenticated.
    m.streamFeature((s) => (s.authenticated ? x('ver', { xmlns: NS.rosterver }) : null));

    // Hooked directly rather than through m.iq: with versioning the result must
    // go out before the pushes that follow it (§2.6.3).
    m.hook<StanzaEvent>(`iq-get/bare/${NS.roster}`, async (ev) => {
      const session = ownSession(ev);
      const q = rosterQuery(ev.stanza);
      session.interested = true;
      const r = await rosters.get(session.username);
      const ver = q.attrs.ver;
      if (ver !== undefined && ver !== '') {
        // §2.6.3: the client's copy is current, or only some changes are missing.
        const changes = r.changesSince(ver);
        if (changes) {
          router.sendResult(ev.stanza, null);
          pushChanges(router, session.jid, changes, session);
          return true;
        }
      }
      const result = x('query', ver !== undefined ? { xmlns: NS.roster, ver: r.version } : { xmlns: NS.roster },
        r.items().map(itemElement));
      router.sendResult(ev.stanza, result);
      return true;
    });

    m.hook<StanzaEvent>(`iq-set/bare/${NS.roster}`, async (ev) => {
      const session = ownSession(ev);
      const set = parseRosterSet(rosterQuery(ev.stanza));
      const contact = set.jid.toString();
      if (set.remove) {
        // §2.5
        const { value: old, changes } = await rosters.update(session.username, (tx) => {
          const item = tx.get(contact);
          if (!item) throw new StanzaError('item-not-found', 'no such roster item');
          const pendingIn = tx.pending(contact) !== undefined;
          tx.remove(contact);
          if (pendingIn) tx.deletePending(contact);
          return { item, pendingIn };
        });
        router.sendResult(ev.stanza, null);
        pushChanges(router, session.jid, changes);
        await cancelSubscriptions(router, session.jid.bare, set.jid, old.item, old.pendingIn);
        return true;
      }
      // §2.3 adding and §2.4 updating: only the name and the groups are the client's.
      const { changes, roster: after } = await rosters.update(session.username, (tx) => {
        const old = tx.get(contact);
        if (!old && tx.size >= maxItems) throw new StanzaError('not-allowed', `a roster holds at most ${maxItems} items`);
        const item: RosterItem = old ?? { jid: contact, subscription: 'none', groups: [] };
        tx.put({ ...item, name: set.name, groups: set.groups });
      });
      router.sendResult(ev.stanza, null);
      if (changes.length) {
        pushChanges(router, session.jid, changes);
      } else {
        // Nothing changed, but the resources still learn the outcome (§2.4.2).
        const item = after.get(contact);
        if (item) pushChanges(router, session.jid, [{ jid: contact, item, ver: after.version }]);
      }
      return true;
    });

    // XEP-0077 §3.2: a deleted account leaves no subscriptions behind. Its
    // sessions are gone already, so no unavailable presence is owed.
    m.hook<AccountRemovedEvent>('account-removed', async ({ username }) => {
      const r = await rosters.get(username);
      const user = new JID(username, m.domain);
      for (const item of r.items()) {
        await cancelSubscriptions(router, user, parseJID(item.jid), item, r.pending(item.jid) !== undefined);
      }
      for (const req of r.pendingRequests()) {
        if (!r.get(req.jid)) await router.route(x('presence', { type: 'unsubscribed', from: user.toString(), to: req.jid }));
      }
      await rosters.clear(username);
    });
  },
};

/**
 * §2.5.2: a deleted item takes its subscriptions with it: "unsubscribe" if the
 * user was subscribed to the contact (or asked to be), "unsubscribed" if the
 * contact was subscribed to the user (or asked to be), and then the contact no
 * longer sees the user's resources as available (§3.2.2).
 */
async function cancelSubscriptions(router: Router, user: JID, contact: JID, item: RosterItem, pendingIn: boolean): Promise<void> {
  const from = user.toString();
  const to = contact.toString();
  if (hasTo(item.subscription) || item.ask === 'subscribe') {
    await router.route(x('presence', { type: 'unsubscribe', from, to }));
  }
  if (hasFrom(item.subscription) || pendingIn) {
    await router.route(x('presence', { type: 'unsubscribed', from, to }));
  }
  if (hasFrom(item.subscription)) {
    for (const s of router.availableSessionsOf(user)) {
      await router.route(x('presence', { type: 'unavailable', from: s.jid.toString(), to }));
    }
  }
}
