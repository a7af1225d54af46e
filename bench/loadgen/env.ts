// The bench environment: accounts created with `imnode user import` (one process,
// one LevelDB open) in a temp data dir, then one fresh server per scenario on it,
// started much like the end-to-end tests start it (test/helpers/imnode.ts):
// loopback, an ephemeral port, but --log-level warn. At that level the server does
// not print its 'ready' line (it is an info line), which is how the test helper
// learns the port; so the port is read from the kernel instead: the listening TCP
// socket among the server's file descriptors (proc(5): /proc/<pid>/fd, /proc/net/tcp).
// Also the open-files limit, checked up front.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { BIN, NODE, ROOT } from '../../test/helpers/imnode.ts';
import { BenchClient, type Account, type Target } from './client.ts';
import { ScramKeyCache } from './scram.ts';
import { sleep } from './measure.ts';

export const DOMAIN = 'localhost';

export function account(i: number, resource = 'bench'): Account {
  return { username: `u${i}`, password: `secret-${i}`, resource };
}

/** Creates u1..u<count> with `imnode user import`, fed on stdin. */
export function importUsers(dataDir: string, count: number): Promise<void> {
  let input = '# imnode bench accounts\n';
  for (let i = 1; i <= count; i++) {
    const a = account(i);
    input += `${a.username}:${a.password}\n`;
  }
  // PBKDF2 twice per account (SCRAM-SHA-1 and -256 keys): a few ms each at most.
  const limitMs = 60_000 + 20 * count;
  return new Promise((resolve, reject) => {
    const p = spawn(NODE, [BIN, 'user', 'import', '-', '--data-dir', dataDir, '--domain', DOMAIN],
      { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), limitMs);
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0 && out.includes(`imported ${count} accounts`)) resolve();
      else reject(new Error(`imnode user import failed (${signal ? `killed after ${limitMs / 1000} s` : `exit ${code}`}): ${out}`));
    });
    p.stdin.end(input);
  });
}

/** Soft limit on open files of this process (children inherit it). */
export function openFilesLimit(): number {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  if (!m) return 1024;
  return m[1] === 'unlimited' ? Infinity : Number(m[1]);
}

export interface BenchServer {
  proc: ChildProcess;
  pid: number;
  port: number;
  domain: string;
  output(): string;
  exited: Promise<void>;
}

const started = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of started) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
});

/** Kills the process by PID if this one exits first (a crash, a timeout, Ctrl-C). */
export function trackProcess(proc: ChildProcess): void {
  started.add(proc);
  proc.on('exit', () => started.delete(proc));
}

/**
 * Port of the TCP socket that process `pid` listens on at 127.0.0.1, or 0 while
 * there is none. /proc/net/tcp lists every socket of the host (thousands in
 * TIME_WAIT after a run), so it is read only when the process has a socket not
 * looked up before.
 */
function listeningPort(pid: number, checked: Set<string>): number {
  const fresh = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let link: string;
    try { link = readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { continue; }
    const m = /^socket:\[(\d+)\]$/.exec(link);
    if (m && !checked.has(m[1])) fresh.add(m[1]);
  }
  if (fresh.size === 0) return 0;
  // Lines: sl local_address rem_address st ... uid timeout inode; 0A is LISTEN, 0100007F is 127.0.0.1.
  for (const line of readFileSync(`/proc/${pid}/net/tcp`, 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length > 9 && f[3] === '0A' && f[1].startsWith('0100007F:') && fresh.has(f[9])) return parseInt(f[1].slice(9), 16);
  }
  for (const inode of fresh) checked.add(inode);
  return 0;
}

export async function startBenchServer(dataDir: string, extra: string[] = [], nodeArgs: string[] = []): Promise<BenchServer> {
  const args = [...nodeArgs, BIN, '--domain', DOMAIN, '--data-dir', dataDir, '--bind', '127.0.0.1', '--c2s-port', '0',
    '--no-direct-tls', '--log-level', 'warn', ...extra];
  const proc = spawn(NODE, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  started.add(proc);
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<void>((r) => proc.on('exit', () => { started.delete(proc); r(); }));
  const limit = Date.now() + 20_000;
  let port = 0;
  const checked = new Set<string>();
  while (!port) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`imnode exited (${proc.exitCode ?? proc.signalCode}) before it listened:\n${out}`);
    if (Date.now() > limit) {
      proc.kill('SIGKILL');
      throw new Error(`imnode did not listen within 20 s:\n${out}`);
    }
    await sleep(50);
    try { port = listeningPort(proc.pid!, checked); } catch { /* gone meanwhile: checked above */ }
  }
  return { proc, pid: proc.pid!, port, domain: DOMAIN, output: () => out, exited };
}

/** One scenario's server and the clients it has open, so that a failure can tear all of it down. */
export class Run {
  readonly server: BenchServer;
  readonly target: Target;
  readonly live = new Set<BenchClient>();
  /** Rejects if the server dies during the run. */
  readonly died: Promise<never>;
  #stopping = false;

  constructor(server: BenchServer, keys: ScramKeyCache, o: { tls?: boolean } = {}) {
    this.server = server;
    this.target = { host: '127.0.0.1', port: server.port, domain: server.domain, keys, tls: o.tls };
    this.died = new Promise<never>((_, reject) => {
      server.proc.on('exit', (code, signal) => {
        if (!this.#stopping) reject(new Error(`the server exited during the run (code ${code}, signal ${signal}):\n${tail(server.output())}`));
      });
    });
    // Awaited only in races; keep it from counting as unhandled when nobody races it any more.
    this.died.catch(() => {});
  }

  static async start(dataDir: string, keys: ScramKeyCache): Promise<Run> {
    return new Run(await startBenchServer(dataDir), keys);
  }

  client(a: Account): BenchClient {
    // A scenario that timed out may still be running: it must not open new connections.
    if (this.#stopping) throw new Error('the run is over');
    const c = new BenchClient(this.target, a);
    this.live.add(c);
    return c;
  }

  /** Closes a client's stream and forgets it. */
  async close(c: BenchClient): Promise<void> {
    await c.close();
    this.live.delete(c);
  }

  /** Everything the server logged (at --log-level warn: warnings and errors only). */
  complaints(): string[] {
    return this.server.output().split('\n').filter((l) => l.trim() !== '');
  }

  /** SIGTERM (an orderly shutdown), SIGKILL if that takes more than 15 s. */
  async stop(): Promise<void> {
    this.#stopping = true;
    for (const c of this.live) c.destroy();
    this.live.clear();
    const { proc, exited } = this.server;
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGTERM');
    const late = await Promise.race([exited.then(() => false), sleep(15_000).then(() => true)]);
    if (late) {
      proc.kill('SIGKILL');
      await exited;
    }
  }
}

function tail(s: string, lines = 30): string {
  return s.split('\n').slice(-lines).join('\n');
}

/**
 * Runs fn(0..count-1) with at most `concurrency` at once; the first failure
 * rejects at once (the caller tears down what is still running).
 */
export function pool(count: number, concurrency: number, fn: (i: number) => Promise<void>): Promise<void> {
  return new Promise((resolve, reject) => {
    let next = 0, done = 0, failed = false;
    if (count === 0) return resolve();
    const launch = (): void => {
      while (!failed && next < count && next - done < concurrency) {
        const i = next++;
        fn(i).then(() => {
          done++;
          if (done === count) resolve();
          else launch();
        }, (e: unknown) => {
          failed = true;
          reject(e);
        });
      }
    };
    launch();
  });
}
