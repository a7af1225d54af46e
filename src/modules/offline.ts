// XEP-0160 Best Practices for Handling Offline Messages: §2 store what no
// resource could take (the message module decides that, RFC 6121 §8.5.2.2.1)
// with a XEP-0203 delay stamp, a full queue answers service-unavailable, and
// the queue goes, in order, to the next resource that sends non-negative
// initial presence; §3 which types are stored; §4 the "msgoffline" feature.
// XEP-0334 §4 hints: <no-store/> is never stored, <store/> is stored even
// without content. A message is acknowledged to its sender (XEP-0198) only
// after it is on disk: the hook awaits the fsync'ed write, and the connection
// handles nothing else meanwhile.
//
// In a pool without LDAP the queue is replicated (src/store/offline.ts says
// how a message is handed out once when two nodes drain one queue).
//
// Also XEP-0198 §5 hand-off: messages a resource never acknowledged when its
// session ended for good (sm-unacked) go to the user's other resources by the
// bare-JID rules, or here.
import { x, type Element } from '../xmpp/element.ts';
import { NS } from '../xmpp/ns.ts';
import { StanzaError } from '../xmpp/errors.ts';
import { parseElement } from '../xmpp/parser.ts';
import type { Routable, StanzaEvent } from '../router/router.ts';
import type { Session } from '../c2s/session.ts';
import { declareOptions } from '../admin/options.ts';
import { OfflineStore } from '../store/offline.ts';
import type { Module } from './api.ts';
import type { AccountRemovedEvent } from './register.ts';
import { OFFLINE_EVENT, heldElsewhere, messageType, mostAvailable, noteDelivered } from './message.ts';
import { isCarbonCopy } from './carbons.ts';

declareOptions([
  { name: 'max-offline-messages', type: 'int', default: 1000, min: 0, max: 1_000_000, group: 'offline', placeholder: 'N',
    description: 'Messages kept for a user while offline (XEP-0160); beyond that the sender gets service-unavailable. 0 stores none.' },
]);

const CHATSTATES = 'http://jabber.org/protocol/chatstates';
const RECEIPTS = 'urn:xmpp:receipts';
const MARKERS = 'urn:xmpp:chat-markers:0';
const SID = 'urn:xmpp:sid:0';

/**
 * Whether a message carries something a person reads or a client needs later
 * (a body, a subject, a receipt, a marker, an encrypted payload, an invitation,
 * any payload we do not know), rather than only chat states (XEP-0160 §3),
 * delivery metadata or hints.
 */
export function hasContent(stanza: Element): boolean {
  for (const c of stanza.elements) {
    const ns = c.getNS();
    const name = c.getName();
    if (ns === '' || ns === NS.client) {
      if (name === 'thread' || name === 'error') continue; // a thread id alone says nothing
      return true; // body, subject
    }
    if (ns === CHATSTATES || ns === NS.hints || ns === NS.delay || ns === NS.carbons || ns === SID) continue;
    if (ns === RECEIPTS && name === 'request') continue;
    if (ns === MARKERS && name === 'markable') continue;
    return true;
  }
  return false;
}

/**
 * XEP-0160 §3 and XEP-0334 §4: normal and chat messages with content; never one
 * marked <no-store/>, always one marked <store/>.
 */
export function isStorable(stanza: Element): boolean {
  const type = messageType(stanza);
  if (type !== 'normal' && type !== 'chat') return false;
  if (stanza.getChild('no-store', NS.hints)) return false;
  return stanza.getChild('store', NS.hints) !== undefined || hasContent(stanza);
}

/** XEP-0203 delay, unless this server already stamped it (a message stored twice keeps its first stamp). */
export function addDelay(stanza: Element, domain: string, now = new Date()): void {
  if (stanza.getChildren('delay', NS.delay).some((d) => d.attrs.from === domain)) return;
  stanza.append(x('delay', { xmlns: NS.delay, from: domain, stamp: now.toISOString() }, 'Offline Storage'));
}

export const offline: Module = {
  name: 'offline',
  load(m) {
    const queue = new OfflineStore(m.kv);
    const limit = typeof m.config['max-offline-messages'] === 'number' ? m.config['max-offline-messages'] : 1000;
    // Resources that got their queue at initial presence: a message stored
    // while that was running would otherwise wait for the next login.
    const flushed = new WeakSet<Routable>();

    m.feature('msgoffline');

    /** Hands the stored queue to one resource, oldest first; deletes what it took. */
    async function flush(session: Routable): Promise<void> {
      const user = session.jid.local;
      const n = await queue.drain(user, (messages) => {
        const taken: string[] = [];
        for (const msg of messages) {
          if (session.closed) break;
          let el: Element;
          try {
            el = parseElement(msg.xml);
          } catch (e) {
            m.log.warn(`dropping an unreadable offline message of ${user}:`, e);
            taken.push(msg.key);
            continue;
          }
          // With XEP-0198 the session keeps it until the client acknowledges it;
          // sm-unacked brings it back here if it never does.
          session.send(el);
          noteDelivered(el, [session]);
          taken.push(msg.key);
        }
        return taken;
      });
      if (n) m.log.debug(`delivered ${n} offline messages to ${session.jid}`);
    }

    m.hook<StanzaEvent>(OFFLINE_EVENT, async (ev) => {
      const { stanza } = ev;
      if (!isStorable(stanza)) return false;
      const user = ev.to.local;
      const copy = stanza.clone();
      addDelay(copy, m.domain);
      if (!(await queue.push(user, copy.toString(), limit))) {
        m.log.info(`offline queue of ${user} is full (${limit}); refusing a message from ${ev.from}`);
        throw new StanzaError('service-unavailable', 'the recipient cannot receive more offline messages');
      }
      const online = mostAvailable(m.router.availableSessionsOf(ev.to.bare)).filter((s) => flushed.has(s));
      if (online.length) await flush(online[0]);
      return true;
    });

    // In a pool, a message another node stored may arrive here after the
    // user's resource here got its queue (it logged in while the message was
    // being stored): hand it over now rather than at the next login. The
    // store's drain makes sure only one node delivers it.
    const unsubscribe = queue.onRemoteMessage((user) => {
      const online = mostAvailable(m.router.localSessionsOf(`${user}@${m.domain}`).filter((s) => flushed.has(s)));
      if (online.length) void flush(online[0]).catch((e) => m.log.warn(`delivering offline messages of ${user} failed:`, e));
    });
    m.onStop(unsubscribe);

    // XEP-0160 §2, RFC 6121 §8.5.2.2: the queue goes to a resource with
    // non-negative priority, at its initial presence (fired by the presence module).
    m.hook<Session>('initial-presence', async (session) => {
      if (session.closed || session.priority === null || session.priority < 0) return;
      flushed.add(session);
      await flush(session);
    });

    // XEP-0077 account removal: nothing of the account stays behind.
    m.hook<AccountRemovedEvent>('account-removed', async ({ username }) => {
      const n = await queue.clear(username);
      if (n) m.log.debug(`deleted ${n} offline messages of removed account ${username}`);
    });

    m.hook<{ session: Session; stanza: Element }>('sm-unacked', async ({ session, stanza }) => {
      if (stanza.name !== 'message') return false;
      // Errors, groupchat and headlines are not worth a second delivery
      // (RFC 6121 §8.5.3.2.1 drops them too); a carbon's original went elsewhere;
      // a chat state or a receipt request arriving late would only confuse. A
      // <no-store/> message is handed on too: to another resource, or back to
      // its sender as an error, since it may not be stored.
      const type = messageType(stanza);
      if (type !== 'normal' && type !== 'chat') return true;
      if (isCarbonCopy(stanza) || !(hasContent(stanza) || stanza.getChild('store', NS.hints))) return true;
      if (heldElsewhere(stanza, session)) return true;
      if (!stanza.attrs.to) stanza.attrs.to = session.jid.toString();
      m.log.debug(`re-routing a message ${session.jid} never acknowledged`);
      // Addressed to the ended resource, it now takes the bare-JID rules
      // (§8.5.3.2.1): another resource, or offline storage. The ended session is
      // out of the routing table, so it cannot come back to it.
      await m.router.route(stanza);
      return true;
    });
  },
};
