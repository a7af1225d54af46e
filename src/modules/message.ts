// RFC 6121 §8.5 server rules for message stanzas addressed to local users:
// §8.5.1 no such user, §8.5.2 to a bare JID (§8.5.2.1.1 available resources,
// §8.5.2.2.1 none), §8.5.3 to a full JID (§8.5.3.1 the resource is there,
// §8.5.3.2.1 it is not). Messages to the server itself (RFC 6120 §10.5.1) are
// not delivered to anyone. Offline storage is the offline module's (XEP-0160),
// reached through the OFFLINE_EVENT hook; received carbons (XEP-0280 §7) are
// made here because only this module knows who got the original.
//
// "Most available" (§8.5.2.1.1, choice (a)): the resource(s) with the highest
// non-negative priority, all of them when tied. Prosody delivers to every
// non-negative resource (choice (b)); carbons give the other resources a copy
// anyway, and (a) is what the RFC names first.
import type { Element } from '../xmpp/element.ts';
import { StanzaError } from '../xmpp/errors.ts';
import type { Routable, StanzaEvent } from '../router/router.ts';
import type { Module, ModuleContext } from './api.ts';
import { isCarbonEligible, sendReceivedCarbons, stripPrivate } from './carbons.ts';

/**
 * Fired (with the message's StanzaEvent) for a normal or chat message to an
 * existing user with no resource to take it. A handler returns true once the
 * message is stored (on disk), false if it will not store it, or throws a
 * StanzaError; the sender gets service-unavailable when nobody stored it.
 */
export const OFFLINE_EVENT = 'message/offline';

/** RFC 6121 §5.2.2: no type, or one not understood, means normal. */
export function messageType(stanza: Element): 'normal' | 'chat' | 'groupchat' | 'headline' | 'error' {
  const t = stanza.attrs.type;
  return t === 'chat' || t === 'groupchat' || t === 'headline' || t === 'error' ? t : 'normal';
}

/**
 * §8.5.2.1.1 choice (a): the available resources with the highest priority,
 * never one with a negative priority.
 */
export function mostAvailable(sessions: readonly Routable[]): Routable[] {
  let best = -1;
  let out: Routable[] = [];
  for (const s of sessions) {
    const p = s.priority;
    if (p === null || p < 0 || s.closed) continue;
    if (p > best) {
      best = p;
      out = [s];
    } else if (p === best) {
      out.push(s);
    }
  }
  return out;
}

// Who holds a copy of each delivered message (the original or a carbon), so a
// resource that ends without acknowledging it (XEP-0198) re-routes it only when
// no other resource has it. Weak: entries go with the stanzas.
const holders = new WeakMap<Element, Routable[]>();

export function noteDelivered(stanza: Element, sessions: readonly Routable[]): void {
  if (sessions.length === 0) return;
  const list = holders.get(stanza);
  if (list) list.push(...sessions);
  else holders.set(stanza, [...sessions]);
}

/** Whether a resource other than `except` got this message and is still there. */
export function heldElsewhere(stanza: Element, except: Routable): boolean {
  return (holders.get(stanza) ?? []).some((s) => s !== except && !s.closed);
}

export const message: Module = {
  name: 'message',
  load(m) {
    // Below the default priority, as in Prosody: blocking, privacy and the like
    // see messages first.
    m.hook<StanzaEvent>('message/bare', (ev) => toBare(m, ev), -1);
    m.hook<StanzaEvent>('message/full', (ev) => toFull(m, ev), -1);
    m.hook<StanzaEvent>('message/host', (ev) => toHost(m, ev), -1);
  },
};

/** §8.5.3: to localpart@domainpart/resourcepart. */
function toFull(m: ModuleContext, ev: StanzaEvent): boolean | Promise<boolean> {
  const { stanza } = ev;
  const session = m.router.getSession(ev.to);
  if (session && !session.closed) {
    // §8.5.3.1: that resource gets it, whatever the type, available or only connected.
    deliver(m, ev, [session]);
    return true;
  }
  // §8.5.3.2.1
  switch (messageType(stanza)) {
    case 'normal':
    case 'chat':
      return toBare(m, ev);
    case 'groupchat':
      m.router.sendError(stanza, new StanzaError('service-unavailable'));
      return true;
    default:
      // headline, error: silently ignored.
      return true;
  }
}

/** §8.5.2: to localpart@domainpart (or a full JID handled as such). */
function toBare(m: ModuleContext, ev: StanzaEvent): boolean | Promise<boolean> {
  const { stanza } = ev;
  const type = messageType(stanza);
  if (type === 'error') return true; // §8.5.2.1.1, §8.5.2.2.1: silently ignored
  if (type === 'groupchat') {
    // §8.5.2.1.1 and §8.5.2.2.1 alike: never delivered, the sender is told.
    m.router.sendError(stanza, new StanzaError('service-unavailable'));
    return true;
  }
  const available = m.router.availableSessionsOf(ev.to);
  if (type === 'headline') {
    // §8.5.2.1.1: every non-negative resource; with none, silently ignored (§8.5.2.2.1).
    const targets = available.filter((s) => s.priority !== null && s.priority >= 0 && !s.closed);
    if (targets.length) deliver(m, ev, targets);
    return true;
  }
  const targets = mostAvailable(available);
  if (targets.length) {
    deliver(m, ev, targets);
    return true;
  }
  // §8.5.2.1.1: only negative resources counts as none (§8.5.2.2.1).
  return toOffline(m, ev, available);
}

/** §8.5.2.2.1 normal/chat with nobody to take it: offline storage, else service-unavailable. */
async function toOffline(m: ModuleContext, ev: StanzaEvent, available: readonly Routable[]): Promise<boolean> {
  const { stanza } = ev;
  // §8.5.1: a user that does not exist has no offline storage either.
  if (!(await m.directory.exists(ev.to.local))) {
    m.router.sendError(stanza, new StanzaError('service-unavailable'));
    return true;
  }
  const eligible = isCarbonEligible(stanza, 'received');
  stripPrivate(stanza);
  const stored = await m.router.hooks.fire(OFFLINE_EVENT, ev);
  if (!stored) {
    m.router.sendError(stanza, new StanzaError('service-unavailable'));
    return true;
  }
  // Carbons-enabled resources that are available (with a negative priority)
  // will not get the stored copy; those that are not available yet will, at
  // their initial presence, so a carbon now would be a duplicate.
  if (eligible) {
    const copies = sendReceivedCarbons(m.router, stanza, ev.to.bare, [], {
      sender: ev.from, only: (s) => available.includes(s),
    });
    noteDelivered(stanza, copies);
  }
  return true;
}

function deliver(m: ModuleContext, ev: StanzaEvent, targets: Routable[]): void {
  const { stanza } = ev;
  const eligible = isCarbonEligible(stanza, 'received');
  stripPrivate(stanza);
  // The same element goes to every target: nothing changes it per recipient.
  for (const s of targets) s.send(stanza);
  const copies = eligible ? sendReceivedCarbons(m.router, stanza, ev.to.bare, targets, { sender: ev.from }) : NONE;
  // heldElsewhere() can only answer yes for a stanza two resources got: the
  // common lone delivery is not recorded (a WeakMap entry and an array per
  // message, for nothing).
  if (targets.length + copies.length > 1) noteDelivered(stanza, copies.length ? targets.concat(copies) : targets);
}

const NONE: readonly Routable[] = [];

/**
 * RFC 6120 §10.5.1: the server handles what is addressed to it, and it reads no
 * messages. Errors and headlines are ignored (RFC 6120 §8.3.1 forbids answering
 * an error); a normal message may be a receipt or a marker, not worth an error;
 * a chat or groupchat message expects a reader, so the sender is told there is none.
 */
function toHost(m: ModuleContext, ev: StanzaEvent): boolean {
  const type = messageType(ev.stanza);
  if (type === 'chat' || type === 'groupchat') m.router.sendError(ev.stanza, new StanzaError('service-unavailable'));
  return true;
}

