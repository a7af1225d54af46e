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
import { C2S_PORT, probeTcp, until, type SubnetNode } from '../helpers/subnets.ts';
import { chat, clientPorts, connectionsOf, RelayLab, waitMembers } from '../helpers/relay-lab.ts';
import { enterRoom, groupchat as mucGroupchat } from '../helpers/muc.ts';
import { trustServerCert } from '../helpers/imnode.ts';
import type { TestClient } from '../helpers/xmppjs.ts';

const DOMAIN = 'pool.test';
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
const ROOM = `natroom@conference.${DOMAIN}`;

let lab: RelayLab<keyof typeof USERS>;
let relay: SubnetNode, a1: SubnetNode, b1: SubnetNode, b2: SubnetNode, b3: SubnetNode;

const groupchat = (from: TestClient, fromNick: string, to: TestClient, body: string): Promise<void> => mucGroupchat(ROOM, from, fromNick, to, body);

test.before(async () => {
  // The relay runs on A's first host, the only destination B may open connections to.
  lab = RelayLab.create([{ name: 'A', hosts: 2 }, { name: 'B', hosts: 3, nat: { egress: [{ to: { subnet: 'A', host: 0 }, port: POOL_PORT }], refuse: REFUSE } }],
    { domain: DOMAIN, password: 'nat lab secret', users: USERS });
  const A = lab.subnet('A'), B = lab.subnet('B');
  const relayAddr = `/ip4/${A.hosts[0].ip}/tcp/${POOL_PORT}`;
  relay = await lab.relayNode(A, A.hosts[0], 'relay', ['--autodiscover', '--pool-listen', relayAddr]);
  const args = (ip: string): string[] => ['--autodiscover', '--relay', relayAddr, ...clientPorts(ip)];
  a1 = await lab.fullNode(A, A.hosts[1], 'a1', args(A.hosts[1].ip));
  b1 = await lab.fullNode(B, B.hosts[0], 'b1', args(B.hosts[0].ip));
  b2 = await lab.fullNode(B, B.hosts[1], 'b2', args(B.hosts[1].ip));
  b3 = await lab.fullNode(B, B.hosts[2], 'b3', args(B.hosts[2].ip));
  await relay.start();
  await Promise.all([a1.start(), b1.start(), b2.start()]);
});

test.after(async () => {
  await lab?.cleanup();
});

test('B behind the NAT: every member sees every other; A and B are connected through the relay only', async () => {
  const ms = await waitMembers([relay, a1, b1, b2], ['a1', 'b1', 'b2', 'relay'], 15_000);
  console.log(`  four members across the NAT in ${ms} ms`);
  const A = lab.subnet('A');
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
  const A = lab.subnet('A'), B = lab.subnet('B');
  const [b1Ip, a1Ip, relayIp] = [B.hosts[0].ip, A.hosts[1].ip, A.hosts[0].ip];
  const drops0 = lab.nets.natDrops('B');
  const [inC2s, inPool, outC2s, outPool, toRelay, insideB, insideA] = await Promise.all([
    probeTcp(lab.nets, A.hosts[1].ns, b1Ip, C2S_PORT),
    probeTcp(lab.nets, A.hosts[0].ns, b1Ip, POOL_PORT),
    probeTcp(lab.nets, B.hosts[0].ns, a1Ip, C2S_PORT),
    probeTcp(lab.nets, B.hosts[0].ns, a1Ip, POOL_PORT),
    probeTcp(lab.nets, B.hosts[0].ns, relayIp, POOL_PORT),
    // The same ports answer where the network routes: what the NAT drops is not a closed port.
    probeTcp(lab.nets, B.hosts[1].ns, b1Ip, C2S_PORT),
    probeTcp(lab.nets, A.hosts[0].ns, a1Ip, C2S_PORT),
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
  const drops = lab.nets.natDrops('B');
  assert.ok(drops.inbound >= drops0.inbound + 2, `the router counted the inbound drops: ${JSON.stringify({ drops0, drops })}`);
  assert.ok(drops.egress >= drops0.egress + 2, `the router counted the egress refusals: ${JSON.stringify({ drops0, drops })}`);
});

test('alice (A) and bob (B) chat and share a room through the relay past the default relay data limit, on one relayed connection', async () => {
  trustServerCert(a1.server!);
  const alice = await lab.login(a1, 'alice', 'a');
  const bob = await lab.login(b1, 'bob', 'b');
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
  await enterRoom(alice, ROOM, 'Alice');
  await enterRoom(bob, ROOM, 'Bob');
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
  const [alice, bob] = lab.clients;
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
  const carol = await lab.login(b3, 'carol', 'c');
  await chat(carol, alice, 'b3 joined through the relay');
});

test.run();
