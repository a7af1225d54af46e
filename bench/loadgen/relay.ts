// Relay figures (issue 5): time for a new node in another subnet to join the pool
// through a relay; cross-subnet one-to-one message latency (p50/p99) over a direct
// connection and through the relay (subnet B behind a NAT); the relay's CPU and
// the bytes it carries per 1,000 messages. Real imnode processes in network
// namespaces (test/helpers/subnets.ts), clients from the root namespace (xmpp.js).
// Needs root. Every wait is bounded; the labs are removed whatever happens.
// Alone: node bench/loadgen/relay.ts [--messages N]
import { parseArgs } from 'node:util';
import { createSubnets, NodeDirs, SubnetNode, until, type Subnets, type SubnetSpec } from '../../test/helpers/subnets.ts';
import { trustServerCert } from '../../test/helpers/imnode.ts';
import { connect, xml, type TestClient } from '../../test/helpers/xmppjs.ts';
import { percentile, processCpuSeconds, round } from './measure.ts';
import type { Figures, Progress } from './scenarios.ts';

const DOMAIN = 'pool.test';
const PASSWORD = 'relay bench secret';
const USERS = { alice: 'alice-pw', bob: 'bob-pw' };

interface Lab { nets: Subnets; dirs: NodeDirs; relay: SubnetNode; a1: SubnetNode; b1: SubnetNode; clients: TestClient[] }

async function lab(nat: boolean): Promise<Lab> {
  const specs: SubnetSpec[] = [{ name: 'A', hosts: 2 },
    { name: 'B', hosts: 1, ...(nat ? { nat: { egress: [{ to: { subnet: 'A', host: 0 }, port: 7400 }] } } : {}) }];
  const nets = createSubnets(specs);
  const dirs = new NodeDirs();
  const A = nets.subnet('A'), B = nets.subnet('B');
  const relayAddr = `/ip4/${A.hosts[0].ip}/tcp/7400`;
  const args = (ip: string, relay: string): string[] => ['--domain', DOMAIN, '--pool-password', PASSWORD, '--autodiscover', '--relay', relay,
    '--bind', ip, '--c2s-port', '5222', '--c2s-tls-port', '5223', '--auth-fail-delay', '50ms', '--log-level', 'info'];
  try {
    const relay = new SubnetNode(nets, A, A.hosts[0], 'relay', await dirs.make(null, DOMAIN),
      ['--relay-only', '--domain', DOMAIN, '--pool-password', PASSWORD, '--pool-listen', relayAddr], true);
    const a1 = new SubnetNode(nets, A, A.hosts[1], 'a1', await dirs.make(USERS, DOMAIN), args(A.hosts[1].ip, relayAddr), false);
    const b1 = new SubnetNode(nets, B, B.hosts[0], 'b1', await dirs.make(USERS, DOMAIN), args(B.hosts[0].ip, relayAddr), false);
    return { nets, dirs, relay, a1, b1, clients: [] };
  } catch (e) {
    nets.cleanup();
    dirs.cleanup();
    throw e;
  }
}

async function close(l: Lab): Promise<void> {
  for (const c of l.clients) await c.stop().catch(() => undefined);
  for (const n of [l.a1, l.b1, l.relay]) {
    await n.kill().catch(() => undefined);
    await n.closeForward().catch(() => undefined);
  }
  l.nets.cleanup();
  l.dirs.cleanup();
}

async function sees(n: SubnetNode, ids: string[]): Promise<boolean> {
  const alive = await n.alive_().catch(() => [] as string[]);
  return ids.every((id) => alive.includes(id));
}

/** One message at a time alice -> bob; one-way latencies in ms (same clock at both ends). */
async function latencies(alice: TestClient, bob: TestClient, n: number, progress: Progress, label: string): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const body = `${label} ${i}`;
    const t0 = performance.now();
    await alice.send(xml('message', { to: bob.jid, type: 'chat' }, xml('body', {}, body)));
    await bob.waitFor((s) => s.name === 'message' && s.getChildText('body') === body, 10_000, body);
    out.push(performance.now() - t0);
    if (i % 100 === 0) progress.text = `${label}: ${i}/${n} messages`;
  }
  return out.sort((a, b) => a - b);
}

async function relayBytes(relay: SubnetNode): Promise<number> {
  const s = await relay.status();
  return (s?.relay as { relayedBytes?: number } | undefined)?.relayedBytes ?? 0;
}

/** One lab (direct or NAT): join time of b1, then latency and relay cost of `messages` messages. */
async function measure(nat: boolean, messages: number, progress: Progress): Promise<Record<string, number>> {
  const l = await lab(nat);
  try {
    const kind = nat ? 'relayed' : 'direct';
    progress.text = `${kind}: starting the relay and a1`;
    await l.relay.start();
    await l.a1.start();
    await until(() => sees(l.a1, ['a1', 'relay']), 15_000, 'a1 and the relay');
    // b1 is alone in its subnet: the relay is its only way to the pool.
    progress.text = `${kind}: b1 joining`;
    const t0 = performance.now();
    await l.b1.start();
    const ready = performance.now();
    await until(async () => (await sees(l.b1, ['a1', 'b1', 'relay'])) && sees(l.a1, ['b1']), 20_000, 'b1 in the pool', 20);
    const joined = performance.now();
    trustServerCert(l.a1.server!);
    const alice = await connect(l.a1.server!, { username: 'alice', password: USERS.alice, resource: 'a' });
    l.clients.push(alice);
    const bob = await connect(l.b1.server!, { username: 'bob', password: USERS.bob, resource: 'b' });
    l.clients.push(bob);
    await alice.send(xml('presence'));
    await bob.send(xml('presence'));
    const conn = await until(async () => {
      const s = await l.a1.status();
      return (s?.connections as Array<{ serverId?: string; relayed: boolean }> | undefined)?.find((c) => c.serverId === 'b1');
    }, 15_000, 'a1-b1 connection');
    if (conn.relayed !== nat) throw new Error(`a1-b1 is ${conn.relayed ? 'relayed' : 'direct'}, expected ${kind}`);
    await latencies(alice, bob, Math.min(100, messages), progress, `${kind} warm-up`);
    const relayPid = l.relay.proc!.pid!;
    const cpu0 = processCpuSeconds(relayPid);
    const bytes0 = await relayBytes(l.relay);
    const lat = await latencies(alice, bob, messages, progress, kind);
    const cpu = processCpuSeconds(relayPid) - cpu0;
    const bytes = (await relayBytes(l.relay)) - bytes0;
    const per1000 = 1000 / messages;
    return {
      [`${kind}_join_ms`]: round(joined - t0, 0),
      [`${kind}_join_after_ready_ms`]: round(joined - ready, 0),
      [`${kind}_p50_ms`]: round(percentile(lat, 50), 2),
      [`${kind}_p99_ms`]: round(percentile(lat, 99), 2),
      [`${kind}_relay_cpu_ms_per_1000`]: round(cpu * 1000 * per1000, 1),
      [`${kind}_relay_bytes_per_1000`]: round(bytes * per1000, 0),
    };
  } finally {
    await close(l);
  }
}

export async function relayBench(opts: { messages: number }, progress: Progress = { text: '' }): Promise<Figures> {
  const direct = await measure(false, opts.messages, progress);
  const relayed = await measure(true, opts.messages, progress);
  return {
    params: { messages: opts.messages, message_bytes: 'chat, ~60 B body', nodes: 'relay + a1 in A, b1 in B' },
    metrics: { ...direct, ...relayed },
    notes: [
      'join: from spawning b1 (alone in subnet B, --relay only) until b1 sees a1 and the relay alive and a1 sees b1',
      'latency: one message at a time alice@a1 -> bob@b1, xmpp.js clients in the root namespace, one-way (same clock)',
      'relayed: subnet B behind a masquerading kernel NAT (nftables) that lets out only connections to the relay (test/helpers/subnets.ts), so a1-b1 goes through the relay; relay bytes count both directions of every relayed connection',
    ],
  };
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { messages: { type: 'string', default: '1000' } } });
  const messages = Number(values.messages);
  if (!Number.isInteger(messages) || messages < 1 || messages > 100_000) {
    process.stderr.write('relay bench: --messages must be 1-100000\n');
    process.exit(2);
  }
  const progress: Progress = { text: '' };
  const timer = setInterval(() => process.stderr.write(`relay bench: ${progress.text}\n`), 5000);
  relayBench({ messages }, progress).then(
    (f) => { clearInterval(timer); process.stdout.write(JSON.stringify(f, null, 2) + '\n'); },
    (e: unknown) => { clearInterval(timer); process.stderr.write(`relay bench failed: ${(e as Error).stack ?? String(e)}\n`); process.exitCode = 1; },
  );
}
