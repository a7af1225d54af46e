// imnode's benchmark (npm run bench): starts the real server as a child process
// on a temp data dir and drives it from one process over raw loopback sockets
// (bench/loadgen/). Scenarios: login rate (also with STARTTLS), idle memory,
// one-to-one messages (throughput, and latency at a fixed rate) and group chat,
// each against imnode, Prosody, ejabberd (and the one-to-one ones against the
// ceiling, bench/ceiling.ts) in interleaved repetitions (bench/loadgen/compare.ts,
// bench/servers/); the parser micro-benchmark (bench/parser.ts); pool formation,
// cross-node messages, route purge after a kill, and logins with routing
// convergence and pool traffic on a pool of three nodes (bench/loadgen/pool*.ts),
// and conference rooms across it (pool-muc: fan-out, joins; bench/loadgen/pool-muc.ts);
// logins, one-to-one and group chat on three nodes in network namespaces (pool-netns).
// Every scenario is bounded in count and in time; a failure or a timeout is
// reported and makes the exit code 1.
// Usage: npm run bench -- [--only compare,parser,pool,...] [--servers imnode,prosody,ejabberd,ceiling] [--reps N] ... (--help)
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { tempDir } from '../test/helpers/imnode.ts';
import { importUsers, openFilesLimit } from './loadgen/env.ts';
import { deadline, round } from './loadgen/measure.ts';
import { humanReport, meta, save, type ScenarioResult } from './loadgen/report.ts';
import { parser, type Figures, type Progress } from './loadgen/scenarios.ts';
import { startup } from './loadgen/startup.ts';
import { COMPARE_SCENARIOS, accountsNeeded, compare, describe, markdownTable, type CompareOptions, type CompareScenario, type RunResult } from './loadgen/compare.ts';
import { SERVER_KINDS, ServerSet, missing, versionOf, type ServerKind } from './servers/servers.ts';
import { ScramKeyCache } from './loadgen/scram.ts';
import { PoolNet, preparePoolTemplate, warmKeys } from './loadgen/pool.ts';
import { poolForm, poolLogins, poolMessage, poolPurge } from './loadgen/pool-scenarios.ts';
import { poolMuc } from './loadgen/pool-muc.ts';
import { poolNetns } from './loadgen/pool-netns.ts';
import { ldapScenario } from './loadgen/ldap.ts';

const SCENARIOS = [...COMPARE_SCENARIOS, 'parser', 'startup', 'pool-form', 'pool-message', 'pool-purge', 'pool-logins', 'pool-muc', 'pool-netns', 'ldap-login', 'relay'] as const;
type Scenario = (typeof SCENARIOS)[number];
const POOL_SCENARIOS: readonly Scenario[] = ['pool-form', 'pool-message', 'pool-purge', 'pool-logins', 'pool-muc'];
const ALIASES: Record<string, Scenario[]> = {
  messages: ['message'], 'one-to-one': ['message'], memory: ['idle'], groupchat: ['muc'], 'group-chat': ['muc'],
  starttls: ['login-tls'], p99: ['latency'], compare: [...COMPARE_SCENARIOS],
  pool: [...POOL_SCENARIOS], 'pool-traffic': ['pool-logins'], 'pool-convergence': ['pool-logins'],
};

const HELP = `Usage: npm run bench -- [options]

  --only LIST        scenarios to run, comma-separated: ${SCENARIOS.join(',')}
                     (default: all; 'pool' = the pool-* scenarios; 'compare' = ${COMPARE_SCENARIOS.join(',')})
  --servers LIST     servers of the comparison scenarios: ${SERVER_KINDS.join(',')} (default: all;
                     the ceiling runs message and latency only)
  --reps N           repetitions of each comparison run, interleaved (default 3)
  --sessions N       sessions of the login scenarios (default 2000)
  --warmup N         unmeasured logins before the measured ones (default 500)
  --concurrency N    logins in flight (default 100)
  --idle LIST        idle scenario: session counts read one after the other (default 2000,10000)
  --pairs N          sender/receiver pairs of the message and latency scenarios (default 200)
  --messages N       messages sent in the measured phase (default 100000)
  --window N         messages in flight per pair, or per group chat sender (default 5)
  --rate N           latency scenario: messages per second (default 2000)
  --latency-seconds S latency scenario: measured seconds (default 5)
  --occupants N      muc scenario: occupants of the room (default 50)
  --muc-senders N    muc scenario: occupants that send (default 5)
  --muc-messages N   muc scenario: messages sent in the measured phase (default 2000)
  --settle MS        idle scenario: wait before each memory reading (default 2000)
  --profile DIR      run imnode with node --cpu-prof, one .cpuprofile per comparison run in DIR
  --node-args=ARGS   node flags for imnode in the comparison runs, space-separated, after '=' since they
                     start with '--' (e.g. --node-args=--max-semi-space-size=64)
  --timeout S        limit per scenario, set-up included (default 300)
  --parser-seconds S duration of the parser micro-benchmark (default 3)
  --no-save          do not write bench/results/

  Pool scenarios (three nodes on loopback; --pairs, --window and --concurrency apply, the last per node):
  --pool-messages N  messages in each measured phase of pool-message (default 20000)
  --pool-logins N    logins of pool-logins, spread over the three nodes (default 10000)
  --purge-sessions N sessions on the node pool-purge kills (default 100)
  --baseline MS      pool-logins: idle pool traffic measured for this long, to subtract (default 5000)
  pool-netns: the three nodes in network namespaces (needs root), found by mDNS: logins (--sessions,
                     --warmup, --concurrency in all), one-to-one (--pairs, --window, --pool-messages) and
                     group chat (--occupants, --muc-senders, --muc-messages) with the clients spread over them
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
      servers: { type: 'string' }, reps: { type: 'string' }, warmup: { type: 'string' }, idle: { type: 'string' },
      rate: { type: 'string' }, 'latency-seconds': { type: 'string' }, occupants: { type: 'string' },
      'muc-senders': { type: 'string' }, 'muc-messages': { type: 'string' }, profile: { type: 'string' }, 'node-args': { type: 'string' },
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
const servers: ServerKind[] = f.servers === undefined ? [...SERVER_KINDS] : [...new Set(f.servers.split(',').map((s) => {
  if (!(SERVER_KINDS as readonly string[]).includes(s.trim())) usage(`--servers: unknown server '${s}' (${SERVER_KINDS.join(', ')})`);
  return s.trim() as ServerKind;
}))];
const idleSteps = (f.idle ?? '2000,10000').split(',').map((x) => positiveInt('idle', x.trim(), 0));
if (idleSteps.some((x, i) => i > 0 && x <= idleSteps[i - 1])) usage(`--idle: expected increasing session counts, got '${f.idle}'`);
const opts = {
  loginSessions: positiveInt('sessions', f.sessions, 2000),
  concurrency: positiveInt('concurrency', f.concurrency, 100),
  pairs: positiveInt('pairs', f.pairs, 200),
  messages: positiveInt('messages', f.messages, 100_000),
  window: positiveInt('window', f.window, 5),
  settle: positiveInt('settle', f.settle, 2000),
  timeoutMs: positiveInt('timeout', f.timeout, 300) * 1000,
  parserSeconds: positiveInt('parser-seconds', f['parser-seconds'], 3),
  poolMessages: positiveInt('pool-messages', f['pool-messages'], 20_000),
  poolLogins: positiveInt('pool-logins', f['pool-logins'], 10_000),
  purgeSessions: positiveInt('purge-sessions', f['purge-sessions'], 100),
  baselineMs: positiveInt('baseline', f.baseline, 5000),
};
const compareOpts: CompareOptions = {
  servers,
  reps: positiveInt('reps', f.reps, 3),
  timeoutMs: opts.timeoutMs,
  login: { sessions: opts.loginSessions, concurrency: opts.concurrency, warmup: positiveInt('warmup', f.warmup, 500) },
  idle: { steps: idleSteps, concurrency: opts.concurrency, settleMs: opts.settle },
  message: { pairs: opts.pairs, messages: opts.messages, window: opts.window, concurrency: opts.concurrency },
  latency: { pairs: opts.pairs, rate: positiveInt('rate', f.rate, 2000), seconds: positiveInt('latency-seconds', f['latency-seconds'], 5), concurrency: opts.concurrency },
  muc: {
    occupants: positiveInt('occupants', f.occupants, 50), senders: positiveInt('muc-senders', f['muc-senders'], 5),
    messages: positiveInt('muc-messages', f['muc-messages'], 2000), window: opts.window, concurrency: opts.concurrency,
  },
};
if (compareOpts.muc.senders > compareOpts.muc.occupants) usage('--muc-senders: more senders than --occupants');
const comparing = only.filter((s): s is CompareScenario => (COMPARE_SCENARIOS as readonly string[]).includes(s));
for (const s of servers) {
  const why = comparing.length ? missing(s) : null;
  if (why) usage(`--servers: ${s} cannot run here: ${why}`);
}
const poolUsers = Math.max(
  only.includes('pool-logins') ? opts.poolLogins : 0,
  only.includes('pool-message') ? 2 * opts.pairs : 0,
  only.includes('pool-purge') ? opts.purgeSessions : 0,
  // pool-form alone: enough accounts that their replication shows.
  only.includes('pool-form') ? 1000 : 0,
  // pool-muc: the 500 occupants of its join-time room.
  only.includes('pool-muc') ? 500 : 0,
  only.includes('pool-netns') ? Math.max(opts.loginSessions, 2 * opts.pairs, compareOpts.muc.occupants) : 0,
);

// Each open session is a socket in this process and one in the server; both inherit the limit.
// Node raises its soft limit to the hard one by itself, so only a low hard limit gets here.
const needFds = Math.max(
  comparing.length ? accountsNeeded(comparing.filter((s) => !s.startsWith('login')), compareOpts) : 0,
  comparing.length ? 2 * opts.concurrency : 0,
  // Client sockets here; each node holds its share of them, plus its pool connections.
  only.includes('pool-logins') ? opts.poolLogins : 0,
  only.includes('pool-message') ? 2 * opts.pairs : 0,
  only.includes('pool-netns') ? 2 * opts.pairs : 0,
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
    else if (name === 'pool-muc') work = poolMuc(net, { ...compareOpts.muc, joinOccupants: 500 }, progress);
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

async function scenario(name: Scenario, keys: ScramKeyCache, template: string | null): Promise<ScenarioResult> {
  const t0 = performance.now();
  const seconds = () => round((performance.now() - t0) / 1000, 1);
  process.stderr.write(`bench: ${name}...\n`);
  if (POOL_SCENARIOS.includes(name)) return poolScenario(name, template!, keys);
  if (name === 'pool-netns') {
    return poolNetns(template!, keys, { logins: opts.loginSessions, warmup: compareOpts.login.warmup, concurrency: opts.concurrency,
      pairs: opts.pairs, messages: opts.poolMessages, window: opts.window, muc: compareOpts.muc }, opts.timeoutMs);
  }
  if (name === 'ldap-login') return ldapScenario({ users: Math.min(opts.loginSessions, 1000), concurrency: Math.min(opts.concurrency, 50), timeoutMs: opts.timeoutMs });
  try {
    const figures = name === 'relay' ? await deadline((await import('./loadgen/relay.ts')).relayBench({ messages: 1000 }), opts.timeoutMs, name, () => 'relay lab') : name === 'startup' ? await startup(10, opts.timeoutMs) : await parser(opts.parserSeconds, opts.timeoutMs);
    return { scenario: name, ok: true, ...figures, seconds: seconds() };
  } catch (e) {
    return { scenario: name, ok: false, error: (e as Error).message, seconds: seconds() };
  }
}

async function main(): Promise<number> {
  const m = meta(argv);
  const keys = new ScramKeyCache();
  const dataDir = tempDir('imnode-bench-');
  let template: string | null = null;
  const results: ScenarioResult[] = [];
  const compared: RunResult[] = [];
  const serversDir = tempDir('imnode-bench-servers-');
  try {
    const users = Math.max(comparing.length ? accountsNeeded(comparing, compareOpts) : 0, poolUsers);
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
    if (comparing.length) {
      const t = performance.now();
      const set = new ServerSet(serversDir, dataDir);
      if (f['node-args']) set.imnodeNodeArgs = f['node-args'].split(/\s+/).filter((a) => a !== '');
      if (f.profile) set.imnodeNodeArgs.push('--cpu-prof', `--cpu-prof-dir=${path.resolve(f.profile)}`);
      const before = keys.derivations;
      await set.prepare(accountsNeeded(comparing, compareOpts), keys, servers);
      process.stderr.write(`bench: servers prepared (${servers.join(', ')}), ${keys.derivations - before} client keys derived in ${((performance.now() - t) / 1000).toFixed(1)} s\n`);
      await compare(set, keys, comparing, compareOpts, (r) => {
        compared.push(r);
        results.push(r);
        process.stdout.write(JSON.stringify(r) + '\n');
      });
    }
    for (const name of only) {
      if (comparing.includes(name as CompareScenario)) continue;
      const r = await scenario(name, keys, template);
      results.push(r);
      process.stdout.write(JSON.stringify(r) + '\n');
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(serversDir, { recursive: true, force: true });
    if (template) rmSync(template, { recursive: true, force: true });
  }
  const summary = compared.length ? `Servers: ${servers.map((s) => `${s}${versionOf(s) ? ' ' + versionOf(s) : ''}`).join(', ')}.\n` +
    `${describe(compareOpts)}\n\n${markdownTable(compared, servers)}` : '';
  process.stdout.write('\n' + humanReport(m, results) + (summary ? '\n' + summary : ''));
  if (!f['no-save']) {
    const files = save(path.join(import.meta.dirname, 'results'), m, results, summary);
    process.stderr.write(`bench: wrote ${files.map((p) => path.relative(process.cwd(), p)).join(', ')}\n`);
  }
  return results.every((r) => r.ok) ? 0 : 1;
}

// Ctrl-C or a kill: exit through process.exit, whose 'exit' handlers (env.ts, pool.ts) SIGKILL the servers by PID.
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));

main().then((code) => process.exit(code), (e: unknown) => {
  process.stderr.write(`bench: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
