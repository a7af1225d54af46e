// Two relays for one pool (issue 5: "--relay MULTIADDR (repeatable)"): subnet A
// with two relay-only nodes and a node, subnet B behind a masquerading NAT that lets
// out connections to the two relays only (test/helpers/subnets.ts). Every node
// lists both relays at their own addresses.
// Covers: a reservation on each relay; the relay carrying A-B traffic killed, the
// members reconnect through the other one and chat goes on (RFC 6121 §5).
// Needs root (network namespaces); fails loudly otherwise.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createSubnets, leftovers, NodeDirs, SubnetNode, until, type Subnets } from '../helpers/subnets.ts';
import { trustServerCert } from '../helpers/imnode.ts';
import { connect, xml, type TestClient, type XmlEl } from '../helpers/xmppjs.ts';

const DOMAIN = 'pool.test';
const PASSWORD = 'two relays secret';
const USERS = { alice: 'alice-pw', bob: 'bob-pw' };

let nets: Subnets;
const dirs = new NodeDirs();
let r1: SubnetNode, r2: SubnetNode, a1: SubnetNode, b1: SubnetNode;
const clients: TestClient[] = [];

const isChat = (from: string, body: string) => (s: XmlEl) => s.name === 'message' && s.attrs.from === from && s.getChildText('body') === body;

async function chat(from: TestClient, to: TestClient, body: string, timeoutMs = 5000): Promise<void> {
  await from.send(xml('message', { to: to.jid, type: 'chat' }, xml('body', {}, body)));
  await to.waitFor(isChat(from.jid, body), timeoutMs, `'${body}' from ${from.jid} at ${to.jid}`);
}

async function link(n: SubnetNode, peer: string): Promise<Record<string, unknown> | undefined> {
  const s = await n.status();
  return (s?.connections as Array<Record<string, unknown>> | undefined)?.find((c) => c.serverId === peer);
}

test.before(async () => {
  nets = createSubnets([{ name: 'A', hosts: 3 }, {
    name: 'B', hosts: 1,
    nat: { egress: [{ to: { subnet: 'A', host: 0 }, port: 7400 }, { to: { subnet: 'A', host: 1 }, port: 7400 }] },
  }]);
  const A = nets.subnet('A'), B = nets.subnet('B');
  const [h1, h2, h3] = A.hosts;
  const base = ['--domain', DOMAIN, '--pool-password', PASSWORD];
  r1 = new SubnetNode(nets, A, h1, 'relay1', await dirs.make(null, DOMAIN), [...base, '--relay-only', '--pool-listen', `/ip4/${h1.ip}/tcp/7400`], true);
  // Relays listed on a relay are its peers: the two relays route gossip between them.
  r2 = new SubnetNode(nets, A, h2, 'relay2', await dirs.make(null, DOMAIN),
    [...base, '--relay-only', '--pool-listen', `/ip4/${h2.ip}/tcp/7400`, '--relay', `/ip4/${h1.ip}/tcp/7400`], true);
  const node = ['--autodiscover', '--c2s-port', '5222', '--c2s-tls-port', '5223', '--auth-fail-delay', '50ms'];
  a1 = new SubnetNode(nets, A, h3, 'a1', await dirs.make(USERS, DOMAIN),
    [...base, ...node, '--bind', h3.ip, '--relay', `/ip4/${h1.ip}/tcp/7400`, '--relay', `/ip4/${h2.ip}/tcp/7400`], false);
  b1 = new SubnetNode(nets, B, B.hosts[0], 'b1', await dirs.make(USERS, DOMAIN),
    [...base, ...node, '--bind', B.hosts[0].ip, '--relay', `/ip4/${h1.ip}/tcp/7400`, '--relay', `/ip4/${h2.ip}/tcp/7400`], false);
  await Promise.all([r1.start(), r2.start()]);
  await Promise.all([a1.start(), b1.start()]);
});

test.after(async () => {
  for (const c of clients.splice(0)) await c.stop().catch(() => undefined);
  for (const n of [a1, b1, r1, r2]) {
    await n?.kill().catch(() => undefined);
    await n?.closeForward().catch(() => undefined);
  }
  nets?.cleanup();
  dirs.cleanup();
  const left = nets ? leftovers(nets.id) : { ns: [], links: [] };
  if (left.ns.length || left.links.length) throw new Error(`the subnets left ${JSON.stringify(left)}`);
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
  const alice = await connect(a1.server!, { username: 'alice', password: USERS.alice, resource: 'a' });
  clients.push(alice);
  const bob = await connect(b1.server!, { username: 'bob', password: USERS.bob, resource: 'b' });
  clients.push(bob);
  await alice.send(xml('presence'));
  await bob.send(xml('presence'));
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
