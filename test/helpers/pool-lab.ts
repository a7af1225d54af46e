// A pool of real imnode processes for end-to-end tests: one network namespace per
// node on a private bridge (test/helpers/netns.ts), each node started as
// `imnode --autodiscover --pool-password ... --server-id nodeN` on its own address
// with the standard ports (every namespace has its own port space).
//
// Clients live in the test process, in the root namespace. They reach a node
// through a small TCP relay on 127.0.0.1 that forwards to the node's address on
// the bridge (the lab gives the root namespace an address there), so that
// test/helpers/xmppjs.ts and slix.ts, which connect to 127.0.0.1, work unchanged
// with `node.server`, a TestServer-shaped view of the node. TLS is verified for
// real: every node of a lab gets the same certificate (copied from one template
// data dir, like prepareTemplate does), since otherwise each node would make its
// own self-signed one.
//
// What a node reports about the pool is read from its admin channel (GET /status
// on <data-dir>/admin.sock, what `imnode pool status --json` prints) when the node
// serves one, and otherwise from its membership log lines. Everything started here
// is ended by PID in cleanup(), which also deletes the namespaces and data dirs.
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { createLab, leftovers, type Lab, type NetnsHost } from './netns.ts';
import { BIN, NODE, ROOT, prepareTemplate, type TestServer } from './imnode.ts';
import { NodeProcess, nodeEnv, serverView } from './node-process.ts';

export type { LogMark } from './node-process.ts';

export const C2S_PORT = 5222;
export const C2S_TLS_PORT = 5223;
export const DEFAULT_DOMAIN = 'pool.test';
export const DEFAULT_PASSWORD = 'lab pool secret';

export interface NodeSpec {
  /** --server-id; default node<N> (1-based). */
  serverId?: string;
  /** --pool-password; default the lab's password; null starts the node without one. */
  password?: string | null;
  /** --domain; default the lab's domain (a node of another domain gets its own certificate). */
  domain?: string;
  /** More arguments for this node. */
  args?: string[];
  /** Start it with the lab (default true); otherwise call node.start() later. */
  start?: boolean;
}

export interface PoolLabOptions {
  /** How many nodes, or one spec per node. */
  nodes: number | NodeSpec[];
  domain?: string;
  password?: string;
  /** Accounts present on every node before it starts (copied from one template data dir). */
  users?: Record<string, string>;
  /** Arguments for every node. */
  args?: string[];
  /** How long to wait for each node's "ready" line. Default 30 s. */
  readyTimeoutMs?: number;
}

export type MemberStateName = 'alive' | 'suspected' | 'failed' | 'left';

export interface MemberView {
  serverId: string;
  peerId?: string;
  state: MemberStateName;
  sessions?: number;
  addresses?: string[];
}

export interface NodeStatus {
  /** Where this came from: the admin channel or the node's log. */
  source: 'admin' | 'log';
  serverId?: string;
  peerId?: string;
  /** The pool as this node sees it, itself included. */
  members: MemberView[];
  /** The raw /status object (admin only). */
  raw?: Record<string, unknown>;
}

export class LabNode extends NodeProcess {
  readonly index: number;
  readonly name: string;
  readonly serverId: string;
  readonly host: NetnsHost;
  readonly domain: string;
  readonly password: string | null;
  readonly args: string[];
  /** The node as test/helpers/xmppjs.ts and slix.ts expect a server (through the loopback relay). */
  readonly server: TestServer;
  /** When the current run was spawned (ms since epoch). */
  spawnedAt = 0;
  readonly #lab: PoolLab;
  readonly relays: { c2s: Relay; tls: Relay };

  constructor(lab: PoolLab, index: number, host: NetnsHost, spec: Required<Omit<NodeSpec, 'start'>>, dataDir: string, relays: { c2s: Relay; tls: Relay }) {
    super(`node${index + 1}`, dataDir);
    this.#lab = lab;
    this.index = index;
    this.name = `node${index + 1}`;
    this.serverId = spec.serverId;
    this.host = host;
    this.domain = spec.domain;
    this.password = spec.password;
    this.args = spec.args;
    this.relays = relays;
    this.server = serverView(this, this.domain, relays.c2s.port, relays.tls.port, () => this.stop());
  }

  /** The command line of this node (without the node binary). */
  argv(): string[] {
    return [BIN, '--domain', this.domain, '--data-dir', this.dataDir, '--bind', this.host.ip,
      '--c2s-port', String(C2S_PORT), '--c2s-tls-port', String(C2S_TLS_PORT),
      '--autodiscover', '--server-id', this.serverId,
      ...(this.password !== null ? ['--pool-password', this.password] : []),
      '--auth-fail-delay', '50ms', '--log-level', 'debug', ...this.args];
  }

  /** Starts the node (again) on its data dir and waits for its "ready" line. */
  async start(timeoutMs = 30_000): Promise<void> {
    await this.run(() => {
      const proc = this.#lab.lab.spawn(this.host, NODE, this.argv(), { cwd: ROOT, env: nodeEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
      this.spawnedAt = Date.now();
      return proc;
    }, /ready: domain \S+, c2s port \d+/, timeoutMs);
  }

  /** Cuts the node off the bridge (pool and clients alike) or reconnects it. */
  linkDown(): void {
    this.#lab.lab.linkDown(this.host);
  }

  linkUp(): void {
    this.#lab.lab.linkUp(this.host);
  }

  /** Own peer id, from this run's log. */
  peerId(): string | undefined {
    return /pool node \S+ \((\w+)\) listening/.exec(this.runOutput())?.[1];
  }

  /** The pool as this node sees it: its /status when it has an admin channel, its log otherwise. */
  async status(): Promise<NodeStatus> {
    const raw = this.alive ? await this.adminStatus() : null;
    if (raw && Array.isArray(raw.members)) {
      const members = (raw.members as Record<string, unknown>[]).map((m) => ({
        serverId: String(m.serverId), peerId: m.peerId as string | undefined, state: m.state as MemberStateName,
        sessions: m.sessions as number | undefined, addresses: m.addresses as string[] | undefined,
      }));
      return { source: 'admin', serverId: raw.serverId as string | undefined, peerId: raw.peerId as string | undefined, members, raw };
    }
    return { source: 'log', serverId: this.serverId, peerId: this.peerId(), members: membersFromLog(this.serverId, this.peerId(), this.runOutput()) };
  }

  /** Server ids of the members this node sees alive, itself included, sorted. */
  async aliveMembers(): Promise<string[]> {
    const s = await this.status();
    return s.members.filter((m) => m.state === 'alive').map((m) => m.serverId).sort();
  }

  /**
   * The routing table this node holds (full JID -> server id of the owner), from
   * /status when the node reports it; null when it does not.
   */
  async routes(): Promise<Record<string, string> | null> {
    const raw = this.alive ? await this.adminStatus() : null;
    return raw ? routesOf(raw) : null;
  }

  /** Digests of replicated state from /status (routes, user data keyspaces), or null. */
  async digests(): Promise<Record<string, string> | null> {
    const raw = this.alive ? await this.adminStatus() : null;
    return raw ? digestsOf(raw) : null;
  }
}

/** The membership view a node's log lines describe (src/pool/membership.ts wording). */
export function membersFromLog(selfId: string, selfPeer: string | undefined, log: string): MemberView[] {
  const view = new Map<string, MemberView>();
  view.set(selfId, { serverId: selfId, peerId: selfPeer, state: 'alive' });
  const re = /pool member (\S+) \((\w+)\) (joined|left|is back|is alive again|suspected|failed|restarted)/g;
  for (let m = re.exec(log); m; m = re.exec(log)) {
    const [, serverId, peerId, what] = m;
    if (serverId === selfId) continue;
    const state: MemberStateName = what === 'left' ? 'left' : what === 'suspected' ? 'suspected'
      : what === 'failed' || what === 'restarted' ? 'failed' : 'alive';
    view.set(serverId, { serverId, peerId, state });
  }
  return [...view.values()].sort((a, b) => a.serverId.localeCompare(b.serverId));
}

/** Accepts the shapes a /status may give its routes in: {jid: server} or [{jid, server}] or {jid: {server}}. */
export function routesOf(raw: Record<string, unknown>): Record<string, string> | null {
  const r = raw.routeTable;
  if (!r || typeof r !== 'object') return null;
  const out: Record<string, string> = {};
  if (Array.isArray(r)) {
    for (const e of r as Record<string, unknown>[]) out[String(e.jid ?? e.key)] = String(e.server ?? e.serverId ?? e.node);
  } else {
    for (const [k, v] of Object.entries(r as Record<string, unknown>)) {
      out[k] = typeof v === 'string' ? v : String((v as Record<string, unknown>)?.server ?? (v as Record<string, unknown>)?.serverId ?? (v as Record<string, unknown>)?.node);
    }
  }
  return out;
}

export function digestsOf(raw: Record<string, unknown>): Record<string, string> | null {
  const d = raw.digests ?? raw.digest;
  if (!d || typeof d !== 'object') return null;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(d as Record<string, unknown>)) {
    if (v && typeof v === 'object') for (const [k2, v2] of Object.entries(v as Record<string, unknown>)) out[`${k}.${k2}`] = String(v2);
    else out[k] = String(v);
  }
  return out;
}

/** A TCP relay from 127.0.0.1:<port> to a node's address: lets loopback-only clients reach the lab. */
export interface Relay {
  readonly port: number;
  /** Drops every relayed connection at once (both ends reset). */
  dropAll(): void;
  close(): Promise<void>;
}

export async function startRelay(target: () => { host: string; port: number; localAddress?: string }): Promise<Relay> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((down) => {
    const t = target();
    const up = net.connect({ host: t.host, port: t.port, localAddress: t.localAddress });
    sockets.add(down).add(up);
    // No Nagle on either side: this relay must not add latency to small stanzas.
    down.setNoDelay(true);
    up.setNoDelay(true);
    // When one side goes away, what it sent before must still reach the other (a
    // killed node's last stanzas do reach a directly connected client): end the
    // other side gracefully, after its pending writes, and only then forget it.
    const finish = (other: net.Socket): void => {
      if (!other.destroyed) other.end();
      setTimeout(() => other.destroy(), 2000).unref();
    };
    const gone = (s: net.Socket): void => {
      sockets.delete(s);
    };
    down.pipe(up);
    up.pipe(down);
    down.on('error', () => finish(up)).on('close', () => { gone(down); finish(up); });
    up.on('error', () => finish(down)).on('close', () => { gone(up); finish(down); });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    dropAll() {
      for (const s of sockets) s.resetAndDestroy();
      sockets.clear();
    },
    close() {
      for (const s of sockets) s.destroy();
      sockets.clear();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

export class PoolLab {
  readonly lab: Lab;
  readonly nodes: LabNode[] = [];
  readonly domain: string;
  readonly password: string;
  readonly #dirs: string[] = [];
  readonly #relays: Relay[] = [];
  #cleaned = false;

  private constructor(lab: Lab, domain: string, password: string) {
    this.lab = lab;
    this.domain = domain;
    this.password = password;
  }

  /** Creates the namespaces, the nodes' data dirs, and starts the nodes (in parallel). */
  static async start(opts: PoolLabOptions): Promise<PoolLab> {
    const specs: NodeSpec[] = typeof opts.nodes === 'number' ? Array.from({ length: opts.nodes }, () => ({})) : opts.nodes;
    const domain = opts.domain ?? DEFAULT_DOMAIN;
    const password = opts.password ?? DEFAULT_PASSWORD;
    const users = opts.users ?? {};
    // Templates first: they start a server on loopback once per domain to make the certificate.
    const templates = new Map<string, string>();
    for (const d of new Set(specs.map((s) => s.domain ?? domain))) templates.set(d, await prepareTemplate(users, d));
    const lab = createLab(specs.length, { hostAddress: true });
    const pl = new PoolLab(lab, domain, password);
    try {
      for (let i = 0; i < specs.length; i++) {
        const s = specs[i];
        const full = {
          serverId: s.serverId ?? `node${i + 1}`,
          password: s.password === undefined ? password : s.password,
          domain: s.domain ?? domain,
          args: [...(opts.args ?? []), ...(s.args ?? [])],
        };
        // Short: the admin socket path must fit in a unix socket address.
        const dir = mkdtempSync(path.join(os.tmpdir(), 'impl-'));
        pl.#dirs.push(dir);
        cpSync(templates.get(full.domain)!, dir, { recursive: true });
        const host = lab.hosts[i];
        const c2s = await startRelay(() => ({ host: host.ip, port: C2S_PORT, localAddress: lab.hostIp! }));
        const tls = await startRelay(() => ({ host: host.ip, port: C2S_TLS_PORT, localAddress: lab.hostIp! }));
        pl.#relays.push(c2s, tls);
        pl.nodes.push(new LabNode(pl, i, host, full, dir, { c2s, tls }));
      }
      await Promise.all(pl.nodes.filter((_, i) => specs[i].start !== false).map((n) => n.start(opts.readyTimeoutMs)));
    } catch (e) {
      await pl.cleanup();
      throw e;
    }
    return pl;
  }

  node(serverId: string): LabNode {
    const n = this.nodes.find((x) => x.serverId === serverId || x.name === serverId);
    if (!n) throw new Error(`no node ${serverId} in this lab`);
    return n;
  }

  /**
   * Waits until every given node sees exactly `expected` alive (server ids, any
   * order), polling its status; returns the time it took.
   */
  async waitMembers(nodes: LabNode[], expected: string[], timeoutMs: number): Promise<number> {
    const t0 = Date.now();
    const want = [...expected].sort().join(',');
    const last = new Map<string, string>();
    for (;;) {
      let ok = true;
      for (const n of nodes) {
        const seen = (await n.aliveMembers()).join(',');
        last.set(n.name, seen);
        if (seen !== want) ok = false;
      }
      if (ok) return Date.now() - t0;
      if (Date.now() - t0 > timeoutMs) {
        const views = [...last].map(([k, v]) => `${k}: [${v}]`).join('; ');
        throw new Error(`pool did not settle on [${want}] within ${timeoutMs} ms: ${views}\n` +
          nodes.map((n) => `--- ${n.name}\n${n.tail(25)}`).join('\n'));
      }
      await sleep(100);
    }
  }

  /** Kills every node, closes the relays, deletes namespaces and data dirs. Idempotent. */
  async cleanup(): Promise<void> {
    if (this.#cleaned) return;
    this.#cleaned = true;
    await Promise.all(this.nodes.map((n) => n.kill().catch(() => undefined)));
    for (const r of this.#relays) await r.close();
    this.lab.cleanup();
    for (const d of this.#dirs) rmSync(d, { recursive: true, force: true });
  }

  /** Namespaces and links of this lab still present (should be none after cleanup). */
  leftovers(): { ns: string[]; links: string[] } {
    return leftovers(this.lab.id);
  }

  /** cleanup(), then fails if a namespace or link of the lab is left: a test file's teardown. */
  async cleanupChecked(): Promise<void> {
    await this.cleanup();
    const left = this.leftovers();
    if (left.ns.length || left.links.length) throw new Error(`the lab left ${JSON.stringify(left)}`);
  }
}

/**
 * The clients of a test file: `track` each one made, `stopAll` after each test
 * (newest first, whatever happened to them) so that no test leaks a session into the next.
 */
export function clientTracker(): { track<T extends { stop(): Promise<void> }>(c: T): T; stopAll(): Promise<void> } {
  const clients: Array<{ stop(): Promise<void> }> = [];
  return {
    track(c) {
      clients.push(c);
      return c;
    },
    async stopAll() {
      for (const c of clients.splice(0).reverse()) await c.stop().catch(() => undefined);
    },
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls fn until it returns a truthy value; throws with `what` (and fn's last value) after timeoutMs. */
export async function waitUntil<T>(fn: () => T | Promise<T>, timeoutMs: number, what: string, everyMs = 100): Promise<NonNullable<T>> {
  const t0 = Date.now();
  let last: T | undefined;
  for (;;) {
    last = await fn();
    if (last) return last as NonNullable<T>;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
    await sleep(everyMs);
  }
}
