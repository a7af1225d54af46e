// The LDAP login scenario: one imnode with --ldap-url against a real slapd
// (test/helpers/slapd.ts, mdb backend, on loopback), users only in the
// directory. A login is what a client without SCRAM keys does against LDAP:
// TCP, STARTTLS, PLAIN (checked by a bind as the user), resource bind, close.
// Two measured passes over the same users:
//  - cold: nothing cached, each login searches the user (service account) then binds;
//  - warm: the entries are in this node's LevelDB cache, a login binds only.
// Figures: logins per second of each pass, and LDAP searches and binds per
// login read from the node's own counters (GET /status on the admin socket),
// the warm searches per login being the one the issue wants at zero. CPU of
// imnode and of slapd per login too: on a shared machine rates are noisy.
//   node bench/loadgen/ldap.ts [--users N] [--concurrency N]   (prints JSON)
import { readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { tempDir } from '../../test/helpers/imnode.ts';
import { RawClient } from '../../test/helpers/raw.ts';
import { startSlapd } from '../../test/helpers/slapd.ts';
import { AdminClient } from '../../src/admin/admin-server.ts';
import { startBenchServer, pool, type BenchServer } from './env.ts';
import { cpuMeter, deadline, percentile, round } from './measure.ts';
import type { ScenarioResult } from './report.ts';
import type { Figures, Progress } from './scenarios.ts';

export interface LdapLoginOptions {
  /** Users, each logging in once per pass. */
  users: number;
  concurrency: number;
}

const WARMUP_USERS = 50;

function user(i: number, prefix = 'l'): { uid: string; password: string } {
  return { uid: `${prefix}${i}`, password: `ldap-secret-${prefix}${i}` };
}

async function counters(dataDir: string): Promise<{ searches: number; binds: number; cacheHits: number }> {
  const s = await new AdminClient(dataDir).status();
  const l = s.ldap as { searches?: number; binds?: number; cacheHits?: number } | undefined;
  if (!l || typeof l.searches !== 'number') throw new Error('the node reports no LDAP counters in its status');
  return { searches: l.searches, binds: l.binds ?? 0, cacheHits: l.cacheHits ?? 0 };
}

async function loginOnce(server: BenchServer, ca: string, u: { uid: string; password: string }): Promise<number> {
  const t0 = performance.now();
  const c = await RawClient.connect(server.port, { ca, servername: 'localhost' });
  try {
    await c.login(u.uid, u.password, 'bench');
    return performance.now() - t0;
  } finally {
    c.send('</stream:stream>');
    c.destroy();
  }
}

export async function ldapLogin(opts: LdapLoginOptions, progress: Progress): Promise<Figures> {
  const { users, concurrency } = opts;
  progress.text = 'starting slapd';
  const measured = Array.from({ length: users }, (_, i) => user(i + 1));
  const warm = Array.from({ length: WARMUP_USERS }, (_, i) => user(i + 1, 'w'));
  const slapd = await startSlapd({ users: [...measured, ...warm] });
  const dataDir = tempDir('imnode-bench-ldap-');
  let server: BenchServer | undefined;
  try {
    progress.text = 'starting imnode';
    server = await startBenchServer(dataDir, [...slapd.imnodeArgs(), '--ldap-cache-ttl', '1h', '--ldap-pool-size', '4']);
    const ca = readFileSync(path.join(dataDir, 'tls', 'cert.pem'), 'utf8');
    // Unmeasured: JIT and connection pools warm, with users the passes do not use.
    progress.text = 'warm-up';
    await pool(warm.length, concurrency, async (i) => { await loginOnce(server!, ca, warm[i]); });

    const pass = async (name: string) => {
      const lat = new Float64Array(users);
      const c0 = await counters(dataDir);
      const meter = cpuMeter([server!.pid, slapd.pid]);
      let n = 0;
      await pool(users, concurrency, async (i) => {
        lat[i] = await loginOnce(server!, ca, measured[i]);
        progress.text = `${name} pass: ${++n}/${users}`;
      });
      const cpu = meter();
      const c1 = await counters(dataDir);
      lat.sort();
      return {
        logins_per_s: round(users / cpu.wall_s, 0),
        login_ms_p50: round(percentile(lat, 50), 2),
        login_ms_p99: round(percentile(lat, 99), 2),
        searches_per_login: round((c1.searches - c0.searches) / users, 3),
        binds_per_login: round((c1.binds - c0.binds) / users, 3),
        imnode_cpu_ms_per_login: round((1000 * cpu.per_node_cpu_s[0]) / users, 3),
        slapd_cpu_ms_per_login: round((1000 * cpu.per_node_cpu_s[1]) / users, 3),
        loadgen_cpu_pct: cpu.loadgen_cpu_pct,
        wall_s: cpu.wall_s,
      };
    };
    const cold = await pass('cold');
    const hot = await pass('warm');
    if (hot.searches_per_login !== 0) progress.text = `warm pass searched ${hot.searches_per_login} times per login`;
    const metrics: Record<string, number> = {};
    for (const [k, v] of Object.entries(cold)) metrics[`cold_${k}`] = v;
    for (const [k, v] of Object.entries(hot)) metrics[`warm_${k}`] = v;
    return {
      params: { users, in_flight: concurrency, mechanism: 'PLAIN over STARTTLS', directory: 'OpenLDAP slapd (mdb) on loopback' },
      metrics,
      notes: [
        'a login: TCP connect, STARTTLS, PLAIN verified by an LDAP bind as the user, resource bind; then the connection is dropped',
        'cold: empty cache (search + bind per login); warm: same users again, entries cached (bind only)',
        'searches and binds per login are the node\'s own counters (GET /status "ldap")',
      ],
    };
  } finally {
    if (server && server.proc.exitCode === null) {
      server.proc.kill('SIGTERM');
      await Promise.race([server.exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (server.proc.exitCode === null) server.proc.kill('SIGKILL');
    }
    await slapd.cleanup();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** The scenario as bench/run.ts runs it: bounded by timeoutMs, failures reported, never thrown. */
export async function ldapScenario(opts: LdapLoginOptions & { timeoutMs: number }): Promise<ScenarioResult> {
  const t0 = performance.now();
  const progress: Progress = { text: 'starting' };
  const seconds = () => round((performance.now() - t0) / 1000, 1);
  try {
    const figures = await deadline(ldapLogin(opts, progress), opts.timeoutMs, 'ldap-login', () => progress.text);
    if (figures.metrics.warm_searches_per_login !== 0) {
      return { scenario: 'ldap-login', ok: false, error: `warm cache: ${figures.metrics.warm_searches_per_login} LDAP searches per login (target 0)`, ...figures, seconds: seconds() };
    }
    return { scenario: 'ldap-login', ok: true, ...figures, seconds: seconds() };
  } catch (e) {
    return { scenario: 'ldap-login', ok: false, error: (e as Error).message, seconds: seconds() };
  }
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { users: { type: 'string' }, concurrency: { type: 'string' } } });
  const progress: Progress = { text: '' };
  const timer = setTimeout(() => {
    process.stderr.write(`ldap bench: timed out after 300 s (${progress.text})\n`);
    process.exit(1);
  }, 300_000);
  ldapLogin({ users: Number(values.users ?? 1000), concurrency: Number(values.concurrency ?? 50) }, progress).then((f) => {
    clearTimeout(timer);
    process.stdout.write(JSON.stringify(f, null, 2) + '\n');
  }, (e: unknown) => {
    process.stderr.write(`ldap bench: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
}
