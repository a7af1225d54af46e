// XEP-0045 Multi-User Chat: the service at conference.<domain> (--muc-domain).
//   §6.1 the service in the server's disco#items; §6.2 disco#info of the
//        service (identity conference/text, feature muc); §6.3 disco#items of
//        the service: the public rooms;
//   every stanza to a room or an occupant goes to the room (room.ts), through
//   the room's sequencer in a pool (replication.ts); §7.14 a session that ends
//   leaves its rooms through the unavailable presence RFC 6121 §4.6.3 sends to
//   every JID it sent directed presence to (src/modules/presence.ts).
// The service's domain is not the server's, so the router hands its stanzas
// to the 'remote' hook.
import { x } from '../../xmpp/element.ts';
import type { Element } from '../../xmpp/element.ts';
import { NS } from '../../xmpp/ns.ts';
import { StanzaError } from '../../xmpp/errors.ts';
import { parseJID, prepDomain, tryParseJID } from '../../xmpp/jid.ts';
import { ConfigError, declareOptions } from '../../admin/options.ts';
import { MucStore } from '../../store/muc.ts';
import type { StanzaEvent } from '../../router/router.ts';
import type { Module, ModuleContext } from '../api.ts';
import { Rooms } from './replication.ts';
import { DEFAULT_CONFIG, NS_MUC, type Defaults } from './state.ts';

declareOptions([
  { name: 'muc-domain', type: 'string', group: 'muc', placeholder: 'DOMAIN',
    description: 'Domain of the multi-user chat service (XEP-0045); default conference.<domain>.' },
  { name: 'muc-history', type: 'int', default: 20, min: 0, max: 1000, group: 'muc',
    description: 'Messages a new room keeps and replays to those who join (muc#maxhistoryfetch; owners may change it up to --muc-max-history).' },
  { name: 'muc-max-history', type: 'int', default: 100, min: 0, max: 10_000, group: 'muc',
    description: 'Largest history an owner may configure for a room.' },
  { name: 'muc-max-users', type: 'int', default: 0, min: 0, max: 1_000_000, group: 'muc',
    description: 'Largest number of occupants an owner may allow in a room (muc#roomconfig_maxusers); 0: no limit, and new rooms have none.' },
]);

export interface MucService {
  readonly domain: string;
  readonly rooms: Rooms;
}

export const muc: Module = {
  name: 'muc',
  async load(m) {
    const domain = mucDomain(m);
    const maxUsers = Number(m.config['muc-max-users'] ?? 0);
    const maxHistory = Number(m.config['muc-max-history'] ?? 100);
    const defaults: Defaults = {
      config: { ...DEFAULT_CONFIG, maxHistory: Math.min(Number(m.config['muc-history'] ?? 20), maxHistory), maxUsers },
      maxUsersLimit: maxUsers,
      maxHistoryLimit: maxHistory,
    };
    const store = await MucStore.open({ store: m.store, pool: m.pool, clock: m.kv.clock, log: m.log.child('store') });
    const rooms = new Rooms({
      pool: m.pool, store, defaults, log: m.log,
      deliver(to, stanza) {
        const jid = tryParseJID(to);
        const s = jid ? m.router.getLocalSession(jid) : undefined;
        if (!s || s.closed) return false;
        s.send(stanza);
        return true;
      },
      isLocal(to) {
        const jid = tryParseJID(to);
        return !!jid && m.router.getLocalSession(jid) !== undefined;
      },
      route(stanza) {
        void m.router.route(stanza);
      },
    });
    rooms.start();
    m.info.addItem({ jid: domain, name: 'Chatrooms' });
    m.onStop(async () => {
      rooms.stop();
      await store.stop();
    });

    m.hook<StanzaEvent>('remote', (ev) => {
      if (ev.to.domain !== domain) return false;
      if (ev.to.local === '') return service(m, rooms, store, domain, ev);
      const room = ev.to.toBareString();
      return rooms.submit(room, ev.from.toString(), ev.stanza).then(() => true, (e: unknown) => {
        m.log.warn(`room ${room} did not answer:`, String(e));
        m.router.sendError(ev.stanza, new StanzaError('remote-server-timeout', 'the room is not reachable now'));
        return true;
      });
    });
  },
};

function mucDomain(m: ModuleContext): string {
  const given = m.config['muc-domain'];
  if (typeof given !== 'string') return `conference.${m.domain}`;
  let d: string;
  try {
    d = prepDomain(given);
  } catch {
    throw new ConfigError(`--muc-domain: '${given}' is not a valid domain name`, 'muc-domain');
  }
  // The router keeps the server's own domain for its users: the service needs a domain of its own.
  if (d === m.domain) throw new ConfigError(`--muc-domain: '${given}' is the server's domain; use a subdomain such as conference.${m.domain}`, 'muc-domain');
  return d;
}

/** Stanzas to the service itself (§6.2, §6.3). */
async function service(m: ModuleContext, rooms: Rooms, store: MucStore, domain: string, ev: StanzaEvent): Promise<boolean> {
  const { stanza } = ev;
  const type = stanza.attrs.type;
  if (stanza.name !== 'iq') {
    if (stanza.name === 'message' && type !== 'error') m.router.sendError(stanza, new StanzaError('service-unavailable'));
    return true;
  }
  if (type !== 'get' && type !== 'set') return true;
  const q = stanza.elements[0];
  const reply = (payload: Element) => {
    void m.router.route(x('iq', { type: 'result', id: stanza.attrs.id ?? '', from: domain, to: ev.from.toString() }, payload));
  };
  if (type === 'get' && q?.is('query', NS.discoInfo) && q.attrs.node === undefined) {
    reply(x('query', { xmlns: NS.discoInfo },
      x('identity', { category: 'conference', type: 'text', name: 'Chatrooms' }),
      x('feature', { var: NS.discoInfo }), x('feature', { var: NS.discoItems }), x('feature', { var: NS_MUC })));
    return true;
  }
  if (type === 'get' && q?.is('query', NS.discoItems) && q.attrs.node === undefined) {
    const items = x('query', { xmlns: NS.discoItems });
    for (const [jid, name] of await publicRooms(rooms, store)) items.c('item', { jid, name: name || parseJID(jid).local });
    reply(items);
    return true;
  }
  m.router.sendError(stanza, new StanzaError(q?.attrs.node !== undefined ? 'item-not-found' : 'service-unavailable'));
  return true;
}

/**
 * §6.3: public rooms: the persistent ones every node knows, and the live ones
 * any member holds a copy of (asked of every member).
 */
async function publicRooms(rooms: Rooms, store: MucStore): Promise<Array<[string, string]>> {
  const all = new Map<string, string>();
  for (const [jid, rec] of await store.list()) {
    if (rec.config.public !== false) all.set(jid, typeof rec.config.name === 'string' ? rec.config.name : '');
  }
  for (const [jid, name] of await rooms.publicRooms()) all.set(jid, name);
  return [...all].sort(([a], [b]) => (a < b ? -1 : 1));
}
