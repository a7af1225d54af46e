// What the benchmark measures besides its own counters: CPU time of the load
// generator (process.cpuUsage) and of the server (utime + stime from
// /proc/<pid>/stat, proc(5)), the server's resident memory (VmRSS from
// /proc/<pid>/status), latency percentiles, and deadlines that fail loudly.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

let clockTicks = 0;

/** Clock ticks per second, the unit of utime/stime in /proc/<pid>/stat. */
function ticksPerSecond(): number {
  if (!clockTicks) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100; // what every Linux build uses (USER_HZ)
    }
  }
  return clockTicks;
}

/** CPU seconds (user + system, all threads) used so far by a process. */
export function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may contain spaces and parentheses: fields are counted after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state), so utime (14) and stime (15) are at 11 and 12.
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
}

/** VmRSS of a process in KiB. */
export function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]);
}

export interface CpuReport {
  wall_s: number;
  loadgen_cpu_s: number;
  /** 100 = one core busy for the whole phase. */
  loadgen_cpu_pct: number;
  server_cpu_s: number;
  server_cpu_pct: number;
}

/**
 * Starts measuring CPU of this process and of the server process(es) (summed,
 * and per process); call the result at the end of the phase.
 */
export function cpuMeter(serverPids: number | number[]): () => CpuReport & { per_node_cpu_s: number[] } {
  const pids = Array.isArray(serverPids) ? serverPids : [serverPids];
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const s0 = pids.map(processCpuSeconds);
  return () => {
    const wall = (performance.now() - t0) / 1000;
    const c = process.cpuUsage(c0);
    const mine = (c.user + c.system) / 1e6;
    const per = pids.map((p, i) => round(processCpuSeconds(p) - s0[i], 2));
    const server = per.reduce((a, b) => a + b, 0);
    return {
      wall_s: round(wall, 3),
      loadgen_cpu_s: round(mine, 2),
      loadgen_cpu_pct: round((100 * mine) / wall, 0),
      server_cpu_s: round(server, 2),
      server_cpu_pct: round((100 * server) / wall, 0),
      per_node_cpu_s: per,
    };
  };
}

/** Nearest-rank percentile of a sorted array. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

export function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

export class TimeoutError extends Error {}

/**
 * Rejects after `ms` with what `progress()` says at that moment, so a stuck run
 * tells where it stuck. The caller tears everything down on rejection.
 */
export function deadline<T>(p: Promise<T>, ms: number, what: string, progress: () => string): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(`${what}: timed out after ${ms / 1000} s (${progress()})`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
