// One imnode process of a multi-node test, whatever network it runs in
// (test/helpers/pool-lab.ts on one bridge, test/helpers/subnets.ts across routers):
// the output of all its runs kept in order, waiting for a log line or the ready
// line, kill and a planned stop by PID, and its admin channel (GET /status on
// <data-dir>/admin.sock). The subclasses say how to spawn it.
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { TestServer } from './imnode.ts';
import { AdminClient, AdminUnavailableError } from '../../src/admin/admin-server.ts';

/** Marks a position in a node's output (see NodeProcess.mark). */
export type LogMark = number;

/** The environment of a node: the pool password comes from its arguments, never from the test's own environment. */
export function nodeEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.IMNODE_POOL_PASSWORD;
  return env;
}

export class NodeProcess {
  /** How the node is named in the output markers and in errors. */
  readonly label: string;
  readonly dataDir: string;
  proc: ChildProcess | null = null;
  /** Output of every run of this node, in order; runs are separated by a marker line. */
  #out = '';
  #runStart = 0;
  #exited: Promise<number | null> = Promise.resolve(null);
  #waiters: Array<() => void> = [];

  constructor(label: string, dataDir: string) {
    this.label = label;
    this.dataDir = dataDir;
  }

  get pid(): number {
    return this.proc?.pid ?? 0;
  }

  get alive(): boolean {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Everything every run of this node wrote. */
  output(): string {
    return this.#out;
  }

  /** Output of the current (or last) run only. */
  runOutput(): string {
    return this.#out.slice(this.#runStart);
  }

  /** A position in the output; pass it to waitLog/logSince to look only at what follows. */
  mark(): LogMark {
    return this.#out.length;
  }

  logSince(mark: LogMark): string {
    return this.#out.slice(mark);
  }

  /** The last lines of the output, for failure messages. */
  tail(lines = 40): string {
    return this.#out.split('\n').slice(-lines).join('\n');
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  /** Resolves with the match of re in the output after `from` (default: this run's start). */
  async waitLog(re: RegExp, timeoutMs: number, what = String(re), from: LogMark = this.#runStart): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.#out.slice(from));
      if (m) return m;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.label}: no ${what} within ${timeoutMs} ms; last output:\n${this.tail()}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 250));
        this.#waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Spawns a run (with `spawn`, stdout and stderr piped) and waits for its `ready` line; an exit before it fails with the output. */
  protected async run(spawn: () => ChildProcess, ready: RegExp, timeoutMs: number): Promise<void> {
    if (this.alive) throw new Error(`${this.label} is running already`);
    this.#out += `\n----- ${this.label} start at ${new Date().toISOString()} -----\n`;
    this.#runStart = this.#out.length;
    const proc = spawn();
    this.proc = proc;
    const onData = (d: Buffer): void => {
      this.#out += d.toString();
      this.#wake();
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    this.#exited = new Promise((r) => proc.on('exit', (code, signal) => {
      this.#out += `\n----- ${this.label} exited (${code ?? signal}) -----\n`;
      this.#wake();
      r(code);
    }));
    const exitedEarly = this.#exited.then(() => {
      throw new Error(`${this.label} exited before it was ready:\n${this.tail(60)}`);
    });
    await Promise.race([this.waitLog(ready, timeoutMs, 'ready line'), exitedEarly]);
    exitedEarly.catch(() => { /* it may exit later: not an error here */ });
  }

  /** SIGKILL by PID, then waits for the exit. */
  async kill(): Promise<void> {
    if (this.alive) process.kill(this.pid, 'SIGKILL');
    await this.#exited;
  }

  /** SIGTERM (a planned leave), then waits for the exit; SIGKILL after `graceMs`. */
  async stop(graceMs = 15_000): Promise<number | null> {
    if (!this.alive) return this.#exited;
    process.kill(this.pid, 'SIGTERM');
    const t = setTimeout(() => { if (this.alive) process.kill(this.pid, 'SIGKILL'); }, graceMs);
    const code = await this.#exited;
    clearTimeout(t);
    return code;
  }

  /** GET /status on the admin channel of this node, or null when it has none (yet). */
  async adminStatus(): Promise<Record<string, unknown> | null> {
    try {
      return await new AdminClient(this.dataDir, { timeoutMs: 5000 }).status();
    } catch (e) {
      if (e instanceof AdminUnavailableError) return null;
      throw e;
    }
  }
}

/** A node as test/helpers/xmppjs.ts and slix.ts expect a server, reached on loopback through a forwarder listening on `port` (and `tlsPort`). */
export function serverView(node: NodeProcess, domain: string, port: number, tlsPort: number, stop: () => Promise<number | null>): TestServer {
  return {
    get proc() { return node.proc!; },
    get pid() { return node.pid; },
    domain,
    port,
    tlsPort,
    dataDir: node.dataDir,
    output: () => node.output(),
    stop,
    kill: async () => node.kill(),
    certPem: () => readFileSync(path.join(node.dataDir, 'tls', 'cert.pem'), 'utf8'),
  };
}
