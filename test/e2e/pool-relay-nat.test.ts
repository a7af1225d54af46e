// A pool with one subnet behind a NAT (issue 5, "Tests that prove it"): subnet A
// with a relay-only node and a node, subnet B behind a router that masquerades
// what leaves B and lets out only connections to the relay, and nothing in (a
// kernel NAT, nftables: test/helpers/subnets.ts). Every node lists the relay at
// its own address. Covers: the members of both subnets see each other; the A-B
// connections are relayed and only relayed (pool status `connections` on both
// sides); the relay sees B's nodes come from the router's outside address (the
// masquerade happened); a direct TCP connection from A to a B node is dropped, one
// from B to anything but the relay refused (the ports are open: hosts of their own
// subnet reach them); alice on A and bob on B chat across the relay well past the
// 128 KiB per-connection data limit of a default circuit relay v2 server, on the
// same relayed connection (not cut, not re-established, not replaced by a direct
// one), and share a room (XEP-0045) across it; the relay restarted: the partition
// it caused heals and a node started in B meanwhile joins the whole pool.
// Needs root (network namespaces) and nft; fails loudly otherwise.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { C2S_PORT, createSubnets, leftovers, NodeDirs, probeTcp, SubnetNode, until, type Subnets } from '../helpers/subnets.ts';
import { trustServerCert } from '../helpers/imnode.ts';
import { connect, xml, type TestClient, type XmlEl } from '../helpers/xmppjs.ts';

const DOMAIN = 'pool.test';
const PASSWORD = 'nat lab secret';
const USERS = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw' };
/** DEFAULT_DATA_LIMIT of @libp2p/circuit-relay-v2 (128 KiB per relayed connection). */
const DEFAULT_RELAY_DATA_LIMIT = 1 << 17;
const POOL_PORT = 7400;
/**
 * How the NAT refuses B's connections to anything but the relay: a silent drop by
 * default, as most NATs and firewalls do (a direct dial then hangs until its
 * timeout, and the relayed one must not wait for it: src/pool/relay.ts
 * dialDirectOrRelayed); IMNODE_TEST_NAT_REFUSE=reject answers with ICMP
 * administratively prohibited instead.
 */
const REFUSE = process.env.IMNODE_TEST_NAT_REFUSE === 'reject' ? 'reject' : 'drop';

let nets: Subnets;
const dirs = new NodeDirs();
let relay: SubnetNode, a1: SubnetNode, b1: SubnetNode, b2: SubnetNode, b3: SubnetNode;
const clients: TestClient[] = [];

async function login(node: SubnetNode, user: keyof typeof USERS, resource: string): Promise<TestClient> {
  const c = await connect(node.server!, { username: user, password: USERS[user], resource });
  clients.push(c);
  await c.send(xml('presence'));
  return c;
}

const isChat = (from: string, body: string) => (s: XmlEl) => s.name === 'message' && s.attrs.from === from && s.getChildText('body') === body;

const MUC = 'http://jabber.org/protocol/muc';
const MUC_USER = 'http://jabber.org/protocol/muc#user';
const MUC_OWNER = 'http://jabber.org/protocol/muc#owner';
const ROOM = `natroom@conference.${DOMAIN}`;

/** Joins ROOM (XEP-0045 §7.2): self-presence with status 110, then the subject; a new room is made instant (§10.1.2). */
async function joinRoom(c: TestClient, nick: string): Promise<void> {
  await c.send(xml('presence', { to: `${ROOM}/${nick}` }, xml('x', { xmlns: MUC })));
  const self = await c.waitFor((s) => s.name === 'presence' && s.attrs.from === `${ROOM}/${nick}` &&
    ((s.getChild('x', MUC_USER)?.getChildren('status') ?? []).some((st) => st.attrs.code === '110') || s.attrs.type === 'error'), 10_000, `self-presence in ${ROOM}`);
  assert.is.not(self.attrs.type, 'error', `${c.jid} could not join: ${self.toString()}`);
  await c.waitFor((s) => s.name === 'message' && s.attrs.from === ROOM && s.getChild('subject') !== undefined, 10_000, `subject of ${ROOM}`);
  if ((self.getChild('x', MUC_USER)?.getChildren('status') ?? []).some((st) => st.attrs.code === '201')) {
    await c.iq(xml('iq', { type: 'set', to: ROOM }, xml('query', { xmlns: MUC_OWNER }, xml('x', { xmlns: 'jabber:x:data', type: 'submit' }))), 10_000);
  }
}

async function groupchat(from: TestClient, fromNick: string, to: TestClient, body: string): Promise<void> {
  await from.send(xml('message', { to: ROOM, type: 'groupchat' }, xml('body', {}, body)));
  await to.waitFor((s) => s.name === 'message' && s.attrs.type === 'groupchat' && s.attrs.from === `${ROOM}/${fromNick}` && s.getChildText('body') === body,
    10_000, `groupchat '${body}' at ${to.jid}`);
}

async function chat(from: TestClient, to: TestClient, body: string, timeoutMs = 5000): Promise<void> {
  await from.send(xml('message', { to: to.jid, type: 'chat' }, xml('body', {}, body)));
  await to.waitFor(isChat(from.jid, body), timeoutMs, `'${body.slice(0, 40)}' from ${from.jid} at ${to.jid}`);
}

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
  }, timeoutMs, `[${key}] alive on ${nodes.map((n) => n.serverId).join(', ')}`).catch(async (e: Error) => {
    const views = await Promise.all(nodes.map(async (n) => `${n.serverId}: ${(await n.alive_().catch(() => [])).join(',')}`));
    throw new Error(`${e.message}; views: ${views.join('; ')}\n${nodes.map((n) => `--- ${n.serverId}\n${n.tail(15)}`).join('\n')}`);
  });
  return Date.now() - t0;
}

test.before(async () => {
  // The relay runs on A's first host, the only destination B may open connections to.
  nets = createSubnets([{ name: 'A', hosts: 2 }, { name: 'B', hosts: 3, nat: { egress: [{ to: { subnet: 'A', host: 0 }, port: POOL_PORT }], refuse: REFUSE } }]);
  const A = nets.subnet('A'), B = nets.subnet('B');
  const relayAddr = `/ip4/${A.hosts[0].ip}/tcp/${POOL_PORT}`;
  relay = new SubnetNode(nets, A, A.hosts[0], 'relay', await dirs.make(null, DOMAIN),
    ['--relay-only', '--domain', DOMAIN, '--pool-password', PASSWORD, '--autodiscover', '--pool-listen', relayAddr], true);
  const args = (ip: string): string[] => ['--domain', DOMAIN, '--pool-password', PASSWORD, '--autodiscover',
    '--relay', relayAddr, '--bind', ip, '--c2s-port', String(C2S_PORT), '--c2s-tls-port', '5223', '--auth-fail-delay', '50ms'];
  a1 = new SubnetNode(nets, A, A.hosts[1], 'a1', await dirs.make(USERS, DOMAIN), args(A.hosts[1].ip), false);
  b1 = new SubnetNode(nets, B, B.hosts[0], 'b1', await dirs.make(USERS, DOMAIN), args(B.hosts[0].ip), false);
  b2 = new SubnetNode(nets, B, B.hosts[1], 'b2', await dirs.make(USERS, DOMAIN), args(B.hosts[1].ip), false);
  b3 = new SubnetNode(nets, B, B.hosts[2], 'b3', await dirs.make(USERS, DOMAIN), args(B.hosts[2].ip), false);
  await relay.start();
  await Promise.all([a1.start(), b1.start(), b2.start()]);
});

test.after(async () => {
  for (const c of clients.splice(0)) await c.stop().catch(() => undefined);
  for (const n of [a1, b1, b2, b3, relay]) {
    await n?.kill().catch(() => undefined);
    await n?.closeForward().catch(() => undefined);
  }
  nets?.cleanup();
  dirs.cleanup();
  const left = nets ? leftovers(nets.id) : { ns: [], links: [] };
  if (left.ns.length || left.links.length) throw new Error(`the subnets left ${JSON.stringify(left)}`);
});

test('B behind the NAT: every member sees every other; A and B are connected through the relay only', async () => {
  const ms = await waitMembers([relay, a1, b1, b2], ['a1', 'b1', 'b2', 'relay'], 15_000);
  console.log(`  four members across the NAT in ${ms} ms`);
  const A = nets.subnet('A');
  const relayPeer = await relay.peerId();
  for (const b of [b1, b2]) {
    await until(async () => (await connectionsOf(a1)).some((x) => x.serverId === b.serverId), 5000, `a1 connected to ${b.serverId}`);
    // Both ends: every a1-b connection is relayed, through the relay; none is direct.
    const seen = [...(await connectionsOf(a1)).filter((x) => x.serverId === b.serverId), ...(await connectionsOf(b)).filter((x) => x.serverId === 'a1')];
    assert.ok(seen.length >= 2, `a1-${b.serverId} seen from both ends: ${JSON.stringify(seen)}`);
    for (const c of seen) {
      assert.is(c.relayed, true, `a1-${b.serverId} relayed: ${JSON.stringify(c)}`);
      assert.is(c.relay, relayPeer, `a1-${b.serverId} goes through the relay`);
    }
    // B's own way to the relay: direct, to the relay's real address (no port forward in between).
    const up = (await connectionsOf(b)).filter((x) => x.serverId === 'relay');
    assert.ok(up.length > 0 && up.every((c) => c.relayed === false && String(c.remoteAddr).startsWith(`/ip4/${A.hosts[0].ip}/tcp/${POOL_PORT}`)),
      `${b.serverId} reaches the relay at its own address: ${JSON.stringify(up)}`);
  }
  // b1 and b2 share a subnet: direct.
  const bb = (await connectionsOf(b1)).find((x) => x.serverId === 'b2');
  assert.ok(bb && bb.relayed === false, 'b1-b2 direct');
  // The relay sees B's nodes come from the router's outside address (the masquerade),
  // and a1 from its own: the NAT applies to B only.
  const fromRouter = `/ip4/${A.gateway}/tcp/`;
  const rs = await until(async () => {
    const r = (await relay.status())?.relay as { reservations: Array<{ serverId?: string; addr: string; limit: unknown }> } | undefined;
    return r && ['a1', 'b1', 'b2'].every((id) => r.reservations.some((x) => x.serverId === id)) ? r : undefined;
  }, 10_000, 'reservations of a1, b1 and b2 on the relay');
  for (const r of rs.reservations.filter((x) => x.serverId === 'b1' || x.serverId === 'b2')) {
    assert.ok(r.addr.startsWith(fromRouter), `${r.serverId} reserved from ${r.addr}, expected the router's ${A.gateway}`);
    assert.is(r.limit, null);
  }
  const a1Res = rs.reservations.find((x) => x.serverId === 'a1')!;
  assert.ok(a1Res.addr.startsWith(`/ip4/${A.hosts[1].ip}/tcp/`), `a1 reserved from its own address: ${a1Res.addr}`);
  const relayConns = await connectionsOf(relay);
  for (const b of ['b1', 'b2']) {
    const cs = relayConns.filter((x) => x.serverId === b);
    assert.ok(cs.length > 0 && cs.every((c) => String(c.remoteAddr).startsWith(fromRouter) && c.direction === 'inbound'),
      `the relay's connections from ${b} come from the router's outside address: ${JSON.stringify(cs)}`);
  }
});

test('the NAT: nothing from A gets into B, nothing but the relay gets out of B', async () => {
  const A = nets.subnet('A'), B = nets.subnet('B');
  const [b1Ip, a1Ip, relayIp] = [B.hosts[0].ip, A.hosts[1].ip, A.hosts[0].ip];
  const drops0 = nets.natDrops('B');
  const [inC2s, inPool, outC2s, outPool, toRelay, insideB, insideA] = await Promise.all([
    probeTcp(nets, A.hosts[1].ns, b1Ip, C2S_PORT),
    probeTcp(nets, A.hosts[0].ns, b1Ip, POOL_PORT),
    probeTcp(nets, B.hosts[0].ns, a1Ip, C2S_PORT),
    probeTcp(nets, B.hosts[0].ns, a1Ip, POOL_PORT),
    probeTcp(nets, B.hosts[0].ns, relayIp, POOL_PORT),
    // The same ports answer where the network routes: what the NAT drops is not a closed port.
    probeTcp(nets, B.hosts[1].ns, b1Ip, C2S_PORT),
    probeTcp(nets, A.hosts[0].ns, a1Ip, C2S_PORT),
  ]);
  assert.is(insideB, 'connected', `b2 -> b1:${C2S_PORT} inside B`);
  assert.is(insideA, 'connected', `relay host -> a1:${C2S_PORT} inside A`);
  assert.is(toRelay, 'connected', 'b1 -> the relay, the one destination B may reach');
  assert.is(inC2s, 'timeout', `a1 host -> b1:${C2S_PORT} must be dropped (no inbound route)`);
  assert.is(inPool, 'timeout', `relay host -> b1:${POOL_PORT} must be dropped (no inbound route)`);
  // Refused by the router (ICMP administratively prohibited) or dropped, not by a1: its open ports say 'connected' inside A.
  const refused = REFUSE === 'drop' ? 'timeout' : 'EHOSTUNREACH';
  assert.is(outC2s, refused, `b1 -> a1:${C2S_PORT} must be refused (egress filter)`);
  assert.is(outPool, refused, `b1 -> a1:${POOL_PORT} must be refused (egress filter)`);
  const drops = nets.natDrops('B');
  assert.ok(drops.inbound >= drops0.inbound + 2, `the router counted the inbound drops: ${JSON.stringify({ drops0, drops })}`);
  assert.ok(drops.egress >= drops0.egress + 2, `the router counted the egress refusals: ${JSON.stringify({ drops0, drops })}`);
});

test('alice (A) and bob (B) chat and share a room through the relay past the default relay data limit, on one relayed connection', async () => {
  trustServerCert(a1.server!);
  const alice = await login(a1, 'alice', 'a');
  const bob = await login(b1, 'bob', 'b');
  await chat(alice, bob, 'across the NAT');
  await chat(bob, alice, 'through the relay');
  const before = (await connectionsOf(a1)).find((x) => x.serverId === 'b1')!;
  const bytes0 = ((await relay.status())!.relay as { relayedBytes: number }).relayedBytes;
  // 2 x 100 messages of 1 KiB: with framing well over 128 KiB on the one a1-b1 circuit.
  const filler = 'x'.repeat(1024);
  for (let i = 0; i < 100; i++) {
    await chat(alice, bob, `a${i} ${filler}`);
    await chat(bob, alice, `b${i} ${filler}`);
  }
  const relayed = ((await relay.status())!.relay as { relayedBytes: number; openCircuits: number }).relayedBytes - bytes0;
  console.log(`  ${relayed} bytes relayed for 200 messages of 1 KiB`);
  assert.ok(relayed > DEFAULT_RELAY_DATA_LIMIT, `relayed ${relayed} bytes, more than a default relay allows (${DEFAULT_RELAY_DATA_LIMIT})`);
  await chat(alice, bob, 'still there after the limit');
  // And a room across the NAT, on the same relayed connection.
  await joinRoom(alice, 'Alice');
  await joinRoom(bob, 'Bob');
  await groupchat(alice, 'Alice', bob, 'room across the NAT');
  await groupchat(bob, 'Bob', alice, 'room through the relay');
  const after = (await connectionsOf(a1)).find((x) => x.serverId === 'b1')!;
  assert.is(after.relayed, true);
  assert.is(after.openedAt, before.openedAt, 'the same relayed connection carried it all (never cut and redialled)');
  // a1 and b1 kept trying their direct addresses all along (DirectUpgrader): the NAT never let one through.
  for (const [n, peer] of [[a1, 'b1'], [b1, 'a1']] as const) {
    const direct = (await connectionsOf(n)).filter((x) => x.serverId === peer && x.relayed !== true);
    assert.is(direct.length, 0, `no direct ${n.serverId}-${peer} connection: ${JSON.stringify(direct)}`);
  }
});

test('relay restarted: the partition it caused heals, and a node started in B meanwhile joins the whole pool', async () => {
  const [alice, bob] = clients;
  await relay.kill();
  // A and B have no other path: each side fails the other.
  await waitMembers([a1], ['a1'], 10_000);
  await waitMembers([b1, b2], ['b1', 'b2'], 10_000);
  await b3.start();
  await waitMembers([b3], ['b1', 'b2', 'b3'], 10_000);
  await relay.start();
  const ms = await waitMembers([relay, a1, b1, b2, b3], ['a1', 'b1', 'b2', 'b3', 'relay'], 20_000);
  console.log(`  whole pool again ${ms} ms after the relay restarted`);
  await chat(alice, bob, 'after the relay came back', 10_000);
  // The relay's outage was a partition: each side failed the other and the room
  // removed the other side's occupants (src/modules/muc). What the room does after
  // the heal is the MUC module's partition handling; reported, not asserted here.
  const healed = await groupchat(bob, 'Bob', alice, 'room after the relay came back').then(() => 'delivered', (e: Error) => `not delivered (${e.message})`);
  console.log(`  groupchat across the healed partition without rejoining: ${healed}`);
  const carol = await login(b3, 'carol', 'c');
  await chat(carol, alice, 'b3 joined through the relay');
});

test.run();
