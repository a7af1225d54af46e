// imnode's benchmark (npm run bench): starts the real server as a child process
// on a temp data dir and drives it from one process over raw loopback sockets
// (bench/loadgen/). Scenarios: login rate, one-to-one messages, idle memory, and
// the parser micro-benchmark (bench/parser.ts). Every scenario is bounded in
// count and in time; a failure or a timeout is reported and makes the exit code 1.
// Usage: npm run bench -- [--only login,message,idle,parser] [--sessions N] ... (--help)
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

const SCENARIOS = ['login', 'message', 'idle', 'parser'] as const;
type Scenario = (typeof SCENARIOS)[number];
const ALIASES: Record<string, Scenario> = { messages: 'message', 'one-to-one': 'message', memory: 'idle' };

const HELP = `Usage: npm run bench -- [options]

  --only LIST        scenarios to run, comma-separated: ${SCENARIOS.join(',')} (default: all)
  --sessions N       sessions of the login scenario (default 1000) and of the idle one (default 5000)
  --concurrency N    logins in flight (default 100)
  --pairs N          sender/receiver pairs of the message scenario (default 100)
  --messages N       messages sent in the measured phase (default 50000)
  --window N         messages in flight per pair (default 5)
  --settle MS        idle scenario: wait before each memory reading (default 2000)
  --timeout S        limit per scenario, set-up included (default 300)
  --parser-seconds S duration of the parser micro-benchmark (default 3)
  --no-save          do not write bench/results/
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
const only: Scenario[] = f.only === undefined ? [...SCENARIOS] : f.only.split(',').map((s) => {
  const name = ALIASES[s.trim()] ?? s.trim();
  if (!(SCENARIOS as readonly string[]).includes(name)) usage(`--only: unknown scenario '${s}' (${SCENARIOS.join(', ')})`);
  return name as Scenario;
});
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
};

// Each open session is a socket in this process and one in the server; both inherit the limit.
// Node raises its soft limit to the hard one by itself, so only a low hard limit gets here.
const needFds = Math.max(
  only.includes('idle') ? opts.idleSessions : 0,
  only.includes('message') ? 2 * opts.pairs : 0,
  only.includes('login') ? 2 * opts.concurrency : 0,
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

async function scenario(name: Scenario, dataDir: string, keys: ScramKeyCache): Promise<ScenarioResult> {
  const t0 = performance.now();
  const seconds = () => round((performance.now() - t0) / 1000, 1);
  process.stderr.write(`bench: ${name}...\n`);
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
  const results: ScenarioResult[] = [];
  try {
    const users = Math.max(
      only.includes('login') ? opts.loginSessions : 0,
      only.includes('message') ? 2 * opts.pairs : 0,
      only.includes('idle') ? opts.idleSessions : 0,
    );
    if (users > 0) {
      const t = performance.now();
      await importUsers(dataDir, users);
      process.stderr.write(`bench: imported ${users} accounts in ${((performance.now() - t) / 1000).toFixed(1)} s\n`);
    }
    for (const name of only) {
      const r = await scenario(name, dataDir, keys);
      results.push(r);
      process.stdout.write(JSON.stringify(r) + '\n');
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
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
