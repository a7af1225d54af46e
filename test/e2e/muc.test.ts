// XEP-0045 multi-user chat on one node, driven by xmpp.js: the service in disco,
// instant and reserved rooms (§10.1), entering with status codes (§7.2), the
// occupant list, groupchat and private messages (§7.4, §7.5), subject (§8.1),
// history with maxstanzas/seconds/since (§7.2.15), nick change (§7.6), the
// join errors 409/403/407/401/503/404 (§7.2), moderated rooms, voice requests
// and voice (§7.13, §8.3/8.4, §8.6), kick (§8.2), ban (§9.1), affiliation lists
// (§9.5), mediated invitations (§7.8.2), room configuration (§10.2) and its
// cancellation (§10.1.3), destruction (§10.9), a session that ends leaving its
// rooms, RFC 8266 nicknames, --muc-domain checks, and a persistent room across
// a restart.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startServer, trustServerCert, tempDir, type TestServer } from '../helpers/imnode.ts';
import { connect, xml, expectIqError, type TestClient, type XmlEl } from '../helpers/xmppjs.ts';
import {
  MUC, MUC_USER as USER, MUC_ADMIN as ADMIN, MUC_OWNER as OWNER, DATA, codes, condition, isSubject, joinPresence,
  join as mucJoin, instantRoom as mucInstantRoom,
} from '../helpers/muc.ts';
import { rmSync } from 'node:fs';

process.on('unhandledRejection', (e) => { if ((e as Error | undefined)?.name !== 'StanzaError') throw e; });

const INFO = 'http://jabber.org/protocol/disco#info';
const ITEMS = 'http://jabber.org/protocol/disco#items';
const USERS = { alice: 'pw-a', bob: 'pw-b', carol: 'pw-c', dave: 'pw-d' };

let server: TestServer;
let dataDir: string;
let alice: TestClient, bob: TestClient, carol: TestClient, dave: TestClient;
let SVC: string;

test.before(async () => {
  dataDir = tempDir();
  server = await startServer({ dataDir, users: USERS });
  trustServerCert(server);
  SVC = `conference.${server.domain}`;
  [alice, bob, carol, dave] = await Promise.all((Object.keys(USERS) as Array<keyof typeof USERS>).map((u) => login(u)));
});

test.after(async () => {
  for (const c of [alice, bob, carol, dave]) await c?.stop();
  await server?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

async function login(u: keyof typeof USERS, s = server): Promise<TestClient> {
  const c = await connect(s, { username: u, password: USERS[u], resource: 'r' });
  await c.send(xml('presence'));
  return c;
}

const item = (p: XmlEl): Record<string, string> => p.getChild('x', USER)?.getChild('item')?.attrs ?? {};
const isPres = (from: string, type?: string) => (s: XmlEl) => s.name === 'presence' && s.attrs.from === from && s.attrs.type === type;
const isMsg = (from: string, body?: string) => (s: XmlEl) => s.name === 'message' && s.attrs.from === from && (body === undefined || s.getChildText('body') === body);
const isError = (from: string, name = 'presence') => (s: XmlEl) => s.name === name && s.attrs.from === from && s.attrs.type === 'error';

/** Joins and returns the self-presence (or the error); waits for the subject, which ends the join (§7.2.16). */
const join = (c: TestClient, room: string, nick: string, extra: XmlEl[] = []): Promise<XmlEl> => mucJoin(c, room, nick, { extra, timeoutMs: 5000 });

async function joinFails(c: TestClient, room: string, nick: string, extra: XmlEl[] = []): Promise<XmlEl> {
  await c.send(joinPresence(room, nick, extra));
  return c.waitFor(isError(`${room}/${nick}`), 5000, `a join error from ${room}`);
}

/** Creates an instant room (§10.1.2): join, then accept the default configuration. */
const instantRoom = (c: TestClient, room: string, nick: string): Promise<void> => mucInstantRoom(c, room, nick, 5000);

function configure(c: TestClient, room: string, fields: Record<string, string | string[]>): Promise<XmlEl> {
  const form = xml('x', { xmlns: DATA, type: 'submit' },
    xml('field', { var: 'FORM_TYPE' }, xml('value', {}, 'http://jabber.org/protocol/muc#roomconfig')),
    ...Object.entries(fields).map(([k, v]) => xml('field', { var: k }, ...(Array.isArray(v) ? v : [v]).map((val) => xml('value', {}, val)))));
  return c.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: OWNER }, form)));
}

async function leave(c: TestClient, room: string, nick: string): Promise<void> {
  await c.send(xml('presence', { to: `${room}/${nick}`, type: 'unavailable' }));
  await c.waitFor(isPres(`${room}/${nick}`, 'unavailable'), 5000, `own exit from ${room}`);
}

function drain(...cs: TestClient[]): void {
  for (const c of cs) c.received.splice(0);
}

test('the service: listed in the server disco#items, disco#info conference/text with the muc feature', async () => {
  const items = await alice.iq(xml('iq', { type: 'get', to: server.domain }, xml('query', { xmlns: ITEMS })));
  assert.ok(items.getChild('query')!.getChildren('item').some((i) => i.attrs.jid === SVC), items.toString());
  const info = await alice.iq(xml('iq', { type: 'get', to: SVC }, xml('query', { xmlns: INFO })));
  const q = info.getChild('query', INFO)!;
  assert.ok(q.getChildren('identity').some((i) => i.attrs.category === 'conference' && i.attrs.type === 'text'), info.toString());
  assert.ok(q.getChildren('feature').some((f) => f.attrs.var === MUC), info.toString());
});

test('instant room: 201 and 110, locked until the owner accepts (404 for others), then open', async () => {
  const room = `instant@${SVC}`;
  const self = await join(alice, room, 'Alice');
  assert.equal(codes(self), ['110', '201']);
  assert.is(item(self).affiliation, 'owner');
  assert.is(item(self).role, 'moderator');
  const locked = await joinFails(bob, room, 'Bob');
  assert.is(condition(locked), 'item-not-found');
  await alice.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: OWNER }, xml('x', { xmlns: DATA, type: 'submit' }))));
  await bob.send(joinPresence(room, 'Bob'));
  // §7.2.3: the occupant list first (Alice), then the self-presence.
  const aliceSeen = await bob.waitFor(isPres(`${room}/Alice`), 5000, 'Alice in the occupant list');
  assert.is(item(aliceSeen).role, 'moderator');
  assert.is(item(aliceSeen).jid, undefined, 'semi-anonymous: participants do not see real JIDs');
  const bobSelf = await bob.waitFor(isPres(`${room}/Bob`), 5000, 'self-presence');
  assert.equal(codes(bobSelf), ['110']);
  assert.is(item(bobSelf).role, 'participant');
  const bobAtAlice = await alice.waitFor(isPres(`${room}/Bob`), 5000, 'Bob joining, to Alice');
  assert.ok(item(bobAtAlice).jid?.startsWith(`bob@${server.domain}`), 'moderators see real JIDs: ' + bobAtAlice.toString());
  const subj = await bob.waitFor(isSubject(room), 5000, 'the subject');
  assert.is(subj.getChildText('subject'), '');
  await leave(bob, room, 'Bob');
  await alice.waitFor(isPres(`${room}/Bob`, 'unavailable'), 5000, 'Bob leaving, to Alice');
  await leave(alice, room, 'Alice');
});

test('reserved room: the owner gets the muc#roomconfig form, submits it, occupants see disco#info', async () => {
  const room = `reserved@${SVC}`;
  await join(alice, room, 'Alice');
  const form = await alice.iq(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: OWNER })));
  const x = form.getChild('query', OWNER)!.getChild('x', DATA)!;
  const vars = x.getChildren('field').map((f) => f.attrs.var);
  for (const v of ['FORM_TYPE', 'muc#roomconfig_roomname', 'muc#roomconfig_persistentroom', 'muc#roomconfig_membersonly', 'muc#roomconfig_moderatedroom',
    'muc#roomconfig_passwordprotectedroom', 'muc#roomconfig_roomsecret', 'muc#roomconfig_maxusers', 'muc#roomconfig_whois', 'muc#roomconfig_publicroom']) {
    assert.ok(vars.includes(v), `form misses ${v}`);
  }
  const forbidden = await expectIqError(bob, xml('iq', { type: 'get', to: room }, xml('query', { xmlns: OWNER })));
  assert.is(forbidden.condition, 'forbidden');
  await configure(alice, room, { 'muc#roomconfig_roomname': 'The Reserved', 'muc#roomconfig_whois': 'anyone' });
  const info = await bob.iq(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: INFO })));
  const q = info.getChild('query', INFO)!;
  assert.is(q.getChild('identity')!.attrs.name, 'The Reserved');
  const feats = q.getChildren('feature').map((f) => f.attrs.var);
  for (const f of [MUC, 'muc_public', 'muc_temporary', 'muc_open', 'muc_unmoderated', 'muc_nonanonymous', 'muc_unsecured']) assert.ok(feats.includes(f), `missing ${f}`);
  // Non-anonymous: status 100 on entering, and everyone sees real JIDs.
  const self = await join(bob, room, 'Bob');
  assert.equal(codes(self), ['100', '110']);
  const list = await expectIqError(bob, xml('iq', { type: 'get', to: `nope@${SVC}` }, xml('query', { xmlns: INFO })));
  assert.is(list.condition, 'item-not-found');
  await leave(bob, room, 'Bob');
  await leave(alice, room, 'Alice');
});

test('groupchat, private messages, subject, nick change, and errors for non-occupants', async () => {
  const room = `talk@${SVC}`;
  await instantRoom(alice, room, 'Alice');
  await join(bob, room, 'Bob');
  drain(alice, bob);
  await alice.send(xml('message', { to: room, type: 'groupchat', id: 'g1' }, xml('body', {}, 'hello room')));
  const atBob = await bob.waitFor(isMsg(`${room}/Alice`, 'hello room'));
  assert.is(atBob.attrs.type, 'groupchat');
  const echo = await alice.waitFor(isMsg(`${room}/Alice`, 'hello room'));
  assert.is(echo.attrs.id, 'g1', 'the sender gets its message back with its id');
  // §7.5 private message.
  await bob.send(xml('message', { to: `${room}/Alice`, type: 'chat' }, xml('body', {}, 'psst')));
  const pm = await alice.waitFor(isMsg(`${room}/Bob`, 'psst'));
  assert.is(pm.attrs.type, 'chat');
  assert.ok(pm.getChild('x', USER), 'a private message carries the muc#user x');
  // §8.1: participants may not change the subject by default; moderators may.
  await bob.send(xml('message', { to: room, type: 'groupchat' }, xml('subject', {}, 'bob says')));
  const denied = await bob.waitFor(isError(room, 'message'));
  assert.is(condition(denied), 'forbidden');
  await alice.send(xml('message', { to: room, type: 'groupchat' }, xml('subject', {}, 'Topic one')));
  const subj = await bob.waitFor(isSubject(room));
  assert.is(subj.getChildText('subject'), 'Topic one');
  assert.is(subj.attrs.from, `${room}/Alice`);
  // A non-occupant may not talk (§7.4: not-acceptable).
  await carol.send(xml('message', { to: room, type: 'groupchat' }, xml('body', {}, 'intruder')));
  const na = await carol.waitFor(isError(room, 'message'));
  assert.is(condition(na), 'not-acceptable');
  // PM to a nick that is not there.
  await bob.send(xml('message', { to: `${room}/Nobody`, type: 'chat' }, xml('body', {}, '?')));
  assert.is(condition(await bob.waitFor(isError(`${room}/Nobody`, 'message'))), 'item-not-found');
  // §7.6 nick change: 303 with the new nick, then the new presence.
  drain(alice, bob);
  await bob.send(xml('presence', { to: `${room}/Robert` }));
  const old = await alice.waitFor(isPres(`${room}/Bob`, 'unavailable'));
  assert.equal(codes(old), ['303']);
  assert.is(item(old).nick, 'Robert');
  await alice.waitFor(isPres(`${room}/Robert`));
  const selfOld = await bob.waitFor(isPres(`${room}/Bob`, 'unavailable'));
  assert.equal(codes(selfOld), ['110', '303']);
  // §7.2.8 conflict: Carol takes Alice's nick (compared case-insensitively, RFC 8266).
  const conflict = await joinFails(carol, room, 'alice');
  assert.is(condition(conflict), 'conflict');
  await leave(bob, room, 'Robert');
  await leave(alice, room, 'Alice');
});

test('history on entering: maxstanzas, seconds, since, with delay stamps, and the subject after it', async () => {
  const room = `hist@${SVC}`;
  await instantRoom(alice, room, 'Alice');
  for (let i = 1; i <= 5; i++) await alice.send(xml('message', { to: room, type: 'groupchat' }, xml('body', {}, `m${i}`)));
  await alice.waitFor(isMsg(`${room}/Alice`, 'm5'));
  const all = await historyVia(bob, room, 'Bob', null);
  assert.equal(all, ['m1', 'm2', 'm3', 'm4', 'm5']);
  assert.equal(await historyVia(bob, room, 'Bob', { maxstanzas: '2' }), ['m4', 'm5']);
  assert.equal(await historyVia(bob, room, 'Bob', { maxstanzas: '0' }), []);
  assert.equal(await historyVia(bob, room, 'Bob', { seconds: '3600' }), ['m1', 'm2', 'm3', 'm4', 'm5']);
  assert.equal(await historyVia(bob, room, 'Bob', { since: new Date(Date.now() + 60_000).toISOString() }), []);
  assert.equal(await historyVia(bob, room, 'Bob', { since: new Date(Date.now() - 60_000).toISOString(), maxstanzas: '3' }), ['m3', 'm4', 'm5']);
  await leave(alice, room, 'Alice');
});

/** Joins with a <history/> request and returns the replayed bodies, in order (they come before the subject). */
async function historyVia(c: TestClient, room: string, nick: string, attrs: Record<string, string> | null): Promise<string[]> {
  drain(c);
  const order: XmlEl[] = [];
  await c.send(joinPresence(room, nick, attrs ? [xml('history', attrs)] : []));
  const subject = await c.waitFor(isSubject(room), 5000, 'the subject');
  for (const s of c.received) if (s.name === 'message' && s.attrs.from?.startsWith(room)) order.push(s);
  for (const m of order) {
    const d = m.getChild('delay', 'urn:xmpp:delay');
    assert.ok(d && d.attrs.from === room && !Number.isNaN(Date.parse(d.attrs.stamp)), 'history carries a delay from the room: ' + m.toString());
  }
  assert.ok(subject, 'subject after history');
  await leave(c, room, nick);
  return order.map((m) => m.getChildText('body') ?? '');
}

test('members-only (407), password (401), max users (503), banned (403)', async () => {
  const room = `closed@${SVC}`;
  await join(alice, room, 'Alice');
  await configure(alice, room, { 'muc#roomconfig_membersonly': '1', 'muc#roomconfig_passwordprotectedroom': '1', 'muc#roomconfig_roomsecret': 'sesame', 'muc#roomconfig_maxusers': '2' });
  assert.is(condition(await joinFails(bob, room, 'Bob')), 'registration-required');
  await alice.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: ADMIN }, xml('item', { affiliation: 'member', jid: `bob@${server.domain}` }), xml('item', { affiliation: 'member', jid: `carol@${server.domain}` }))));
  assert.is(condition(await joinFails(bob, room, 'Bob')), 'not-authorized');
  assert.is(condition(await joinFails(bob, room, 'Bob', [xml('password', {}, 'wrong')])), 'not-authorized');
  await join(bob, room, 'Bob', [xml('password', {}, 'sesame')]);
  assert.is(condition(await joinFails(carol, room, 'Carol', [xml('password', {}, 'sesame')])), 'service-unavailable');
  // §9.5 member list, for admins and owners only.
  const list = await alice.iq(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: ADMIN }, xml('item', { affiliation: 'member' }))));
  assert.equal(list.getChild('query', ADMIN)!.getChildren('item').map((i) => i.attrs.jid).sort(), [`bob@${server.domain}`, `carol@${server.domain}`]);
  assert.is((await expectIqError(bob, xml('iq', { type: 'get', to: room }, xml('query', { xmlns: ADMIN }, xml('item', { affiliation: 'member' }))))).condition, 'forbidden');
  // §9.1 ban: Bob is removed with 301, and may not come back (403).
  drain(alice, bob);
  await alice.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: ADMIN }, xml('item', { affiliation: 'outcast', jid: `bob@${server.domain}` }, xml('reason', {}, 'spam')))));
  const banned = await bob.waitFor(isPres(`${room}/Bob`, 'unavailable'));
  assert.equal(codes(banned), ['110', '301']);
  assert.is(item(banned).affiliation, 'outcast');
  assert.is(banned.getChild('x', USER)!.getChild('item')!.getChildText('reason'), 'spam');
  const seen = await alice.waitFor(isPres(`${room}/Bob`, 'unavailable'));
  assert.equal(codes(seen), ['301']);
  assert.is(condition(await joinFails(bob, room, 'Bob', [xml('password', {}, 'sesame')])), 'forbidden');
  // Admins may not ban the owner; the last owner stays (§10.6: conflict).
  const lastOwner = await expectIqError(alice, xml('iq', { type: 'set', to: room }, xml('query', { xmlns: ADMIN }, xml('item', { affiliation: 'member', jid: `alice@${server.domain}` }))));
  assert.is(lastOwner.condition, 'conflict');
  await leave(alice, room, 'Alice');
});

test('moderated room: visitors may not speak, voice granted and revoked; kick with 307; only moderators kick', async () => {
  const room = `mod@${SVC}`;
  await join(alice, room, 'Alice');
  await configure(alice, room, { 'muc#roomconfig_moderatedroom': '1' });
  const self = await join(bob, room, 'Bob');
  assert.is(item(self).role, 'visitor');
  await join(carol, room, 'Carol');
  drain(alice, bob, carol);
  await bob.send(xml('message', { to: room, type: 'groupchat' }, xml('body', {}, 'may I?')));
  assert.is(condition(await bob.waitFor(isError(room, 'message'))), 'forbidden');
  // §7.13 Bob asks for voice: the moderator gets the request form; §8.6 approving it grants voice.
  const REQ = 'http://jabber.org/protocol/muc#request';
  await bob.send(xml('message', { to: room }, xml('x', { xmlns: DATA, type: 'submit' },
    xml('field', { var: 'FORM_TYPE' }, xml('value', {}, REQ)), xml('field', { var: 'muc#role' }, xml('value', {}, 'participant')))));
  const req = await alice.waitFor((s) => s.name === 'message' && s.attrs.from === room && s.getChild('x', DATA) !== undefined);
  const fields = Object.fromEntries(req.getChild('x', DATA)!.getChildren('field').map((f) => [f.attrs.var, f.getChildText('value')]));
  assert.is(fields.FORM_TYPE, REQ);
  assert.is(fields['muc#roomnick'], 'Bob');
  assert.ok(String(fields['muc#jid']).startsWith(`bob@${server.domain}`));
  await alice.send(xml('message', { to: room }, xml('x', { xmlns: DATA, type: 'submit' },
    xml('field', { var: 'FORM_TYPE' }, xml('value', {}, REQ)), xml('field', { var: 'muc#role' }, xml('value', {}, 'participant')),
    xml('field', { var: 'muc#roomnick' }, xml('value', {}, 'Bob')), xml('field', { var: 'muc#request_allow' }, xml('value', {}, 'true')))));
  const voiced = await carol.waitFor(isPres(`${room}/Bob`));
  assert.is(item(voiced).role, 'participant');
  // §8.4 revoke and §8.3 grant again through muc#admin.
  await alice.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: ADMIN }, xml('item', { nick: 'Bob', role: 'visitor' }))));
  assert.is(item(await carol.waitFor(isPres(`${room}/Bob`))).role, 'visitor');
  await alice.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: ADMIN }, xml('item', { nick: 'Bob', role: 'participant' }))));
  assert.is(item(await carol.waitFor(isPres(`${room}/Bob`))).role, 'participant');
  await bob.send(xml('message', { to: room, type: 'groupchat' }, xml('body', {}, 'now I can')));
  await carol.waitFor(isMsg(`${room}/Bob`, 'now I can'));
  // Visitors and participants do not kick.
  const notMod = await expectIqError(carol, xml('iq', { type: 'set', to: room }, xml('query', { xmlns: ADMIN }, xml('item', { nick: 'Bob', role: 'none' }))));
  assert.is(notMod.condition, 'forbidden');
  // Nobody kicks an owner.
  await alice.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: ADMIN }, xml('item', { nick: 'Carol', role: 'moderator' })))).catch(() => undefined);
  // §8.2 kick.
  drain(alice, bob, carol);
  await alice.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: ADMIN }, xml('item', { nick: 'Bob', role: 'none' }, xml('reason', {}, 'bye')))));
  const kicked = await bob.waitFor(isPres(`${room}/Bob`, 'unavailable'));
  assert.equal(codes(kicked), ['110', '307']);
  assert.is(kicked.getChild('x', USER)!.getChild('item')!.getChild('actor')?.attrs.nick, 'Alice');
  assert.equal(codes(await carol.waitFor(isPres(`${room}/Bob`, 'unavailable'))), ['307']);
  const ownerKick = await expectIqError(carol, xml('iq', { type: 'set', to: room }, xml('query', { xmlns: ADMIN }, xml('item', { nick: 'Alice', role: 'none' }))));
  assert.ok(['forbidden', 'not-allowed'].includes(ownerKick.condition), ownerKick.condition);
  // A kicked user may come back (not banned).
  await join(bob, room, 'Bob');
  await leave(bob, room, 'Bob');
  await leave(carol, room, 'Carol');
  await leave(alice, room, 'Alice');
});

test('mediated invitations (§7.8.2): the invitee gets the invite with the password and becomes a member; a decline reaches the inviter', async () => {
  const room = `invite@${SVC}`;
  await join(alice, room, 'Alice');
  await configure(alice, room, { 'muc#roomconfig_membersonly': '1', 'muc#roomconfig_passwordprotectedroom': '1', 'muc#roomconfig_roomsecret': 'pw1' });
  drain(carol, alice);
  await alice.send(xml('message', { to: room }, xml('x', { xmlns: USER }, xml('invite', { to: `carol@${server.domain}` }, xml('reason', {}, 'join us')))));
  const inv = await carol.waitFor((s) => s.name === 'message' && s.attrs.from === room && !!s.getChild('x', USER)?.getChild('invite'));
  const x = inv.getChild('x', USER)!;
  assert.ok(x.getChild('invite')!.attrs.from.startsWith(`alice@${server.domain}`), inv.toString());
  assert.is(x.getChild('invite')!.getChildText('reason'), 'join us');
  assert.is(x.getChildText('password'), 'pw1');
  // Invited into a members-only room by its owner: a member now.
  const self = await join(carol, room, 'Carol', [xml('password', {}, 'pw1')]);
  assert.is(item(self).affiliation, 'member');
  await leave(carol, room, 'Carol');
  await carol.send(xml('message', { to: room }, xml('x', { xmlns: USER }, xml('decline', { to: `alice@${server.domain}/r` }, xml('reason', {}, 'busy')))));
  const dec = await alice.waitFor((s) => s.name === 'message' && s.attrs.from === room && !!s.getChild('x', USER)?.getChild('decline'));
  assert.is(dec.getChild('x', USER)!.getChild('decline')!.attrs.from, `carol@${server.domain}`);
  assert.is(dec.getChild('x', USER)!.getChild('decline')!.getChildText('reason'), 'busy');
  await leave(alice, room, 'Alice');
});

test('cancelling the first configuration destroys the new room (§10.1.3); disco#items of a room lists its occupants', async () => {
  const room = `cancelled@${SVC}`;
  await join(alice, room, 'Alice');
  await alice.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: OWNER }, xml('x', { xmlns: DATA, type: 'cancel' }))));
  await alice.waitFor(isPres(`${room}/Alice`, 'unavailable'));
  assert.is((await expectIqError(bob, xml('iq', { type: 'get', to: room }, xml('query', { xmlns: INFO })))).condition, 'item-not-found');
  const open = `listed@${SVC}`;
  await instantRoom(alice, open, 'Alice');
  await join(bob, open, 'Bob');
  const items = await carol.iq(xml('iq', { type: 'get', to: open }, xml('query', { xmlns: ITEMS })));
  assert.equal(items.getChild('query', ITEMS)!.getChildren('item').map((i) => i.attrs.jid).sort(), [`${open}/Alice`, `${open}/Bob`]);
  const svc = await carol.iq(xml('iq', { type: 'get', to: SVC }, xml('query', { xmlns: ITEMS })));
  assert.ok(svc.getChild('query', ITEMS)!.getChildren('item').some((i) => i.attrs.jid === open), svc.toString());
  await leave(bob, open, 'Bob');
  await leave(alice, open, 'Alice');
});

test('destroy (§10.9): occupants get unavailable with <destroy/>; the room is gone', async () => {
  const room = `doomed@${SVC}`;
  await instantRoom(alice, room, 'Alice');
  await join(bob, room, 'Bob');
  drain(bob);
  const notOwner = await expectIqError(bob, xml('iq', { type: 'set', to: room }, xml('query', { xmlns: OWNER }, xml('destroy', {}))));
  assert.is(notOwner.condition, 'forbidden');
  await alice.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: OWNER }, xml('destroy', { jid: `other@${SVC}` }, xml('reason', {}, 'moving')))));
  const p = await bob.waitFor(isPres(`${room}/Bob`, 'unavailable'));
  const d = p.getChild('x', USER)!.getChild('destroy')!;
  assert.is(d.attrs.jid, `other@${SVC}`);
  assert.is(d.getChildText('reason'), 'moving');
  const gone = await expectIqError(bob, xml('iq', { type: 'get', to: room }, xml('query', { xmlns: INFO })));
  assert.is(gone.condition, 'item-not-found');
});

test('a session that ends leaves its rooms; the last one out ends a temporary room', async () => {
  const room = `ephemeral@${SVC}`;
  await instantRoom(alice, room, 'Alice');
  const d = await login('dave');
  await join(d, room, 'Dave');
  drain(alice);
  await d.stop();
  await alice.waitFor(isPres(`${room}/Dave`, 'unavailable'), 5000, 'Dave gone with his session');
  await leave(alice, room, 'Alice');
  const gone = await expectIqError(bob, xml('iq', { type: 'get', to: room }, xml('query', { xmlns: INFO })));
  assert.is(gone.condition, 'item-not-found');
});

test('nicknames: RFC 8266 enforcement (210 when the service changed it), jid-malformed without a nick', async () => {
  const room = `nicks@${SVC}`;
  await instantRoom(alice, room, 'Alice');
  await bob.send(xml('presence', { to: `${room}/  Bob   the  Builder ` }, xml('x', { xmlns: MUC })));
  const self = await bob.waitFor((s) => s.name === 'presence' && codes(s).includes('110'));
  assert.is(self.attrs.from, `${room}/Bob the Builder`);
  assert.ok(codes(self).includes('210'), self.toString());
  await bob.waitFor(isSubject(room));
  await leave(bob, room, 'Bob the Builder');
  await bob.send(xml('presence', { to: room }, xml('x', { xmlns: MUC })));
  assert.is(condition(await bob.waitFor(isError(room))), 'jid-malformed');
  await leave(alice, room, 'Alice');
});

test('--muc-domain: the server domain itself or an invalid name is refused with one line and exit code 2', async () => {
  for (const bad of [server.domain, 'not a domain']) {
    const dir = tempDir();
    try {
      const err = await startServer({ dataDir: dir, args: ['--muc-domain', bad] }).then(async (s) => { await s.stop(); return null; }, (e: Error) => e);
      assert.ok(err, `--muc-domain '${bad}' was accepted`);
      assert.match(err.message, /exited with 2/);
      assert.match(err.message, /imnode: --muc-domain: /);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('persistent room: listed in disco#items, survives a restart with its configuration and affiliations', async () => {
  const room = `lasting@${SVC}`;
  await join(alice, room, 'Alice');
  await configure(alice, room, { 'muc#roomconfig_persistentroom': '1', 'muc#roomconfig_roomname': 'Lasting', 'muc#roomconfig_membersonly': '1' });
  await alice.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: ADMIN }, xml('item', { affiliation: 'member', jid: `bob@${server.domain}` }))));
  await alice.send(xml('message', { to: room, type: 'groupchat' }, xml('subject', {}, 'kept')));
  await alice.waitFor(isSubject(room));
  await leave(alice, room, 'Alice');
  for (const c of [alice, bob, carol, dave]) await c.stop();
  await server.stop();
  server = await startServer({ dataDir });
  [alice, bob, carol, dave] = await Promise.all((Object.keys(USERS) as Array<keyof typeof USERS>).map((u) => login(u)));
  const items = await bob.iq(xml('iq', { type: 'get', to: SVC }, xml('query', { xmlns: ITEMS })));
  assert.ok(items.getChild('query')!.getChildren('item').some((i) => i.attrs.jid === room && i.attrs.name === 'Lasting'), items.toString());
  assert.is(condition(await joinFails(carol, room, 'Carol')), 'registration-required');
  await bob.send(joinPresence(room, 'Bob'));
  const subj = await bob.waitFor(isSubject(room));
  assert.is(subj.getChildText('subject'), 'kept');
  await leave(bob, room, 'Bob');
});

test.run();
