// Two relays for one pool (issue 5: "--relay MULTIADDR (repeatable)"): subnet A
// with two relay-only nodes and a node, subnet B behind a masquerading NAT that lets
// out connections to the two relays only (test/helpers/subnets.ts). Every node
// lists both relays at their own addresses.
// Covers: a reservation on each relay; the relay carrying A-B traffic killed, the
// members reconnect through the other one and chat goes on (RFC 6121 §5).
// Needs root (network namespaces); fails loudly otherwise.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { until, type SubnetNode } from '../helpers/subnets.ts';
import { chat, clientPorts, connectionsOf, RelayLab } from '../helpers/relay-lab.ts';
import { trustServerCert } from '../helpers/imnode.ts';

const USERS = { alice: 'alice-pw', bob: 'bob-pw' };

let lab: RelayLab<keyof typeof USERS>;
let r1: SubnetNode, r2: SubnetNode, a1: SubnetNode, b1: SubnetNode;

async function link(n: SubnetNode, peer: string): Promise<Record<string, unknown> | undefined> {
  return (await connectionsOf(n)).find((c) => c.serverId === peer);
}

test.before(async () => {
  lab = RelayLab.create([{ name: 'A', hosts: 3 }, {
    name: 'B', hosts: 1,
    nat: { egress: [{ to: { subnet: 'A', host: 0 }, port: 7400 }, { to: { subnet: 'A', host: 1 }, port: 7400 }] },
  }], { domain: 'pool.test', password: 'two relays secret', users: USERS });
  const A = lab.subnet('A'), B = lab.subnet('B');
  const [h1, h2, h3] = A.hosts;
  r1 = await lab.relayNode(A, h1, 'relay1', ['--pool-listen', `/ip4/${h1.ip}/tcp/7400`]);
  // Relays listed on a relay are its peers: the two relays route gossip between them.
  r2 = await lab.relayNode(A, h2, 'relay2', ['--pool-listen', `/ip4/${h2.ip}/tcp/7400`, '--relay', `/ip4/${h1.ip}/tcp/7400`]);
  const relays = ['--relay', `/ip4/${h1.ip}/tcp/7400`, '--relay', `/ip4/${h2.ip}/tcp/7400`];
  a1 = await lab.fullNode(A, h3, 'a1', ['--autodiscover', ...clientPorts(h3.ip), ...relays]);
  b1 = await lab.fullNode(B, B.hosts[0], 'b1', ['--autodiscover', ...clientPorts(B.hosts[0].ip), ...relays]);
  await Promise.all([r1.start(), r2.start()]);
  await Promise.all([a1.start(), b1.start()]);
});

test.after(async () => {
  await lab?.cleanup();
});

test('a reservation on each of the two relays; A and B connected through one of them', async () => {
  await until(async () => {
    for (const n of [a1, b1]) {
      const alive = await n.alive_();
      if (alive.join(',') !== 'a1,b1,relay1,relay2') return false;
      const relays = (await n.status())!.relays as Array<{ reserved: boolean }>;
      if (relays.length !== 2 || !relays.every((r) => r.reserved)) return false;
    }
    return true;
  }, 20_000, 'four members, two reservations on a1 and b1');
  const c = await until(() => link(a1, 'b1'), 10_000, 'a1-b1 connection');
  assert.is(c.relayed, true);
});

test('the relay that carries A-B killed: the members reconnect through the other, chat goes on', async () => {
  trustServerCert(a1.server!);
  const alice = await lab.login(a1, 'alice', 'a');
  const bob = await lab.login(b1, 'bob', 'b');
  await chat(alice, bob, 'before');
  const via = String((await link(a1, 'b1'))!.relay);
  const [dead, other] = via === await r1.peerId() ? [r1, r2] : [r2, r1];
  const otherPeer = await other.peerId();
  await dead.kill();
  const c = await until(async () => {
    const l = await link(a1, 'b1');
    return l && l.relay === otherPeer ? l : undefined;
  }, 10_000, `a1-b1 through ${other.serverId}`);
  assert.is(c.relayed, true);
  await chat(alice, bob, 'after one relay died', 10_000);
  await chat(bob, alice, 'through the other one', 10_000);
  assert.ok((await a1.alive_()).includes('b1'), 'b1 still a member on a1');
});

test.run();
