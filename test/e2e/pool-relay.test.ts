// A pool across two routed subnets through a relay (issue 5, "Tests that prove
// it"): subnet A with a relay-only node and two nodes, subnet B with two nodes,
// joined by a router namespace (test/helpers/subnets.ts; mDNS does not cross it).
// Every node runs `--autodiscover --relay <relay addr>`. Covers: the five members
// see each other; alice on A and bob on B chat (RFC 6121 §5) over a direct
// connection between their nodes (remote address from `pool status`); the relay
// killed: chat goes on; a node started in B while the relay is down; the relay
// restarted: picked up again by the nodes (reservations) without their restart.
// alice and bob also share a room (XEP-0045 §7.2, §7.4) across the subnets, which
// goes on without the relay; relays are never picked to sequence a room.
// Needs root (network namespaces); fails loudly otherwise.
import * as net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createSubnets, leftovers, NodeDirs, SubnetNode, until, type Subnets } from '../helpers/subnets.ts';
import { trustServerCert } from '../helpers/imnode.ts';
import { connect, xml, type TestClient, type XmlEl } from '../helpers/xmppjs.ts';

const DOMAIN = 'pool.test';
const PASSWORD = 'relay lab secret';
const USERS = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw' };

let nets: Subnets;
const dirs = new NodeDirs();
let relay: SubnetNode, a1: SubnetNode, a2: SubnetNode, b1: SubnetNode, b2: SubnetNode, b3: SubnetNode;
const clients: TestClient[] = [];

function nodeArgs(ip: string, relayAddr: string): string[] {
  return ['--domain', DOMAIN, '--pool-password', PASSWORD, '--autodiscover', '--relay', relayAddr, '--failure-timeout', '3s',
    '--bind', ip, '--c2s-port', '5222', '--c2s-tls-port', '5223', '--auth-fail-delay', '50ms'];
}

async function login(node: SubnetNode, user: keyof typeof USERS, resource: string): Promise<TestClient> {
  const c = await connect(node.server!, { username: user, password: USERS[user], resource });
  clients.push(c);
  await c.send(xml('presence'));
  return c;
}

const MUC = 'http://jabber.org/protocol/muc';
const MUC_USER = 'http://jabber.org/protocol/muc#user';
const MUC_OWNER = 'http://jabber.org/protocol/muc#owner';
const ROOM = `lobby@conference.${DOMAIN}`;

/** Joins ROOM and waits for the self-presence (status 110) and the subject (XEP-0045 §7.2.2, §7.2.15). */
async function joinRoom(c: TestClient, nick: string): Promise<XmlEl> {
  await c.send(xml('presence', { to: `${ROOM}/${nick}` }, xml('x', { xmlns: MUC })));
  const self = await c.waitFor((s) => s.name === 'presence' && s.attrs.from === `${ROOM}/${nick}` &&
    ((s.getChild('x', MUC_USER)?.getChildren('status') ?? []).some((st) => st.attrs.code === '110') || s.attrs.type === 'error'), 10_000, `self-presence in ${ROOM}`);
  assert.is.not(self.attrs.type, 'error', `${c.jid} could not join: ${self.toString()}`);
  await c.waitFor((s) => s.name === 'message' && s.attrs.from === ROOM && s.getChild('subject') !== undefined, 10_000, `subject of ${ROOM}`);
  return self;
}

async function groupchat(from: TestClient, fromNick: string, to: TestClient, body: string): Promise<void> {
  await from.send(xml('message', { to: ROOM, type: 'groupchat' }, xml('body', {}, body)));
  await to.waitFor((s) => s.name === 'message' && s.attrs.type === 'groupchat' && s.attrs.from === `${ROOM}/${fromNick}` && s.getChildText('body') === body,
    10_000, `groupchat '${body}' at ${to.jid}`);
}

const isChat = (from: string, body: string) => (s: XmlEl) => s.name === 'message' && s.attrs.from === from && s.getChildText('body') === body;

/** The connections a node reports (pool status), by server id of the peer. */
async function connectionsOf(n: SubnetNode): Promise<Array<Record<string, unknown>>> {
  const s = await n.status();
  return Array.isArray(s?.connections) ? s.connections as Array<Record<string, unknown>> : [];
}

async function waitMembers(nodes: SubnetNode[], want: string[], timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  const key = [...want].sort().join(',');
  await until(async () => {
    for (const n of nodes) if ((await n.alive_()).join(',') !== key) return false;
    return true;
  }, timeoutMs, `[${key}] alive on ${nodes.map((n) => n.serverId).join(', ')}: ` +
    (await Promise.all(nodes.map(async (n) => `${n.serverId}: ${(await n.alive_().catch(() => [])).join(',')}`))).join('; '));
  return Date.now() - t0;
}

async function chat(from: TestClient, to: TestClient, body: string, timeoutMs = 5000): Promise<void> {
  await from.send(xml('message', { to: to.jid, type: 'chat' }, xml('body', {}, body)));
  await to.waitFor(isChat(from.jid, body), timeoutMs, `'${body}' from ${from.jid} at ${to.jid}`);
}

test.before(async () => {
  nets = createSubnets([{ name: 'A', hosts: 3 }, { name: 'B', hosts: 3 }]);
  const A = nets.subnet('A'), B = nets.subnet('B');
  const relayAddr = `/ip4/${A.hosts[0].ip}/tcp/7400`;
  relay = new SubnetNode(nets, A, A.hosts[0], 'relay', await dirs.make(null, DOMAIN),
    ['--relay-only', '--domain', DOMAIN, '--pool-password', PASSWORD, '--autodiscover', '--pool-listen', `${relayAddr}`], true);
  const mk = async (host: typeof A.hosts[0], subnet: typeof A, id: string): Promise<SubnetNode> =>
    new SubnetNode(nets, subnet, host, id, await dirs.make(USERS, DOMAIN), nodeArgs(host.ip, relayAddr), false);
  a1 = await mk(A.hosts[1], A, 'a1');
  a2 = await mk(A.hosts[2], A, 'a2');
  b1 = await mk(B.hosts[0], B, 'b1');
  b2 = await mk(B.hosts[1], B, 'b2');
  b3 = await mk(B.hosts[2], B, 'b3');
  await relay.start();
});

test.after(async () => {
  for (const c of clients.splice(0)) await c.stop().catch(() => undefined);
  for (const n of [a1, a2, b1, b2, b3, relay]) {
    await n?.kill().catch(() => undefined);
    await n?.closeForward().catch(() => undefined);
  }
  nets?.cleanup();
  dirs.cleanup();
  const left = nets ? leftovers(nets.id) : { ns: [], links: [] };
  if (left.ns.length || left.links.length) throw new Error(`the subnets left ${JSON.stringify(left)}`);
});

test('relay, two nodes in A, two in B (--autodiscover --relay): all five see each other within 10 s', async () => {
  await Promise.all([a1.start(), a2.start(), b1.start(), b2.start()]);
  const ms = await waitMembers([relay, a1, a2, b1, b2], ['a1', 'a2', 'b1', 'b2', 'relay'], 10_000);
  console.log(`  five members across two subnets in ${ms} ms after the last node was ready`);
  // Each node holds a reservation on the relay, and the relay lists the four.
  for (const n of [a1, a2, b1, b2]) {
    const s = await n.status();
    const relays = s!.relays as Array<{ reserved: boolean; connected: boolean }>;
    await until(async () => ((await n.status())!.relays as Array<{ reserved: boolean }>)[0]?.reserved, 5000, `${n.serverId} reserved on the relay`);
    assert.ok(relays[0].connected, `${n.serverId} connected to the relay`);
  }
  // The relay serves no clients: nothing listens on the XMPP port of its host.
  const refused = await new Promise<string>((resolve) => {
    const sock = net.connect({ host: relay.host.ip, port: 5222, localAddress: relay.subnet.hostIp });
    sock.once('connect', () => { sock.destroy(); resolve('connected'); });
    sock.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
  assert.is(refused, 'ECONNREFUSED', 'no c2s listener on the relay');
  // Every node knows the relay for what it is (and so never routes or sequences anything to it).
  for (const n of [a1, b1]) {
    const members = (await n.status())!.members as Array<{ serverId: string; role?: string }>;
    assert.equal(members.filter((m) => m.role === 'relay').map((m) => m.serverId), ['relay'], `${n.serverId} sees the relay's role`);
  }
  const relayStatus = (await relay.status())!;
  assert.is(relayStatus.role, 'relay');
  assert.equal(relayStatus.ports, {});
  const rs = (await relay.status())!.relay as { reservations: Array<{ serverId: string; limit: unknown }> };
  assert.equal(rs.reservations.map((r) => r.serverId).sort(), ['a1', 'a2', 'b1', 'b2']);
  // A pool relay cuts nothing: no data or time limit on any reservation.
  for (const r of rs.reservations) assert.is(r.limit, null);
});

test('alice on A and bob on B chat; their nodes talk over a direct connection', async () => {
  trustServerCert(a1.server!);
  const alice = await login(a1, 'alice', 'a');
  const bob = await login(b1, 'bob', 'b');
  await chat(alice, bob, 'hello from subnet A');
  await chat(bob, alice, 'hello from subnet B');
  // The connection between a1 and b1 is direct: its remote address is b1's own on subnet B.
  const B = nets.subnet('B');
  const conn = await until(async () => (await connectionsOf(a1)).find((c) => c.serverId === 'b1' && c.relayed === false), 15_000,
    'a direct a1-b1 connection');
  assert.ok(String(conn.remoteAddr).startsWith(`/ip4/${B.prefix}.`), `remote address ${String(conn.remoteAddr)} is in subnet B`);
  assert.not.ok((await connectionsOf(a1)).some((c) => c.serverId === 'b1' && c.relayed), 'no relayed a1-b1 connection left');
  const back = (await connectionsOf(b1)).find((c) => c.serverId === 'a1');
  assert.ok(back && back.relayed === false, 'b1 sees the same connection as direct');
});

test('alice (A) and bob (B) share a room', async () => {
  const [alice, bob] = clients;
  const self = await joinRoom(alice, 'Alice');
  if ((self.getChild('x', MUC_USER)?.getChildren('status') ?? []).some((st) => st.attrs.code === '201')) {
    // A new room: accept the default configuration (instant room, XEP-0045 §10.1.2).
    await alice.iq(xml('iq', { type: 'set', to: ROOM }, xml('query', { xmlns: MUC_OWNER }, xml('x', { xmlns: 'jabber:x:data', type: 'submit' }))), 10_000);
  }
  await joinRoom(bob, 'Bob');
  await groupchat(alice, 'Alice', bob, 'hello room from A');
  await groupchat(bob, 'Bob', alice, 'hello room from B');
});

test('relay killed: chat and the room across the subnets go on, no member but the relay is lost', async () => {
  const [alice, bob] = clients;
  await relay.kill();
  await chat(alice, bob, 'relay gone, still here?');
  await chat(bob, alice, 'yes, directly');
  await groupchat(alice, 'Alice', bob, 'room without the relay');
  await groupchat(bob, 'Bob', alice, 'still in the room');
  // Only the relay fails; the four nodes keep each other.
  await waitMembers([a1, a2, b1, b2], ['a1', 'a2', 'b1', 'b2'], 10_000);
  await new Promise((r) => setTimeout(r, 4000)); // longer than the failure timeout
  await waitMembers([a1, a2, b1, b2], ['a1', 'a2', 'b1', 'b2'], 2000);
  await chat(alice, bob, 'after the failure timeout');
  await groupchat(bob, 'Bob', alice, 'room after the failure timeout');
});

test('a node started in B while the relay is down finds its subnet; the restarted relay is picked up by every node without a restart', async () => {
  await b3.start();
  // mDNS gives it b1 and b2; their gossip, which reaches A over their direct
  // connections, may give it A too (a better outcome than the relay alone would).
  await until(async () => {
    const seen = await b3.alive_();
    return seen.includes('b1') && seen.includes('b2');
  }, 10_000, 'b3 sees b1 and b2');
  const early = await b3.alive_();
  console.log(`  b3 with the relay down sees: ${early.join(', ')}`);
  assert.not.ok(((await b3.status())!.relays as Array<{ reserved: boolean }>)[0].reserved, 'no reservation while the relay is down');
  await new Promise((r) => setTimeout(r, 3000));
  console.log(`  b3 with the relay down, 3 s later: ${(await b3.alive_()).join(', ')}`);

  await relay.start();
  const ms = await waitMembers([relay, a1, a2, b1, b2, b3], ['a1', 'a2', 'b1', 'b2', 'b3', 'relay'], 20_000);
  console.log(`  whole pool again ${ms} ms after the relay restarted`);
  for (const n of [a1, a2, b1, b2, b3]) {
    await until(async () => ((await n.status())!.relays as Array<{ reserved: boolean }>)[0]?.reserved, 15_000, `${n.serverId} reserved again on the restarted relay`);
  }
  // b3 reaches A: carol logs in on b3 and chats with alice on a1.
  const alice = clients[0];
  const carol = await login(b3, 'carol', 'c');
  await chat(carol, alice, 'new node in B');
  await chat(alice, carol, 'welcome');
});

test.run();
