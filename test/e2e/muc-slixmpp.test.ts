// XEP-0045 on one node as slixmpp's MUC plugin (xep_0045, a client written by
// others) sees it: entering a room with join_muc_wait (§7.2: occupant list,
// self-presence with 110, history with maxstanzas, subject), groupchat both
// ways with xmpp.js, the join errors it reports (§7.2.8 conflict, §7.2.5
// not-authorized), and leaving (§7.14).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startServer, trustServerCert, type TestServer } from '../helpers/imnode.ts';
import { connect, xml, type TestClient, type XmlEl } from '../helpers/xmppjs.ts';
import { slixLogin, slixMucJoin, type Slix } from '../helpers/slix.ts';

const USER = 'http://jabber.org/protocol/muc#user';
const OWNER = 'http://jabber.org/protocol/muc#owner';
const DATA = 'jabber:x:data';

let server: TestServer;
let alice: TestClient;
let bob: Slix;
let room: string;

test.before(async () => {
  server = await startServer({ users: { alice: 'pw-a', bob: 'pw-b' } });
  trustServerCert(server);
  room = `slix@conference.${server.domain}`;
  alice = await connect(server, { username: 'alice', password: 'pw-a', resource: 'r' });
  await alice.send(xml('presence'));
  bob = await slixLogin(server, { username: 'bob', password: 'pw-b', resource: 'slix', plugins: ['xep_0030', 'xep_0045'] });
});

test.after(async () => {
  await bob?.stop();
  await alice?.stop();
  await server?.stop();
});

const codes = (p: XmlEl): string[] => (p.getChild('x', USER)?.getChildren('status') ?? []).map((s) => s.attrs.code).sort();

test('slixmpp enters a room xmpp.js created: occupants, 110, history, subject; messages both ways', async () => {
  await alice.send(xml('presence', { to: `${room}/Alice` }, xml('x', { xmlns: 'http://jabber.org/protocol/muc' })));
  const self = await alice.waitFor((s) => s.name === 'presence' && s.attrs.from === `${room}/Alice` && codes(s).includes('110'));
  assert.equal(codes(self), ['110', '201']);
  await alice.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: OWNER }, xml('x', { xmlns: DATA, type: 'submit' }))));
  await alice.send(xml('message', { to: room, type: 'groupchat' }, xml('subject', {}, 'slix topic')));
  for (const b of ['one', 'two', 'three']) await alice.send(xml('message', { to: room, type: 'groupchat' }, xml('body', {}, b)));
  await alice.waitFor((s) => s.name === 'message' && s.getChildText('body') === 'three');
  const j = await slixMucJoin(bob, room, 'Bob', { maxstanzas: 2 });
  assert.is(j.error, undefined, JSON.stringify(j));
  assert.equal(j.codes, [110]);
  assert.is(j.role, 'participant');
  assert.is(j.affiliation, 'none');
  assert.is(j.subject, 'slix topic');
  assert.equal(j.occupants.filter((n) => n !== 'Bob'), ['Alice']);
  assert.equal(j.history, ['two', 'three']);
  const roster = await bob.command('muc_roster', { room });
  assert.equal(roster.nicks, ['Alice', 'Bob']);
  await bob.command('muc_message', { room, body: 'from slixmpp' });
  await alice.waitFor((s) => s.name === 'message' && s.attrs.from === `${room}/Bob` && s.getChildText('body') === 'from slixmpp');
  await alice.send(xml('message', { to: room, type: 'groupchat' }, xml('body', {}, 'to slixmpp')));
  const m = await bob.waitFor((e) => e.ev === 'message' && e.body === 'to slixmpp', 5000, 'groupchat at slixmpp');
  assert.is(m.from, `${room}/Alice`);
  assert.is(m.type, 'groupchat');
});

test('slixmpp sees the join errors: conflict for a taken nick, not-authorized without the password', async () => {
  const taken = await slixMucJoin(bob, room, 'alice');
  assert.is(taken.error, 'conflict');
  const closed = `locked@conference.${server.domain}`;
  await alice.send(xml('presence', { to: `${closed}/Alice` }, xml('x', { xmlns: 'http://jabber.org/protocol/muc' })));
  await alice.waitFor((s) => s.name === 'presence' && s.attrs.from === `${closed}/Alice`);
  await alice.iq(xml('iq', { type: 'set', to: closed }, xml('query', { xmlns: OWNER }, xml('x', { xmlns: DATA, type: 'submit' },
    xml('field', { var: 'muc#roomconfig_passwordprotectedroom' }, xml('value', {}, '1')),
    xml('field', { var: 'muc#roomconfig_roomsecret' }, xml('value', {}, 'open sesame'))))));
  assert.is((await slixMucJoin(bob, closed, 'Bob')).error, 'not-authorized');
  const ok = await slixMucJoin(bob, closed, 'Bob', { password: 'open sesame' });
  assert.equal(ok.codes, [110]);
});

test('slixmpp leaves: the others get its unavailable presence', async () => {
  await bob.command('muc_leave', { room, nick: 'Bob' });
  const p = await alice.waitFor((s) => s.name === 'presence' && s.attrs.from === `${room}/Bob` && s.attrs.type === 'unavailable');
  assert.is(p.getChild('x', USER)!.getChild('item')!.attrs.role, 'none');
});

test.run();
