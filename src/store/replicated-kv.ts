// The KV interface (src/store/kv.ts) over replicated keyspaces
// (src/pool/replicated.ts): the user data of a pool without LDAP, held by every
// node, persisted in the node's own LevelDB (keyspaces "rs.<name>") and
// converging by last writer wins per key.
//
// Reads come from the replica in memory. A write is applied to the replica at
// once, published to the pool and fsync'ed with the other writes of the next
// 5 ms; its promise resolves after the fsync (durable: true, whatever the
// write's own sync option says), so what a store acknowledges to a client is
// on this node's disk. A batch is issued in one
// tick, so it lands in one LevelDB batch (atomic here); other nodes may apply
// a large one in several gossip messages.
//
// ReplicatedKeyspace.entries(prefix) scans the whole keyspace. The user-data
// stores read per user ("<user>/..."), so this layer keeps an index from the
// first key segment (up to and including the first '/') to its live keys,
// maintained from the keyspace's change events, which report every live key
// that appears or goes, local or remote. Prefixes without '/' (listing the
// accounts) still scan.
import type { Store } from './db.ts';
import type { Logger } from '../admin/log.ts';
import type { Pool } from '../pool/types.ts';
import { HLC } from '../pool/hlc.ts';
import { ReplicatedKeyspace, type ReplicatedOptions } from '../pool/replicated.ts';
import type { KV, KVChangeListener, KVOp, KVProvider, KVWriteOptions } from './kv.ts';

/** Default settle time: gossip on a LAN takes milliseconds; the margin covers a busy node. */
export const DEFAULT_SETTLE_MS = 250;

export type ReplicationTuning = Partial<Omit<ReplicatedOptions<unknown>, 'name' | 'pool' | 'store' | 'clock' | 'log' | 'codec' | 'durable'>>;

function checkKey(key: string): void {
  if (typeof key !== 'string' || key === '') throw new TypeError('key must be a non-empty string');
}

// Values are JSON on disk and on the wire; normalising at put (undefined
// fields dropped, Dates as strings) makes this node see what the others see.
function normalise<T>(value: T): T {
  if (value === undefined) throw new TypeError('undefined is not a value; use del()');
  return value !== null && typeof value === 'object' ? (JSON.parse(JSON.stringify(value)) as T) : value;
}

function copy<T>(value: T | undefined): T | undefined {
  return value !== null && typeof value === 'object' ? structuredClone(value) : value;
}

function groupOf(key: string): string | null {
  const i = key.indexOf('/');
  return i < 0 ? null : key.slice(0, i + 1);
}

export class ReplicatedKV<T> implements KV<T> {
  readonly name: string;
  readonly keyspace: ReplicatedKeyspace<T>;
  readonly #groups = new Map<string, Set<string>>();

  constructor(ks: ReplicatedKeyspace<T>) {
    this.keyspace = ks;
    this.name = ks.name;
    for (const [key] of ks.entries()) this.#index(key, true);
    ks.onChange((key, value) => this.#index(key, value !== undefined));
  }

  async get(key: string): Promise<T | undefined> {
    checkKey(key);
    return copy(this.keyspace.get(key));
  }

  async put(key: string, value: T, _opts?: KVWriteOptions): Promise<void> {
    checkKey(key);
    await this.keyspace.put(key, normalise(value));
  }

  async del(key: string, _opts?: KVWriteOptions): Promise<void> {
    checkKey(key);
    await this.keyspace.del(key);
  }

  async *entries(prefix = ''): AsyncGenerator<[string, T]> {
    for (const [k, v] of this.#snapshot(prefix)) yield [k, copy(v) as T];
  }

  async keys(prefix = ''): Promise<string[]> {
    return this.#snapshot(prefix).map(([k]) => k);
  }

  async clear(prefix = '', _opts?: KVWriteOptions): Promise<number> {
    const keys = this.#snapshot(prefix).map(([k]) => k);
    await Promise.all(keys.map((k) => this.keyspace.del(k)));
    return keys.length;
  }

  async batch(ops: readonly KVOp<T>[], _opts?: KVWriteOptions): Promise<void> {
    const checked = ops.map((op) => {
      checkKey(op.key);
      return op.type === 'put' ? { key: op.key, value: normalise(op.value) } : { key: op.key, value: undefined };
    });
    // Issued in one tick: one flush, one LevelDB batch, one fsync.
    await Promise.all(checked.map((op) => (op.value === undefined ? this.keyspace.del(op.key) : this.keyspace.put(op.key, op.value))));
  }

  onChange(fn: KVChangeListener): () => void {
    return this.keyspace.onChange((key, _value, origin) => fn(key, origin));
  }

  /** Live entries under prefix, in key order, read at one instant. */
  #snapshot(prefix: string): [string, T][] {
    const group = groupOf(prefix);
    if (group === null) return this.keyspace.entries(prefix);
    const keys = [...(this.#groups.get(group) ?? [])].filter((k) => k.startsWith(prefix)).sort();
    const out: [string, T][] = [];
    for (const k of keys) {
      const v = this.keyspace.get(k);
      if (v !== undefined) out.push([k, v]);
    }
    return out;
  }

  #index(key: string, live: boolean): void {
    const group = groupOf(key);
    if (group === null) return;
    let set = this.#groups.get(group);
    if (live) {
      if (!set) this.#groups.set(group, (set = new Set()));
      set.add(key);
    } else if (set) {
      set.delete(key);
      if (set.size === 0) this.#groups.delete(group);
    }
  }
}

export interface ReplicatedKVOptions {
  store: Store;
  pool: Pool;
  /** Every keyspace this provider serves, declared up front: opening one reads it from disk. */
  names: readonly string[];
  log?: Logger;
  /** Default: a new HLC named after pool.serverId, shared by the keyspaces. */
  clock?: HLC;
  settleMs?: number;
  /** Passed to every ReplicatedKeyspace (tests shorten the intervals). */
  tuning?: ReplicationTuning;
}

export class ReplicatedKVProvider implements KVProvider {
  readonly node: string;
  readonly clock: HLC;
  readonly settleMs: number;
  readonly #kvs: Map<string, ReplicatedKV<unknown>>;

  private constructor(node: string, clock: HLC, settleMs: number, kvs: Map<string, ReplicatedKV<unknown>>) {
    this.node = node;
    this.clock = clock;
    this.settleMs = settleMs;
    this.#kvs = kvs;
  }

  static async open(o: ReplicatedKVOptions): Promise<ReplicatedKVProvider> {
    const clock = o.clock ?? new HLC(o.pool.serverId);
    const kvs = new Map<string, ReplicatedKV<unknown>>();
    for (const name of o.names) {
      if (kvs.has(name)) continue;
      const ks = await ReplicatedKeyspace.open<unknown>({ ...o.tuning, name, pool: o.pool, store: o.store, clock, log: o.log, durable: true });
      kvs.set(name, new ReplicatedKV(ks));
    }
    return new ReplicatedKVProvider(o.pool.serverId, clock, o.settleMs ?? DEFAULT_SETTLE_MS, kvs);
  }

  kv<T>(name: string): ReplicatedKV<T> {
    const kv = this.#kvs.get(name);
    // Misuse: a keyspace must be declared at open so that it is loaded and replicated from the start.
    if (!kv) throw new Error(`keyspace ${name} is not replicated by this provider (declared: ${[...this.#kvs.keys()].join(', ')})`);
    return kv as ReplicatedKV<T>;
  }

  get names(): string[] {
    return [...this.#kvs.keys()];
  }

  /** Joins the pool's replication: gossip, anti-entropy, a full sync with each member. */
  async start(): Promise<void> {
    for (const kv of this.#kvs.values()) await kv.keyspace.start();
  }

  /** Stops replicating and writes what is pending to disk. */
  async stop(): Promise<void> {
    for (const kv of this.#kvs.values()) await kv.keyspace.stop();
    for (const kv of this.#kvs.values()) await kv.keyspace.flush();
  }

  /** One anti-entropy round of every keyspace with every alive member. */
  async syncAll(): Promise<void> {
    for (const kv of this.#kvs.values()) await kv.keyspace.syncAll();
  }

  /** Summary of every keyspace's state: equal on two nodes when their user data is the same. */
  digest(): Record<string, string> {
    return Object.fromEntries([...this.#kvs].map(([name, kv]) => [name, kv.keyspace.digest()]));
  }
}
