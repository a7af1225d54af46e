// Figures of the single executable (issue 7): its size, the time from exec to
// accepting client connections (median of 10 starts; a fresh machine's first start
// apart: certificate generation and addon extraction), the same with a pool (libp2p
// loaded and started, on loopback: no mDNS leaves this machine), and the resident
// memory of an idle node. Every start runs the binary under `env -i`, as an
// operator would run the copied file. "Accepting" is measured from outside: a TCP
// connect to the client port is retried every 2 ms until one succeeds.
// Standalone: node bench/loadgen/startup.ts [runs]; builds dist/imnode if missing.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { percentile, processCpuSeconds, round, rssKiB, sleep } from './measure.ts';
import type { Figures } from './scenarios.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
export const BINARY = path.join(ROOT, 'dist', 'imnode');

/** Builds dist/imnode when it is not there (the figures are about that file). */
export function ensureBinary(): void {
  if (existsSync(BINARY)) return;
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'build.ts')], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`npm run build failed (${r.status ?? r.signal}):\n${r.stdout}${r.stderr}`);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect({ host: '127.0.0.1', port });
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
}

/** ms: wall time to accepting; cpuMs: CPU the process used by then (all threads), which other load on the machine barely changes. */
interface Started { proc: ChildProcess; ms: number; cpuMs: number; out: () => string }

/** Spawns cmd and resolves once its client port accepts a connection. */
async function startTimed(cmd: string, args: string[], port: number, timeoutMs: number, env: string[] = []): Promise<Started> {
  let out = '';
  const t0 = performance.now();
  const proc = spawn('/usr/bin/env', ['-i', ...env, cmd, ...args], { cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  for (;;) {
    if (await accepts(port)) {
      const ms = performance.now() - t0;
      return { proc, ms, cpuMs: processCpuSeconds(proc.pid!) * 1000, out: () => out };
    }
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${cmd} exited (${proc.exitCode ?? proc.signalCode}) before accepting clients:\n${out}`);
    if (performance.now() - t0 > timeoutMs) {
      proc.kill('SIGKILL');
      throw new Error(`${cmd} did not accept clients within ${timeoutMs} ms:\n${out}`);
    }
    await sleep(2);
  }
}

async function stop(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const done = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
  await done;
  clearTimeout(t);
}

function median(xs: number[]): number {
  return percentile([...xs].sort((a, b) => a - b), 50);
}

/** The figures; `runs` starts per configuration (10 for the closing note). */
export async function startup(runs = 10, timeoutMs = 120_000): Promise<Figures> {
  ensureBinary();
  const deadline = Date.now() + timeoutMs;
  const left = (): number => Math.max(1000, deadline - Date.now());
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'imnode-startup-'));
  const notes: string[] = [];
  try {
    const dataDir = path.join(tmp, 'data');
    const base = (port: number): string[] => ['--data-dir', dataDir, '--bind', '127.0.0.1', '--c2s-port', String(port), '--c2s-tls-port', '0', '--log-level', 'warn'];

    // A fresh machine: empty cache dir (the addon is extracted), no data dir (a certificate is made).
    let port = await freePort();
    const first = await startTimed(BINARY, base(port), port, left(), [`XDG_CACHE_HOME=${path.join(tmp, 'cache')}`]);
    await stop(first.proc);

    const single: number[] = [];
    const singleCpu: number[] = [];
    let idleRss = 0;
    for (let i = 0; i < runs; i++) {
      port = await freePort();
      const s = await startTimed(BINARY, base(port), port, left());
      single.push(s.ms);
      singleCpu.push(s.cpuMs);
      if (i === runs - 1) {
        await sleep(2000);
        idleRss = rssKiB(s.proc.pid!);
      }
      await stop(s.proc);
    }

    // A pool member: libp2p is loaded and the pool started (loopback listener, no mDNS).
    const pool: number[] = [];
    const poolCpu: number[] = [];
    let poolRss = 0;
    for (let i = 0; i < runs; i++) {
      port = await freePort();
      const s = await startTimed(BINARY, [...base(port), '--pool-listen', '/ip4/127.0.0.1/tcp/0', '--server-id', 'bench'], port, left());
      pool.push(s.ms);
      poolCpu.push(s.cpuMs);
      if (i === runs - 1) {
        await sleep(2000);
        poolRss = rssKiB(s.proc.pid!);
      }
      await stop(s.proc);
    }

    // The same server from the sources (node + node_modules), for comparison.
    const source: number[] = [];
    const node = path.join(ROOT, 'node_modules', '.bin', 'node');
    for (let i = 0; i < runs; i++) {
      port = await freePort();
      const s = await startTimed(node, [path.join(ROOT, 'bin', 'imnode.ts'), ...base(port)], port, left());
      source.push(s.ms);
      await stop(s.proc);
    }

    const version: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const r = spawnSync('/usr/bin/env', ['-i', BINARY, '--version'], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`imnode --version failed: ${r.stderr}`);
      version.push(performance.now() - t0);
    }
    notes.push(`binary ${BINARY}, ${runs} starts per figure, median; first start = empty cache dir and data dir; ` +
      `cpu = CPU time the process had used when it first accepted a client (clock ticks: 10 ms resolution)`);
    return {
      params: { runs },
      metrics: {
        binary_mb: round(statSync(BINARY).size / 1048576, 1),
        first_start_ms: round(first.ms, 0),
        startup_ms_median: round(median(single), 0),
        startup_ms_max: round(Math.max(...single), 0),
        startup_cpu_ms_median: round(median(singleCpu), 0),
        pool_startup_ms_median: round(median(pool), 0),
        pool_startup_cpu_ms_median: round(median(poolCpu), 0),
        source_startup_ms_median: round(median(source), 0),
        version_ms_median: round(median(version), 0),
        idle_rss_mib: round(idleRss / 1024, 1),
        pool_idle_rss_mib: round(poolRss / 1024, 1),
      },
      notes,
    };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const runs = Number(process.argv[2] ?? 10);
  startup(runs).then((f) => process.stdout.write(JSON.stringify(f, null, 2) + '\n'), (e: unknown) => {
    process.stderr.write(`startup: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  });
}
