// The server pool seen by XMPP clients (issue 3, "Tests that prove it"): real
// imnode processes, one per network namespace on a private bridge, started with
// --autodiscover and a pool password only (test/helpers/pool-lab.ts), driven by
// xmpp.js and slixmpp. Covers: forming the pool, intruders (wrong password,
// other domain) kept out, subscriptions, presence, messages and carbons across
// nodes (RFC 6121 §3, §4, §8.5; XEP-0280), the newest binding of a full JID
// winning pool-wide (RFC 6120 §7.7.2.2), and the user data every node shares:
// an account registered on one node (XEP-0077) logs in on another, an offline
// message stored on one node is delivered once on another (RFC 6121 §8.5.2.2.1).
// Needs root (network namespaces); fails loudly otherwise.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { clientTracker, PoolLab, sleep, waitUntil, type LabNode } from '../helpers/pool-lab.ts';
import { runCli, trustServerCert } from '../helpers/imnode.ts';
import { connect, xml, type TestClient, type XmlEl } from '../helpers/xmppjs.ts';
import { RawClient } from '../helpers/raw.ts';
import { slixLogin, type Slix } from '../helpers/slix.ts';
import type { Element } from '../../src/xmpp/element.ts';

const DOMAIN = 'pool.test';
const USERS = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw', dave: 'dave-pw', eve: 'eve-pw', frank: 'frank-pw', grace: 'grace-pw' };
const ROSTER = 'jabber:iq:roster';
const CARBONS = 'urn:xmpp:carbons:2';
const FORWARD = 'urn:xmpp:forward:0';

let pool: PoolLab;
let n1: LabNode, n2: LabNode, n3: LabNode, wrongPw: LabNode, otherDomain: LabNode;
const { track, stopAll: stopClients } = clientTracker();

function login(node: LabNode, user: keyof typeof USERS, resource: string): Promise<TestClient> {
  return connect(node.server, { username: user, password: USERS[user], resource }).then(track);
}

const isMessage = (from: string, body?: string) => (s: XmlEl) =>
  s.name === 'message' && s.attrs.from === from && (body === undefined || s.getChildText('body') === body);

const isPresence = (from: string, type?: string) => (s: XmlEl) =>
  s.name === 'presence' && s.attrs.from === from && s.attrs.type === type;

/** A carbon (XEP-0280 §7, §8) of `kind` whose forwarded message has this body. */
const isCarbon = (kind: 'received' | 'sent', body: string) => (s: XmlEl) => {
  const wrap = s.name === 'message' ? s.getChild(kind, CARBONS) : undefined;
  const inner = wrap?.getChild('forwarded', FORWARD)?.getChild('message');
  return !!inner && inner.getChildText('body') === body;
};

function bare(jid: string): string {
  return jid.split('/')[0];
}

/** The full JIDs of every node's routing table must be exactly `expected`, on every node. */
async function expectRoutes(nodes: LabNode[], expected: Record<string, string>, timeoutMs: number): Promise<void> {
  const want = JSON.stringify(Object.entries(expected).sort());
  await waitUntil(async () => {
    for (const n of nodes) {
      const r = await n.routes();
      if (r === null) throw new Error(`${n.name}: its status does not report the routing table (GET /status on admin.sock needs "routes")`);
      if (JSON.stringify(Object.entries(r).sort()) !== want) return false;
    }
    return true;
  }, timeoutMs, `routes ${want} on ${nodes.map((n) => n.name).join(', ')}`);
}

test.before(async () => {
  pool = await PoolLab.start({
    nodes: [{}, {}, {}, { serverId: 'intruder-pw', password: 'not the pool password', start: false },
      { serverId: 'intruder-dom', domain: 'other.test', start: false }],
    domain: DOMAIN,
    users: USERS,
    args: ['--allow-registration', '--registration-throttle', '0'],
  });
  [n1, n2, n3, wrongPw, otherDomain] = pool.nodes;
  trustServerCert(n1.server);
});

test.after(async () => {
  await stopClients();
  await pool?.cleanupChecked();
});

test('three nodes started with only --autodiscover and a password form a pool within 5 s', async () => {
  const launched = Math.max(n1.spawnedAt, n2.spawnedAt, n3.spawnedAt);
  const all = ['node1', 'node2', 'node3'];
  await pool.waitMembers([n1, n2, n3], all, 10_000);
  const took = Date.now() - launched;
  assert.ok(took <= 5000, `the pool took ${took} ms to form (from the last node's launch)`);
  for (const n of [n1, n2, n3]) {
    const s = await n.status();
    assert.equal(s.members.map((m) => `${m.serverId}:${m.state}`), all.map((id) => `${id}:alive`), `${n.name} (${s.source})`);
    assert.is(new Set(s.members.map((m) => m.peerId)).size, 3, `${n.name}: three distinct peer ids`);
  }
  // What an operator types, when the node serves its admin channel.
  if ((await n2.adminStatus()) !== null) {
    const r = await runCli(['pool', 'status', '--data-dir', n2.dataDir, '--domain', DOMAIN]);
    assert.is(r.code, 0, r.stderr);
    for (const id of all) assert.match(r.stdout, new RegExp(`^${id}\\b.*\\balive\\b`, 'm'));
  }
});

test('a node with a wrong password or another domain never joins and sees no traffic', async () => {
  const marks = new Map([n1, n2, n3].map((n) => [n, n.mark()]));
  await Promise.all([wrongPw.start(), otherDomain.start()]);
  try {
    // Make pool traffic while they try: sessions, presence and messages between members.
    const alice = await login(n1, 'alice', 'pw-a');
    const bob = await login(n2, 'bob', 'pw-b');
    // eve's account exists on the intruder too: she logs in there.
    const eve = await login(wrongPw, 'eve', 'pw-e');
    await alice.send(xml('presence'));
    await bob.send(xml('presence'));
    await eve.send(xml('presence'));
    await alice.send(xml('message', { to: bob.jid, type: 'chat' }, xml('body', {}, 'members only')));
    await bob.waitFor(isMessage(alice.jid, 'members only'), 5000);
    // Each side discovers the other on the subnet and dials it: the pool secret (bound
    // to the domain) is what makes the connection fail, on both sides.
    const members = [n1, n2, n3];
    const memberPeers = members.map((n) => n.peerId()).join('|');
    for (const intruder of [wrongPw, otherDomain]) {
      await intruder.waitLog(new RegExp(`cannot connect to discovered peer (${memberPeers})`), 12_000, `${intruder.serverId} failing to connect to a member`);
      const peer = intruder.peerId()!;
      await waitUntil(() => members.some((n) => n.logSince(marks.get(n)!).includes(`cannot connect to discovered peer ${peer}`)), 12_000,
        `a member failing to connect to ${intruder.serverId}`, 200);
    }
    // And it stays so.
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline) {
      for (const n of members) assert.equal(await n.aliveMembers(), ['node1', 'node2', 'node3'], `${n.name}'s view`);
      assert.equal((await wrongPw.status()).members.map((m) => m.serverId), ['intruder-pw'], 'the wrong-password node sees only itself');
      assert.equal((await otherDomain.status()).members.map((m) => m.serverId), ['intruder-dom'], 'the other-domain node sees only itself');
      await sleep(500);
    }
    for (const intruder of [wrongPw, otherDomain]) {
      const out = intruder.runOutput();
      assert.not.match(out, /pool member \S+ \(\w+\) (joined|is back|is alive again)/, `${intruder.name} never admits anyone`);
      assert.not.match(out, /synced from/, `${intruder.name} never syncs state`);
      assert.not.match(out, /connected to discovered peer/, `${intruder.name} completes no pool connection`);
    }
    for (const [n, mark] of marks) {
      assert.not.match(n.logSince(mark), /intruder-(pw|dom)/, `${n.name} never heard of an intruder's server id`);
    }
    // No stanza crosses: alice's message to eve's session stays in the pool, eve's to alice stays on the intruder.
    await alice.send(xml('message', { to: eve.jid, type: 'chat' }, xml('body', {}, 'to the intruder')));
    await eve.send(xml('message', { to: alice.jid, type: 'chat' }, xml('body', {}, 'from the intruder')));
    await sleep(1500);
    assert.not.ok(eve.received.some(isMessage(alice.jid)), 'eve on the intruder got nothing from alice');
    assert.not.ok(alice.received.some(isMessage(eve.jid)), 'alice got nothing from eve on the intruder');
    assert.not.ok(eve.received.some((s) => s.name === 'presence' && bare(s.attrs.from ?? '') !== `eve@${DOMAIN}`), 'eve saw no presence of pool users');
    const routes = await n1.routes();
    if (routes) assert.not.ok(Object.keys(routes).some((k) => k.startsWith('eve@')), 'no route of the intruder in the pool');
  } finally {
    await stopClients();
    await wrongPw.stop();
    await otherDomain.stop();
  }
});

/** Reads the roster (RFC 6121 §2.2), which also makes the session "interested" in pushes. */
async function roster(c: TestClient): Promise<Map<string, string>> {
  const r = await c.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: ROSTER })));
  const items = r.getChild('query', ROSTER)?.getChildren('item') ?? [];
  return new Map(items.map((i) => [i.attrs.jid, `${i.attrs.subscription}${i.attrs.ask ? '+ask' : ''}`]));
}

/**
 * Initial presence, then a pause for the route update to reach the other nodes
 * (a few ms of gossip), so that the next resource to come online sees this one.
 */
async function goAvailable(c: TestClient, priority: string): Promise<void> {
  await c.send(xml('presence', {}, xml('priority', {}, priority)));
  // RFC 6121 §4.2.2: the server reflects it to the sender too.
  await c.waitFor(isPresence(c.jid), 5000, 'the reflection of its own presence');
  await sleep(300);
}

test('alice on node1 and bob on node2 subscribe, see presence, chat both ways; bob\'s resource on node3 gets carbons', async () => {
  try {
    const alice = await login(n1, 'alice', 'laptop');
    const bob = await login(n2, 'bob', 'desk');
    const bobPhone = await login(n3, 'bob', 'phone');
    for (const c of [alice, bob, bobPhone]) await roster(c);
    await bobPhone.iq(xml('iq', { type: 'set' }, xml('enable', { xmlns: CARBONS })));
    // One after the other: see the next test for resources going available at the same moment.
    await goAvailable(alice, '1');
    await goAvailable(bob, '5');
    await goAvailable(bobPhone, '0');
    // bob's resources see each other's presence across nodes (RFC 6121 §4.2.2, §4.4.2).
    await bob.waitFor(isPresence(bobPhone.jid), 5000, 'the presence of bob/phone on bob/desk');
    await bobPhone.waitFor(isPresence(bob.jid), 5000, 'the presence of bob/desk on bob/phone');

    // RFC 6121 §3.1: alice asks, bob (on another node) approves; then the other way round.
    await alice.send(xml('presence', { to: `bob@${DOMAIN}`, type: 'subscribe' }));
    await bob.waitFor((s) => s.name === 'presence' && s.attrs.type === 'subscribe' && bare(s.attrs.from) === `alice@${DOMAIN}`, 5000, 'the request on bob/desk');
    await bobPhone.waitFor((s) => s.name === 'presence' && s.attrs.type === 'subscribe' && bare(s.attrs.from) === `alice@${DOMAIN}`, 5000, 'the request on bob/phone');
    await bob.send(xml('presence', { to: `alice@${DOMAIN}`, type: 'subscribed' }));
    // §3.1.5/§3.1.6: alice learns of bob's available resources, on both nodes.
    const bobDeskSeen = await alice.waitFor(isPresence(bob.jid), 5000, 'bob/desk presence on alice');
    assert.is(bobDeskSeen.getChildText('priority'), '5');
    await alice.waitFor(isPresence(bobPhone.jid), 5000, 'bob/phone presence on alice');

    await bob.send(xml('presence', { to: `alice@${DOMAIN}`, type: 'subscribe' }));
    await alice.waitFor((s) => s.name === 'presence' && s.attrs.type === 'subscribe' && bare(s.attrs.from) === `bob@${DOMAIN}`, 5000, 'bob\'s request on alice');
    await alice.send(xml('presence', { to: `bob@${DOMAIN}`, type: 'subscribed' }));
    await bob.waitFor(isPresence(alice.jid), 5000, 'alice presence on bob/desk');
    await bobPhone.waitFor(isPresence(alice.jid), 5000, 'alice presence on bob/phone');

    // The rosters are the same whatever node reads them.
    await waitUntil(async () => (await roster(alice)).get(`bob@${DOMAIN}`) === 'both', 5000, 'alice\'s roster to show bob as both');
    for (const c of [bob, bobPhone]) {
      await waitUntil(async () => (await roster(c)).get(`alice@${DOMAIN}`) === 'both', 5000, `${c.jid}'s roster to show alice as both`);
    }

    // Presence updates travel point to point (§4.4).
    await alice.send(xml('presence', {}, xml('show', {}, 'away'), xml('priority', {}, '1')));
    for (const c of [bob, bobPhone]) {
      const p = await c.waitFor(isPresence(alice.jid), 5000, 'alice\'s away presence');
      assert.is(p.getChildText('show'), 'away');
    }

    // Messages both ways between node1 and node2; carbons (XEP-0280) on node3.
    await alice.send(xml('message', { to: bob.jid, type: 'chat', id: 'm1' }, xml('body', {}, 'hello bob')));
    await bob.waitFor(isMessage(alice.jid, 'hello bob'), 5000, 'alice\'s message on bob/desk');
    await bobPhone.waitFor(isCarbon('received', 'hello bob'), 5000, 'a received carbon on bob/phone');
    await bob.send(xml('message', { to: alice.jid, type: 'chat', id: 'm2' }, xml('body', {}, 'hello alice')));
    await alice.waitFor(isMessage(bob.jid, 'hello alice'), 5000, 'bob\'s answer on alice');
    await bobPhone.waitFor(isCarbon('sent', 'hello alice'), 5000, 'a sent carbon on bob/phone');
    // To the bare JID: the highest priority resource (bob/desk, 5) takes it (§8.5.2.1.1), the other a carbon.
    await alice.send(xml('message', { to: `bob@${DOMAIN}`, type: 'chat', id: 'm3' }, xml('body', {}, 'to your bare jid')));
    await bob.waitFor(isMessage(alice.jid, 'to your bare jid'), 5000, 'the bare-JID message on bob/desk');
    await bobPhone.waitFor(isCarbon('received', 'to your bare jid'), 5000, 'its carbon on bob/phone');
    await sleep(300);
    assert.not.ok(bobPhone.received.some(isMessage(alice.jid, 'to your bare jid')), 'bob/phone got a carbon, not the message itself');
    assert.not.ok(bob.received.some(isCarbon('received', 'hello bob')), 'no carbon to the resource that got the message');

    // Going unavailable reaches the contact on the other node (§4.5).
    await bob.send(xml('presence', { type: 'unavailable' }));
    await alice.waitFor(isPresence(bob.jid, 'unavailable'), 5000, 'bob/desk unavailable on alice');
  } finally {
    await stopClients();
  }
});

test('resources and contacts going available at the same moment on two nodes see each other\'s presence', async () => {
  // On one server, of two initial presences the second always finds the first
  // resource available: the user's resources (§4.2.2, and the server's own
  // "implicit self-subscription") and subscribed contacts (§4.2.2 broadcast, §4.3
  // probes) end up knowing each other's presence. The pool must give the same result.
  try {
    // Contacts first, set up one step at a time.
    const frank = await login(n1, 'frank', 'f');
    const grace = await login(n2, 'grace', 'g');
    for (const c of [frank, grace]) await roster(c);
    await goAvailable(frank, '0');
    await goAvailable(grace, '0');
    for (const [a, b] of [[frank, grace], [grace, frank]]) {
      await a.send(xml('presence', { to: bare(b.jid), type: 'subscribe' }));
      await b.waitFor((s) => s.name === 'presence' && s.attrs.type === 'subscribe', 5000, 'the request');
      await b.send(xml('presence', { to: bare(a.jid), type: 'subscribed' }));
      await a.waitFor(isPresence(b.jid), 5000, 'the contact\'s presence after approval');
    }
    await stopClients();
    await sleep(500);

    const desk = await login(n2, 'dave', 'desk');
    const phone = await login(n3, 'dave', 'phone');
    const frank2 = await login(n1, 'frank', 'f');
    const grace2 = await login(n2, 'grace', 'g');
    await Promise.all([frank2, grace2].map((c) => roster(c)));
    await Promise.all([desk, phone, frank2, grace2].map((c) => c.send(xml('presence'))));
    const missing: string[] = [];
    for (const [who, of] of [[desk, phone], [phone, desk], [frank2, grace2], [grace2, frank2]] as const) {
      await who.waitFor(isPresence(of.jid), 3000).catch(() => missing.push(`${who.jid} never got the presence of ${of.jid}`));
    }
    assert.equal(missing, []);
  } finally {
    await stopClients();
  }
});

test('the same full JID bound on two nodes: the newest session wins pool-wide, the older gets <conflict/>', async () => {
  try {
    const first = await login(n1, 'carol', 'same');
    const errors: Array<{ condition?: string }> = [];
    first.xmpp.on('error', (e: { condition?: string }) => errors.push(e));
    const firstClosed = new Promise<void>((r) => first.xmpp.on('disconnect', () => r()));
    await first.send(xml('presence'));
    await sleep(300);
    const second = await login(n2, 'carol', 'same');
    assert.is(second.jid, first.jid);
    await waitUntil(() => errors.some((e) => e.condition === 'conflict'), 5000, 'a <conflict/> stream error on the older session');
    await Promise.race([firstClosed, sleep(5000).then(() => { throw new Error('the older session was not closed'); })]);
    // The winner is the route everywhere: a message from node3 reaches the session on node2.
    await second.send(xml('presence'));
    const dave = await login(n3, 'dave', 'x');
    await dave.send(xml('message', { to: second.jid, type: 'chat' }, xml('body', {}, 'which one?')));
    await second.waitFor(isMessage(dave.jid, 'which one?'), 5000, 'the message on the newest session');
    if ((await n1.routes()) !== null) {
      await expectRoutes([n1, n2, n3], { [second.jid]: 'node2', [dave.jid]: 'node3' }, 3000);
    }
    await sleep(500);
    assert.ok(second.xmpp.status === 'online', `the newest session stays (${second.xmpp.status})`);
  } finally {
    await stopClients();
  }
});

test('slixmpp on node3 and xmpp.js on node1 chat across the pool', async () => {
  let slix: Slix | undefined;
  try {
    const alice = await login(n1, 'alice', 'web');
    await alice.send(xml('presence'));
    slix = track(await slixLogin(n3.server, { username: 'dave', password: USERS.dave, resource: 'py' }));
    const daveJid = `dave@${DOMAIN}/py`;
    await slix.command('presence', {});
    await slix.command('message', { to: alice.jid, type: 'chat', body: 'from slixmpp on node3' });
    await alice.waitFor(isMessage(daveJid, 'from slixmpp on node3'), 5000, 'the slixmpp message on alice');
    await alice.send(xml('message', { to: daveJid, type: 'chat', id: 'x1' }, xml('body', {}, 'from xmpp.js on node1')));
    const got = await slix.waitStanza((el: Element) => el.name === 'message' && el.getChildText('body') === 'from xmpp.js on node1', 5000, 'alice\'s message on slixmpp');
    assert.is(got.attrs.from, alice.jid);
    assert.is(got.attrs.type, 'chat');
  } finally {
    await slix?.stop();
    await stopClients();
  }
});

// ---- user data shared by the pool (src/store/user-data.ts) ---------------------------------

test('an account registered in-band on node1 logs in on node2 and node3', async () => {
  // Direct TLS (XEP-0368): RawClient's STARTTLS path names the stream to 'localhost'.
  const raw = await RawClient.to(n1.server, { tls: true, servername: DOMAIN });
  try {
    raw.open({ to: DOMAIN });
    await raw.waitHeader();
    const f = await raw.features();
    assert.ok(f.getChild('register', 'http://jabber.org/features/iq-register'), 'registration is offered');
    raw.send(`<iq type='set' id='reg1'><query xmlns='jabber:iq:register'><username>newbie</username><password>newbie-pw</password></query></iq>`);
    const r = await raw.next((el) => el.name === 'iq' && el.attrs.id === 'reg1', 10_000, 'the registration result');
    assert.is(r.attrs.type, 'result', r.toString());
  } finally {
    await raw.close();
  }
  try {
    for (const n of [n2, n3]) {
      const c = await waitUntil(() => connect(n.server, { username: 'newbie', password: 'newbie-pw', resource: n.name }).then(track, () => null),
        5000, `newbie to log in on ${n.name}`, 250);
      assert.is(c.jid, `newbie@${DOMAIN}/${n.name}`);
    }
  } finally {
    await stopClients();
  }
});

test('bob offline: alice\'s message is stored on node1 and delivered once when bob logs in on node3', async () => {
  try {
    const alice = await login(n1, 'alice', 'offline-test');
    await alice.send(xml('presence'));
    await alice.send(xml('message', { to: `bob@${DOMAIN}`, type: 'chat', id: 'off1' }, xml('body', {}, 'while you were away')));
    await sleep(300);
    assert.not.ok(alice.received.some((s) => s.name === 'message' && s.attrs.type === 'error'), 'stored, not bounced');
    // Replication is asynchronous: wait a little, as a user would take longer anyway.
    await sleep(1000);
    const bob = await login(n3, 'bob', 'later');
    await bob.send(xml('presence'));
    const m = await bob.waitFor(isMessage(alice.jid, 'while you were away'), 5000, 'the offline message on node3');
    assert.ok(m.getChild('delay', 'urn:xmpp:delay'), 'it carries its XEP-0203 delay');
    await sleep(1500);
    assert.not.ok(bob.received.some(isMessage(alice.jid, 'while you were away')), 'delivered once on node3');
    // Taken from every node: another resource on node2 later does not get it again.
    const bob2 = await login(n2, 'bob', 'even-later');
    await bob2.send(xml('presence'));
    await sleep(1500);
    assert.not.ok(bob2.received.some(isMessage(alice.jid, 'while you were away')), 'not delivered again on node2');
  } finally {
    await stopClients();
  }
});

test.run();
