// XEP-0280 Message Carbons v2 (urn:xmpp:carbons:2): §3 discovery, §4-§5
// enabling and disabling per resource, §6 which messages are eligible, §7
// received copies for the user's other resources, §8 sent copies, §9 <private/>
// (and the XEP-0334 §4.3 <no-copy/> hint). Copies are wrapped per XEP-0297
// Stanza Forwarding. Received copies are made by the message module (which
// alone knows who got the original) through sendReceivedCarbons below.
import { Element, x } from '../xmpp/element.ts';
import { NS } from '../xmpp/ns.ts';
import { StanzaError } from '../xmpp/errors.ts';
import type { JID } from '../xmpp/jid.ts';
import type { Router, Routable, StanzaEvent } from '../router/router.ts';
import type { Session } from '../c2s/session.ts';
import type { Module } from './api.ts';

const MUC_USER = 'http://jabber.org/protocol/muc#user';
const RECEIPTS = 'urn:xmpp:receipts';
const MARKERS = 'urn:xmpp:chat-markers:0';
// End-to-end encrypted payloads carry no <body> (or only a fallback one) but are
// the conversation itself.
const ENCRYPTED = new Set(['eu.siacs.conversations.axolotl', 'urn:xmpp:omemo:2', 'urn:xmpp:openpgp:0', 'jabber:x:encrypted']);

/**
 * §6: instant messages only. Chat messages, and normal ones that carry a body
 * (or, in the spirit of §6, a receipt, a chat marker or an encrypted body, which
 * belong to the conversation as much). Never groupchat, headline or error;
 * never a message marked <private/> (§9) or <no-copy/>, nor one that is itself a
 * carbon. `direction` 'received' also leaves out what a MUC room sent (§6).
 */
export function isCarbonEligible(stanza: Element, direction: 'received' | 'sent'): boolean {
  if (stanza.name !== 'message') return false;
  const type = stanza.attrs.type ?? 'normal';
  if (type === 'groupchat' || type === 'headline' || type === 'error') return false;
  let content = type === 'chat';
  for (const c of stanza.elements) {
    const ns = c.getNS();
    const name = c.getName();
    if (ns === NS.carbons) return false; // <private/>, or a carbon (received/sent) itself
    if (ns === NS.hints && name === 'no-copy') return false;
    if (direction === 'received' && ns === MUC_USER && name === 'x') return false;
    if (name === 'body' && (ns === '' || ns === NS.client)) content = true;
    else if (ns === RECEIPTS && name === 'received') content = true;
    else if (ns === MARKERS && name !== 'markable') content = true;
    else if (ENCRYPTED.has(ns)) content = true;
  }
  return content;
}

/** Whether this message is a carbon copy (it wraps another message). */
export function isCarbonCopy(stanza: Element): boolean {
  return stanza.name === 'message' && (stanza.getChild('received', NS.carbons) !== undefined || stanza.getChild('sent', NS.carbons) !== undefined);
}

/** §9: the receiving server SHOULD remove <private/> before delivering. */
export function stripPrivate(stanza: Element): void {
  for (const p of stanza.getChildren('private', NS.carbons)) stanza.remove(p);
}

/**
 * The XEP-0297 wrapper for one recipient: from the user's bare JID (§7, §8),
 * to the receiving resource, same type as the original.
 */
export function wrapCarbon(kind: 'received' | 'sent', original: Element, user: JID, to: JID): Element {
  const inner = original.clone();
  // XEP-0297 §4: the forwarded stanza is qualified by the content namespace.
  if (inner.attrs.xmlns === undefined) inner.attrs.xmlns = NS.client;
  const attrs: Record<string, string> = { from: user.toBareString(), to: to.toString() };
  if (original.attrs.type !== undefined) attrs.type = original.attrs.type;
  return x('message', attrs,
    x(kind, { xmlns: NS.carbons },
      x('forwarded', { xmlns: NS.forward }, inner)));
}

/**
 * §7: after `stanza` was delivered to `delivered` (resources of `user`), sends a
 * received copy to each other carbons-enabled resource of that user. `sender`
 * (when the user wrote to their own account) is left out too: it wrote the
 * message. `only` narrows the candidates further. Returns who got a copy.
 */
export function sendReceivedCarbons(
  router: Router, stanza: Element, user: JID, delivered: readonly Routable[],
  opts: { sender?: JID; only?: (s: Routable) => boolean } = {},
): Routable[] {
  const sent: Routable[] = [];
  for (const s of router.sessionsOf(user)) {
    if (!s.carbons || s.closed || delivered.includes(s)) continue;
    if (opts.sender && s.jid.equals(opts.sender)) continue;
    if (opts.only && !opts.only(s)) continue;
    s.send(wrapCarbon('received', stanza, user, s.jid));
    sent.push(s);
  }
  return sent;
}

export const carbons: Module = {
  name: 'carbons',
  load(m) {
    m.feature(NS.carbons);

    // §4, §5: the client names no 'to' (so its own bare JID); some send it to the server.
    const toggle = (ev: StanzaEvent<Session>): null => {
      if (ev.scope === 'bare' && !ev.to.equals(ev.from.bare)) {
        // Another account does not offer carbons to us.
        throw new StanzaError('service-unavailable');
      }
      const origin = ev.origin;
      if (!origin) throw new StanzaError('not-allowed', 'carbons are for clients of this server');
      const payload = ev.stanza.elements[0];
      if (payload.is('enable', NS.carbons)) origin.carbons = true;
      else if (payload.is('disable', NS.carbons)) origin.carbons = false;
      else throw new StanzaError('bad-request', 'expected <enable/> or <disable/>');
      // §10.1: repeated enables or disables are not errors.
      m.log.debug(`${origin.jid} ${origin.carbons ? 'enabled' : 'disabled'} carbons`);
      return null;
    };
    m.iq('set', 'bare', NS.carbons, toggle);
    m.iq('set', 'host', NS.carbons, toggle);

    // §8: a copy of what one resource sends goes to the user's other
    // carbons-enabled resources, whether or not the sender enabled carbons.
    // Low priority: whatever stops an outgoing message (blocking) decides first.
    m.hook<StanzaEvent>('out/message', (ev) => {
      const origin = ev.origin;
      if (!origin || ev.scope === 'host') return false;
      // To one's own account: the other resources get received copies instead.
      if (ev.to.local === ev.from.local && ev.to.domain === ev.from.domain) return false;
      if (!isCarbonEligible(ev.stanza, 'sent')) return false;
      for (const s of m.router.sessionsOf(ev.from.bare)) {
        if (s === origin || !s.carbons || s.closed) continue;
        s.send(wrapCarbon('sent', ev.stanza, ev.from.bare, s.jid));
      }
      return false;
    }, -100);
  },
};
