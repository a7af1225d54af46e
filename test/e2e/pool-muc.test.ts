// XEP-0045 rooms across a pool of real imnode processes (issue 4, "Tests that
// prove it"): three nodes in network namespaces (test/helpers/pool-lab.ts),
// occupants spread over them, driven by xmpp.js and slixmpp's MUC plugin.
// Covers: join, messages (one order everywhere, each sender's order kept),
// subject and private messages across nodes; history identical on every
// node, including a node that joined the pool after the messages; kick and
// ban from another node; members-only and password rooms; one nick taken
// from two nodes at once (one wins, the other gets 409); a node killed with
// occupants on it (they leave with unavailable presence, the room lives on,
// even when the dead node sequenced it); a persistent room across a restart
// of the whole pool. Needs root (network namespaces); fails loudly otherwise.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { clientTracker, PoolLab, sleep, type LabNode } from '../helpers/pool-lab.ts';
import { trustServerCert } from '../helpers/imnode.ts';
import { connect, xml, type TestClient, type XmlEl } from '../helpers/xmppjs.ts';
import { slixLogin, slixMucJoin, type Slix } from '../helpers/slix.ts';
import {
  MUC_USER as USER, MUC_ADMIN as ADMIN, MUC_OWNER as OWNER, DATA, codes, condition, isSubject, joinPresence,
  join as mucJoin, instantRoom,
} from '../helpers/muc.ts';

process.on('unhandledRejection', (e) => { if ((e as Error | undefined)?.name !== 'StanzaError') throw e; });

const DOMAIN = 'pool.test';
const SVC = `conference.${DOMAIN}`;
const USERS = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw', dave: 'dave-pw', eve: 'eve-pw', frank: 'frank-pw' };
type User = keyof typeof USERS;

let pool: PoolLab;
let n1: LabNode, n2: LabNode, n3: LabNode, n4: LabNode;
const { track, stopAll: stopClients } = clientTracker();

async function login(node: LabNode, user: User, resource = 'r'): Promise<TestClient> {
  const c = track(await connect(node.server, { username: user, password: USERS[user], resource }));
  await c.send(xml('presence'));
  return c;
}

async function slix(node: LabNode, user: User): Promise<Slix> {
  return track(await slixLogin(node.server, { username: user, password: USERS[user], resource: 'slix', plugins: ['xep_0030', 'xep_0045'] }));
}

const isPres = (from: string, type?: string) => (s: XmlEl) => s.name === 'presence' && s.attrs.from === from && s.attrs.type === type;
const isMsg = (from: string, body?: string) => (s: XmlEl) => s.name === 'message' && s.attrs.from === from && (body === undefined || s.getChildText('body') === body);
const join = (c: TestClient, room: string, nick: string, extra: XmlEl[] = []): Promise<XmlEl> => mucJoin(c, room, nick, { extra });

async function joinError(c: TestClient, room: string, nick: string, extra: XmlEl[] = []): Promise<string> {
  const p = await join(c, room, nick, extra);
  assert.is(p.attrs.type, 'error', `expected ${c.jid} to be refused: ${p.toString()}`);
  return condition(p);
}

function configure(c: TestClient, room: string, fields: Record<string, string>): Promise<XmlEl> {
  const form = xml('x', { xmlns: DATA, type: 'submit' },
    ...Object.entries(fields).map(([k, v]) => xml('field', { var: k }, xml('value', {}, v))));
  return c.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: OWNER }, form)), 10_000);
}

function admin(c: TestClient, room: string, attrs: Record<string, string>, reason?: string): Promise<XmlEl> {
  return c.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: ADMIN }, xml('item', attrs, reason ? xml('reason', {}, reason) : undefined))), 10_000);
}

/** The groupchat bodies a client got from the room, in arrival order. */
function bodies(c: TestClient, room: string): string[] {
  return c.received.filter((s) => s.name === 'message' && s.attrs.type === 'groupchat' && s.attrs.from?.startsWith(room + '/') && !s.getChild('delay', 'urn:xmpp:delay'))
    .map((s) => s.getChildText('body') ?? '').filter((b) => b !== '');
}

/** Waits until what a client received (left in place) satisfies `ok`. */
async function seen(c: TestClient, ok: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const t0 = Date.now();
  while (!ok()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}; got: ${c.received.slice(-10).map(String).join('\n')}`);
    await sleep(50);
  }
}

/** The member that sequences a room: what src/modules/muc/replication.ts computes. */
function sequencerOf(room: string, nodes: LabNode[]): LabNode {
  let best: LabNode | null = null, bestScore = '';
  for (const n of nodes) {
    const score = createHash('sha256').update(room).update('\0').update(n.peerId()!).digest('hex');
    if (score > bestScore) { bestScore = score; best = n; }
  }
  return best!;
}

test.before(async () => {
  pool = await PoolLab.start({ nodes: [{}, {}, {}, { start: false }], domain: DOMAIN, users: USERS });
  [n1, n2, n3, n4] = pool.nodes;
  trustServerCert(n1.server);
  await pool.waitMembers([n1, n2, n3], ['node1', 'node2', 'node3'], 30_000);
});

test.after(async () => {
  await stopClients();
  await pool?.cleanupChecked();
});

test('join, subject, messages and private messages with occupants on three nodes (xmpp.js and slixmpp)', async () => {
  try {
    const room = `lobby@${SVC}`;
    const alice = await login(n1, 'alice');
    const bob = await login(n2, 'bob');
    const carol = await slix(n3, 'carol');
    await instantRoom(alice, room, 'Alice');
    await join(bob, room, 'Bob');
    const cj = await slixMucJoin(carol, room, 'Carol');
    assert.is(cj.error, undefined, JSON.stringify(cj));
    assert.equal(cj.codes, [110]);
    assert.equal(cj.occupants.filter((n) => n !== 'Carol'), ['Alice', 'Bob']);
    await alice.waitFor(isPres(`${room}/Carol`), 10_000, 'Carol joining, at Alice');
    await bob.waitFor(isPres(`${room}/Carol`), 10_000, 'Carol joining, at Bob');
    // Subject from node1, seen on node2 and node3.
    await alice.send(xml('message', { to: room, type: 'groupchat' }, xml('subject', {}, 'pool talk')));
    assert.is((await bob.waitFor(isSubject(room), 10_000)).getChildText('subject'), 'pool talk');
    await carol.waitStanza((el) => el.name === 'message' && el.getChildText('subject') === 'pool talk', 10_000, 'subject at Carol');
    // Interleaved senders on two nodes: every occupant gets every message in one order, each sender's order kept.
    for (let i = 0; i < 10; i++) {
      await alice.send(xml('message', { to: room, type: 'groupchat' }, xml('body', {}, `a${i}`)));
      await bob.send(xml('message', { to: room, type: 'groupchat' }, xml('body', {}, `b${i}`)));
      await carol.command('muc_message', { room, body: `c${i}` });
    }
    for (const c of [alice, bob]) await seen(c, () => bodies(c, room).length >= 30, `30 messages at ${c.jid}`);
    const atAlice = bodies(alice, room), atBob = bodies(bob, room);
    assert.is(atAlice.length, 30, atAlice.join(' '));
    assert.equal(atAlice, atBob, 'one order on every node');
    for (const p of ['a', 'b', 'c']) assert.equal(atAlice.filter((b) => b[0] === p), Array.from({ length: 10 }, (_, i) => `${p}${i}`));
    const atCarol = await (async () => {
      const out: string[] = [];
      while (out.length < 30) {
        const el = await carol.waitStanza((e) => e.name === 'message' && e.attrs.type === 'groupchat' && e.getChild('body') !== undefined && !e.getChild('delay', 'urn:xmpp:delay'), 15_000, 'groupchat at Carol');
        out.push(el.getChildText('body')!);
      }
      return out;
    })();
    assert.equal(atCarol, atAlice, 'slixmpp on node3 sees the same order');
    // Private messages across nodes (§7.5).
    await carol.command('message', { to: `${room}/Alice`, body: 'pm to alice', type: 'chat' });
    const pm = await alice.waitFor(isMsg(`${room}/Carol`, 'pm to alice'), 10_000);
    assert.is(pm.attrs.type, 'chat');
    await bob.send(xml('message', { to: `${room}/Carol`, type: 'chat' }, xml('body', {}, 'pm to carol')));
    const pm2 = await carol.waitFor((e) => e.ev === 'message' && e.body === 'pm to carol', 10_000, 'PM at Carol');
    assert.is(pm2.from, `${room}/Bob`);
  } finally {
    await stopClients();
  }
});

test('history is the same on every node, and on a node that joined the pool after the messages', async () => {
  try {
    const room = `hist@${SVC}`;
    const alice = await login(n1, 'alice');
    await instantRoom(alice, room, 'Alice');
    for (let i = 1; i <= 6; i++) await alice.send(xml('message', { to: room, type: 'groupchat' }, xml('body', {}, `h${i}`)));
    await alice.waitFor(isMsg(`${room}/Alice`, 'h6'), 10_000);
    const historyAt = async (node: LabNode, user: User, nick: string, extra: XmlEl[] = []): Promise<string[]> => {
      const c = await login(node, user);
      await c.send(joinPresence(room, nick, extra));
      await c.waitFor(isSubject(room), 10_000, `subject at ${nick}`);
      const h = c.received.filter((s) => s.name === 'message' && s.getChild('delay', 'urn:xmpp:delay'))
        .map((s) => `${s.attrs.from} ${s.getChildText('body')} ${s.getChild('delay', 'urn:xmpp:delay')!.attrs.stamp}`);
      await c.stop();
      return h;
    };
    const onN2 = await historyAt(n2, 'bob', 'Bob');
    const onN3 = await historyAt(n3, 'carol', 'Carol');
    assert.is(onN2.length, 6, onN2.join('\n'));
    assert.equal(onN3, onN2);
    assert.equal((await historyAt(n3, 'carol', 'Carol', [xml('history', { maxstanzas: '2' })])).map((h) => h.split(' ')[1]), ['h5', 'h6']);
    await n4.start();
    await pool.waitMembers([n1, n2, n3, n4], ['node1', 'node2', 'node3', 'node4'], 30_000);
    const onN4 = await historyAt(n4, 'dave', 'Dave');
    assert.equal(onN4, onN2, 'the node that joined later replays the same history');
  } finally {
    await stopClients();
    await n4.stop();
    await pool.waitMembers([n1, n2, n3], ['node1', 'node2', 'node3'], 30_000);
  }
});

test('kick and ban from another node; members-only and password rooms across nodes', async () => {
  try {
    const room = `guarded@${SVC}`;
    const alice = await login(n1, 'alice');
    const bob = await login(n2, 'bob');
    const eve = await login(n3, 'eve');
    await instantRoom(alice, room, 'Alice');
    await join(bob, room, 'Bob');
    await join(eve, room, 'Eve');
    await admin(alice, room, { nick: 'Eve', role: 'none' }, 'cool down');
    const kicked = await eve.waitFor(isPres(`${room}/Eve`, 'unavailable'), 10_000);
    assert.equal(codes(kicked), ['110', '307']);
    assert.equal(codes(await bob.waitFor(isPres(`${room}/Eve`, 'unavailable'), 10_000)), ['307']);
    await join(eve, room, 'Eve');
    await admin(alice, room, { jid: `eve@${DOMAIN}`, affiliation: 'outcast' });
    assert.equal(codes(await eve.waitFor(isPres(`${room}/Eve`, 'unavailable'), 10_000)), ['110', '301']);
    assert.is(await joinError(eve, room, 'Eve'), 'forbidden');

    const closed = `closed@${SVC}`;
    await join(alice, closed, 'Alice');
    await configure(alice, closed, { 'muc#roomconfig_membersonly': '1', 'muc#roomconfig_passwordprotectedroom': '1', 'muc#roomconfig_roomsecret': 'sesame' });
    assert.is(await joinError(bob, closed, 'Bob'), 'registration-required');
    await admin(alice, closed, { jid: `bob@${DOMAIN}`, affiliation: 'member' });
    assert.is(await joinError(bob, closed, 'Bob', [xml('password', {}, 'wrong')]), 'not-authorized');
    const ok = await join(bob, closed, 'Bob', [xml('password', {}, 'sesame')]);
    assert.equal(codes(ok), ['110']);
    // Bob leaves the members: 321 reaches him on node2.
    await admin(alice, closed, { jid: `bob@${DOMAIN}`, affiliation: 'none' });
    assert.equal(codes(await bob.waitFor(isPres(`${closed}/Bob`, 'unavailable'), 10_000)), ['110', '321']);
  } finally {
    await stopClients();
  }
});

test('one nick taken from two nodes in the same instant: one occupant, the other gets 409', async () => {
  try {
    const room = `race@${SVC}`;
    const alice = await login(n1, 'alice');
    const bob = await login(n2, 'bob');
    const carol = await login(n3, 'carol');
    await instantRoom(alice, room, 'Alice');
    await Promise.all([bob.send(joinPresence(room, 'Same')), carol.send(joinPresence(room, 'same'))]);
    const outcome = async (c: TestClient) => c.waitFor((s) => s.name === 'presence' && s.attrs.from?.toLowerCase() === `${room}/same` && (s.attrs.type === 'error' || codes(s).includes('110')), 10_000);
    const [b, c] = await Promise.all([outcome(bob), outcome(carol)]);
    const winners = [b, c].filter((p) => p.attrs.type !== 'error');
    assert.is(winners.length, 1, `${b.toString()}\n${c.toString()}`);
    const loser = [b, c].find((p) => p.attrs.type === 'error')!;
    assert.is(condition(loser), 'conflict');
    // Alice sees exactly the winner.
    await sleep(500);
    const seen = alice.received.filter((s) => s.name === 'presence' && s.attrs.from?.toLowerCase() === `${room}/same` && s.attrs.type === undefined);
    assert.is(seen.length, 1, seen.map(String).join('\n'));
  } finally {
    await stopClients();
  }
});

test('one room created from two nodes at once, then configured from two nodes at once: one outcome everywhere', async () => {
  try {
    const room = `twin@${SVC}`;
    const alice = await login(n1, 'alice');
    const bob = await login(n2, 'bob');
    const carol = await login(n3, 'carol');
    await Promise.all([alice.send(joinPresence(room, 'Alice')), bob.send(joinPresence(room, 'Bob'))]);
    const outcome = (c: TestClient, nick: string) => c.waitFor((s) => s.name === 'presence' && s.attrs.from === `${room}/${nick}` && (s.attrs.type === 'error' || codes(s).includes('110')), 10_000);
    const [a, b] = await Promise.all([outcome(alice, 'Alice'), outcome(bob, 'Bob')]);
    const created = [a, b].filter((p) => codes(p).includes('201'));
    assert.is(created.length, 1, `${a.toString()}\n${b.toString()}`);
    // §10.1.1: the room stays locked for the other until its creator configures it.
    const other = created[0] === a ? b : a;
    assert.is(other.attrs.type, 'error');
    assert.is(condition(other), 'item-not-found');
    const [owner, ownerNick, second, secondNick] = created[0] === a ? [alice, 'Alice', bob, 'Bob'] : [bob, 'Bob', alice, 'Alice'];
    await owner.waitFor(isSubject(room), 10_000);
    await configure(owner, room, {});
    await admin(owner, room, { jid: second === alice ? `alice@${DOMAIN}` : `bob@${DOMAIN}`, affiliation: 'owner' });
    await join(second, room, secondNick);
    // Two owners on two nodes change the name at the same moment: the last sequenced wins on every node.
    await Promise.all([configure(owner, room, { 'muc#roomconfig_roomname': `by ${ownerNick}` }), configure(second, room, { 'muc#roomconfig_roomname': `by ${secondNick}` })]);
    const names = await Promise.all([alice, bob, carol].map(async (c) => {
      const r = await c.iq(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })), 10_000);
      return r.getChild('query')!.getChild('identity')!.attrs.name;
    }));
    assert.ok(names[0] === 'by Alice' || names[0] === 'by Bob', names.join());
    assert.equal(names, [names[0], names[0], names[0]]);
    // A temporary room is listed by the service on every node, occupants there or not (§6.3).
    for (const c of [alice, bob, carol]) {
      const items = await c.iq(xml('iq', { type: 'get', to: SVC }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#items' })), 10_000);
      assert.ok(items.getChild('query')!.getChildren('item').some((i) => i.attrs.jid === room && i.attrs.name === names[0]), `${c.jid}: ${items.toString()}`);
    }
    // Both occupants got the two 104 notices, in the same order.
    const notices = (c: TestClient) => c.received.filter((s) => s.name === 'message' && s.attrs.from === room && codes(s).includes('104')).map((s) => s.attrs.id);
    await sleep(500);
    assert.is(notices(alice).length, 2);
    assert.equal(notices(alice), notices(bob));
  } finally {
    await stopClients();
  }
});

test('a node killed with occupants on it: they leave with unavailable presence everywhere, the room lives on', async () => {
  try {
    // A room that the node to be killed sequences, so that the room must change hands too.
    let room = '';
    for (let i = 0; !room; i++) if (sequencerOf(`doom${i}@${SVC}`, [n1, n2, n3]) === n3) room = `doom${i}@${SVC}`;
    const alice = await login(n1, 'alice');
    const bob = await login(n2, 'bob');
    const frank = await login(n3, 'frank');
    await instantRoom(alice, room, 'Alice');
    await join(bob, room, 'Bob');
    await join(frank, room, 'Frank');
    await alice.send(xml('message', { to: room, type: 'groupchat' }, xml('body', {}, 'before')));
    await bob.waitFor(isMsg(`${room}/Alice`, 'before'), 10_000);
    await n3.kill();
    const killedAt = Date.now();
    const gone = await alice.waitFor(isPres(`${room}/Frank`, 'unavailable'), 20_000, 'Frank unavailable at Alice');
    await bob.waitFor(isPres(`${room}/Frank`, 'unavailable'), 20_000, 'Frank unavailable at Bob');
    assert.ok(gone.getChild('x', USER), gone.toString());
    const took = Date.now() - killedAt;
    // The room continues under its new sequencer.
    await alice.send(xml('message', { to: room, type: 'groupchat' }, xml('body', {}, 'after')));
    await bob.waitFor(isMsg(`${room}/Alice`, 'after'), 10_000, 'a message after the kill');
    // Frank comes back on another node and gets the history.
    const frank2 = await login(n1, 'frank', 'again');
    await frank2.send(joinPresence(room, 'Frank'));
    await frank2.waitFor(isSubject(room), 10_000);
    const hist = frank2.received.filter((s) => s.name === 'message' && s.getChild('delay', 'urn:xmpp:delay')).map((s) => s.getChildText('body'));
    assert.equal(hist, ['before', 'after']);
    console.log(`  occupants of the killed node left the room ${took} ms after the kill`);
  } finally {
    await stopClients();
    if (!n3.alive) await n3.start();
    await pool.waitMembers([n1, n2, n3], ['node1', 'node2', 'node3'], 30_000);
  }
});

test('a persistent room survives a restart of the whole pool, known to every node', async () => {
  const room = `keep@${SVC}`;
  try {
    const alice = await login(n1, 'alice');
    await join(alice, room, 'Alice');
    await configure(alice, room, { 'muc#roomconfig_persistentroom': '1', 'muc#roomconfig_roomname': 'Kept', 'muc#roomconfig_membersonly': '1' });
    await admin(alice, room, { jid: `bob@${DOMAIN}`, affiliation: 'member' });
    await alice.send(xml('presence', { to: `${room}/Alice`, type: 'unavailable' }));
    await alice.waitFor(isPres(`${room}/Alice`, 'unavailable'), 10_000);
    await sleep(1000);
  } finally {
    await stopClients();
  }
  await Promise.all([n1, n2, n3].map((n) => n.stop()));
  await Promise.all([n1, n2, n3].map((n) => n.start()));
  await pool.waitMembers([n1, n2, n3], ['node1', 'node2', 'node3'], 30_000);
  try {
    const carol = await login(n3, 'carol');
    const items = await carol.iq(xml('iq', { type: 'get', to: SVC }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#items' })), 10_000);
    assert.ok(items.getChild('query')!.getChildren('item').some((i) => i.attrs.jid === room && i.attrs.name === 'Kept'), items.toString());
    assert.is(await joinError(carol, room, 'Carol'), 'registration-required');
    const bob = await login(n2, 'bob');
    const self = await join(bob, room, 'Bob');
    assert.equal(codes(self), ['110']);
    const alice = await login(n1, 'alice');
    const owner = await join(alice, room, 'Alice');
    assert.is(owner.getChild('x', USER)!.getChild('item')!.attrs.affiliation, 'owner');
  } finally {
    await stopClients();
  }
});

test.run();
