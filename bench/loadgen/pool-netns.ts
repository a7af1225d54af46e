// Issue 8, scenario 5 in network namespaces: scenarios 1 (logins), 3 (one-to-one)
// and 4 (group chat) on a pool of three imnode nodes, each in its own network
// namespace on one bridge (test/helpers/netns.ts), so that pool and client
// traffic crosses veth pairs and a bridge as it would cross a LAN, and the nodes
// find each other the zero-configuration way (--autodiscover, mDNS on the
// bridge) instead of the loopback pool's static --peer lists (pool.ts).
//
// The load generator stays in the root namespace and connects straight to each
// node's address on the bridge (createLab's hostAddress gives the root namespace
// an address there): no relay in between, whose CPU would count against nobody.
// Those connections are not loopback, so the nodes run --require-tls never, to
// measure the same work (no TLS) as the loopback scenarios.
//
// Accounts, certificate and the client key cache come from the pool template
// (pool.ts: accounts on n1 only, replicated to the others by anti-entropy before
// anything is measured). One pool serves the three measurements in turn, each
// starting with no session left from the one before. The server CPU of each
// measured phase is the three nodes' sum (utime + stime of their PIDs: `ip netns
// exec` execs the node, so the PID the lab spawned is the node itself).
//
// Needs root (namespaces). The namespaces, bridge, processes and data dirs are
// removed whatever happens, by PID and by name; a lab that leaves anything behind
// fails the scenario.
import { rmSync } from 'node:fs';
import { BIN, NODE, ROOT } from '../../test/helpers/imnode.ts';
import { createLab, leftovers, type Lab } from '../../test/helpers/netns.ts';
import type { Account, BenchClient, Target } from './client.ts';
import { DOMAIN, account, pool, type Run } from './env.ts';
import { cpuMeter, deadline, percentile, round, type CpuReport } from './measure.ts';
import { groupChat, type MucOptions } from './muc.ts';
import { POOL_SIZE, PoolNet, byOwner, routesCheck, watchNode, type NodeStatus, type WireSnapshot } from './pool.ts';
import type { ScenarioResult } from './report.ts';
import { exchange, loginRate, type Figures, type Pair, type Progress } from './scenarios.ts';
import type { ScramKeyCache } from './scram.ts';

const POOL_PASSWORD = 'imnode-bench-netns-password';
const C2S_PORT = 5222;
/** The nodes' default --pool-port; every namespace has its own port space. */
const POOL_PORT = 7400;

export interface PoolNetnsOptions {
  /** Scenario 1: measured logins (each closed again inside its slot), after `warmup` unmeasured ones. */
  logins: number;
  warmup: number;
  /** Logins in flight, in all (not per node). */
  concurrency: number;
  /** Scenario 3: pairs (sender on node i mod 3, receiver on node i+1 mod 3), measured messages, in flight per pair. */
  pairs: number;
  messages: number;
  window: number;
  /** Scenario 4: one room, occupants spread over the nodes. */
  muc: MucOptions;
}

/**
 * Pools not stopped yet, torn down if the bench exits first (Ctrl-C: run.ts exits
 * without unwinding). The lab first: its nodes must be gone before their data dirs.
 */
const unstopped = new Set<() => void>();
process.on('exit', () => {
  for (const teardown of unstopped) {
    try {
      teardown();
    } catch { /* at exit there is nothing more to do */ }
  }
});

/** PoolNet's pool, but each node in its own namespace and found by mDNS. */
class NetnsPoolNet extends PoolNet {
  lab: Lab | null = null;
  /** Rejects when a node exits on its own (PoolNet.died only watches the nodes it spawns itself). */
  readonly failed: Promise<never>;
  #reject: (e: Error) => void = () => {};
  #stopping = false;
  readonly #teardown = (): void => {
    this.lab?.cleanup();
    rmSync(this.root, { recursive: true, force: true });
  };

  constructor(template: string, keys: ScramKeyCache) {
    super(template, keys);
    unstopped.add(this.#teardown);
    this.failed = new Promise<never>((_, reject) => (this.#reject = reject));
    this.failed.catch(() => {});
  }

  override async spawn(): Promise<void> {
    const lab = createLab(POOL_SIZE, { hostAddress: true });
    this.lab = lab;
    const dirs = this.nodeDirs();
    this.spawnedAt = performance.now();
    lab.hosts.forEach((host, i) => {
      const id = `n${i + 1}`;
      const args = [BIN, '--domain', DOMAIN, '--data-dir', dirs[i], '--bind', host.ip, '--c2s-port', String(C2S_PORT), '--no-direct-tls',
        '--require-tls', 'never', '--log-level', 'info', '--server-id', id, '--autodiscover'];
      const proc = lab.spawn(host, NODE, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, IMNODE_POOL_PASSWORD: POOL_PASSWORD } });
      const node = watchNode({ index: i, id, dataDir: dirs[i], poolPort: POOL_PORT, proc }, () => undefined, (code, signal, out) => {
        if (!this.#stopping && !node.killed) this.#reject(new Error(`${id} exited during the run (code ${code}, signal ${signal}):\n${out.split('\n').slice(-30).join('\n')}`));
      });
      this.nodes.push(node);
    });
  }

  override target(i: number): Target {
    const n = this.nodes[i];
    if (!n?.c2sPort || !this.lab) throw new Error(`n${i + 1} is not ready`);
    return { host: this.lab.hosts[i].ip, port: n.c2sPort, domain: DOMAIN, keys: this.keys };
  }

  /** ss(8) in the root namespace does not see the nodes' pool connections: no wire figures here. */
  override wire(): WireSnapshot | null {
    return null;
  }

  /**
   * SIGTERM to the nodes (PoolNet.stop: SIGKILL after 15 s), then the lab
   * (SIGKILL by PID of anything left, namespaces, bridge) and the data dirs.
   */
  override async stop(): Promise<void> {
    this.#stopping = true;
    try {
      await super.stop();
    } finally {
      this.#teardown();
      unstopped.delete(this.#teardown);
    }
  }

  /** Namespaces and links of the lab still present after stop() (none expected). */
  leftovers(): string | null {
    if (!this.lab) return null;
    const left = leftovers(this.lab.id);
    return left.ns.length || left.links.length ? JSON.stringify(left) : null;
  }
}

/**
 * What scenarios.ts and muc.ts drive: a Run. This one puts user u<k> on node
 * (k-1) mod 3, counts the clients per node, and gives cpuMeter the three PIDs
 * (it takes one or several) so that each measured phase reports the nodes' sum.
 */
function spreadRun(net: NetnsPoolNet, placed: number[]): Run {
  const view = {
    server: { pid: net.pids() },
    target: net.target(0),
    client: (a: Account): BenchClient => {
      const i = (Number(a.username.slice(1)) - 1) % POOL_SIZE;
      placed[i]++;
      return net.client(i, a);
    },
    close: (c: BenchClient) => net.close(c),
  };
  return view as unknown as Run;
}

function perNode(cpu: CpuReport | undefined, prefix: string): Record<string, number> {
  const per = (cpu as { per_node_cpu_s?: number[] } | undefined)?.per_node_cpu_s ?? [];
  return Object.fromEntries(per.map((s, i) => [`${prefix}_cpu_s_n${i + 1}`, s]));
}

/** Every node must have done its share: a phase where one node's CPU did not move did not run on three nodes. */
function checkSpread(cpu: CpuReport | undefined, what: string): void {
  const per = (cpu as { per_node_cpu_s?: number[] } | undefined)?.per_node_cpu_s;
  if (!per || per.length !== POOL_SIZE) throw new Error(`${what}: no CPU reading for each of the ${POOL_SIZE} nodes`);
  // CPU time comes in 10 ms ticks: below some 0.1 s in all, a zero says nothing.
  if (per.reduce((a, b) => a + b, 0) >= 0.1 && per.some((s) => s <= 0)) throw new Error(`${what}: a node used no CPU (${per.join('/')} s): the load did not reach all three nodes`);
}

// ---- 1. logins --------------------------------------------------------------------------

async function logins(net: NetnsPoolNet, opts: PoolNetnsOptions, progress: Progress): Promise<Record<string, number>> {
  const placed = new Array<number>(POOL_SIZE).fill(0);
  const r = await loginRate(spreadRun(net, placed), { sessions: opts.logins, concurrency: opts.concurrency, warmup: opts.warmup }, progress);
  // Users u1..u<warm-up>, then u1..u<logins>, each on node (k-1) mod 3.
  const share = (count: number, i: number): number => Math.floor(count / POOL_SIZE) + (i < count % POOL_SIZE ? 1 : 0);
  const want = placed.map((_, i) => share(Math.min(opts.logins, opts.warmup), i) + share(opts.logins, i));
  if (placed.join('/') !== want.join('/')) throw new Error(`logins: clients per node ${placed.join('/')}, expected ${want.join('/')}`);
  checkSpread(r.cpu, 'logins');
  // Every login ended inside its slot: the next phase starts from an empty route table.
  await net.waitFor(routesCheck(0), 'logins: routes withdrawn', progress, 60_000, 100);
  const m = r.metrics;
  return {
    logins_per_s: m.logins_per_s, login_ms_p50: m.login_ms_p50, login_ms_p99: m.login_ms_p99,
    server_cpu_ms_per_login: m.server_cpu_ms_per_login, loadgen_cpu_ms_per_login: m.loadgen_cpu_ms_per_login,
    login_server_cpu_pct: r.cpu!.server_cpu_pct, login_loadgen_cpu_pct: r.cpu!.loadgen_cpu_pct,
    ...perNode(r.cpu, 'login'),
  };
}

// ---- 3. one-to-one ----------------------------------------------------------------------

async function forwardedTotal(net: NetnsPoolNet): Promise<number> {
  return (await net.statuses()).reduce((a, x) => a + (x.routes?.forwarded ?? 0), 0);
}

async function oneToOne(net: NetnsPoolNet, opts: PoolNetnsOptions, progress: Progress): Promise<{ metrics: Record<string, number>; cpu: CpuReport }> {
  const { pairs: npairs, messages, window } = opts;
  const owned = new Array<number>(POOL_SIZE).fill(0);
  const pairs: Pair[] = [];
  for (let i = 0; i < npairs; i++) {
    // Consecutive nodes: the two ends of a pair are never on the same node.
    const [s, r] = [i % POOL_SIZE, (i + 1) % POOL_SIZE];
    owned[s]++;
    owned[r]++;
    pairs.push({ sender: net.client(s, account(2 * i + 1, 'send')), receiver: net.client(r, account(2 * i + 2, 'recv')) });
  }
  const all = pairs.flatMap((p) => [p.sender, p.receiver]);
  progress.text = `one-to-one: logging in ${all.length} sessions`;
  await pool(all.length, opts.concurrency, (i) => all[i].login());
  // A sender's node must know the receiver's route, or the message goes to offline storage.
  await net.waitFor(routesCheck(all.length), `one-to-one: routes of ${all.length} sessions on every node`, progress);
  for (const st of await net.statuses()) checkOwners(st, net, owned);

  await exchange(pairs, Math.min(5000, Math.ceil(messages / 10)), window, 'w', progress, null, () => {});
  const f0 = await forwardedTotal(net);
  const latencies = new Float64Array(messages);
  const meter = cpuMeter(net.pids());
  const end: { cpu?: CpuReport } = {};
  // The CPU is read at the last delivery, not after exchange's grace time.
  await exchange(pairs, messages, window, 'm', progress, latencies, () => (end.cpu = meter()));
  const forwarded = (await forwardedTotal(net)) - f0;
  if (forwarded < messages) throw new Error(`one-to-one: only ${forwarded} stanzas crossed the pool for ${messages} cross-node messages`);
  const cpu = end.cpu!;
  checkSpread(cpu, 'one-to-one');
  latencies.sort();
  progress.text = 'one-to-one: closing';
  await net.closeAll(all);
  await net.waitFor(routesCheck(0), 'one-to-one: routes withdrawn', progress, 60_000, 100);
  return {
    cpu,
    metrics: {
      messages_per_s: round(messages / cpu.wall_s, 0),
      message_latency_ms_p50: round(percentile(latencies, 50), 2),
      message_latency_ms_p90: round(percentile(latencies, 90), 2),
      message_latency_ms_p99: round(percentile(latencies, 99), 2),
      message_latency_ms_max: round(latencies[latencies.length - 1], 2),
      server_cpu_us_per_msg: round((1e6 * cpu.server_cpu_s) / messages, 1),
      loadgen_cpu_us_per_msg: round((1e6 * cpu.loadgen_cpu_s) / messages, 1),
      message_server_cpu_pct: cpu.server_cpu_pct,
      message_loadgen_cpu_pct: cpu.loadgen_cpu_pct,
      message_forwarded: forwarded,
      ...perNode(cpu, 'message'),
    },
  };
}

/** This node's view of who owns the routes must match where the clients logged in. */
function checkOwners(st: NodeStatus, net: NetnsPoolNet, owned: number[]): void {
  const counts = byOwner(st);
  for (const n of net.nodes) {
    if ((counts[n.id] ?? 0) !== owned[n.index]) throw new Error(`${st.serverId} lists ${counts[n.id] ?? 0} routes of ${n.id}, expected ${owned[n.index]}`);
  }
}

// ---- 4. group chat ----------------------------------------------------------------------

async function groupChatSpread(net: NetnsPoolNet, opts: PoolNetnsOptions, progress: Progress): Promise<Record<string, number>> {
  const placed = new Array<number>(POOL_SIZE).fill(0);
  const r = await groupChat(spreadRun(net, placed), opts.muc, progress);
  if (placed.some((n) => n < Math.floor(opts.muc.occupants / POOL_SIZE))) throw new Error(`group chat: occupants per node ${placed.join('/')}, expected ${opts.muc.occupants} spread evenly`);
  checkSpread(r.cpu, 'group chat');
  const m = r.metrics;
  const deliveries = m.deliveries;
  return {
    deliveries_per_s: m.deliveries_per_s,
    muc_latency_ms_p50: m.latency_ms_p50, muc_latency_ms_p99: m.latency_ms_p99, muc_latency_ms_max: m.latency_ms_max,
    server_cpu_us_per_delivery: m.server_cpu_us_per_delivery,
    loadgen_cpu_us_per_delivery: round((1e6 * r.cpu!.loadgen_cpu_s) / deliveries, 2),
    muc_server_cpu_pct: r.cpu!.server_cpu_pct, muc_loadgen_cpu_pct: r.cpu!.loadgen_cpu_pct,
    ...perNode(r.cpu, 'muc'),
  };
}

// ---- the scenario -----------------------------------------------------------------------

async function measure(net: NetnsPoolNet, opts: PoolNetnsOptions, progress: Progress): Promise<Figures> {
  progress.text = 'creating the namespaces and spawning three nodes';
  await net.start();
  const [formedAt, usersAt] = await net.settled(progress);
  const formed = { formed_s: round((formedAt - net.spawnedAt) / 1000, 2), accounts_everywhere_s: round((usersAt - net.spawnedAt) / 1000, 2) };
  const login = await logins(net, opts, progress);
  const message = await oneToOne(net, opts, progress);
  const muc = await groupChatSpread(net, opts, progress);
  const { muc: mo } = opts;
  return {
    params: {
      nodes: POOL_SIZE, network: 'one namespace per node on a bridge', discovery: '--autodiscover (mDNS)', tls: 'none (--require-tls never)',
      logins: opts.logins, login_warmup: opts.warmup, logins_in_flight: opts.concurrency,
      pairs: opts.pairs, messages: opts.messages, in_flight_per_pair: opts.window,
      occupants: mo.occupants, senders: mo.senders, muc_messages: mo.messages, in_flight_per_sender: mo.window,
    },
    metrics: { ...formed, ...login, ...message.metrics, ...muc },
    cpu: message.cpu,
    notes: [
      `three nodes, each in its own network namespace on one bridge, found by mDNS; the load generator connects from the root namespace to each node's bridge address; formed_s: spawn to three alive members on every node`,
      `logins: user k on node (k-1) mod ${POOL_SIZE}, ${opts.concurrency} in flight in all, each closed inside its slot, after ${opts.warmup} unmeasured ones (scenario 1)`,
      `one-to-one: sender of pair i on node i mod ${POOL_SIZE}, receiver on node i+1 mod ${POOL_SIZE}, every message crosses the pool once (checked with routes.forwarded) and every delivery is checked (scenario 3)`,
      `group chat: one room, occupant k on node k mod ${POOL_SIZE}, every (occupant, message) checked exactly once (scenario 4)`,
      'server CPU: the three nodes summed (per node: *_cpu_s_nX); loadgen: this process; 100% = one core',
    ],
  };
}

/** Runs the scenario within `timeoutMs` and tears everything down, whatever happens. */
export async function poolNetns(template: string, keys: ScramKeyCache, opts: PoolNetnsOptions, timeoutMs: number): Promise<ScenarioResult> {
  const t0 = performance.now();
  const seconds = (): number => round((performance.now() - t0) / 1000, 1);
  const progress: Progress = { text: 'starting' };
  const net = new NetnsPoolNet(template, keys);
  let result: ScenarioResult;
  try {
    try {
      const figures = await deadline(Promise.race([measure(net, opts, progress), net.failed]), timeoutMs, 'pool-netns', () => progress.text);
      const log = net.complaints();
      result = { scenario: 'pool-netns', ok: true, ...figures, seconds: seconds(), ...(log.length ? { server_log: log.slice(0, 20) } : {}) };
    } catch (e) {
      const log = net.complaints();
      result = { scenario: 'pool-netns', ok: false, error: (e as Error).message, seconds: seconds(), ...(log.length ? { server_log: log.slice(0, 20) } : {}) };
    }
  } finally {
    await net.stop();
  }
  const left = net.leftovers();
  if (left) return { ...result, ok: false, error: `${result.error ? `${result.error}; ` : ''}the lab left ${left} behind` };
  return result;
}
