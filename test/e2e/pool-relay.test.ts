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
import { until, type SubnetNode } from '../helpers/subnets.ts';
import { chat, clientPorts, connectionsOf, RelayLab, waitMembers } from '../helpers/relay-lab.ts';
import { enterRoom, groupchat as mucGroupchat } from '../helpers/muc.ts';
import { trustServerCert } from '../helpers/imnode.ts';
import type { TestClient } from '../helpers/xmppjs.ts';

const DOMAIN = 'pool.test';
const USERS = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw' };
const ROOM = `lobby@conference.${DOMAIN}`;

let lab: RelayLab<keyof typeof USERS>;
let relay: SubnetNode, a1: SubnetNode, a2: SubnetNode, b1: SubnetNode, b2: SubnetNode, b3: SubnetNode;

const groupchat = (from: TestClient, fromNick: string, to: TestClient, body: string): Promise<void> => mucGroupchat(ROOM, from, fromNick, to, body);

test.before(async () => {
  lab = RelayLab.create([{ name: 'A', hosts: 3 }, { name: 'B', hosts: 3 }], { domain: DOMAIN, password: 'relay lab secret', users: USERS });
  const A = lab.subnet('A'), B = lab.subnet('B');
  const relayAddr = `/ip4/${A.hosts[0].ip}/tcp/7400`;
  relay = await lab.relayNode(A, A.hosts[0], 'relay', ['--autodiscover', '--pool-listen', relayAddr]);
  const mk = (host: typeof A.hosts[0], subnet: typeof A, id: string): Promise<SubnetNode> =>
    lab.fullNode(subnet, host, id, ['--autodiscover', '--relay', relayAddr, '--failure-timeout', '3s', ...clientPorts(host.ip)]);
  a1 = await mk(A.hosts[1], A, 'a1');
  a2 = await mk(A.hosts[2], A, 'a2');
  b1 = await mk(B.hosts[0], B, 'b1');
  b2 = await mk(B.hosts[1], B, 'b2');
  b3 = await mk(B.hosts[2], B, 'b3');
  await relay.start();
});

test.after(async () => {
  await lab?.cleanup();
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
  const alice = await lab.login(a1, 'alice', 'a');
  const bob = await lab.login(b1, 'bob', 'b');
  await chat(alice, bob, 'hello from subnet A');
  await chat(bob, alice, 'hello from subnet B');
  // The connection between a1 and b1 is direct: its remote address is b1's own on subnet B.
  const B = lab.subnet('B');
  const conn = await until(async () => (await connectionsOf(a1)).find((c) => c.serverId === 'b1' && c.relayed === false), 15_000,
    'a direct a1-b1 connection');
  assert.ok(String(conn.remoteAddr).startsWith(`/ip4/${B.prefix}.`), `remote address ${String(conn.remoteAddr)} is in subnet B`);
  assert.not.ok((await connectionsOf(a1)).some((c) => c.serverId === 'b1' && c.relayed), 'no relayed a1-b1 connection left');
  const back = (await connectionsOf(b1)).find((c) => c.serverId === 'a1');
  assert.ok(back && back.relayed === false, 'b1 sees the same connection as direct');
});

test('alice (A) and bob (B) share a room', async () => {
  const [alice, bob] = lab.clients;
  // A new room is made instant (XEP-0045 §10.1.2).
  await enterRoom(alice, ROOM, 'Alice');
  await enterRoom(bob, ROOM, 'Bob');
  await groupchat(alice, 'Alice', bob, 'hello room from A');
  await groupchat(bob, 'Bob', alice, 'hello room from B');
});

test('relay killed: chat and the room across the subnets go on, no member but the relay is lost', async () => {
  const [alice, bob] = lab.clients;
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
  const alice = lab.clients[0];
  const carol = await lab.login(b3, 'carol', 'c');
  await chat(carol, alice, 'new node in B');
  await chat(alice, carol, 'welcome');
});

test.run();
