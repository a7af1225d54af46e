// The XEP-0045 room as a deterministic state machine: apply(state, input)
// returns the new state and the stanzas to send. Pure (no clock, no I/O: the
// time comes with the input), so that every node of the pool that applies the
// same numbered inputs holds the same room and computes the same stanzas, and
// each delivers those for its own occupants (replication.ts).
//   §7.1-7.2  entering a room: nick (RFC 8266, status 210), password 401,
//             members-only 407, banned 403, nick conflict 409, max users 503,
//             locked room 404; occupant list, self-presence (110, 100, 201),
//             §7.2.15 history, §7.2.16 subject.
//   §7.4 groupchat messages (visitors of a moderated room: forbidden; not an
//        occupant: not-acceptable), §7.5 private messages (allowpm),
//   §7.6 nick change (303), §7.7 presence change, §7.8.2 mediated invitations
//   and declines, §7.13/§8.6 voice requests and their approval, §7.14 exit,
//   §8.1 subject changes, §10.1 room creation (instant and reserved rooms).
//   muc#admin and muc#owner IQs are in admin.ts.
import { Element, x } from '../../xmpp/element.ts';
import { parseElement } from '../../xmpp/parser.ts';
import { StanzaError, errorReply } from '../../xmpp/errors.ts';
import { NS } from '../../xmpp/ns.ts';
import { tryParseJID } from '../../xmpp/jid.ts';
import { InvalidNickError, nickKey, prepNick } from './nick.ts';
import { addHistory, historyRequest, historyStanza, selectHistory } from './history.ts';
import {
  NS_MUC, NS_MUC_USER, affRank, affiliationOf, defaultRole, newRoom, nonAnonymous, occupantBySession, occupantCount, userItem,
  type Defaults, type Occupant, type RoomState,
} from './state.ts';
import { handleIq } from './admin.ts';

/** What a room is asked to do, stamped by the node that sequences the room. */
export type RoomInput =
  | { kind: 'stanza'; from: string; node: string; xml: string; now: number }
  /** A pool member failed or left: its occupants leave every room (§7.14, status 333). */
  | { kind: 'node-gone'; node: string; now: number };

/**
 * A stanza to send. `route`: for the node that sequenced the input to send
 * through the router (answers to whoever asked, who may be no occupant);
 * otherwise each node sends those whose recipient is one of its own sessions.
 */
export interface Output { to: string; stanza: Element; route?: boolean }

export interface Applied {
  /** null: the room does not exist (any more). */
  state: RoomState | null;
  outputs: Output[];
  /** The input changed the room: replicas must apply it too. */
  mutated: boolean;
  /** The configuration or affiliations changed: the persistent record must be written (or removed). */
  persist: boolean;
}

/** The transaction one input runs in. */
export class Tx {
  readonly s: RoomState;
  readonly now: number;
  readonly defaults: Defaults;
  readonly out: Output[] = [];
  mutated = false;
  persist = false;
  destroyed = false;
  readonly #wants: (to: string) => boolean;
  readonly #replies: boolean;
  readonly #parsed = new Map<string, Element>();

  constructor(s: RoomState, now: number, defaults: Defaults, opts: Pick<ApplyContext, 'wants' | 'replies'> = {}) {
    this.s = s;
    this.now = now;
    this.defaults = defaults;
    this.#wants = opts.wants ?? (() => true);
    this.#replies = opts.replies ?? true;
  }

  send(to: string, stanza: Element, route = false): void {
    if (route ? !this.#replies : !this.#wants(to)) return;
    stanza.attrs.to = to;
    this.out.push(route ? { to, stanza, route } : { to, stanza });
  }

  wants(to: string): boolean {
    return this.#wants(to);
  }

  /** Whether any stanza for this occupant would be kept: the others need not be built. */
  wantsOcc(occ: Occupant): boolean {
    for (const full in occ.sessions) if (this.#wants(full)) return true;
    return false;
  }

  /** To every session of an occupant. */
  sendTo(occ: Occupant, stanza: Element): void {
    for (const full of Object.keys(occ.sessions)) if (this.#wants(full)) this.send(full, stanza.clone());
  }

  occupants(): Occupant[] {
    return Object.values(this.s.occupants);
  }

  nickJid(nick: string): string {
    return `${this.s.jid}/${nick}`;
  }

  /** `occ`'s presence as `viewer` gets it, with the status codes given (§7.2.3). */
  presenceOf(occ: Occupant, viewer: Occupant, codes: string[] = [], extra: Record<string, string> = {}): Element {
    const xml = occ.sessions[occ.current]?.presence ?? '<presence/>';
    let parsed = this.#parsed.get(xml);
    if (!parsed) this.#parsed.set(xml, (parsed = parseElement(xml)));
    const p = parsed.clone();
    p.attrs.from = this.nickJid(occ.nick);
    const xu = x('x', { xmlns: NS_MUC_USER }, userItem(this.s, occ, viewer, extra));
    for (const c of codes) xu.c('status', { code: c });
    p.append(xu);
    return p;
  }

  /** Unavailable presence of `occ` to every occupant and to `occ` itself (§7.14, §8.2, §9.1). */
  broadcastGone(occ: Occupant, codes: string[], opts: { item?: Record<string, string>; children?: Element[]; text?: string; selfOnly?: boolean } = {}): void {
    const viewers = opts.selfOnly ? [occ] : [...this.occupants().filter((o) => o !== occ), occ];
    for (const v of viewers) {
      if (!this.wantsOcc(v)) continue;
      const p = x('presence', { type: 'unavailable', from: this.nickJid(occ.nick) });
      if (opts.text) p.append(x('status', null, opts.text));
      const item = userItem(this.s, occ, v, opts.item);
      item.attrs.role = 'none';
      for (const c of opts.children ?? []) item.append(c.clone());
      const xu = x('x', { xmlns: NS_MUC_USER }, item);
      for (const c of codes) xu.c('status', { code: c });
      if (v === occ) xu.c('status', { code: '110' });
      p.append(xu);
      this.sendTo(v, p);
    }
  }

  /** Removes an occupant (every session) and tells everyone; ends a temporary room left empty. */
  remove(occ: Occupant, codes: string[], opts: Parameters<Tx['broadcastGone']>[2] = {}): void {
    this.broadcastGone(occ, codes, opts);
    delete this.s.occupants[nickKey(occ.nick)];
    this.mutated = true;
    this.maybeEnd();
  }

  /** §10.1.3 and "temporary rooms disappear when the last occupant leaves". */
  maybeEnd(): void {
    if (occupantCount(this.s) === 0 && (!this.s.config.persistent || this.s.locked)) this.destroyed = true;
  }

  /** Updated presence of `occ` to everyone, after a role or affiliation change (§8.3, §9.3). */
  broadcastPresence(occ: Occupant, codesForAll: string[] = []): void {
    for (const v of this.occupants()) if (this.wantsOcc(v)) this.sendTo(v, this.presenceOf(occ, v, v === occ ? [...codesForAll, '110'] : codesForAll));
  }

  /** The stanza's error reply, sent by whoever sequenced the input. */
  fail(stanza: Element, err: StanzaError): void {
    if (stanza.attrs.type === 'error') return;
    const reply = errorReply(stanza, err);
    if (reply.attrs.to) this.send(reply.attrs.to, reply, true);
  }
}

export interface ApplyContext {
  /** Bare JID of the room (prepared). */
  room: string;
  defaults: Defaults;
  /**
   * Which recipients' stanzas to build (a node builds only those of its own
   * sessions); the state does not depend on it. Default: all.
   */
  wants?: (to: string) => boolean;
  /** Build the answers to senders (route outputs): only the sequencer sends them. Default true. */
  replies?: boolean;
  /**
   * Change the given state instead of a copy (the caller gives it up): a copy
   * of a large room per input costs more than the input. Safe because every
   * check that can refuse an input runs before the first change.
   */
  inPlace?: boolean;
}

export function apply(state: RoomState | null, input: RoomInput, ctx: ApplyContext): Applied {
  const s = state && !ctx.inPlace ? structuredClone(state) : state;
  if (input.kind === 'node-gone') {
    if (!s) return { state: null, outputs: [], mutated: false, persist: false };
    const tx = new Tx(s, input.now, ctx.defaults, ctx);
    nodeGone(tx, input.node);
    return finish(tx);
  }
  const stanza = parseElement(input.xml);
  stanza.attrs.from = input.from;
  const to = stanza.attrs.to ?? ctx.room;
  const slash = to.indexOf('/');
  const nick = slash === -1 ? '' : to.slice(slash + 1);
  if (!s) return absent(stanza, input, nick, ctx);
  const tx = new Tx(s, input.now, ctx.defaults, ctx);
  try {
    if (stanza.name === 'presence') presence(tx, stanza, input.from, input.node, nick);
    else if (stanza.name === 'message') message(tx, stanza, input.from, nick);
    else if (stanza.name === 'iq') handleIq(tx, stanza, input.from, nick);
  } catch (e) {
    if (!(e instanceof StanzaError)) throw e;
    // A failed input changes nothing: the room as it was, the error to the sender.
    const keep = new Tx(state!, input.now, ctx.defaults, ctx);
    keep.fail(stanza, e);
    return { state, outputs: keep.out, mutated: false, persist: false };
  }
  return finish(tx);
}

function finish(tx: Tx): Applied {
  if (tx.mutated) tx.s.seq++;
  if (tx.destroyed) return { state: null, outputs: tx.out, mutated: true, persist: tx.persist || tx.s.config.persistent };
  return { state: tx.s, outputs: tx.out, mutated: tx.mutated, persist: tx.persist };
}

/** A stanza to a room that does not exist: available presence creates it (§10.1.1), the rest is item-not-found. */
function absent(stanza: Element, input: Extract<RoomInput, { kind: 'stanza' }>, nick: string, ctx: ApplyContext): Applied {
  const none: Applied = { state: null, outputs: [], mutated: false, persist: false };
  if (stanza.name === 'presence' && stanza.attrs.type === undefined && nick !== '') {
    const creator = tryParseJID(input.from);
    if (!creator) return none;
    // §10.1.1: a MUC client (it sent <x xmlns='…muc'/>) gets a locked room to configure; others an instant room.
    const locked = stanza.getChild('x', NS_MUC) !== undefined;
    const s = newRoom(ctx.room, creator.toBareString(), ctx.defaults.config, input.now, locked);
    const tx = new Tx(s, input.now, ctx.defaults, ctx);
    try {
      join(tx, stanza, input.from, input.node, nick, true);
    } catch (e) {
      if (!(e instanceof StanzaError)) throw e;
      const t = new Tx(s, input.now, ctx.defaults, ctx);
      t.fail(stanza, e);
      return { ...none, outputs: t.out };
    }
    return finish(tx);
  }
  if (stanza.name === 'presence' || stanza.attrs.type === 'error' || stanza.attrs.type === 'result') return none;
  const t = new Tx(newRoom(ctx.room, '', ctx.defaults.config, input.now, false), input.now, ctx.defaults, ctx);
  t.fail(stanza, new StanzaError('item-not-found', 'no such room'));
  return { ...none, outputs: t.out };
}

// ---- presence ------------------------------------------------------------------------

function presence(tx: Tx, stanza: Element, from: string, node: string, nick: string): void {
  const type = stanza.attrs.type;
  const occ = occupantBySession(tx.s, from);
  if (type === 'unavailable') {
    if (occ) leave(tx, occ, from, stanza);
    return;
  }
  if (type === 'error') {
    // §7.14 (error presence from an occupant's server): the occupant is gone.
    if (occ) leave(tx, occ, from, stanza);
    return;
  }
  if (type !== undefined) throw new StanzaError('bad-request', `presence of type '${type}' to a room`);
  if (nick === '') throw new StanzaError('jid-malformed', 'a room nickname is required');
  if (!occ) return join(tx, stanza, from, node, nick, false);
  const enforced = prep(nick);
  if (nickKey(enforced) !== nickKey(occ.nick)) return changeNick(tx, occ, from, stanza, enforced);
  // §7.7: a new presence of an occupant goes to every occupant.
  occ.sessions[from].presence = stored(stanza);
  occ.current = from;
  tx.mutated = true;
  tx.broadcastPresence(occ);
}

function prep(nick: string): string {
  try {
    return prepNick(nick);
  } catch (e) {
    if (e instanceof InvalidNickError) throw new StanzaError('jid-malformed', e.message);
    throw e;
  }
}

/** The occupant's presence as the room keeps it: no addresses, no MUC payloads. */
function stored(stanza: Element): string {
  const p = new Element('presence');
  for (const c of stanza.elements) if (c.getNS() !== NS_MUC && c.getNS() !== NS_MUC_USER) p.append(c.clone());
  return p.toString();
}

function join(tx: Tx, stanza: Element, from: string, node: string, requested: string, created: boolean): void {
  const s = tx.s;
  const nick = prep(requested);
  const real = tryParseJID(from);
  if (!real) throw new StanzaError('jid-malformed');
  const bare = real.toBareString();
  const aff = affiliationOf(s, bare);
  const mucX = stanza.getChild('x', NS_MUC);
  if (s.locked && aff !== 'owner') throw new StanzaError('item-not-found', 'the room is locked until its owner configures it');
  if (aff === 'outcast') throw new StanzaError('forbidden', 'you are banned from this room');
  if (s.config.membersOnly && affRank(aff) < affRank('member')) throw new StanzaError('registration-required', 'this room is members-only');
  const key = nickKey(nick);
  const existing = s.occupants[key];
  if (existing && existing.bare !== bare) throw new StanzaError('conflict', 'that nickname is in use');
  if (!existing && s.config.maxUsers > 0 && occupantCount(s) >= s.config.maxUsers && affRank(aff) < affRank('admin')) {
    throw new StanzaError('service-unavailable', 'the room is full');
  }
  if (s.config.passwordProtected && aff !== 'owner' && mucX?.getChildText('password') !== s.config.password) {
    throw new StanzaError('not-authorized', 'a password is required');
  }
  tx.mutated = true;
  const session = { node, presence: stored(stanza) };
  let occ: Occupant;
  if (existing) {
    // Several resources of one user under one nick (§7.2: "multi-session nicks").
    occ = existing;
    occ.sessions[from] = session;
    occ.current = from;
  } else {
    occ = { nick, bare, role: defaultRole(s, aff), sessions: { [from]: session }, current: from };
  }
  // §7.2.3: the occupants already there, to the newcomer.
  const here = tx.wants(from);
  if (here) for (const o of tx.occupants()) if (o !== occ) tx.send(from, tx.presenceOf(o, occ));
  s.occupants[key] = occ;
  const self = ['110'];
  if (nonAnonymous(s)) self.unshift('100');
  if (created) self.push('201');
  if (nick !== requested) self.push('210');
  if (existing) {
    tx.send(from, tx.presenceOf(occ, occ, self));
  } else {
    for (const o of tx.occupants()) {
      if (o === occ) { if (here) tx.send(from, tx.presenceOf(occ, occ, self)); }
      else if (tx.wantsOcc(o)) tx.sendTo(o, tx.presenceOf(occ, o));
    }
  }
  if (!here) return;
  // §7.2.15, §7.2.16: history, then the subject (empty if none).
  for (const e of selectHistory(s.history, historyRequest(mucX), tx.now)) tx.send(from, historyStanza(e, s.jid, from));
  const subj = x('message', { type: 'groupchat', from: s.subject?.nick ? tx.nickJid(s.subject.nick) : s.jid, id: `subject-${s.seq}` },
    x('subject', null, s.subject?.text ?? ''));
  tx.send(from, subj);
}

function leave(tx: Tx, occ: Occupant, from: string, stanza: Element): void {
  const text = stanza.getChildText('status');
  if (Object.keys(occ.sessions).length > 1) {
    // One of several resources leaves: only it is told; the occupant stays.
    const p = x('presence', { type: 'unavailable', from: tx.nickJid(occ.nick) },
      x('x', { xmlns: NS_MUC_USER }, x('item', { affiliation: affiliationOf(tx.s, occ.bare), role: 'none' }), x('status', { code: '110' })));
    tx.send(from, p);
    delete occ.sessions[from];
    if (occ.current === from) occ.current = Object.keys(occ.sessions)[0];
    tx.mutated = true;
    return;
  }
  tx.remove(occ, [], { text: text || undefined });
}

function changeNick(tx: Tx, occ: Occupant, from: string, stanza: Element, nick: string): void {
  const s = tx.s;
  const key = nickKey(nick);
  if (s.occupants[key] && s.occupants[key] !== occ) throw new StanzaError('conflict', 'that nickname is in use');
  // §7.6.3: unavailable from the old nick with 303 and the new nick, then available from the new one.
  for (const v of tx.occupants()) {
    if (!tx.wantsOcc(v)) continue;
    const p = x('presence', { type: 'unavailable', from: tx.nickJid(occ.nick) });
    const xu = x('x', { xmlns: NS_MUC_USER }, userItem(s, occ, v, { nick }), x('status', { code: '303' }));
    if (v === occ) xu.c('status', { code: '110' });
    p.append(xu);
    tx.sendTo(v, p);
  }
  delete s.occupants[nickKey(occ.nick)];
  occ.nick = nick;
  occ.sessions[from].presence = stored(stanza);
  occ.current = from;
  s.occupants[key] = occ;
  tx.mutated = true;
  tx.broadcastPresence(occ);
}

function nodeGone(tx: Tx, node: string): void {
  // Every session of the gone node first, so none of them is sent the others' exits.
  const left: Occupant[] = [];
  for (const occ of tx.occupants()) {
    const gone = Object.keys(occ.sessions).filter((f) => occ.sessions[f].node === node);
    if (!gone.length) continue;
    // Only a node that was wrongly declared failed is there to send this: its
    // users learn they are out (333) and may enter again.
    for (const f of gone) {
      tx.send(f, x('presence', { type: 'unavailable', from: tx.nickJid(occ.nick) },
        x('x', { xmlns: NS_MUC_USER }, x('item', { affiliation: affiliationOf(tx.s, occ.bare), role: 'none' }), x('status', { code: '110' }), x('status', { code: '333' }))));
    }
    for (const f of gone) delete occ.sessions[f];
    tx.mutated = true;
    if (Object.keys(occ.sessions).length === 0) left.push(occ);
    else if (!occ.sessions[occ.current]) occ.current = Object.keys(occ.sessions)[0];
  }
  for (const occ of left) {
    // Its sessions are unreachable: only the others are told.
    tx.broadcastGone(occ, ['333'], { text: 'connection lost' });
    delete tx.s.occupants[nickKey(occ.nick)];
  }
  tx.maybeEnd();
}

// ---- messages ------------------------------------------------------------------------

function message(tx: Tx, stanza: Element, from: string, nick: string): void {
  const type = stanza.attrs.type ?? 'normal';
  if (type === 'error') return;
  const occ = occupantBySession(tx.s, from);
  if (nick !== '') return privateMessage(tx, stanza, occ, nick, type);
  if (type === 'groupchat') return groupchat(tx, stanza, occ);
  const xu = stanza.getChild('x', NS_MUC_USER);
  if (xu?.getChild('invite')) return invite(tx, from, occ, xu);
  if (xu?.getChild('decline')) return decline(tx, from, xu);
  const form = stanza.getChild('x', NS.dataForms);
  if (form && formType(form) === NS_MUC_REQUEST) return voiceRequest(tx, occ, form);
  throw new StanzaError('bad-request', 'messages to a room are of type groupchat');
}

function groupchat(tx: Tx, stanza: Element, occ: Occupant | undefined): void {
  const s = tx.s;
  if (!occ) throw new StanzaError('not-acceptable', 'only occupants may send messages to the room');
  const subject = stanza.getChild('subject');
  const body = stanza.getChild('body');
  if (subject && !body) {
    // §8.1: moderators, or participants when the room lets them.
    if (!(occ.role === 'moderator' || (s.config.changeSubject && occ.role === 'participant'))) {
      throw new StanzaError('forbidden', 'you may not change the subject');
    }
    s.subject = { text: subject.text(), nick: occ.nick, stamp: tx.now };
  } else if (occ.role === 'visitor') {
    throw new StanzaError('forbidden', 'visitors may not speak in a moderated room');
  }
  const msg = new Element('message', { type: 'groupchat', from: tx.nickJid(occ.nick) });
  if (stanza.attrs.id !== undefined) msg.attrs.id = stanza.attrs.id;
  for (const c of stanza.elements) msg.append(c.clone());
  tx.mutated = true;
  if (body) addHistory(s, msg.toString(), tx.now);
  for (const o of tx.occupants()) tx.sendTo(o, msg);
}

function privateMessage(tx: Tx, stanza: Element, occ: Occupant | undefined, nick: string, type: string): void {
  if (type === 'groupchat') throw new StanzaError('bad-request', 'groupchat messages go to the room, not to an occupant');
  if (!occ) throw new StanzaError('not-acceptable', 'only occupants may send private messages');
  const target = tx.s.occupants[nickKey(safeNick(nick))];
  if (!target) throw new StanzaError('item-not-found', 'no such occupant');
  const pm = tx.s.config.allowPM;
  if (pm === 'none' || (pm === 'moderators' && occ.role !== 'moderator') || (pm === 'participants' && occ.role === 'visitor')) {
    throw new StanzaError('forbidden', 'private messages are not allowed here');
  }
  const msg = new Element('message', { type, from: tx.nickJid(occ.nick) });
  if (stanza.attrs.id !== undefined) msg.attrs.id = stanza.attrs.id;
  for (const c of stanza.elements) if (!c.is('x', NS_MUC_USER)) msg.append(c.clone());
  msg.append(x('x', { xmlns: NS_MUC_USER }));
  tx.sendTo(target, msg);
  // Delivered by the nodes of the recipient's sessions: they must see this input.
  tx.mutated = true;
}

function safeNick(nick: string): string {
  try {
    return prepNick(nick);
  } catch {
    return nick;
  }
}

function invite(tx: Tx, from: string, occ: Occupant | undefined, xu: Element): void {
  const s = tx.s;
  if (!occ) throw new StanzaError('not-acceptable', 'only occupants may invite');
  const aff = affiliationOf(s, occ.bare);
  const privileged = aff === 'owner' || aff === 'admin';
  if (!(privileged || occ.role === 'moderator' || s.config.allowInvites)) throw new StanzaError('forbidden', 'you may not invite to this room');
  if (s.config.membersOnly && !privileged && !s.config.allowInvites) throw new StanzaError('forbidden', 'only admins invite to this members-only room');
  const invites = xu.getChildren('invite');
  // Checked before anything changes (see ApplyContext.inPlace).
  if (invites.some((inv) => !tryParseJID(inv.attrs.to))) throw new StanzaError('jid-malformed', 'invitation without a valid to');
  for (const inv of invites) {
    const invitee = tryParseJID(inv.attrs.to)!;
    // §7.8.2 and §9.3: a members-only room adds whom its admins invite to the member list.
    if (s.config.membersOnly && affiliationOf(s, invitee.toBareString()) === 'none') {
      s.affiliations[invitee.toBareString()] = 'member';
      tx.persist = true;
      tx.mutated = true;
    }
    const reason = inv.getChildText('reason');
    const ix = x('x', { xmlns: NS_MUC_USER }, x('invite', { from }, reason ? x('reason', null, reason) : null));
    if (s.config.passwordProtected) ix.append(x('password', null, s.config.password));
    const m = x('message', { from: s.jid }, ix,
      x('body', null, `${occ.bare} invites you to the room ${s.jid}${reason ? `: ${reason}` : ''}`));
    tx.send(invitee.toString(), m, true);
  }
}

function decline(tx: Tx, from: string, xu: Element): void {
  const d = xu.getChild('decline')!;
  const inviter = tryParseJID(d.attrs.to);
  if (!inviter) throw new StanzaError('jid-malformed', 'decline without a valid to');
  const reason = d.getChildText('reason');
  const bare = tryParseJID(from)?.toBareString() ?? from;
  tx.send(inviter.toString(), x('message', { from: tx.s.jid },
    x('x', { xmlns: NS_MUC_USER }, x('decline', { from: bare }, reason ? x('reason', null, reason) : null))), true);
}

const NS_MUC_REQUEST = 'http://jabber.org/protocol/muc#request';

function formType(form: Element): string | undefined {
  return form.getChildren('field').find((f) => f.attrs.var === 'FORM_TYPE')?.getChildText('value');
}

function fieldValue(form: Element, v: string): string | undefined {
  return form.getChildren('field').find((f) => f.attrs.var === v)?.getChildText('value');
}

/**
 * §7.13: a visitor asks for voice, and every moderator gets the request form;
 * §8.6: a moderator who sends it back with muc#request_allow true grants it.
 */
function voiceRequest(tx: Tx, occ: Occupant | undefined, form: Element): void {
  if (!occ) throw new StanzaError('not-acceptable', 'only occupants may ask for voice');
  const allow = fieldValue(form, 'muc#request_allow');
  if (allow !== undefined && form.attrs.type === 'submit' && occ.role === 'moderator') {
    if (allow !== 'true' && allow !== '1') return;
    const nick = fieldValue(form, 'muc#roomnick') ?? '';
    const target = tx.s.occupants[nickKey(safeNick(nick))];
    if (!target) throw new StanzaError('item-not-found', 'no such occupant');
    if (target.role !== 'visitor') return;
    target.role = 'participant';
    tx.mutated = true;
    tx.broadcastPresence(target);
    return;
  }
  if (occ.role !== 'visitor') return;
  tx.mutated = true;
  const request = x('message', { from: tx.s.jid, id: `voice-${tx.s.seq + 1}` }, x('x', { xmlns: NS.dataForms, type: 'form' },
    x('title', null, 'Voice request'),
    x('instructions', null, 'To approve this request for voice, select the "Grant voice to this person?" checkbox and submit this form.'),
    x('field', { var: 'FORM_TYPE', type: 'hidden' }, x('value', null, NS_MUC_REQUEST)),
    x('field', { var: 'muc#role', type: 'list-single', label: 'Requested role' }, x('value', null, 'participant')),
    x('field', { var: 'muc#jid', type: 'jid-single', label: 'User ID' }, x('value', null, occ.current)),
    x('field', { var: 'muc#roomnick', type: 'text-single', label: 'Room Nickname' }, x('value', null, occ.nick)),
    x('field', { var: 'muc#request_allow', type: 'boolean', label: 'Grant voice to this person?' }, x('value', null, 'false'))));
  for (const o of tx.occupants()) if (o.role === 'moderator') tx.sendTo(o, request);
}
