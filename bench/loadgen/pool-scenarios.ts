// The pool scenarios (issue 3, "Figures for the closing note"). Each starts a
// fresh pool of three nodes (pool.ts), waits until it is formed and the user
// data has reached every node, and measures one thing:
//  - pool-form: spawn to three alive members on every node, and to user data
//    equal everywhere;
//  - pool-message: one-to-one messages with sender and receiver on different
//    nodes, next to the same run with every client on one node of the pool;
//  - pool-purge: SIGKILL of a node with sessions, until no other node routes to it;
//  - pool-logins: logins spread over the nodes, routing convergence after the
//    last one, and pool traffic per login.
// Any loss, duplicate, stall or disagreement throws; run.ts bounds each in time.
import type { BenchClient } from './client.ts';
import { account, pool } from './env.ts';
import { cpuMeter, percentile, round, sleep, type CpuReport } from './measure.ts';
import {
  POOL_SIZE, byOwner, payloadBytes, routesCheck, wireDelta,
  type NodeStatus, type PoolNet, type WireSnapshot,
} from './pool.ts';
import { exchange, type Figures, type Pair, type Progress } from './scenarios.ts';

const ms = (a: number, b: number): number => round(b - a, 1);
/** Pause between two convergence polls of pool-logins (a poll of 10,000 routes takes some 40 ms itself). */
const POLL_MS = 10;
const s = (a: number, b: number): number => round((b - a) / 1000, 3);

/** Logs in each client on its node, `perNode` logins in flight on each node; onDone(n) after the n-th login. */
async function loginSpread(clients: BenchClient[], perNode: number, progress: Progress, what: string, onDone?: (n: number) => void): Promise<void> {
  const byNode = new Map<string, BenchClient[]>();
  for (const c of clients) {
    const k = `${c.target.port}`;
    if (!byNode.has(k)) byNode.set(k, []);
    byNode.get(k)!.push(c);
  }
  let n = 0;
  await Promise.all([...byNode.values()].map((list) => pool(list.length, perNode, async (i) => {
    await list[i].login();
    if (++n % 100 === 0) progress.text = `${what}: ${n}/${clients.length} logged in`;
    onDone?.(n);
  })));
}

// ---- pool-form ------------------------------------------------------------------------

export async function poolForm(net: PoolNet, accounts: number, progress: Progress): Promise<Figures> {
  progress.text = 'spawning three nodes';
  await net.spawn();
  const t0 = net.spawnedAt;
  // Every node is polled from the moment it is ready (its admin socket answers just
  // before the ready line), until all list three alive members and hold the same user data.
  const formedAt = new Array<number>(POOL_SIZE).fill(0);
  const digests: { at: number; digest: string }[][] = net.nodes.map(() => []);
  const limit = performance.now() + 60_000;
  for (;;) {
    for (const n of net.nodes) {
      if (n.proc.exitCode !== null || n.proc.signalCode !== null) throw new Error(`${n.id} exited during start:\n${n.output().slice(-3000)}`);
    }
    await Promise.all(net.nodes.map(async (n, i) => {
      if (!n.readyAt) return;
      const st = await net.status(n);
      const at = performance.now();
      if (!formedAt[i] && st.members.filter((m) => m.state === 'alive').length === POOL_SIZE) formedAt[i] = at;
      const d = JSON.stringify(st.userData?.digest ?? null);
      if (digests[i].at(-1)?.digest !== d) digests[i].push({ at, digest: d });
    }));
    const last = digests.map((h) => h.at(-1)?.digest);
    const agreed = last.every((d) => d !== undefined && d === last[0]);
    if (formedAt.every((x) => x) && agreed) break;
    progress.text = `ready ${net.nodes.map((n) => (n.readyAt ? n.id : '')).join(' ')}; three alive members on ` +
      `${formedAt.map((x, i) => (x ? `n${i + 1}` : '')).join(' ')}; user data ${agreed ? 'agrees' : 'differs'}`;
    if (performance.now() > limit) throw new Error(progress.text);
    await sleep(10);
  }
  const lastReady = Math.max(...net.nodes.map((n) => n.readyAt));
  const final = digests[0].at(-1)!.digest;
  // When each node first held the final user data (n1 from its first answer: the accounts are its own).
  const usersAt = digests.map((h) => h.find((x) => x.digest === final)!.at);
  // The log says when each node saw each other one join (no polling delay, no wait for the ready line).
  const joinedAt = net.nodes.map((n) => {
    if (n.joined.size !== POOL_SIZE - 1) throw new Error(`${n.id} logged ${n.joined.size} joins, expected ${POOL_SIZE - 1}`);
    return Math.max(...n.joined.values());
  });
  // Equal digests must mean the accounts, not empty keyspaces: log in on every node.
  for (let i = 0; i < POOL_SIZE && accounts > 0; i++) {
    const c = net.client(i, account(Math.min(accounts, i + 1), 'form-check'));
    await c.login();
    await net.close(c);
  }
  const formed = Math.max(...formedAt);
  const per = (name: string, at: number[]): Record<string, number> => Object.fromEntries(net.nodes.map((n, i) => [`${name}_s_${n.id}`, s(t0, at[i])]));
  return {
    params: { nodes: POOL_SIZE, discovery: 'static --peer lists', accounts_on_n1: accounts },
    metrics: {
      formed_s: s(t0, formed),
      formed_after_last_ready_ms: ms(lastReady, formed),
      joins_logged_s: s(t0, Math.max(...joinedAt)),
      last_ready_s: s(t0, lastReady),
      accounts_everywhere_s: s(t0, Math.max(...usersAt)),
      accounts_after_last_ready_ms: ms(lastReady, Math.max(...usersAt)),
      ...per('ready', net.nodes.map((n) => n.readyAt)),
      ...per('formed', formedAt),
      ...per('accounts', usersAt),
    },
    notes: [
      'times from spawning the three processes; formed = a node\'s GET /status lists three alive members (polled every 10 ms from its ready line on)',
      'joins_logged = the last "pool member X joined" log line of any node; accounts imported on n1 only: accounts_s_nX = first poll where that node\'s user data digest equals the final one (then one login on each node)',
    ],
  };
}

// ---- pool-message ------------------------------------------------------------------------

interface MessageRun { cpu: CpuReport; latencies: Float64Array; forwarded: number; forwardedBytes: number }

async function forwardedTotals(net: PoolNet): Promise<[number, number]> {
  const st = await net.statuses();
  return [st.reduce((a, x) => a + (x.routes?.forwarded ?? 0), 0), st.reduce((a, x) => a + (x.routes?.forwardedBytes ?? 0), 0)];
}

async function messageRun(
  net: PoolNet, nodeOf: (pair: number, role: 0 | 1) => number, tag: string,
  opts: { pairs: number; messages: number; window: number; concurrency: number }, progress: Progress,
): Promise<MessageRun> {
  const pairs: Pair[] = [];
  for (let i = 0; i < opts.pairs; i++) {
    pairs.push({
      sender: net.client(nodeOf(i, 0), account(2 * i + 1, `${tag}-send`)),
      receiver: net.client(nodeOf(i, 1), account(2 * i + 2, `${tag}-recv`)),
    });
  }
  const all = pairs.flatMap((p) => [p.sender, p.receiver]);
  await loginSpread(all, opts.concurrency, progress, tag);
  // A sender's node must know the receiver's route, or the message goes to offline storage.
  await net.waitFor(routesCheck(all.length), `${tag}: routes of ${all.length} sessions on every node`, progress);
  await exchange(pairs, Math.min(5000, Math.ceil(opts.messages / 10)), opts.window, 'w', progress, null, () => {});
  const [f0, b0] = await forwardedTotals(net);
  const latencies = new Float64Array(opts.messages);
  const meter = cpuMeter(net.pids());
  const end: { cpu?: CpuReport } = {};
  await exchange(pairs, opts.messages, opts.window, 'm', progress, latencies, () => (end.cpu = meter()));
  const [f1, b1] = await forwardedTotals(net);
  latencies.sort();
  progress.text = `${tag}: closing`;
  await net.closeAll(all);
  await net.waitFor(routesCheck(0), `${tag}: routes withdrawn`, progress);
  return { cpu: end.cpu!, latencies, forwarded: f1 - f0, forwardedBytes: b1 - b0 };
}

export async function poolMessage(
  net: PoolNet, opts: { pairs: number; messages: number; window: number; concurrency: number }, progress: Progress,
): Promise<Figures> {
  await net.start();
  await net.settled(progress);
  // Sender on node i mod 3, receiver on the next one: every message crosses the pool once.
  const cross = await messageRun(net, (i, role) => (i + role) % POOL_SIZE, 'cross', opts, progress);
  if (cross.forwarded < opts.messages) {
    throw new Error(`only ${cross.forwarded} stanzas were forwarded between nodes for ${opts.messages} cross-node messages`);
  }
  const local = await messageRun(net, () => 0, 'local', opts, progress);
  if (local.forwarded !== 0) throw new Error(`${local.forwarded} stanzas crossed the pool in the one-node run`);
  const figures = (prefix: string, r: MessageRun): Record<string, number> => ({
    [`${prefix}_messages_per_s`]: round(opts.messages / r.cpu.wall_s, 0),
    [`${prefix}_latency_ms_p50`]: round(percentile(r.latencies, 50), 2),
    [`${prefix}_latency_ms_p90`]: round(percentile(r.latencies, 90), 2),
    [`${prefix}_latency_ms_p99`]: round(percentile(r.latencies, 99), 2),
    [`${prefix}_latency_ms_max`]: round(r.latencies[r.latencies.length - 1], 2),
    [`${prefix}_server_cpu_us_per_msg`]: round((1e6 * r.cpu.server_cpu_s) / opts.messages, 1),
    [`${prefix}_loadgen_cpu_pct`]: r.cpu.loadgen_cpu_pct,
    [`${prefix}_server_cpu_pct`]: r.cpu.server_cpu_pct,
  });
  return {
    params: { nodes: POOL_SIZE, pairs: opts.pairs, messages: opts.messages, in_flight_per_pair: opts.window },
    metrics: {
      ...figures('cross', cross),
      ...figures('local', local),
      cross_forwarded: cross.forwarded,
      cross_forwarded_bytes_per_msg: round(cross.forwardedBytes / cross.forwarded, 0),
      delivered_each: opts.messages,
      missing: 0,
      duplicates: 0,
    },
    cpu: cross.cpu,
    notes: [
      'cross: sender on node i mod 3, receiver on node i+1 mod 3 (point-to-point route protocol); local: the same run with all clients on n1 of the same pool',
      'server CPU: the three nodes summed; every message is checked: lost, duplicated, misrouted or bounced fails the run',
    ],
  };
}

// ---- pool-purge ------------------------------------------------------------------------

export async function poolPurge(net: PoolNet, opts: { sessions: number; concurrency: number }, progress: Progress): Promise<Figures> {
  await net.start();
  await net.settled(progress);
  const victim = net.nodes[POOL_SIZE - 1];
  const clients = Array.from({ length: opts.sessions }, (_, i) => net.client(victim.index, account(i + 1, 'purge')));
  await loginSpread(clients, opts.concurrency, progress, 'sessions on the victim');
  await net.waitFor((st) => {
    const counts = st.map((x) => byOwner(x)[victim.id] ?? 0);
    return counts.every((c) => c === opts.sessions) ? true : `routes of ${victim.id}: ${counts.join('/')} of ${opts.sessions}`;
  }, 'routes of the victim on every node', progress);
  for (const c of clients) c.onDown = () => {};
  const survivors = net.nodes.filter((n) => n !== victim);
  const purgedAt = new Map<string, number>();
  const failedAt = new Map<string, number>();
  const t0 = performance.now();
  await net.kill(victim);
  for (const c of clients) net.live.delete(c);
  const limit = t0 + 30_000;
  while (purgedAt.size < survivors.length || failedAt.size < survivors.length) {
    await Promise.all(survivors.map(async (n) => {
      const st = await net.status(n);
      const now = performance.now();
      if (!purgedAt.has(n.id) && !byOwner(st)[victim.id]) purgedAt.set(n.id, now);
      const m = st.members.find((x) => x.serverId === victim.id);
      if (!failedAt.has(n.id) && (!m || m.state === 'failed' || m.state === 'left')) failedAt.set(n.id, now);
    }));
    progress.text = `after SIGKILL: purged on ${[...purgedAt.keys()].join(',') || 'none'}, failed on ${[...failedAt.keys()].join(',') || 'none'}`;
    if (performance.now() > limit) throw new Error(`routes of the killed node not purged within 30 s (${progress.text})`);
    await sleep(5);
  }
  // Both survivors must agree afterwards: no route of the victim, same table.
  const st = await net.statuses();
  const check = routesCheck(0)(st);
  if (check !== true) throw new Error(`after the purge: ${check}`);
  const logged = survivors.flatMap((n) => n.purged.filter((p) => p.of === victim.id).map((p) => ({ node: n.id, ...p })));
  return {
    params: { nodes: POOL_SIZE, sessions_on_killed_node: opts.sessions, failure_timeout: 'default (3 s)' },
    metrics: {
      purged_ms: ms(t0, Math.max(...purgedAt.values())),
      ...Object.fromEntries(survivors.map((n) => [`purged_ms_${n.id}`, ms(t0, purgedAt.get(n.id)!)])),
      failed_ms: ms(t0, Math.max(...failedAt.values())),
      purge_logged_ms: logged.length ? ms(t0, Math.min(...logged.map((p) => p.at))) : -1,
      routes_purged_by_survivors: logged.reduce((a, p) => a + p.count, 0),
    },
    notes: [
      `SIGKILL of ${victim.id} with ${opts.sessions} sessions; purged = its routes gone from a survivor's GET /status (polled every ~5 ms), failed = listed as failed there`,
      'purge_logged = first "purged N routes" log line of a survivor; routes_purged_by_survivors: routes each survivor deleted itself (100 or 200: a survivor that got the other one\'s tombstones first has nothing left to purge)',
    ],
  };
}

// ---- pool-logins (and pool traffic per login) ---------------------------------------------

export async function poolLogins(
  net: PoolNet, opts: { logins: number; concurrency: number; baselineMs: number }, progress: Progress,
): Promise<Figures> {
  const { logins, concurrency } = opts;
  await net.start();
  await net.settled(progress);
  const keys = net.keys;

  // Warm-up (JIT of both sides, connections between the nodes), then back to no routes.
  const warm = Array.from({ length: Math.min(logins, 300 * POOL_SIZE) }, (_, i) => net.client(i % POOL_SIZE, account(i + 1, 'warm')));
  await loginSpread(warm, concurrency, progress, 'warm-up');
  await net.closeAll(warm);
  await net.waitFor(routesCheck(0), 'warm-up routes withdrawn', progress, 60_000, 100);

  // Idle pool traffic (membership heartbeats, gossipsub heartbeats, anti-entropy digests), to subtract.
  const wire = (): WireSnapshot | null => net.wire();
  const payload = async (): Promise<number> => (await net.statuses()).reduce((a, x) => a + payloadBytes(x.traffic), 0);
  progress.text = `idle pool traffic for ${opts.baselineMs} ms`;
  const idleW0 = wire(), idleP0 = await payload(), idleT0 = performance.now();
  await sleep(opts.baselineMs);
  const idleW1 = wire(), idleP1 = await payload(), idleT1 = performance.now();
  const idleWire = idleW0 && idleW1 ? wireDelta(idleW0, idleW1) : null;
  const idleSeconds = (idleT1 - idleT0) / 1000;

  // The measured pass: user k on node (k-1) mod 3, `concurrency` in flight per node.
  const derivations = keys.derivations;
  const clients = Array.from({ length: logins }, (_, i) => net.client(i % POOL_SIZE, account(i + 1, 'bench')));
  const w0 = wire(), p0 = await payload();
  const t0 = performance.now();
  const meter = cpuMeter(net.pids());
  // Convergence is polled from the moment the last logins are in flight, so that
  // polls that began after the last bind and still saw no convergence bound it from below.
  const polls: { start: number; end: number; ok: boolean }[] = [];
  let polling: Promise<void> | null = null;
  const poll = async (): Promise<void> => {
    const limit = performance.now() + 120_000;
    for (;;) {
      const start = performance.now();
      const r = routesCheck(logins)(await net.statuses());
      polls.push({ start, end: performance.now(), ok: r === true });
      if (r === true) return;
      if (performance.now() > limit) throw new Error(`routing convergence: not within 120 s (${r})`);
      await sleep(POLL_MS);
    }
  };
  const tail = logins - POOL_SIZE * concurrency;
  await loginSpread(clients, concurrency, progress, 'measured pass', (n) => {
    if (n < tail || polling) return;
    polling = poll();
    // Awaited below; if the logins fail first, its own failure must not go unhandled.
    polling.catch(() => {});
  });
  const cpu = meter();
  if (keys.derivations !== derivations) throw new Error(`the measured pass derived ${keys.derivations - derivations} SCRAM keys: the cache did not work`);
  const lastBind = Math.max(...clients.map((c) => c.boundAt));
  const lastReady = Math.max(...clients.map((c) => c.readyAt));
  progress.text = 'routing convergence';
  await (polling ?? poll());
  const passed = polls.find((p) => p.ok)!;
  const convergedAt = passed.end;
  const lowerBound = Math.max(lastBind, ...polls.filter((p) => !p.ok).map((p) => p.start));
  const w1 = wire(), p1 = await payload();
  const t1 = performance.now();
  const st: NodeStatus[] = await net.statuses();
  for (const x of st) {
    const counts = byOwner(x);
    for (const n of net.nodes) {
      const expected = Math.floor(logins / POOL_SIZE) + (n.index < logins % POOL_SIZE ? 1 : 0);
      if ((counts[n.id] ?? 0) !== expected) throw new Error(`${x.serverId} lists ${counts[n.id] ?? 0} routes of ${n.id}, expected ${expected}`);
    }
  }

  const seconds = (t1 - t0) / 1000;
  const metrics: Record<string, number> = {
    logins_per_s: round(logins / cpu.wall_s, 0),
    login_ms_p50: 0, login_ms_p99: 0,
    converged_after_last_bind_ms: ms(lastBind, convergedAt),
    converged_after_last_login_ms: ms(lastReady, convergedAt),
    // Not converged yet when the last failing poll began: a lower bound.
    converged_after_last_bind_ms_min: ms(lastBind, lowerBound),
    status_poll_ms: ms(passed.start, passed.end),
    server_cpu_ms_per_login: round((1000 * cpu.server_cpu_s) / logins, 3),
  };
  const lat = Float64Array.from(clients, (c) => c.readyAt - c.startedAt).sort();
  metrics.login_ms_p50 = round(percentile(lat, 50), 2);
  metrics.login_ms_p99 = round(percentile(lat, 99), 2);
  const notes = [
    `${logins} logins, user k on node (k-1) mod ${POOL_SIZE}, ${concurrency} in flight per node; routes published at bind and updated by the initial presence`,
    `converged = every node's GET /status shows routes.count = logins and equal routes digests, polled every ${POLL_MS} ms from when the last ${POOL_SIZE * concurrency} logins are in flight; ` +
      'the figure is when the first answers that showed it arrived; _min: when the last poll that did not show it began (or the last bind); status_poll_ms: how long that poll of the three nodes took',
  ];
  if (w0 && w1 && idleWire) {
    const d = wireDelta(w0, w1);
    const idleRate = idleWire.bytes / idleSeconds;
    metrics.pool_wire_bytes_per_login = round((d.bytes - idleRate * seconds) / logins, 0);
    metrics.pool_wire_bytes_per_login_raw = round(d.bytes / logins, 0);
    metrics.pool_idle_wire_bytes_per_s = round(idleRate, 0);
    if (d.closed || d.opened) notes.push(`pool connections opened/closed during the measurement: ${d.opened}/${d.closed} (bytes of closed ones missing)`);
  } else {
    notes.push('ss(8) not available: no wire bytes');
  }
  const idlePayloadRate = (idleP1 - idleP0) / idleSeconds;
  metrics.pool_payload_bytes_per_login = round(((p1 - p0) - idlePayloadRate * seconds) / logins, 0);
  notes.push('pool_wire_bytes_per_login: TCP payload received on all pool connections (ss tcp_info bytes_received, pnet+noise+yamux+gossipsub+pool protocols, no TCP/IP headers) ' +
    'from the first login to convergence, minus the idle rate measured just before; _raw without that subtraction',
  'pool_payload_bytes_per_login: what the nodes handed to gossip publish, point-to-point send and request (libp2p-pool.ts traffic counters), same window, idle rate subtracted');
  progress.text = `closing ${logins} sessions`;
  await net.closeAll(clients);
  return {
    params: { nodes: POOL_SIZE, logins, in_flight_per_node: concurrency, idle_baseline_ms: opts.baselineMs, poll_ms: POLL_MS },
    metrics,
    cpu,
    notes,
  };
}
