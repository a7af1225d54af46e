// IQs to a room (XEP-0045), applied inside the room's transaction (room.ts):
//   §6.4 disco#info of a room (identity conference/text, muc_* features, the
//        muc#roominfo form), §6.5 disco#items (the occupants' room JIDs),
//        §7.9 reserved nick discovery (none reserved);
//   §8.2 kick, §8.3/8.4 voice grant/revoke, §8.5 voice list, §8.6/8.7
//        moderator grant/revoke (muc#admin, by nick and role);
//   §9.1 ban, §9.3/9.4 member grant/revoke, §9.5 member list, §10.3-10.8
//        owner and admin lists (muc#admin, by jid and affiliation), with 301,
//        321 and 322 removals; §10.6 the last owner stays (conflict);
//   §10.1.2 instant room, §10.1.3 reserved room, §10.2 configuration
//        (muc#owner, the muc#roomconfig form), §10.9 room destruction.
import { Element, x } from '../../xmpp/element.ts';
import { NS } from '../../xmpp/ns.ts';
import { StanzaError } from '../../xmpp/errors.ts';
import { tryParseJID } from '../../xmpp/jid.ts';
import { nickKey, prepNick } from './nick.ts';
import { applyConfigForm, configForm, roomFeatures, roomInfoForm } from './config.ts';
import {
  NS_MUC_ADMIN, NS_MUC_OWNER, NS_MUC_USER, affRank, affiliationOf, defaultRole, occupantBySession,
  type Affiliation, type Occupant, type Role,
} from './state.ts';
import type { Tx } from './room.ts';

const AFFILIATIONS = new Set(['owner', 'admin', 'member', 'outcast', 'none']);
const ROLES = new Set(['moderator', 'participant', 'visitor', 'none']);

export function handleIq(tx: Tx, iq: Element, from: string, nick: string): void {
  const type = iq.attrs.type;
  if (type !== 'get' && type !== 'set') return;
  // §7.5 lets a room pass IQs on to an occupant; this one does not.
  if (nick !== '') throw new StanzaError('service-unavailable');
  const q = iq.elements[0];
  const ns = q?.getNS() ?? '';
  const bare = tryParseJID(from)?.toBareString() ?? '';
  const result = (payload: Element | null) => {
    const r = x('iq', { type: 'result', id: iq.attrs.id ?? '', from: tx.s.jid }, payload);
    tx.send(from, r, true);
  };
  if (type === 'get' && ns === NS.discoInfo && q.is('query')) {
    // §7.9: no nicks are reserved here, so the answer names none.
    if (q.attrs.node === 'x-roomuser-item') return result(x('query', { xmlns: NS.discoInfo, node: 'x-roomuser-item' }));
    if (q.attrs.node !== undefined) throw new StanzaError('item-not-found');
    const s = tx.s;
    const info = x('query', { xmlns: NS.discoInfo }, x('identity', { category: 'conference', type: 'text', name: s.config.name || s.jid.split('@')[0] }));
    for (const f of roomFeatures(s)) info.c('feature', { var: f });
    info.append(roomInfoForm(s));
    return result(info);
  }
  if (type === 'get' && ns === NS.discoItems && q.is('query')) {
    if (q.attrs.node !== undefined) throw new StanzaError('item-not-found');
    const items = x('query', { xmlns: NS.discoItems });
    // §6.5: a room may list its occupants; a hidden room only to them.
    if (tx.s.config.public || occupantBySession(tx.s, from)) {
      for (const o of tx.occupants()) items.c('item', { jid: tx.nickJid(o.nick) });
    }
    return result(items);
  }
  if (ns === NS_MUC_ADMIN && q.is('query')) {
    if (type === 'get') return result(adminGet(tx, q, from, bare));
    adminSet(tx, q, from, bare);
    return result(null);
  }
  if (ns === NS_MUC_OWNER && q.is('query')) {
    if (affiliationOf(tx.s, bare) !== 'owner') throw new StanzaError('forbidden', 'only owners configure the room');
    if (type === 'get') return result(x('query', { xmlns: NS_MUC_OWNER }, configForm(tx.s)));
    ownerSet(tx, q);
    return result(null);
  }
  throw new StanzaError('service-unavailable');
}

// ---- muc#admin -----------------------------------------------------------------------

function adminGet(tx: Tx, q: Element, from: string, bare: string): Element {
  const item = q.getChild('item');
  const out = x('query', { xmlns: NS_MUC_ADMIN });
  const aff = item?.attrs.affiliation;
  const role = item?.attrs.role;
  if (aff !== undefined && AFFILIATIONS.has(aff) && aff !== 'none') {
    if (affRank(affiliationOf(tx.s, bare)) < affRank('admin')) throw new StanzaError('forbidden', 'only admins and owners see affiliation lists');
    for (const [jid, a] of Object.entries(tx.s.affiliations).sort()) {
      if (a === aff) out.c('item', { affiliation: a, jid });
    }
    return out;
  }
  if (role !== undefined && ROLES.has(role) && role !== 'none') {
    const me = occupantBySession(tx.s, from);
    if (me?.role !== 'moderator') throw new StanzaError('forbidden', 'only moderators see role lists');
    for (const o of tx.occupants()) {
      if (o.role === role) out.c('item', { affiliation: affiliationOf(tx.s, o.bare), role: o.role, nick: o.nick, jid: o.current });
    }
    return out;
  }
  throw new StanzaError('bad-request', 'ask for one affiliation or one role');
}

interface Change { kind: 'role' | 'aff'; target: string; value: string; reason: string | undefined; occ?: Occupant }

function adminSet(tx: Tx, q: Element, from: string, bare: string): void {
  const s = tx.s;
  const items = q.getChildren('item');
  if (!items.length) throw new StanzaError('bad-request', 'no item');
  const actor = occupantBySession(s, from);
  const actorAff = affiliationOf(s, bare);
  const changes: Change[] = [];
  // Checked all first: a list is applied whole or not at all (§9.6, §10.5).
  for (const it of items) {
    const reason = it.getChildText('reason');
    if (it.attrs.affiliation !== undefined) {
      const value = it.attrs.affiliation;
      if (!AFFILIATIONS.has(value)) throw new StanzaError('bad-request', `unknown affiliation ${value}`);
      let target = it.attrs.jid !== undefined ? tryParseJID(it.attrs.jid)?.toBareString() : undefined;
      if (target === undefined && it.attrs.nick !== undefined) target = occupantByNick(tx, it.attrs.nick)?.bare;
      if (!target) throw new StanzaError(it.attrs.jid !== undefined ? 'jid-malformed' : 'item-not-found', 'no such user');
      checkAffiliation(tx, actorAff, target, value as Affiliation);
      changes.push({ kind: 'aff', target, value, reason });
    } else if (it.attrs.role !== undefined) {
      const value = it.attrs.role;
      if (!ROLES.has(value)) throw new StanzaError('bad-request', `unknown role ${value}`);
      const occ = it.attrs.nick !== undefined ? occupantByNick(tx, it.attrs.nick) : undefined;
      if (!occ) throw new StanzaError('item-not-found', 'no such occupant');
      checkRole(tx, actor, actorAff, occ, value as Role);
      changes.push({ kind: 'role', target: occ.nick, value, reason, occ });
    } else {
      throw new StanzaError('bad-request', 'an item needs an affiliation or a role');
    }
  }
  // §10.6: the room keeps an owner.
  const owners = new Set(Object.keys(s.affiliations).filter((j) => s.affiliations[j] === 'owner'));
  for (const c of changes) if (c.kind === 'aff') { if (c.value === 'owner') owners.add(c.target); else owners.delete(c.target); }
  if (owners.size === 0) throw new StanzaError('conflict', 'the room would have no owner');
  const actorItem: Record<string, string> = actor ? { nick: actor.nick } : {};
  for (const c of changes) {
    tx.mutated = true;
    if (c.kind === 'role') setRole(tx, c.occ!, c.value as Role, c.reason, actorItem);
    else setAffiliation(tx, c.target, c.value as Affiliation, c.reason, actorItem);
  }
}

function occupantByNick(tx: Tx, nick: string): Occupant | undefined {
  try {
    return tx.s.occupants[nickKey(prepNick(nick))];
  } catch {
    return undefined;
  }
}

function checkRole(tx: Tx, actor: Occupant | undefined, actorAff: Affiliation, occ: Occupant, role: Role): void {
  if (actor?.role !== 'moderator') throw new StanzaError('forbidden', 'only moderators change roles');
  const targetAff = affiliationOf(tx.s, occ.bare);
  if (role === 'moderator' || occ.role === 'moderator') {
    // §8.6/8.7: admins and owners grant and revoke moderation.
    if (affRank(actorAff) < affRank('admin')) throw new StanzaError('forbidden', 'only admins and owners change moderators');
  }
  if (role !== 'moderator' && affRank(targetAff) >= affRank('admin')) {
    // §8.2, §8.4: an admin or owner cannot be kicked or silenced.
    throw new StanzaError('not-allowed', 'admins and owners keep their role');
  }
  if (affRank(targetAff) > affRank(actorAff)) throw new StanzaError('not-allowed', 'the occupant has a higher affiliation');
}

function checkAffiliation(tx: Tx, actorAff: Affiliation, target: string, value: Affiliation): void {
  const current = affiliationOf(tx.s, target);
  if (actorAff === 'owner') return;
  if (actorAff !== 'admin') throw new StanzaError('forbidden', 'only admins and owners change affiliations');
  // §9: admins manage members and outcasts; owners and admins are the owners' business.
  if (value === 'owner' || value === 'admin' || current === 'owner' || current === 'admin') {
    throw new StanzaError('not-allowed', 'only owners change owners and admins');
  }
}

function setRole(tx: Tx, occ: Occupant, role: Role, reason: string | undefined, actor: Record<string, string>): void {
  if (role === 'none') {
    // §8.2: kicked, 307.
    tx.remove(occ, ['307'], { children: kickChildren(actor, reason) });
    return;
  }
  occ.role = role;
  tx.broadcastPresence(occ);
}

function kickChildren(actor: Record<string, string>, reason: string | undefined): Element[] {
  const out: Element[] = [];
  if (actor.nick) out.push(x('actor', { nick: actor.nick }));
  if (reason) out.push(x('reason', null, reason));
  return out;
}

export function setAffiliation(tx: Tx, bare: string, aff: Affiliation, reason: string | undefined, actor: Record<string, string>): void {
  const s = tx.s;
  if (aff === 'none') delete s.affiliations[bare];
  else s.affiliations[bare] = aff;
  tx.persist = true;
  tx.mutated = true;
  for (const occ of tx.occupants().filter((o) => o.bare === bare)) {
    if (aff === 'outcast') {
      // §9.1: banned, 301.
      tx.remove(occ, ['301'], { children: kickChildren(actor, reason) });
    } else if (s.config.membersOnly && affRank(aff) < affRank('member')) {
      // §9.4: no longer a member of a members-only room, 321.
      tx.remove(occ, ['321'], { children: kickChildren(actor, reason) });
    } else {
      occ.role = aff === 'owner' || aff === 'admin' ? 'moderator' : occ.role === 'moderator' ? defaultRole(s, aff) : occ.role === 'visitor' && aff === 'member' ? 'participant' : occ.role;
      tx.broadcastPresence(occ);
    }
  }
}

// ---- muc#owner -----------------------------------------------------------------------

function ownerSet(tx: Tx, q: Element): void {
  const s = tx.s;
  const destroy = q.getChild('destroy');
  if (destroy) return destroyRoom(tx, destroy);
  const form = q.getChild('x', NS.dataForms);
  if (!form) throw new StanzaError('bad-request', 'a data form or a destroy element is required');
  const type = form.attrs.type;
  if (type === 'cancel') {
    // §10.1.3: cancelling the first configuration of a reserved room destroys it.
    if (s.locked) destroyRoom(tx, x('destroy'));
    return;
  }
  if (type !== 'submit') throw new StanzaError('bad-request', 'the form must be submitted or cancelled');
  const before = { ...s.config };
  const change = applyConfigForm(s, form, tx.defaults);
  s.config = change.config;
  if (change.owners) {
    for (const j of Object.keys(s.affiliations)) if (s.affiliations[j] === 'owner' && !change.owners.includes(j)) delete s.affiliations[j];
    for (const j of change.owners) s.affiliations[j] = 'owner';
  }
  if (change.admins) {
    for (const j of Object.keys(s.affiliations)) if (s.affiliations[j] === 'admin' && !change.admins.includes(j)) delete s.affiliations[j];
    for (const j of change.admins) if (s.affiliations[j] !== 'owner') s.affiliations[j] = 'admin';
  }
  const wasLocked = s.locked;
  s.locked = false;
  tx.mutated = true;
  tx.persist = true;
  // Roles follow the new affiliations and moderation.
  for (const occ of tx.occupants()) {
    const aff = affiliationOf(s, occ.bare);
    if (s.config.membersOnly && affRank(aff) < affRank('member')) {
      // §10.2: members-only now, 322 for those who are not members.
      tx.remove(occ, ['322']);
      continue;
    }
    const role = occ.role === 'visitor' && !s.config.moderated ? 'participant' : aff === 'owner' || aff === 'admin' ? 'moderator' : occ.role;
    if (role !== occ.role) {
      occ.role = role;
      tx.broadcastPresence(occ);
    }
  }
  if (wasLocked) return;
  // §10.2.1: occupants learn that the configuration changed.
  const codes = ['104'];
  if (before.whois !== s.config.whois) codes.push(s.config.whois === 'anyone' ? '172' : '173');
  const notice = x('message', { type: 'groupchat', from: s.jid, id: `config-${s.seq + 1}` }, x('x', { xmlns: NS_MUC_USER }, ...codes.map((code) => x('status', { code }))));
  for (const o of tx.occupants()) tx.sendTo(o, notice);
  tx.maybeEnd();
}

function destroyRoom(tx: Tx, destroy: Element): void {
  const d = x('destroy', destroy.attrs.jid ? { jid: destroy.attrs.jid } : null);
  const reason = destroy.getChildText('reason');
  if (reason) d.append(x('reason', null, reason));
  // §10.9: every occupant is told, with the alternate venue if there is one.
  for (const occ of tx.occupants()) {
    const p = x('presence', { type: 'unavailable', from: tx.nickJid(occ.nick) },
      x('x', { xmlns: NS_MUC_USER }, x('item', { affiliation: 'none', role: 'none' }), d.clone(), x('status', { code: '110' })));
    tx.sendTo(occ, p);
  }
  tx.s.occupants = {};
  tx.s.config.persistent = false;
  tx.destroyed = true;
  tx.mutated = true;
  tx.persist = true;
}
