// RFC 6121 §3 managing presence subscriptions and §4 exchanging presence.
// §3.1-§3.3 subscribe, subscribed, unsubscribe, unsubscribed on both sides
// (the user's server on outbound stanzas, the contact's server on inbound ones)
// through the state tables of Appendix A (in roster.ts); §3.1.3 requests kept
// while the contact has no available resource and redelivered at each initial
// presence; §3.4 pre-approval with the urn:xmpp:features:pre-approval stream
// feature. §4.2 initial presence: broadcast to contacts with a subscription
// from the user and to the user's own available resources, probes (§4.3) to
// contacts the user is subscribed to, answered with each available resource's
// last presence; §4.4 updates; §4.5 unavailable presence, sent for the client
// when its session ends without one; §4.6 directed presence, remembered so
// that its recipients learn when the resource goes away; §4.7.2.3 priority.
// Also RFC 6121 §8.5.2.1.1: presence to a bare JID reaches every available resource.
import { Element, x } from '../xmpp/element.ts';
import { NS } from '../xmpp/ns.ts';
import { StanzaError, toStanzaError } from '../xmpp/errors.ts';
import { parseElement } from '../xmpp/parser.ts';
import { tryParseJID, type JID } from '../xmpp/jid.ts';
import type { StanzaEvent } from '../router/router.ts';
import type { Session } from '../c2s/session.ts';
import type { SessionClosedEvent } from '../c2s/server.ts';
import type { RemoteAvailableEvent, RemoteFailedEvent } from '../router/pool-routing.ts';
import { rosterStore, type Roster } from '../store/roster.ts';
import type { Module } from './api.ts';
import {
  hasFrom, hasTo, inbound, itemFor, maxRosterItems, outbound, pushChanges, stateOf, type SubscriptionType,
} from './roster.ts';

const SUBSCRIPTION_TYPES = new Set<string>(['subscribe', 'subscribed', 'unsubscribe', 'unsubscribed']);
const PRESENCE_TYPES = new Set<string>([...SUBSCRIPTION_TYPES, 'probe', 'unavailable', 'error']);
const SHOW_VALUES = new Set(['away', 'chat', 'dnd', 'xa']);
/** session.data key: JIDs this resource sent directed available presence to (§4.6). */
const DIRECTED = 'presence.directed';
const LAST_UNAVAILABLE_MAX = 100_000;

function isSubscription(type: string | undefined): type is SubscriptionType {
  return type !== undefined && SUBSCRIPTION_TYPES.has(type);
}

/** Children of a client stanza in the content namespace (jabber:client, or inherited). */
function contentChildren(stanza: Element, name: string): Element[] {
  return stanza.getChildren(name).filter((c) => {
    const ns = c.getNS();
    return ns === '' || ns === NS.client;
  });
}

/**
 * §4.7.2.3: the priority of an available presence, an integer from -128 to 127,
 * 0 when absent. A malformed one (or a bad <show/>, §4.7.2.1) is a bad-request.
 */
export function parsePriority(stanza: Element): number {
  const shows = contentChildren(stanza, 'show');
  if (shows.length > 1) throw new StanzaError('bad-request', 'more than one <show/>');
  if (shows.length === 1 && !SHOW_VALUES.has(shows[0].text().trim())) {
    throw new StanzaError('bad-request', '<show/> must be away, chat, dnd or xa');
  }
  const prios = contentChildren(stanza, 'priority');
  if (prios.length === 0) return 0;
  if (prios.length > 1) throw new StanzaError('bad-request', 'more than one <priority/>');
  const text = prios[0].text().trim();
  const n = /^[+-]?\d{1,3}$/.test(text) ? Number(text) : NaN;
  if (!(n >= -128 && n <= 127)) throw new StanzaError('bad-request', '<priority/> must be an integer from -128 to 127');
  return n | 0;
}

function directedOf(session: Session): Set<string> {
  let s = session.data.get(DIRECTED) as Set<string> | undefined;
  if (!s) session.data.set(DIRECTED, (s = new Set()));
  return s;
}

function takeDirected(session: Session): Set<string> {
  const s = (session.data.get(DIRECTED) as Set<string> | undefined) ?? new Set<string>();
  session.data.delete(DIRECTED);
  return s;
}

/** Contacts to broadcast to: a subscription from them (§4.2.2), not the user's own JID (covered by its resources). */
function subscribers(roster: Roster, user: JID): string[] {
  const own = user.toBareString();
  return roster.items().filter((i) => hasFrom(i.subscription) && i.jid !== own).map((i) => i.jid);
}

export const presence: Module = {
  name: 'presence',
  load(m) {
    const router = m.router;
    const rosters = rosterStore(m.kv);
    const maxItems = maxRosterItems(m.config);
    /** §4.3.2 option (a): the last unavailable presence of users with no available resource. */
    const lastUnavailable = new Map<string, Element>();

    // §3.4: pre-approvals are supported.
    m.streamFeature((s) => (s.authenticated ? x('sub', { xmlns: NS.presSub }) : null));

    const fail = (stanza: Element, e: unknown): true => {
      if (!(e instanceof StanzaError)) m.log.error('presence handling failed:', e);
      router.sendError(stanza, toStanzaError(e));
      return true;
    };

    /** Routing that need not be waited for; a failure is logged, never an unhandled rejection. */
    const background = (p: void | Promise<void>): void => {
      if (p) p.catch((e: unknown) => m.log.error('routing presence failed:', e));
    };

    /** A copy of `stanza` to each available resource of a local user (RFC 6121 §8.5.2.1.1). */
    const deliverToAvailable = (user: JID, stanza: Element): void => {
      for (const s of router.availableSessionsOf(user.bare)) s.send(stanza.clone());
    };

    const routeCopy = async (stanza: Element, to: string): Promise<void> => {
      const copy = stanza.clone();
      copy.attrs.to = to;
      await router.route(copy);
    };

    /** §3.1.5, §3.4: once a contact may see the user, it gets each available resource's presence. */
    const sendPresenceTo = async (user: JID, to: string): Promise<void> => {
      for (const s of router.availableSessionsOf(user.bare)) {
        if (s.presence) await routeCopy(s.presence, to);
      }
    };

    /** §3.2.2, §3.3.3: once a contact may no longer see the user, its resources go unavailable for it. */
    const sendUnavailableTo = async (user: JID, to: string): Promise<void> => {
      for (const s of router.availableSessionsOf(user.bare)) {
        await router.route(x('presence', { type: 'unavailable', from: s.jid.toString(), to }));
      }
    };

    const rememberUnavailable = (user: JID, stanza: Element): void => {
      const key = user.toBareString();
      const copy = stanza.clone();
      delete copy.attrs.to;
      lastUnavailable.delete(key);
      if (lastUnavailable.size >= LAST_UNAVAILABLE_MAX) {
        const oldest = lastUnavailable.keys().next();
        if (!oldest.done) lastUnavailable.delete(oldest.value);
      }
      lastUnavailable.set(key, copy);
    };

    // ---- §4.2, §4.4: available presence from the client ------------------------------

    const available = async (session: Session, stanza: Element): Promise<boolean> => {
      let priority: number;
      try {
        priority = parsePriority(stanza);
      } catch (e) {
        return fail(stanza, e);
      }
      const initial = session.priority === null;
      session.priority = priority;
      session.presence = stanza;
      const roster = await rosters.get(session.username);
      // The session may have ended meanwhile; its unavailable presence has gone out then.
      if (session.closed || session.presence !== stanza) return true;
      for (const contact of subscribers(roster, session.jid)) background(routeCopy(stanza, contact));
      // §4.2.2: to all of the user's available resources, this one included.
      for (const s of router.availableSessionsOf(session.jid.bare)) {
        const copy = stanza.clone();
        copy.attrs.to = s.jid.toString();
        s.send(copy);
      }
      if (!initial) return true;
      // The new resource learns about the user's other resources (implicit self-subscription).
      for (const s of router.availableSessionsOf(session.jid.bare)) {
        if (s === session || !s.presence) continue;
        const copy = s.presence.clone();
        copy.attrs.to = session.jid.toString();
        session.send(copy);
      }
      // §4.3.1: probes from the user's bare JID to the contacts it is subscribed to.
      const from = session.jid.toBareString();
      for (const item of roster.items()) {
        if (hasTo(item.subscription) && item.jid !== from) background(router.route(x('presence', { type: 'probe', from, to: item.jid })));
      }
      // §3.1.3: requests that arrived while the user was away.
      for (const req of roster.pendingRequests()) {
        try {
          session.send(parseElement(req.stanza));
        } catch (e) {
          m.log.warn(`dropping an unreadable stored subscription request for ${session.jid.bare}:`, String(e));
        }
      }
      await router.hooks.emit('initial-presence', session);
      return true;
    };

    // ---- §4.5: unavailable presence ------------------------------------------------------

    const goUnavailable = async (session: Session, stanza: Element, directed: Set<string>, wasAvailable: boolean): Promise<void> => {
      const user = session.jid;
      const roster = await rosters.get(session.username);
      const reached = new Set<string>([user.toBareString()]);
      if (wasAvailable) {
        for (const contact of subscribers(roster, user)) {
          reached.add(contact);
          await routeCopy(stanza, contact);
        }
        const others = router.availableSessionsOf(user.bare).filter((s) => s !== session);
        for (const s of others) {
          const copy = stanza.clone();
          copy.attrs.to = s.jid.toString();
          s.send(copy);
        }
        if (others.length === 0) rememberUnavailable(user, stanza);
      }
      // §4.6.3: whoever got directed presence and not the broadcast.
      for (const target of directed) {
        const jid = tryParseJID(target);
        if (!jid || reached.has(jid.toBareString())) continue;
        await routeCopy(stanza, target);
      }
    };

    const unavailable = async (session: Session, stanza: Element): Promise<boolean> => {
      const wasAvailable = session.priority !== null;
      session.priority = null;
      session.presence = null;
      const directed = takeDirected(session);
      if (!wasAvailable && directed.size === 0) return true;
      await goUnavailable(session, stanza, directed, wasAvailable);
      return true;
    };

    m.hook<StanzaEvent>('presence/broadcast', (ev) => {
      const session = ev.origin as Session;
      const stanza = ev.stanza;
      const type = stanza.attrs.type;
      if (type === undefined) return available(session, stanza);
      if (type === 'unavailable') return unavailable(session, stanza);
      if (type === 'error') return true;
      if (!PRESENCE_TYPES.has(type)) return fail(stanza, new StanzaError('bad-request', `unknown presence type '${type}'`));
      return fail(stanza, new StanzaError('bad-request', `a presence of type '${type}' needs a 'to' address`));
    });

    // The session ended without unavailable presence (§4.5.2 says the server sends it then).
    m.hook<SessionClosedEvent>('session-closed', async ({ session }) => {
      const wasAvailable = session.priority !== null;
      const directed = takeDirected(session);
      session.priority = null;
      session.presence = null;
      if (!wasAvailable && directed.size === 0) return;
      await goUnavailable(session, x('presence', { type: 'unavailable', from: session.jid.toString() }), directed, wasAvailable);
    });

    // ---- what the client sends with a 'to': the user's server's side ----------------------

    // Low priority: blocking and carbons look at outgoing presence first.
    m.hook<StanzaEvent>('out/presence', (ev) => {
      const session = ev.origin as Session | null;
      if (!session) return false;
      const stanza = ev.stanza;
      const type = stanza.attrs.type;
      if (type !== undefined && !PRESENCE_TYPES.has(type)) return fail(stanza, new StanzaError('bad-request', `unknown presence type '${type}'`));
      if (isSubscription(type)) {
        return outboundSubscription(session, stanza, type, ev.to).catch((e: unknown) => fail(stanza, e));
      }
      if (type === undefined) {
        try {
          parsePriority(stanza);
        } catch (e) {
          return fail(stanza, e);
        }
        // §4.6.2: remember it, unless it is the user's own account.
        if (ev.to.toBareString() !== session.jid.toBareString()) directedOf(session).add(ev.to.toString());
      } else if (type === 'unavailable') {
        directedOf(session).delete(ev.to.toString());
      }
      return false;
    }, -100);

    /** A.2 and §3.1.2, §3.2.2, §3.3.2, §3.4.1: the user's server on a subscription stanza from its user. */
    const outboundSubscription = async (session: Session, stanza: Element, type: SubscriptionType, target: JID): Promise<boolean> => {
      const user = session.jid.bare;
      const contact = target.toBareString();
      const { value, changes } = await rosters.update(session.username, (tx) => {
        const item = tx.get(contact);
        const pending = tx.pending(contact);
        const before = stateOf(item, pending !== undefined);
        const t = outbound(type, before);
        const next = itemFor(contact, item, t.state);
        if (next && !item && tx.size >= maxItems) throw new StanzaError('not-allowed', `a roster holds at most ${maxItems} items`);
        if (next) tx.put(next);
        if (pending && !t.state.pendingIn) tx.deletePending(contact);
        return { t, before };
      });
      pushChanges(router, user, changes);
      if (!value.t.forward) return true;
      // §3.1.2: stamped with the user's bare JID, addressed to the contact's bare JID.
      const out = stanza.clone();
      out.attrs.from = user.toString();
      out.attrs.to = contact;
      await router.route(out);
      if (type === 'subscribed') await sendPresenceTo(user, contact);
      else if (type === 'unsubscribed' && hasFrom(value.before.subscription)) await sendUnavailableTo(user, contact);
      return true;
    };

    // ---- what arrives for a local user: the contact's server's side --------------------------

    /** A.3 and §3.1.3, §3.1.6, §3.2.3, §3.3.3, §3.4.2. */
    const inboundSubscription = async (stanza: Element, type: SubscriptionType, from: JID, user: JID): Promise<boolean> => {
      // §8.5.1: subscription stanzas for an account that does not exist are ignored.
      if (!(await m.directory.exists(user.local))) return true;
      const contact = from.toBareString();
      const { value, changes } = await rosters.update(user.local, (tx) => {
        const item = tx.get(contact);
        const pending = tx.pending(contact);
        const before = stateOf(item, pending !== undefined);
        const t = inbound(type, before);
        const next = itemFor(contact, item, t.state);
        if (next) tx.put(next);
        if (t.state.pendingIn && !pending) tx.setPending({ jid: contact, stanza: stanza.toString(), time: Date.now() });
        else if (!t.state.pendingIn && pending) tx.deletePending(contact);
        return { t, before };
      });
      pushChanges(router, user, changes);
      const { t, before } = value;
      if (t.autoReply) {
        await router.route(x('presence', { type: 'subscribed', from: user.toBareString(), to: contact }));
        await sendPresenceTo(user, contact);
      }
      if (t.forward) deliverToAvailable(user, stanza);
      if (type === 'unsubscribe' && t.forward && hasFrom(before.subscription)) await sendUnavailableTo(user, contact);
      return true;
    };

    /** §4.3.2: the contact's server answering a probe. */
    const answerProbe = async (from: JID, user: JID): Promise<boolean> => {
      const bare = user.toBareString();
      const unsubscribed = () => router.route(x('presence', { type: 'unsubscribed', from: bare, to: from.toBareString() }));
      // §8.5.1: for an account that does not exist, "unsubscribed" (or nothing).
      if (!(await m.directory.exists(user.local))) {
        await unsubscribed();
        return true;
      }
      if (from.toBareString() !== bare) {
        const roster = await rosters.get(user.local);
        const item = roster.get(from.toBareString());
        if (!item || !hasFrom(item.subscription)) {
          // "unsubscribed" resets a prober that wrongly believes it is subscribed;
          // one whose request is still pending here must keep it (A.3.4 would cancel it).
          if (!roster.pending(from.toBareString())) await unsubscribed();
          return true;
        }
      }
      const sessions = router.availableSessionsOf(user.bare);
      if (sessions.length) {
        for (const s of sessions) if (s.presence) await routeCopy(s.presence, from.toString());
      } else {
        const last = lastUnavailable.get(bare);
        if (last) await routeCopy(last, from.toString());
      }
      return true;
    };

    const inboundPresence = (stanza: Element, from: JID, user: JID): boolean | Promise<boolean> => {
      const type = stanza.attrs.type;
      if (isSubscription(type)) return inboundSubscription(stanza, type, from.bare, user.bare).catch((e: unknown) => fail(stanza, e));
      if (type === 'probe') return answerProbe(from, user.bare).catch((e: unknown) => fail(stanza, e));
      if (type === undefined || type === 'unavailable' || type === 'error') {
        deliverToAvailable(user, stanza);
      }
      return true;
    };

    m.hook<StanzaEvent>('presence/bare', (ev) => inboundPresence(ev.stanza, ev.from, ev.to));

    // §3.1.3: a subscription stanza to a full JID is treated as one to the bare JID;
    // a probe is answered for the account. Other presence goes to that resource only
    // (the router's default), or nowhere (§8.5.3.2.3).
    m.hook<StanzaEvent>('presence/full', (ev) => {
      const type = ev.stanza.attrs.type;
      if (type === 'probe') return inboundPresence(ev.stanza, ev.from, ev.to.bare);
      if (isSubscription(type)) {
        const stanza = ev.stanza.clone();
        stanza.attrs.to = ev.to.toBareString();
        return inboundPresence(stanza, ev.from, ev.to.bare);
      }
      return false;
    });

    // ---- the pool: resources on other nodes --------------------------------------------
    // Presence broadcasts and probe answers use the pool's routing table; a
    // resource that came online on another node at the same moment as a local
    // one was not in it yet on either side. Each node settles that for its own
    // local sessions, so nothing is sent twice: a local resource the new remote
    // one may see (its own resources, contacts it is subscribed to) sends it
    // its current presence, unless the remote node already knew it.
    m.hook<RemoteAvailableEvent>('remote-session-available', async ({ session: remote, knew }) => {
      const user = remote.jid.bare;
      if (user.domain !== m.domain || user.local === '') return;
      const roster = await rosters.get(user.local);
      const visible = [user.toBareString()];
      for (const item of roster.items()) if (hasTo(item.subscription)) visible.push(item.jid);
      for (const bare of visible) {
        for (const s of router.localSessionsOf(bare)) {
          if (s.closed || !s.presence || knew(s)) continue;
          const copy = s.presence.clone();
          copy.attrs.to = remote.jid.toString();
          remote.send(copy);
        }
      }
    });

    // §4.5.2 for a resource whose node failed: those that could see it learn it is gone.
    m.hook<RemoteFailedEvent>('remote-session-failed', async ({ jid }) => {
      if (jid.domain !== m.domain || jid.local === '') return;
      const roster = await rosters.get(jid.local);
      const watchers = [jid.toBareString()];
      for (const item of roster.items()) if (hasFrom(item.subscription)) watchers.push(item.jid);
      for (const bare of watchers) {
        for (const s of router.localSessionsOf(bare)) {
          if (s.closed || s.priority === null) continue;
          s.send(x('presence', { type: 'unavailable', from: jid.toString(), to: s.jid.toString() }));
        }
      }
    });
  },
};
