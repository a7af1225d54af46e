// imnode against Prosody and ejabberd in the same run (issue 8): every
// comparison scenario on every server, repeated, the repetitions interleaved
// (repetition → scenario → server, the server order rotated at each
// repetition) so that a slow phase of the machine is spread over all servers
// instead of landing on one. Each run gets a freshly started server; one JSON
// line per run; the summary is a markdown table of medians with min–max and
// the ratios imnode/ejabberd and imnode/Prosody (and imnode/ceiling for the
// one-to-one throughput).
import { Run, type BenchServer } from './env.ts';
import { deadline, round } from './measure.ts';
import { groupChat, NotAvailable, type MucOptions } from './muc.ts';
import type { ScenarioResult } from './report.ts';
import { idleMemory, latencyAtRate, loginRate, oneToOne, type Figures, type Progress } from './scenarios.ts';
import type { ScramKeyCache } from './scram.ts';
import type { ServerKind, ServerSet } from '../servers/servers.ts';

export const COMPARE_SCENARIOS = ['login', 'login-tls', 'idle', 'message', 'latency', 'muc'] as const;
export type CompareScenario = (typeof COMPARE_SCENARIOS)[number];

export interface CompareOptions {
  servers: ServerKind[];
  reps: number;
  timeoutMs: number;
  login: { sessions: number; concurrency: number; warmup: number };
  idle: { steps: number[]; concurrency: number; settleMs: number };
  message: { pairs: number; messages: number; window: number; concurrency: number };
  latency: { pairs: number; rate: number; seconds: number; concurrency: number };
  muc: MucOptions;
}

export interface RunResult extends ScenarioResult {
  server: ServerKind;
  rep: number;
  /** false: the server lacks what the scenario needs (e.g. no MUC service). */
  available?: boolean;
}

/** The ceiling only knows logins and one-to-one messages. */
function applies(server: ServerKind, scenario: CompareScenario): boolean {
  return server !== 'ceiling' || scenario === 'message' || scenario === 'latency';
}

/** Accounts the scenarios need (u1..uN). */
export function accountsNeeded(scenarios: CompareScenario[], o: CompareOptions): number {
  return Math.max(0, ...scenarios.map((s) => {
    switch (s) {
      case 'login': case 'login-tls': return o.login.sessions;
      case 'idle': return Math.max(...o.idle.steps);
      case 'message': return 2 * o.message.pairs;
      case 'latency': return 2 * o.latency.pairs;
      case 'muc': return o.muc.occupants;
    }
  }));
}

function work(s: CompareScenario, run: Run, o: CompareOptions, progress: Progress): Promise<Figures> {
  switch (s) {
    case 'login': case 'login-tls': return loginRate(run, o.login, progress);
    case 'idle': return idleMemory(run, o.idle, progress);
    case 'message': return oneToOne(run, o.message, progress);
    case 'latency': return latencyAtRate(run, o.latency, progress);
    case 'muc': return groupChat(run, o.muc, progress);
  }
}

async function runOne(set: ServerSet, keys: ScramKeyCache, server: ServerKind, scenario: CompareScenario, rep: number, o: CompareOptions): Promise<RunResult> {
  const t0 = performance.now();
  const seconds = () => round((performance.now() - t0) / 1000, 1);
  const progress: Progress = { text: 'starting' };
  let run: Run | null = null;
  const base = { scenario, server, rep };
  try {
    const bs: BenchServer = await set.start(server);
    run = new Run(bs, keys, { tls: scenario === 'login-tls' });
    const figures = await deadline(Promise.race([work(scenario, run, o, progress), run.died]), o.timeoutMs, `${scenario} on ${server}`, () => progress.text);
    const log = complaints(run);
    return { ...base, ok: true, ...figures, seconds: seconds(), ...(log.length ? { server_log: log.slice(0, 20) } : {}) };
  } catch (e) {
    const log = run ? complaints(run) : [];
    if (e instanceof NotAvailable) return { ...base, ok: true, available: false, error: e.message, seconds: seconds() };
    return { ...base, ok: false, error: (e as Error).message, seconds: seconds(), ...(log.length ? { server_log: log.slice(0, 20) } : {}) };
  } finally {
    await run?.stop();
  }
}

function complaints(run: Run): string[] {
  // Prosody and ejabberd log to files at error level; imnode at warn on stderr. All of it is worth a look.
  return run.complaints().filter((l) => !/^\s*$/.test(l) && !/^ceiling: listening/.test(l));
}

/** Runs the comparison; onResult gets each run's result as it finishes. */
export async function compare(
  set: ServerSet, keys: ScramKeyCache, scenarios: CompareScenario[], o: CompareOptions, onResult: (r: RunResult) => void,
): Promise<RunResult[]> {
  const out: RunResult[] = [];
  for (let rep = 1; rep <= o.reps; rep++) {
    // Rotated each repetition: no server always runs right after the same other one.
    const order = o.servers.map((_, i) => o.servers[(i + rep - 1) % o.servers.length]);
    for (const scenario of scenarios) {
      for (const server of order) {
        if (!applies(server, scenario)) continue;
        process.stderr.write(`bench: ${scenario} on ${server}, repetition ${rep}/${o.reps}...\n`);
        const r = await runOne(set, keys, server, scenario, rep, o);
        out.push(r);
        onResult(r);
      }
    }
  }
  return out;
}

// ---- the summary --------------------------------------------------------------

interface Row { scenario: CompareScenario; metric: string; label: string; better: 'higher' | 'lower'; digits: number }

const ROWS: Row[] = [
  { scenario: 'login', metric: 'logins_per_s', label: 'logins/s (SCRAM-SHA-1, bind, presence, ping)', better: 'higher', digits: 0 },
  { scenario: 'login', metric: 'server_cpu_ms_per_login', label: 'server CPU ms per login', better: 'lower', digits: 2 },
  { scenario: 'login-tls', metric: 'logins_per_s', label: 'logins/s with STARTTLS', better: 'higher', digits: 0 },
  { scenario: 'login-tls', metric: 'server_cpu_ms_per_login', label: 'server CPU ms per STARTTLS login', better: 'lower', digits: 2 },
  // idle: one row per step, made from the results (see rows()).
  { scenario: 'message', metric: 'messages_per_s', label: 'one-to-one msgs/s', better: 'higher', digits: 0 },
  { scenario: 'message', metric: 'latency_ms_p99', label: 'one-to-one p99 ms at full load', better: 'lower', digits: 2 },
  { scenario: 'message', metric: 'server_cpu_us_per_msg', label: 'server CPU µs per one-to-one message', better: 'lower', digits: 1 },
  { scenario: 'latency', metric: 'latency_ms_p50', label: 'p50 ms at a fixed rate', better: 'lower', digits: 3 },
  { scenario: 'latency', metric: 'latency_ms_p99', label: 'p99 ms at a fixed rate', better: 'lower', digits: 3 },
  { scenario: 'muc', metric: 'deliveries_per_s', label: 'group chat deliveries/s', better: 'higher', digits: 0 },
  { scenario: 'muc', metric: 'latency_ms_p99', label: 'group chat p99 ms', better: 'lower', digits: 2 },
  { scenario: 'muc', metric: 'server_cpu_us_per_delivery', label: 'server CPU µs per group chat delivery', better: 'lower', digits: 2 },
];

function rows(results: RunResult[]): Row[] {
  const steps = new Set<number>();
  for (const r of results) {
    for (const k of Object.keys(r.metrics ?? {})) if (r.scenario === 'idle' && k.startsWith('kib_per_session_at_')) steps.add(Number(k.slice(19)));
  }
  const idle = [...steps].sort((a, b) => a - b).map((n): Row => ({
    scenario: 'idle', metric: `kib_per_session_at_${n}`, label: `KiB RSS per idle session, ${n.toLocaleString('en-US')} sessions`, better: 'lower', digits: 1,
  }));
  const at = ROWS.findIndex((r) => r.scenario === 'message');
  return [...ROWS.slice(0, at), ...idle, ...ROWS.slice(at)];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function fmt(n: number, digits: number): string {
  return digits === 0 ? Math.round(n).toLocaleString('en-US') : n.toFixed(digits);
}

export interface Cell { median: number; min: number; max: number; n: number }

/** Median and range of one figure over the runs of one server, or why there is none. */
export function cell(results: RunResult[], server: ServerKind, scenario: CompareScenario, metric: string): Cell | string | null {
  const runs = results.filter((r) => r.server === server && r.scenario === scenario);
  if (runs.length === 0) return null;
  if (runs.every((r) => r.available === false)) return 'not available';
  const xs = runs.filter((r) => r.ok && r.available !== false && r.metrics?.[metric] !== undefined).map((r) => r.metrics![metric]);
  if (xs.length === 0) return `failed (${runs.length}×)`;
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs), n: xs.length };
}

function cpuCell(results: RunResult[], server: ServerKind, scenario: CompareScenario): string {
  const runs = results.filter((r) => r.server === server && r.scenario === scenario && r.ok && r.cpu);
  if (runs.length === 0) return '';
  return `${Math.round(median(runs.map((r) => r.cpu!.server_cpu_pct)))}% / ${Math.round(median(runs.map((r) => r.cpu!.loadgen_cpu_pct)))}%`;
}

/** The markdown summary: one row per figure, one column per server, ratios of the medians. */
export function markdownTable(results: RunResult[], servers: ServerKind[]): string {
  const shown = servers.filter((s) => s !== 'ceiling');
  const ratioOf = shown.includes('imnode') ? shown.filter((s) => s !== 'imnode') : [];
  const head = ['figure', ...shown, ...ratioOf.map((s) => `imnode/${s}`)];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i === 0 ? ' --- ' : ' ---: ')).join('|')}|`];
  const scenarios = new Set(results.map((r) => r.scenario));
  for (const row of rows(results)) {
    if (!scenarios.has(row.scenario)) continue;
    const cells = shown.map((s) => cell(results, s, row.scenario, row.metric));
    const text = cells.map((c) => (c === null ? '–' : typeof c === 'string' ? c : `${fmt(c.median, row.digits)} (${fmt(c.min, row.digits)}–${fmt(c.max, row.digits)})`));
    const mine = cells[shown.indexOf('imnode')];
    const ratios = ratioOf.map((s) => {
      const other = cells[shown.indexOf(s)];
      if (!mine || !other || typeof mine === 'string' || typeof other === 'string' || other.median === 0) return '–';
      return `${(mine.median / other.median).toFixed(2)}${row.better === 'lower' ? ' (lower is better)' : ''}`;
    });
    lines.push(`| ${row.label} | ${[...text, ...ratios].join(' | ')} |`);
  }
  for (const s of COMPARE_SCENARIOS) {
    if (!scenarios.has(s)) continue;
    const cpu = shown.map((srv) => cpuCell(results, srv, s));
    if (cpu.every((c) => c === '')) continue;
    lines.push(`| ${s}: CPU server / load generator (100% = one core) | ${[...cpu.map((c) => c || '–'), ...ratioOf.map(() => '')].join(' | ')} |`);
  }
  if (servers.includes('ceiling')) {
    const c = cell(results, 'ceiling', 'message', 'messages_per_s');
    const mine = cell(results, 'imnode', 'message', 'messages_per_s');
    if (c && typeof c !== 'string') {
      const frac = mine && typeof mine !== 'string' ? ` — imnode reaches **${(mine.median / c.median).toFixed(2)}** of it` : '';
      lines.push('', `Ceiling (bench/ceiling.ts: no XML parsing, forwards raw bytes): ${fmt(c.median, 0)} msgs/s (${fmt(c.min, 0)}–${fmt(c.max, 0)})${frac}.`);
    }
  }
  return lines.join('\n') + '\n';
}

/** Parameters of the comparison, for the notes under the table. */
export function describe(o: CompareOptions): string {
  return [
    `${o.reps} repetitions, interleaved; median (min–max) over them; a fresh server per run.`,
    `login: ${o.login.sessions} sessions, ${o.login.concurrency} in flight, after ${o.login.warmup} unmeasured ones; login-tls the same with STARTTLS (EC P-256 certificate, no session resumption).`,
    `idle: ${o.idle.steps.join(' then ')} sessions in one server, RSS read ${o.idle.settleMs} ms after each step.`,
    `message: ${o.message.pairs} pairs, ${o.message.window} in flight per pair, ${o.message.messages} messages.`,
    `latency: ${o.latency.rate} msgs/s over ${o.latency.pairs} pairs for ${o.latency.seconds} s.`,
    `muc: ${o.muc.occupants} occupants, ${o.muc.senders} senders, ${o.muc.messages} messages (× ${o.muc.occupants} deliveries), ${o.muc.window} in flight per sender.`,
  ].join('\n');
}
