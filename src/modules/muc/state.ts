// The state of one XEP-0045 room, plain JSON so that a replica can be shipped
// to another node as a snapshot (src/modules/muc/replication.ts) and the
// persistent part stored (src/store/muc.ts). The rules that change it are in
// room.ts and admin.ts.
import { Element } from '../../xmpp/element.ts';

export const NS_MUC = 'http://jabber.org/protocol/muc';
export const NS_MUC_USER = 'http://jabber.org/protocol/muc#user';
export const NS_MUC_ADMIN = 'http://jabber.org/protocol/muc#admin';
export const NS_MUC_OWNER = 'http://jabber.org/protocol/muc#owner';
export const NS_MUC_ROOMCONFIG = 'http://jabber.org/protocol/muc#roomconfig';
export const NS_MUC_ROOMINFO = 'http://jabber.org/protocol/muc#roominfo';

/** XEP-0045 §5.2. 'none' is the absence of an affiliation and is never stored. */
export type Affiliation = 'owner' | 'admin' | 'member' | 'outcast' | 'none';
/** XEP-0045 §5.1. */
export type Role = 'moderator' | 'participant' | 'visitor' | 'none';
export type Whois = 'moderators' | 'anyone';
export type AllowPM = 'anyone' | 'participants' | 'moderators' | 'none';

/** The muc#roomconfig fields the room honours (XEP-0045 §10.2, §15.5.3). */
export interface RoomConfig {
  name: string;
  description: string;
  persistent: boolean;
  public: boolean;
  membersOnly: boolean;
  moderated: boolean;
  passwordProtected: boolean;
  password: string;
  /** 0: no limit. */
  maxUsers: number;
  whois: Whois;
  changeSubject: boolean;
  allowInvites: boolean;
  allowPM: AllowPM;
  /** muc#maxhistoryfetch: history messages the room keeps and replays. */
  maxHistory: number;
}

export interface OccupantSession {
  /** Pool peer id of the node the session is on ('local' on a single node). */
  node: string;
  /** Its last available presence to the room, serialised. */
  presence: string;
}

export interface Occupant {
  /** Enforced nickname (RFC 8266). */
  nick: string;
  /** The real bare JID. */
  bare: string;
  role: Role;
  /** Full real JID -> session. One occupant may be joined from several resources (same bare JID). */
  sessions: Record<string, OccupantSession>;
  /** Full JID of the session whose presence is shown (the last to change it). */
  current: string;
}

export interface HistoryEntry {
  /** The groupchat message as the room sent it (from room/nick, no 'to'). */
  xml: string;
  /** When the room got it (ms, the sequencer's clock). */
  stamp: number;
}

export interface RoomState {
  /** Bare room JID. */
  jid: string;
  config: RoomConfig;
  /** Bare real JID -> affiliation other than none. */
  affiliations: Record<string, Exclude<Affiliation, 'none'>>;
  /** Keyed by the nick's comparison form (nickKey). */
  occupants: Record<string, Occupant>;
  subject: { text: string; nick: string; stamp: number } | null;
  history: HistoryEntry[];
  /** Created and waiting for the owner's configuration (§10.1.1). */
  locked: boolean;
  created: number;
  /** Number of the last event applied; replicas apply events in this order. */
  seq: number;
}

export interface Defaults {
  config: RoomConfig;
  /** Largest maxusers an owner may set (0: no limit). */
  maxUsersLimit: number;
  /** Largest muc#maxhistoryfetch an owner may set. */
  maxHistoryLimit: number;
}

export const DEFAULT_CONFIG: RoomConfig = {
  name: '', description: '', persistent: false, public: true, membersOnly: false, moderated: false,
  passwordProtected: false, password: '', maxUsers: 0, whois: 'moderators', changeSubject: false,
  allowInvites: false, allowPM: 'anyone', maxHistory: 20,
};

export function newRoom(jid: string, creator: string, config: RoomConfig, now: number, locked: boolean): RoomState {
  return {
    jid, config: { ...config }, affiliations: { [creator]: 'owner' }, occupants: {}, subject: null, history: [],
    locked, created: now, seq: 0,
  };
}

export function affiliationOf(s: RoomState, bare: string): Affiliation {
  return s.affiliations[bare] ?? 'none';
}

export function occupantBySession(s: RoomState, full: string): Occupant | undefined {
  for (const k in s.occupants) if (s.occupants[k].sessions[full]) return s.occupants[k];
  return undefined;
}

export function occupantCount(s: RoomState): number {
  return Object.keys(s.occupants).length;
}

/** §5.1: the role an occupant enters with. */
export function defaultRole(s: RoomState, aff: Affiliation): Role {
  if (aff === 'owner' || aff === 'admin') return 'moderator';
  if (s.config.moderated && aff !== 'member') return 'visitor';
  return 'participant';
}

const AFF_RANK: Record<Affiliation, number> = { owner: 4, admin: 3, member: 2, none: 1, outcast: 0 };
export function affRank(a: Affiliation): number {
  return AFF_RANK[a];
}

/** The muc#user <item/> for an occupant as `viewer` sees it (§7.2.3, §7.2.4: real JIDs to whom the room allows). */
export function userItem(s: RoomState, occ: Occupant, viewer: Occupant | null, extra: Record<string, string> = {}): Element {
  const attrs: Record<string, string> = { affiliation: affiliationOf(s, occ.bare), role: occ.role, ...extra };
  if (viewer && (s.config.whois === 'anyone' || viewer.role === 'moderator' || viewer === occ)) attrs.jid = occ.current;
  return new Element('item', attrs);
}

/** Whether the room shows real JIDs to every occupant (status 100, 172). */
export function nonAnonymous(s: RoomState): boolean {
  return s.config.whois === 'anyone';
}
