// The server pool when nodes fail (issue 3, "Tests that prove it"): real imnode
// processes in network namespaces (test/helpers/pool-lab.ts), xmpp.js clients.
// - SIGKILL of a node: the others purge its routes within 3 s (the default
//   --failure-timeout), tell the contacts and the user's other resources that
//   its sessions are gone (RFC 6121 §4.5.2: the server sends unavailable presence
//   for a session that ends without it), deliver what was addressed to them by
//   the RFC 6121 §8.5.3.2.1 / §8.5.2 rules, its users reconnect to another node
//   and carry on, and no message acknowledged by stream management (XEP-0198) is
//   lost in either direction.
// - A partition (the node's link to the bridge down) and its healing: every node
//   ends with the same routing table and the same user data.
// Needs root (network namespaces); fails loudly otherwise.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PoolLab, sleep, waitUntil, type LabNode } from '../helpers/pool-lab.ts';
import { runCli, trustServerCert } from '../helpers/imnode.ts';
import { connect, xml, type TestClient, type XmlEl } from '../helpers/xmppjs.ts';

const DOMAIN = 'pool.test';
const USERS = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw', dave: 'dave-pw' };
const ROSTER = 'jabber:iq:roster';
const ALL = ['node1', 'node2', 'node3'];

const clients: TestClient[] = [];

async function stopClients(): Promise<void> {
  for (const c of clients.splice(0).reverse()) await c.stop().catch(() => undefined);
}

async function login(node: LabNode, user: keyof typeof USERS, resource: string, priority?: number): Promise<TestClient> {
  const c = await connect(node.server, { username: user, password: USERS[user], resource });
  clients.push(c);
  // Interested (RFC 6121 §2.1.6) and available, so presence and roster pushes reach it.
  await c.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: ROSTER })));
  if (priority !== undefined) {
    await c.send(xml('presence', {}, xml('priority', {}, String(priority))));
    await c.waitFor(isPresence(c.jid), 5000, 'its own presence reflected');
    // The route update needs a few ms of gossip to reach the other nodes.
    await sleep(300);
  }
  return c;
}

const isPresence = (from: string, type?: string) => (s: XmlEl) =>
  s.name === 'presence' && s.attrs.from === from && s.attrs.type === type;

const bodyOf = (s: XmlEl): string | null => (s.name === 'message' ? s.getChildText('body') : null);

/** a and b subscribe to each other (RFC 6121 §3.1), each approving the other's request. */
async function befriend(a: TestClient, b: TestClient): Promise<void> {
  const ab = a.jid.split('/')[0], bb = b.jid.split('/')[0];
  for (const [x, y, yb, xb] of [[a, b, bb, ab], [b, a, ab, bb]] as const) {
    await x.send(xml('presence', { to: yb, type: 'subscribe' }));
    await y.waitFor((s) => s.name === 'presence' && s.attrs.type === 'subscribe' && s.attrs.from?.split('/')[0] === xb, 5000, `${xb}'s subscription request`);
    await y.send(xml('presence', { to: xb, type: 'subscribed' }));
    await x.waitFor((s) => s.name === 'presence' && s.attrs.from === y.jid && s.attrs.type === undefined, 5000, `${y.jid}'s presence after approval`);
  }
}

/** Full JIDs routed to `server` in a node's routing table; throws when the node does not report it. */
async function routesTo(n: LabNode, server: string): Promise<string[]> {
  const r = await n.routes();
  if (r === null) throw new Error(`${n.name}: its status does not report the routing table (GET /status on admin.sock needs "routes")`);
  return Object.entries(r).filter(([, s]) => s === server).map(([k]) => k).sort();
}

/** Records the message ids the server acknowledged (XEP-0198 <a/>) for a client. */
function ackedIds(c: TestClient): Set<string> {
  const acked = new Set<string>();
  const sm = c.xmpp.streamManagement;
  // Ask for acknowledgements soon after each send (xmpp.js waits 250 ms by default).
  sm.requestAckDebounce = 20;
  sm.on('ack', (s: XmlEl) => { if (s.name === 'message' && s.attrs.id) acked.add(s.attrs.id); });
  return acked;
}

/** Sends a numbered message every `everyMs` until stop() is called; resolves with the ids sent. */
function stream(c: TestClient, to: string, prefix: string, everyMs: number): { stop(): Promise<string[]> } {
  const sent: string[] = [];
  let running = true;
  const loop = (async () => {
    for (let i = 0; running; i++) {
      const id = `${prefix}${i}`;
      try {
        await c.send(xml('message', { to, type: 'chat', id }, xml('body', {}, id)));
        sent.push(id);
      } catch {
        return; // the connection is gone
      }
      await sleep(everyMs);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return sent;
    },
  };
}

interface KillSetup {
  pool: PoolLab;
  n1: LabNode; n2: LabNode; n3: LabNode;
  alice: TestClient; bob: TestClient; bobTab: TestClient; carol: TestClient;
  /** Whether the nodes report their routing tables in /status. */
  tables: boolean;
}

/**
 * Three nodes; alice on node1, bob/desk (priority 5) on node2, bob/tablet and
 * carol on node3; alice and bob subscribed to each other. node2 is the one to kill.
 */
async function killSetup(pool: PoolLab): Promise<KillSetup> {
  const [n1, n2, n3] = pool.nodes;
  trustServerCert(n1.server);
  await pool.waitMembers(pool.nodes, ALL, 10_000);
  const alice = await login(n1, 'alice', 'home', 1);
  const bob = await login(n2, 'bob', 'desk', 5);
  const bobTab = await login(n3, 'bob', 'tablet', 0);
  const carol = await login(n3, 'carol', 'c', 0);
  await befriend(alice, bob);
  await bobTab.waitFor(isPresence(alice.jid), 5000, 'alice presence on bob/tablet');
  const tables = (await n1.routes()) !== null;
  if (tables) for (const n of [n1, n3]) assert.equal(await routesTo(n, 'node2'), [bob.jid], `${n.name} routes bob/desk to node2`);
  return { pool, n1, n2, n3, alice, bob, bobTab, carol, tables };
}

test('SIGKILL of a node: its routes vanish from the others within 3 s; its users\' contacts and other resources get unavailable presence', async () => {
  const pool = await PoolLab.start({ nodes: 3, domain: DOMAIN, users: USERS });
  try {
    const { n1, n2, n3, alice, bob, bobTab, carol, tables } = await killSetup(pool);
    const killedJid = bob.jid;
    const markN1 = n1.mark();
    const markN3 = n3.mark();
    await n2.kill();
    const killedAt = Date.now();

    // Read from the routing tables when the nodes report them, else from the log lines.
    let purgedIn: number;
    if (tables) {
      purgedIn = await waitUntil(async () => {
        for (const n of [n1, n3]) if ((await routesTo(n, 'node2')).length) return 0;
        return Date.now() - killedAt;
      }, 6000, 'node2\'s routes to vanish from node1 and node3', 50);
    } else {
      // Each survivor fails node2 and purges its routes then; the first to do so
      // gossips the deletions, so the other may find nothing left to purge.
      const times = [];
      for (const [n, mark] of [[n1, markN1], [n3, markN3]] as const) {
        const m = await n.waitLog(/^(\S+) .* pool member node2 \(\w+\) failed/m, 6000, 'node2 failed', mark);
        times.push(Date.parse(m[1]) - killedAt);
      }
      await waitUntil(() => [[n1, markN1], [n3, markN3]].some(([n, mark]) => /purged 1 routes of node2 \(failed\)/.test((n as LabNode).logSince(mark as number))),
        1000, 'a survivor to log the purge of node2\'s route');
      purgedIn = Math.max(...times);
    }
    assert.ok(purgedIn <= 3000, `routes of the killed node purged after ${purgedIn} ms`);
    for (const n of [n1, n3]) assert.equal((await n.status()).members.find((m) => m.serverId === 'node2')?.state, 'failed', `node2 failed in ${n.name}'s view`);

    // A message to bob's bare JID now goes to the resource left (§8.5.2.1.1), from either survivor.
    await alice.send(xml('message', { to: `bob@${DOMAIN}`, type: 'chat' }, xml('body', {}, 'who is left?')));
    await bobTab.waitFor((s) => s.attrs.from === alice.jid && bodyOf(s) === 'who is left?', 3000, 'the bare-JID message on bob/tablet');
    // So does one to the dead full JID (§8.5.3.2.1: handled as if to the bare JID).
    await carol.send(xml('message', { to: killedJid, type: 'chat' }, xml('body', {}, 'to the dead resource')));
    await bobTab.waitFor((s) => s.attrs.from === carol.jid && bodyOf(s) === 'to the dead resource', 3000, 'the dead-full-JID message on bob/tablet');

    // RFC 6121 §4.5.2: a session that ends without unavailable presence gets one
    // from the server; its server is dead, so the pool must send it: to the
    // user's other resources and to the contacts subscribed to the user.
    const slack = 1000;
    await bobTab.waitFor(isPresence(killedJid, 'unavailable'), Math.max(0, 3000 + slack - (Date.now() - killedAt)), 'bob/desk unavailable on bob/tablet');
    await alice.waitFor(isPresence(killedJid, 'unavailable'), Math.max(0, 3000 + slack - (Date.now() - killedAt)), 'bob/desk unavailable on alice');
  } finally {
    await stopClients();
    await pool.cleanup();
  }
});

test('SIGKILL of a node: its users reconnect to another node and carry on, no message acknowledged by stream management is lost, the node rejoins on restart', async () => {
  const pool = await PoolLab.start({ nodes: 3, domain: DOMAIN, users: USERS });
  try {
    const { n1, n2, alice, bob, bobTab, carol, tables } = await killSetup(pool);
    const killedJid = bob.jid;
    // Traffic in both directions across the kill.
    const aliceAcked = ackedIds(alice);
    const bobAcked = ackedIds(bob);
    const toBob = stream(alice, `bob@${DOMAIN}`, 'a2b-', 40);
    const toAlice = stream(bob, alice.jid, 'b2a-', 40);
    await sleep(800);
    // SIGKILL goes out at once; a burst of messages to bob/desk follows right behind
    // it, so that some reach node1 while its connection to node2 still looks alive.
    const killed = n2.kill();
    const burst: string[] = [];
    for (let i = 0; i < 30; i++) {
      const id = `burst-${i}`;
      burst.push(id);
      void alice.send(xml('message', { to: killedJid, type: 'chat', id }, xml('body', {}, id)));
      if (i % 5 === 4) await sleep(2);
    }
    await killed;
    const bobSentBeforeKill = await toAlice.stop();
    await sleep(300);

    // bob comes back on node1 with the same resource and carries on.
    const bobAgain = await login(n1, 'bob', 'desk', 5);
    assert.is(bobAgain.jid, killedJid);
    await alice.waitFor(isPresence(killedJid), 5000, 'bob/desk available (again) on alice');
    await bobAgain.send(xml('message', { to: alice.jid, type: 'chat', id: 'back' }, xml('body', {}, 'back on node1')));
    await alice.waitFor((s) => s.attrs.from === killedJid && bodyOf(s) === 'back on node1', 5000, 'bob\'s message after reconnecting');
    await sleep(500);
    const aliceSent = [...await toBob.stop(), ...burst];
    await alice.send(xml('message', { to: killedJid, type: 'chat', id: 'welcome' }, xml('body', {}, 'welcome back')));
    await bobAgain.waitFor((s) => s.attrs.from === alice.jid && bodyOf(s) === 'welcome back', 5000, 'alice\'s message after the reconnection');
    // An unrelated user on a surviving node never noticed.
    await carol.send(xml('message', { to: alice.jid, type: 'chat' }, xml('body', {}, 'still here')));
    await alice.waitFor((s) => bodyOf(s) === 'still here', 5000, 'carol\'s message');

    // XEP-0198: node1 is alive, so it acknowledges everything alice sent.
    await waitUntil(() => aliceSent.every((id) => aliceAcked.has(id)), 5000, 'node1 to acknowledge all of alice\'s messages');
    await sleep(1000);
    // What node1 acknowledged reached bob: on the killed session before the kill, on bob/tablet
    // (the highest priority resource left, §8.5.2.1.1) or on bob's new session.
    const ours = (b: string | null): b is string => !!b && (b.startsWith('a2b-') || b.startsWith('burst-'));
    const onDesk = bob.received.map(bodyOf).filter(ours);
    const bobGot = [...bob.received, ...bobTab.received, ...bobAgain.received].map(bodyOf).filter(ours);
    const lost = aliceSent.filter((id) => aliceAcked.has(id) && !bobGot.includes(id));
    assert.equal(lost, [], `alice's messages acknowledged by node1 but lost (${aliceSent.length} sent; the last to reach bob/desk before the kill: ${onDesk.at(-1)})`);
    assert.is(new Set(bobGot).size, bobGot.length, 'no message delivered twice');
    // What node2 acknowledged before it died reached alice.
    const aliceGot = new Set(alice.received.map(bodyOf).filter((b): b is string => !!b?.startsWith('b2a-')));
    assert.ok(bobAcked.size > 0, 'node2 acknowledged some of bob\'s messages before it was killed');
    const lostB = bobSentBeforeKill.filter((id) => bobAcked.has(id) && !aliceGot.has(id));
    assert.equal(lostB, [], `bob's messages acknowledged by node2 but lost (${bobAcked.size} acknowledged)`);

    // The killed node restarts on its data dir and rejoins; users log in there again.
    await n2.start();
    await pool.waitMembers(pool.nodes, ALL, 10_000);
    const bobOnN2 = await login(n2, 'bob', 'again', 0);
    await bobOnN2.send(xml('message', { to: alice.jid, type: 'chat' }, xml('body', {}, 'node2 is back')));
    await alice.waitFor((s) => s.attrs.from === bobOnN2.jid && bodyOf(s) === 'node2 is back', 5000, 'a message from the restarted node');
    await alice.send(xml('message', { to: bobOnN2.jid, type: 'chat' }, xml('body', {}, 'hello node2')));
    await bobOnN2.waitFor((s) => s.attrs.from === alice.jid && bodyOf(s) === 'hello node2', 5000, 'a message to the restarted node');
    if (tables) {
      await waitUntil(async () => JSON.stringify(await routesTo(n1, 'node2')) === JSON.stringify([bobOnN2.jid]), 3000, 'node1 to route only bob/again to node2');
    }
  } finally {
    await stopClients();
    await pool.cleanup();
  }
});

test('a message to a session of a node that just died is not lost: it goes to offline storage', async () => {
  const pool = await PoolLab.start({ nodes: 3, domain: DOMAIN, users: USERS });
  const [n1, n2] = pool.nodes;
  trustServerCert(n1.server);
  try {
    await pool.waitMembers(pool.nodes, ALL, 10_000);
    const alice = await login(n1, 'alice', 'a', 0);
    const bob = await login(n2, 'bob', 'only', 0);
    const gone = bob.jid;
    await n2.kill();
    // Right after the kill node1 may still hold the route: either way nothing is lost.
    await alice.send(xml('message', { to: gone, type: 'chat', id: 'full' }, xml('body', {}, 'to the dead full jid')));
    await alice.send(xml('message', { to: `bob@${DOMAIN}`, type: 'chat', id: 'bare' }, xml('body', {}, 'to the bare jid')));
    await sleep(3500);
    assert.not.ok(alice.received.some((s) => s.name === 'message' && s.attrs.type === 'error'), 'no error: bob exists and has offline storage');
    const back = await login(pool.nodes[2], 'bob', 'only', 0);
    const got = new Set<string>();
    await waitUntil(() => {
      for (const s of back.received) if (bodyOf(s)) got.add(bodyOf(s)!);
      return got.has('to the dead full jid') && got.has('to the bare jid');
    }, 5000, 'both messages from offline storage on node3');
  } finally {
    await stopClients();
    await pool.cleanup();
  }
});

test('partition (link down) and heal: every node ends with the same routes and user data', async () => {
  const pool = await PoolLab.start({ nodes: 3, domain: DOMAIN, users: USERS });
  const [n1, n2, n3] = pool.nodes;
  trustServerCert(n1.server);
  try {
    await pool.waitMembers(pool.nodes, ALL, 10_000);
    const alice = await login(n1, 'alice', 'a', 0);
    const bob = await login(n2, 'bob', 'b', 0);
    const carol = await login(n3, 'carol', 'c', 0);

    n3.linkDown();
    // Both sides give up on each other (membership, then routes).
    await pool.waitMembers([n1, n2], ['node1', 'node2'], 8000);
    await pool.waitMembers([n3], ['node3'], 8000);
    // Changes on both sides while cut off: a login and a vCard on the majority side,
    // an account through the admin channel on the isolated node.
    const dave = await login(n1, 'dave', 'd', 0);
    await alice.iq(xml('iq', { type: 'set' }, xml('vCard', { xmlns: 'vcard-temp' }, xml('FN', {}, 'Alice in the partition'))));
    if ((await n3.adminStatus()) !== null) {
      const r = await runCli(['user', 'add', 'frank', '--data-dir', n3.dataDir, '--domain', DOMAIN], { input: 'frank-pw\n' });
      assert.is(r.code, 0, r.stderr);
    }
    await sleep(500);

    n3.linkUp();
    const healedAt = Date.now();
    await pool.waitMembers(pool.nodes, ALL, 15_000);
    const expected = { [alice.jid]: 'node1', [bob.jid]: 'node2', [carol.jid]: 'node3', [dave.jid]: 'node1' };
    const want = JSON.stringify(Object.entries(expected).sort());
    await waitUntil(async () => {
      for (const n of pool.nodes) {
        const r = await n.routes();
        if (r === null) throw new Error(`${n.name}: its status does not report the routing table (GET /status on admin.sock needs "routes")`);
        if (JSON.stringify(Object.entries(r).sort()) !== want) return false;
      }
      return true;
    }, 15_000, `the same routing table ${want} on every node`, 200);
    const routesIn = Date.now() - healedAt;
    // The user data: one digest per keyspace, the same everywhere.
    const digests = await waitUntil(async () => {
      const all = await Promise.all(pool.nodes.map((n) => n.digests()));
      if (all.some((d) => d === null)) throw new Error('node status does not report the replicated state digests (GET /status needs "digests")');
      return all.every((d) => JSON.stringify(d) === JSON.stringify(all[0])) ? all[0] : null;
    }, 15_000, 'the same user data digests on every node', 200);
    assert.ok(Object.keys(digests!).length > 0, 'some digests are reported');

    // And it works: every pair talks across the former partition.
    await carol.send(xml('message', { to: dave.jid, type: 'chat' }, xml('body', {}, 'hi dave')));
    await dave.waitFor((s) => s.attrs.from === carol.jid && bodyOf(s) === 'hi dave', 5000, 'carol (node3) to dave (logged in on node1 during the partition)');
    await alice.send(xml('message', { to: carol.jid, type: 'chat' }, xml('body', {}, 'hi carol')));
    await carol.waitFor((s) => s.attrs.from === alice.jid && bodyOf(s) === 'hi carol', 5000, 'alice (node1) to carol (node3)');
    await bob.send(xml('message', { to: carol.jid, type: 'chat' }, xml('body', {}, 'hi from bob')));
    await carol.waitFor((s) => s.attrs.from === bob.jid && bodyOf(s) === 'hi from bob', 5000, 'bob (node2) to carol (node3)');
    const card = await carol.iq(xml('iq', { type: 'get', to: `alice@${DOMAIN}` }, xml('vCard', { xmlns: 'vcard-temp' })));
    assert.is(card.getChild('vCard', 'vcard-temp')?.getChildText('FN'), 'Alice in the partition', 'node3 serves the vCard set on node1 during the partition');
    if ((await n3.adminStatus()) !== null) {
      const frank = await connect(n1.server, { username: 'frank', password: 'frank-pw', resource: 'f' });
      clients.push(frank);
    }
    console.log(`    (routes converged ${routesIn} ms after the link came back)`);
  } finally {
    await stopClients();
    await pool.cleanup();
  }
});

test('no namespace or link is left behind', async () => {
  const { spawnSync } = await import('node:child_process');
  const ns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
  assert.not.match(ns, new RegExp(`imnode-${process.pid.toString(36)}`), 'namespaces of this run');
  const links = spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).stdout;
  assert.not.match(links, new RegExp(`imbr${process.pid.toString(36)}`), 'bridges of this run');
});

test.run();
