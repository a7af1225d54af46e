// The pool bench environment (issue 3, "Figures for the closing note"): three
// imnode processes on loopback forming one pool, as an operator without
// multicast would run them: distinct --c2s-port (ephemeral) and --pool-listen
// ports, a static --peer list on each node naming the two others, one pool
// password (in the environment, not in `ps`), --server-id n1..n3, and the same
// TLS certificate copied into every data dir.
//
// Accounts are imported (`imnode user import`, see env.ts) into the first
// node's data dir only: a pool node moves what its plain keyspaces hold into
// the replicated user data when it starts, and the others receive it by
// anti-entropy. Importing on every node would also work but gives each account
// three versions with different salts, of which one wins per key; one source
// keeps the salts known in advance, so the load generator derives the SCRAM
// keys once, before any node runs (warmKeys), and no measured login pays PBKDF2.
//
// The nodes are watched through their log (--log-level info: the 'ready' line
// with the client port, 'pool member ... joined', 'purged N routes') and polled
// through their admin sockets (GET /status: members, routes, digests, traffic).
// Pool traffic on the wire is read from the kernel with ss(8): tcp_info
// bytes_received of every TCP connection to or from a pool port, which counts
// all that pnet, noise, yamux, gossipsub and the pool protocols put on the wire
// (TCP/IP headers excluded).
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { cpSync, mkdirSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { AdminClient } from '../../src/admin/admin-server.ts';
import { loadTlsMaterial } from '../../src/c2s/tls.ts';
import { Store } from '../../src/store/db.ts';
import { EmbeddedDirectory } from '../../src/store/directory.ts';
import { BIN, NODE, ROOT, tempDir } from '../../test/helpers/imnode.ts';
import { BenchClient, type Account, type Target } from './client.ts';
import { DOMAIN, account, pool } from './env.ts';
import { sleep } from './measure.ts';
import type { ScramKeyCache } from './scram.ts';

export const POOL_SIZE = 3;
const POOL_PASSWORD = 'imnode-bench-pool-password';

/** What the bench reads from GET /status (src/node.ts). */
export interface NodeStatus {
  serverId: string;
  sessions: number;
  members: { serverId: string; state: string }[];
  routes?: {
    count: number; digest: string; remoteSessions: number; byOwner?: Record<string, number>;
    forwarded: number; forwardedBytes: number; received: number; failed: number;
  };
  /** Full JID -> server id; used for per-owner counts when routes.byOwner is missing. */
  routeTable?: Record<string, string>;
  userData?: { digest: Record<string, string> };
  traffic?: Traffic;
}

export interface Traffic { published: number; publishedBytes: number; sent: number; sentBytes: number; requests: number; requestBytes: number }

/** Routes per owning server id, as this node sees them. */
export function byOwner(s: NodeStatus): Record<string, number> {
  if (s.routes?.byOwner) return s.routes.byOwner;
  const out: Record<string, number> = {};
  for (const server of Object.values(s.routeTable ?? {})) out[server] = (out[server] ?? 0) + 1;
  return out;
}

/** Payload bytes a node handed to the pool (src/pool/libp2p-pool.ts `traffic`). */
export function payloadBytes(t: Traffic | undefined): number {
  return t ? t.publishedBytes + t.sentBytes + t.requestBytes : 0;
}

// ---- set-up -----------------------------------------------------------------------

/**
 * A template for the first node: the accounts of `accountsDir` (imported, no
 * server run on it yet) and a self-signed certificate that every node copies.
 */
export async function preparePoolTemplate(accountsDir: string): Promise<string> {
  const dir = tempDir('imnode-bench-pool-');
  cpSync(path.join(accountsDir, 'db'), path.join(dir, 'db'), { recursive: true });
  await loadTlsMaterial({ domain: DOMAIN, dataDir: dir });
  return dir;
}

/**
 * Derives the SCRAM-SHA-1 client keys of u1..u<count> from the salts stored in
 * the template, before any node runs (the nodes hand out the same salts: the
 * records replicate unchanged). Returns the number of keys derived.
 */
export async function warmKeys(template: string, keys: ScramKeyCache, count: number): Promise<number> {
  const store = await Store.open(path.join(template, 'db'));
  const before = keys.derivations;
  try {
    const dir = new EmbeddedDirectory(store);
    await pool(count, 8, async (i) => {
      const a = account(i + 1);
      const c = (await dir.getCredentials(a.username))?.['SHA-1'];
      if (!c) throw new Error(`no SCRAM-SHA-1 credentials for ${a.username} in the template`);
      await keys.get(a.username, a.password, c.salt, c.iterations);
    });
  } finally {
    await store.close();
  }
  return keys.derivations - before;
}

/** `count` distinct free TCP ports on 127.0.0.1 (held open together, then released). */
async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: count }, () => new Promise<net.Server>((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => resolve(s));
  })));
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

// ---- the nodes --------------------------------------------------------------------

export interface PoolNode {
  index: number;
  id: string;
  dataDir: string;
  poolPort: number;
  proc: ChildProcess;
  pid: number;
  /** 0 until the ready line. */
  c2sPort: number;
  /** performance.now() of the ready line, of each 'pool member X joined' line, of each 'purged N routes of X' line. */
  readyAt: number;
  joined: Map<string, number>;
  purged: { at: number; count: number; of: string }[];
  admin: AdminClient;
  killed: boolean;
  exited: Promise<void>;
  output(): string;
}

const spawned = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of spawned) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
});

/** Three nodes of one pool and the clients connected to them; one per scenario. */
export class PoolNet {
  readonly template: string;
  readonly keys: ScramKeyCache;
  readonly nodes: PoolNode[] = [];
  readonly live = new Set<BenchClient>();
  /** Rejects when a node exits on its own (not stopped or killed by the bench). */
  readonly died: Promise<never>;
  /** performance.now() just before the first spawn. */
  spawnedAt = 0;
  #reject: (e: Error) => void = () => {};
  #stopping = false;
  /** The nodes' data dirs live below it; removed at stop. */
  protected readonly root: string;

  constructor(template: string, keys: ScramKeyCache) {
    this.template = template;
    this.keys = keys;
    this.root = tempDir('imnode-bench-nodes-');
    this.died = new Promise<never>((_, reject) => (this.#reject = reject));
    this.died.catch(() => {});
  }

  /** Spawns the three nodes at once and resolves when each has printed its ready line. */
  async start(limitMs = 60_000): Promise<void> {
    await this.spawn();
    await this.ready(limitMs);
  }

  /** A data dir per node, each with the template's certificate; the accounts go to n1 only. */
  protected nodeDirs(): string[] {
    return Array.from({ length: POOL_SIZE }, (_, i) => {
      const dir = path.join(this.root, `n${i + 1}`);
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      cpSync(path.join(this.template, 'tls'), path.join(dir, 'tls'), { recursive: true });
      if (i === 0) cpSync(path.join(this.template, 'db'), path.join(dir, 'db'), { recursive: true });
      return dir;
    });
  }

  /** Spawns the three nodes at once (spawnedAt is the moment just before). */
  async spawn(): Promise<void> {
    const ports = await freePorts(POOL_SIZE);
    const dirs = this.nodeDirs();
    this.spawnedAt = performance.now();
    for (let i = 0; i < POOL_SIZE; i++) {
      const peers = ports.filter((_, j) => j !== i).flatMap((p) => ['--peer', `/ip4/127.0.0.1/tcp/${p}`]);
      this.nodes.push(this.#spawn(i, dirs[i], ports[i], peers));
    }
  }

  /** Resolves when every node has printed its ready line; throws if one exits first. */
  async ready(limitMs = 60_000): Promise<void> {
    const limit = performance.now() + limitMs;
    while (this.nodes.some((n) => !n.readyAt)) {
      for (const n of this.nodes) {
        if (n.proc.exitCode !== null || n.proc.signalCode !== null) {
          throw new Error(`${n.id} exited (${n.proc.exitCode ?? n.proc.signalCode}) before it was ready:\n${tail(n.output())}`);
        }
      }
      if (performance.now() > limit) {
        throw new Error(`not ready within ${limitMs / 1000} s: ${this.nodes.filter((n) => !n.readyAt).map((n) => `${n.id}:\n${tail(n.output())}`).join('\n')}`);
      }
      await sleep(5);
    }
  }

  #spawn(index: number, dataDir: string, poolPort: number, peers: string[]): PoolNode {
    const id = `n${index + 1}`;
    const args = [BIN, '--domain', DOMAIN, '--data-dir', dataDir, '--bind', '127.0.0.1', '--c2s-port', '0', '--no-direct-tls',
      '--log-level', 'info', '--server-id', id, '--pool-listen', `/ip4/127.0.0.1/tcp/${poolPort}`, ...peers];
    const proc = spawn(NODE, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, IMNODE_POOL_PASSWORD: POOL_PASSWORD } });
    spawned.add(proc);
    const node = watchNode({ index, id, dataDir, poolPort, proc }, () => spawned.delete(proc), (code, signal, out) => {
      if (!this.#stopping && !node.killed) this.#reject(new Error(`${id} exited during the run (code ${code}, signal ${signal}):\n${tail(out)}`));
    });
    return node;
  }

  get alive(): PoolNode[] {
    return this.nodes.filter((n) => !n.killed);
  }

  target(i: number): Target {
    const n = this.nodes[i];
    if (!n.c2sPort) throw new Error(`${n.id} is not ready`);
    return { host: '127.0.0.1', port: n.c2sPort, domain: DOMAIN, keys: this.keys };
  }

  client(i: number, a: Account): BenchClient {
    if (this.#stopping) throw new Error('the run is over');
    const c = new BenchClient(this.target(i), a);
    this.live.add(c);
    return c;
  }

  async close(c: BenchClient): Promise<void> {
    await c.close();
    this.live.delete(c);
  }

  /** Closes these clients' streams, 200 at a time. */
  async closeAll(clients: BenchClient[]): Promise<void> {
    await pool(clients.length, 200, (i) => this.close(clients[i]));
  }

  async status(n: PoolNode): Promise<NodeStatus> {
    return (await n.admin.request('GET', '/status')).body as NodeStatus;
  }

  /** Status of every node not killed, fetched in parallel. */
  statuses(): Promise<NodeStatus[]> {
    return Promise.all(this.alive.map((n) => this.status(n)));
  }

  /**
   * Polls the live nodes until `check` returns true; resolves with
   * performance.now() when the answers that satisfied it had all arrived (an
   * upper bound: the state held somewhere since the previous poll began).
   * `check` returns a description of what is still missing otherwise.
   */
  async waitFor(check: (s: NodeStatus[]) => true | string, what: string, progress: { text: string }, limitMs = 60_000, intervalMs = 20): Promise<number> {
    const limit = performance.now() + limitMs;
    for (;;) {
      const s = await this.statuses();
      const at = performance.now();
      const r = check(s);
      if (r === true) return at;
      progress.text = `${what}: ${r}`;
      if (at > limit) throw new Error(`${what}: not within ${limitMs / 1000} s (${r})`);
      await sleep(intervalMs);
    }
  }

  /** Every node lists every node alive, and the user data digests agree. Resolves with [formedAt, userDataAt]. */
  async settled(progress: { text: string }): Promise<[number, number]> {
    const formed = await this.waitFor(formedCheck, 'forming the pool', progress);
    const users = await this.waitFor(userDataCheck, 'replicating user data', progress, 120_000, 50);
    return [formed, users];
  }

  /** SIGKILL; the node counts as gone from now on. */
  kill(n: PoolNode): Promise<void> {
    n.killed = true;
    n.proc.kill('SIGKILL');
    return n.exited;
  }

  pids(): number[] {
    return this.alive.map((n) => n.pid);
  }

  /** Warnings and errors the nodes logged (at info level the rest is routine). */
  complaints(): string[] {
    return this.nodes.flatMap((n) => n.output().split('\n').filter((l) => /\s(WARN|ERROR)\s/.test(l)).map((l) => `${n.id}: ${l}`));
  }

  /** SIGTERM to every node (SIGKILL after 15 s), then removes their data dirs. */
  async stop(): Promise<void> {
    this.#stopping = true;
    for (const c of this.live) c.destroy();
    this.live.clear();
    await Promise.all(this.nodes.map(async (n) => {
      if (n.proc.exitCode !== null || n.proc.signalCode !== null) return;
      n.proc.kill('SIGTERM');
      const late = await Promise.race([n.exited.then(() => false), sleep(15_000).then(() => true)]);
      if (late) {
        n.proc.kill('SIGKILL');
        await n.exited;
      }
    }));
    rmSync(this.root, { recursive: true, force: true });
  }

  /** Bytes received so far on each TCP connection of the pool (null without ss). */
  wire(): WireSnapshot | null {
    return wireSnapshot(this.nodes.map((n) => n.poolPort));
  }
}

export function formedCheck(s: NodeStatus[]): true | string {
  const missing = s.filter((x) => x.members.filter((m) => m.state === 'alive').length !== s.length);
  return missing.length === 0 ? true : missing.map((x) => `${x.serverId} sees ${x.members.map((m) => `${m.serverId}:${m.state}`).join(',')}`).join('; ');
}

export function userDataCheck(s: NodeStatus[]): true | string {
  const d = s.map((x) => JSON.stringify(x.userData?.digest ?? null));
  return d.every((x) => x === d[0]) ? true : 'user data digests differ';
}

/** Every node holds `count` routes and the same routes digest. */
export function routesCheck(count: number): (s: NodeStatus[]) => true | string {
  return (s) => {
    const counts = s.map((x) => x.routes?.count ?? -1);
    if (counts.some((c) => c !== count)) return `routes ${counts.join('/')} of ${count}`;
    return s.every((x) => x.routes!.digest === s[0].routes!.digest) ? true : 'routes digests differ';
  };
}

// ---- measurements -----------------------------------------------------------------


/** tcp_info bytes_received per connection (local and peer address), from ss(8). */
export type WireSnapshot = Map<string, number>;

let ssMissing = false;

export function wireSnapshot(ports: number[]): WireSnapshot | null {
  if (ssMissing) return null;
  const filter = `( ${ports.map((p) => `sport = :${p} or dport = :${p}`).join(' or ')} )`;
  let out: string;
  try {
    out = execFileSync('ss', ['-tinH', 'state', 'connected', filter], { encoding: 'utf8', maxBuffer: 16 << 20 });
  } catch {
    ssMissing = true;
    return null;
  }
  const snap: WireSnapshot = new Map();
  let conn = '';
  for (const line of out.split('\n')) {
    const addrs = /(\d+\.\d+\.\d+\.\d+:\d+)\s+(\d+\.\d+\.\d+\.\d+:\d+)\s*$/.exec(line);
    if (addrs) {
      conn = `${addrs[1]}>${addrs[2]}`;
      snap.set(conn, 0);
      continue;
    }
    const rx = /\bbytes_received:(\d+)/.exec(line);
    if (rx && conn) snap.set(conn, Number(rx[1]));
  }
  return snap;
}

/** Bytes received on the pool's connections between two snapshots, and how many connections closed meanwhile (their bytes are missing). */
export function wireDelta(before: WireSnapshot, after: WireSnapshot): { bytes: number; closed: number; opened: number } {
  let bytes = 0, closed = 0, opened = 0;
  for (const [k, v] of after) {
    const b = before.get(k);
    if (b === undefined) opened++;
    bytes += v - (b ?? 0);
  }
  for (const k of before.keys()) if (!after.has(k)) closed++;
  return { bytes, closed, opened };
}

function tail(s: string, lines = 30): string {
  return s.split('\n').slice(-lines).join('\n');
}

/**
 * A PoolNode for a spawned node process: reads its log for the lines the pool
 * scenarios time (ready, joins, purges) and reports an exit; shared by the
 * loopback pool and the namespace pool (pool-netns.ts).
 */
export function watchNode(base: { index: number; id: string; dataDir: string; poolPort: number; proc: ChildProcess },
  onGone: () => void, onExit: (code: number | null, signal: NodeJS.Signals | null, out: string) => void): PoolNode {
  const { proc } = base;
  let out = '';
  let partial = '';
  const node: PoolNode = {
    ...base, pid: proc.pid!, c2sPort: 0, readyAt: 0, joined: new Map(), purged: [],
    admin: new AdminClient(base.dataDir, { timeoutMs: 10_000 }), killed: false,
    exited: new Promise<void>((r) => proc.on('exit', () => { onGone(); r(); })),
    output: () => out,
  };
  const onData = (d: Buffer): void => {
    const now = performance.now();
    const text = d.toString();
    out += text;
    const lines = (partial + text).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      let m = /ready: domain \S+, c2s port (\d+)/.exec(line);
      if (m && !node.readyAt) {
        node.c2sPort = Number(m[1]);
        node.readyAt = now;
      }
      m = /pool member (\S+) \(\S+\) joined/.exec(line);
      if (m && !node.joined.has(m[1])) node.joined.set(m[1], now);
      m = /purged (\d+) routes of (\S+)/.exec(line);
      if (m) node.purged.push({ at: now, count: Number(m[1]), of: m[2] });
    }
  };
  proc.stdout!.on('data', onData);
  proc.stderr!.on('data', onData);
  proc.on('exit', (code, signal) => onExit(code, signal, out));
  return node;
}
