// imnode's benchmark (npm run bench): starts the real server as a child process
// on a temp data dir and drives it from one process over raw loopback sockets
// (bench/loadgen/). Scenarios: login rate, one-to-one messages, idle memory, and
// the parser micro-benchmark (bench/parser.ts) on one node; pool formation,
// cross-node messages, route purge after a kill, and logins with routing
// convergence and pool traffic on a pool of three nodes (bench/loadgen/pool*.ts).
// Every scenario is bounded in count and in time; a failure or a timeout is
// reported and makes the exit code 1.
// Usage: npm run bench -- [--only login,message,idle,parser,pool] [--sessions N] ... (--help)
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { tempDir } from '../test/helpers/imnode.ts';
import { Run, importUsers, openFilesLimit } from './loadgen/env.ts';
import { deadline, round } from './loadgen/measure.ts';
import { humanReport, meta, save, type ScenarioResult } from './loadgen/report.ts';
import { idleMemory, loginRate, oneToOne, parser, type Figures, type Progress } from './loadgen/scenarios.ts';
import { ScramKeyCache } from './loadgen/scram.ts';
import { PoolNet, preparePoolTemplate, warmKeys } from './loadgen/pool.ts';
import { poolForm, poolLogins, poolMessage, poolPurge } from './loadgen/pool-scenarios.ts';

const SCENARIOS = ['login', 'message', 'idle', 'parser', 'pool-form', 'pool-message', 'pool-purge', 'pool-logins'] as const;
type Scenario = (typeof SCENARIOS)[number];
const POOL_SCENARIOS: readonly Scenario[] = ['pool-form', 'pool-message', 'pool-purge', 'pool-logins'];
const ALIASES: Record<string, Scenario[]> = {
  messages: ['message'], 'one-to-one': ['message'], memory: ['idle'],
  pool: [...POOL_SCENARIOS], 'pool-traffic': ['pool-logins'], 'pool-convergence': ['pool-logins'],
};

const HELP = `Usage: npm run bench -- [options]

  --only LIST        scenarios to run, comma-separated: ${SCENARIOS.join(',')}
                     (default: all; 'pool' = the four pool-* scenarios)
  --sessions N       sessions of the login scenario (default 1000) and of the idle one (default 5000)
  --concurrency N    logins in flight (default 100)
  --pairs N          sender/receiver pairs of the message scenario (default 100)
  --messages N       messages sent in the measured phase (default 50000)
  --window N         messages in flight per pair (default 5)
  --settle MS        idle scenario: wait before each memory reading (default 2000)
  --timeout S        limit per scenario, set-up included (default 300)
  --parser-seconds S duration of the parser micro-benchmark (default 3)
  --no-save          do not write bench/results/

  Pool scenarios (three nodes on loopback; --pairs, --window and --concurrency apply, the last per node):
  --pool-messages N  messages in each measured phase of pool-message (default 20000)
  --pool-logins N    logins of pool-logins, spread over the three nodes (default 10000)
  --purge-sessions N sessions on the node pool-purge kills (default 100)
  --baseline MS      pool-logins: idle pool traffic measured for this long, to subtract (default 5000)
`;

function positiveInt(name: string, v: string | undefined, def: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) usage(`--${name}: expected a positive integer, got '${v}'`);
  return n;
}

function usage(msg: string): never {
  process.stderr.write(`bench: ${msg}\n\n${HELP}`);
  process.exit(2);
}

const argv = process.argv.slice(2);
let parsed;
try {
  parsed = parseArgs({
    args: argv,
    options: {
      only: { type: 'string' }, sessions: { type: 'string' }, concurrency: { type: 'string' },
      pairs: { type: 'string' }, messages: { type: 'string' }, window: { type: 'string' },
      settle: { type: 'string' }, timeout: { type: 'string' }, 'parser-seconds': { type: 'string' },
      'pool-messages': { type: 'string' }, 'pool-logins': { type: 'string' }, 'purge-sessions': { type: 'string' },
      baseline: { type: 'string' },
      'no-save': { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
    },
  });
} catch (e) {
  usage((e as Error).message);
}
const f = parsed.values;
if (f.help) {
  process.stdout.write(HELP);
  process.exit(0);
}
const only: Scenario[] = f.only === undefined ? [...SCENARIOS] : [...new Set(f.only.split(',').flatMap((s) => {
  const alias = ALIASES[s.trim()];
  if (alias) return alias;
  if (!(SCENARIOS as readonly string[]).includes(s.trim())) usage(`--only: unknown scenario '${s}' (${SCENARIOS.join(', ')}, pool)`);
  return [s.trim() as Scenario];
}))];
const opts = {
  loginSessions: positiveInt('sessions', f.sessions, 1000),
  idleSessions: positiveInt('sessions', f.sessions, 5000),
  concurrency: positiveInt('concurrency', f.concurrency, 100),
  pairs: positiveInt('pairs', f.pairs, 100),
  messages: positiveInt('messages', f.messages, 50_000),
  window: positiveInt('window', f.window, 5),
  settle: positiveInt('settle', f.settle, 2000),
  timeoutMs: positiveInt('timeout', f.timeout, 300) * 1000,
  parserSeconds: positiveInt('parser-seconds', f['parser-seconds'], 3),
  poolMessages: positiveInt('pool-messages', f['pool-messages'], 20_000),
  poolLogins: positiveInt('pool-logins', f['pool-logins'], 10_000),
  purgeSessions: positiveInt('purge-sessions', f['purge-sessions'], 100),
  baselineMs: positiveInt('baseline', f.baseline, 5000),
};
const poolUsers = Math.max(
  only.includes('pool-logins') ? opts.poolLogins : 0,
  only.includes('pool-message') ? 2 * opts.pairs : 0,
  only.includes('pool-purge') ? opts.purgeSessions : 0,
  // pool-form alone: enough accounts that their replication shows.
  only.includes('pool-form') ? 1000 : 0,
);

// Each open session is a socket in this process and one in the server; both inherit the limit.
// Node raises its soft limit to the hard one by itself, so only a low hard limit gets here.
const needFds = Math.max(
  only.includes('idle') ? opts.idleSessions : 0,
  only.includes('message') ? 2 * opts.pairs : 0,
  only.includes('login') ? 2 * opts.concurrency : 0,
  // Client sockets here; each node holds its share of them, plus its pool connections.
  only.includes('pool-logins') ? opts.poolLogins : 0,
  only.includes('pool-message') ? 2 * opts.pairs : 0,
) + 256;
if (openFilesLimit() < needFds) {
  if (process.env.IMNODE_BENCH_ULIMIT) usage(`the open files limit is ${openFilesLimit()} after raising it, ${needFds} are needed`);
  // JavaScript cannot raise it; a shell can (the hard limit too, as root). Run again under one.
  process.stderr.write(`bench: open files limit ${openFilesLimit()} < ${needFds}; running again under ulimit -n ${needFds}\n`);
  const sh = `ulimit -n ${needFds} 2>/dev/null || { echo "bench: cannot raise the open files limit to ${needFds}: ` +
    `raise it (as root: ulimit -n ${needFds}) or scale down with --sessions/--pairs" >&2; exit 2; }; exec "$0" "$@"`;
  const r = spawnSync('sh', ['-c', sh, process.execPath, import.meta.filename, ...argv],
    { stdio: 'inherit', env: { ...process.env, IMNODE_BENCH_ULIMIT: '1' } });
  process.exit(r.status ?? 1);
}

async function poolScenario(name: Scenario, template: string, keys: ScramKeyCache): Promise<ScenarioResult> {
  const t0 = performance.now();
  const seconds = () => round((performance.now() - t0) / 1000, 1);
  const progress: Progress = { text: 'starting' };
  const net = new PoolNet(template, keys);
  try {
    let work: Promise<Figures>;
    if (name === 'pool-form') work = poolForm(net, poolUsers, progress);
    else if (name === 'pool-message') work = poolMessage(net, { ...opts, messages: opts.poolMessages }, progress);
    else if (name === 'pool-purge') work = poolPurge(net, { sessions: opts.purgeSessions, concurrency: opts.concurrency }, progress);
    else work = poolLogins(net, { logins: opts.poolLogins, concurrency: opts.concurrency, baselineMs: opts.baselineMs }, progress);
    const figures = await deadline(Promise.race([work, net.died]), opts.timeoutMs, name, () => progress.text);
    const log = net.complaints();
    return { scenario: name, ok: true, ...figures, seconds: seconds(), ...(log.length ? { server_log: log.slice(0, 20) } : {}) };
  } catch (e) {
    const log = net.complaints();
    return { scenario: name, ok: false, error: (e as Error).message, seconds: seconds(), ...(log.length ? { server_log: log.slice(0, 20) } : {}) };
  } finally {
    await net.stop();
  }
}

async function scenario(name: Scenario, dataDir: string, keys: ScramKeyCache, template: string | null): Promise<ScenarioResult> {
  const t0 = performance.now();
  const seconds = () => round((performance.now() - t0) / 1000, 1);
  process.stderr.write(`bench: ${name}...\n`);
  if (POOL_SCENARIOS.includes(name)) return poolScenario(name, template!, keys);
  const progress: Progress = { text: 'starting' };
  if (name === 'parser') {
    try {
      const figures = await parser(opts.parserSeconds, opts.timeoutMs);
      return { scenario: name, ok: true, ...figures, seconds: seconds() };
    } catch (e) {
      return { scenario: name, ok: false, error: (e as Error).message, seconds: seconds() };
    }
  }
  let run: Run | null = null;
  try {
    run = await Run.start(dataDir, keys);
    const r = run;
    let work: Promise<Figures>;
    if (name === 'login') work = loginRate(r, { sessions: opts.loginSessions, concurrency: opts.concurrency }, progress);
    else if (name === 'message') work = oneToOne(r, opts, progress);
    else work = idleMemory(r, { sessions: opts.idleSessions, concurrency: opts.concurrency, settleMs: opts.settle }, progress);
    const figures = await deadline(Promise.race([work, r.died]), opts.timeoutMs, name, () => progress.text);
    const log = r.complaints();
    return { scenario: name, ok: true, ...figures, seconds: seconds(), ...(log.length ? { server_log: log.slice(0, 20) } : {}) };
  } catch (e) {
    const log = run?.complaints() ?? [];
    return {
      scenario: name, ok: false, error: (e as Error).message, seconds: seconds(),
      ...(log.length ? { server_log: log.slice(0, 20) } : {}),
    };
  } finally {
    await run?.stop();
  }
}

async function main(): Promise<number> {
  const m = meta(argv);
  const keys = new ScramKeyCache();
  const dataDir = tempDir('imnode-bench-');
  let template: string | null = null;
  const results: ScenarioResult[] = [];
  try {
    const users = Math.max(
      only.includes('login') ? opts.loginSessions : 0,
      only.includes('message') ? 2 * opts.pairs : 0,
      only.includes('idle') ? opts.idleSessions : 0,
      poolUsers,
    );
    if (users > 0) {
      const t = performance.now();
      await importUsers(dataDir, users);
      process.stderr.write(`bench: imported ${users} accounts in ${((performance.now() - t) / 1000).toFixed(1)} s\n`);
    }
    if (poolUsers > 0) {
      // Copied before any server runs on dataDir; the salts in it let the client keys be derived up front.
      const t = performance.now();
      template = await preparePoolTemplate(dataDir);
      const n = await warmKeys(template, keys, poolUsers);
      process.stderr.write(`bench: pool template ready, ${n} client keys derived in ${((performance.now() - t) / 1000).toFixed(1)} s\n`);
    }
    for (const name of only) {
      const r = await scenario(name, dataDir, keys, template);
      results.push(r);
      process.stdout.write(JSON.stringify(r) + '\n');
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
    if (template) rmSync(template, { recursive: true, force: true });
  }
  process.stdout.write('\n' + humanReport(m, results));
  if (!f['no-save']) {
    const files = save(path.join(import.meta.dirname, 'results'), m, results);
    process.stderr.write(`bench: wrote ${files.map((p) => path.relative(process.cwd(), p)).join(', ')}\n`);
  }
  return results.every((r) => r.ok) ? 0 : 1;
}

main().then((code) => process.exit(code), (e: unknown) => {
  process.stderr.write(`bench: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
