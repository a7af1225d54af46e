// The key-value interface the user-data stores (accounts, rosters, vCards,
// blocklists, offline messages) are written against, so that the same store
// code runs on one node, over plain LevelDB keyspaces, and in a pool without
// LDAP, over replicated keyspaces (src/store/replicated-kv.ts) that every node
// holds a copy of (DESIGN.md "What is replicated").
//
// What a store may rely on, whichever implementation:
//  - a write has reached the local disk (fsync'ed) when its promise resolves;
//  - batch() is atomic on this node, for keys of one keyspace only: a store
//    that needs two records to change together keeps them in one keyspace;
//  - entries()/keys() return keys in order (plain string order for ASCII keys);
//  - values are JSON and come back as copies: mutating what get() returned
//    changes nothing stored.
// What it may not rely on: that no other node writes the same keys at the same
// time. In a pool the last writer wins per key; onChange reports writes that
// arrived from other nodes ('remote') so that caches can be dropped, and
// settleMs says how long a store should wait before it trusts that the
// concurrent writes of other nodes have reached it.
import { HLC } from '../pool/hlc.ts';
import type { Keyspace, Store, WriteOptions } from './db.ts';

export type KVOrigin = 'local' | 'remote';
export type KVChangeListener = (key: string, origin: KVOrigin) => void;
export type KVOp<T> = { type: 'put'; key: string; value: T } | { type: 'del'; key: string };
export type KVWriteOptions = WriteOptions;

export interface KV<T> {
  readonly name: string;
  get(key: string): Promise<T | undefined>;
  /** Resolves once the value is on the local disk. */
  put(key: string, value: T, opts?: KVWriteOptions): Promise<void>;
  del(key: string, opts?: KVWriteOptions): Promise<void>;
  /** Entries whose key starts with prefix, in key order. */
  entries(prefix?: string): AsyncIterable<[string, T]>;
  keys(prefix?: string): Promise<string[]>;
  /** Deletes every key under prefix; returns how many. */
  clear(prefix?: string, opts?: KVWriteOptions): Promise<number>;
  /** Several keys of this keyspace, atomically on this node. */
  batch(ops: readonly KVOp<T>[], opts?: KVWriteOptions): Promise<void>;
  /**
   * Called after a key changed: 'local' for writes through this KV (a plain
   * LevelDB KV reports only those), 'remote' for writes another node made.
   * Returns the unsubscribe function.
   */
  onChange(fn: KVChangeListener): () => void;
}

export interface KVProvider {
  /** The keyspace of that name; the same object for the same name. */
  kv<T>(name: string): KV<T>;
  /** Server id of this node, unique in the pool. */
  readonly node: string;
  /**
   * Stamps that sort by time and never repeat on this node (a hybrid logical
   * clock): in a pool, shared with the replication, so a stamp issued after a
   * remote write was seen sorts after that write's.
   */
  readonly clock: HLC;
  /**
   * 0 when this node is the only writer of its data. In a pool: how long a
   * write made elsewhere normally takes to arrive here (gossip delay, with a
   * wide margin). Stores that must pick one winner among concurrent writers
   * (registration of one name, draining one offline queue) write, wait this
   * long, and read back which write won.
   */
  readonly settleMs: number;
}

/** Local node id of a provider that is not in a pool. */
export const LOCAL_NODE = 'local';

function checkKey(key: string): void {
  // Misuse: an empty key would address a whole keyspace in prefix scans.
  if (typeof key !== 'string' || key === '') throw new TypeError('key must be a non-empty string');
}

function checkValue(value: unknown): void {
  if (value === undefined) throw new TypeError('undefined is not a value; use del()');
}

/** A plain LevelDB keyspace: today's single-node behaviour. */
export class LevelKV<T> implements KV<T> {
  readonly name: string;
  readonly #ks: Keyspace<T>;
  readonly #listeners = new Set<KVChangeListener>();

  constructor(ks: Keyspace<T>) {
    this.#ks = ks;
    this.name = ks.name;
  }

  async get(key: string): Promise<T | undefined> {
    checkKey(key);
    return this.#ks.get(key);
  }

  async put(key: string, value: T, opts?: KVWriteOptions): Promise<void> {
    checkKey(key);
    checkValue(value);
    await this.#ks.put(key, value, opts);
    this.#emit([key]);
  }

  async del(key: string, opts?: KVWriteOptions): Promise<void> {
    checkKey(key);
    await this.#ks.del(key, opts);
    this.#emit([key]);
  }

  entries(prefix = ''): AsyncIterable<[string, T]> {
    return this.#ks.entries(prefix);
  }

  keys(prefix = ''): Promise<string[]> {
    return this.#ks.keys(prefix);
  }

  async clear(prefix = '', opts?: KVWriteOptions): Promise<number> {
    const keys = await this.#ks.keys(prefix);
    if (keys.length) {
      await this.#ks.store.batch(keys.map((k) => this.#ks.delOp(k)), opts);
      this.#emit(keys);
    }
    return keys.length;
  }

  async batch(ops: readonly KVOp<T>[], opts?: KVWriteOptions): Promise<void> {
    for (const op of ops) {
      checkKey(op.key);
      if (op.type === 'put') checkValue(op.value);
    }
    if (!ops.length) return;
    await this.#ks.store.batch(ops.map((op) => (op.type === 'put' ? this.#ks.putOp(op.key, op.value) : this.#ks.delOp(op.key))), opts);
    this.#emit(ops.map((op) => op.key));
  }

  onChange(fn: KVChangeListener): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  #emit(keys: readonly string[]): void {
    for (const key of keys) {
      for (const fn of this.#listeners) {
        try {
          fn(key, 'local');
        } catch {
          // A listener's failure is its own; the write has happened.
        }
      }
    }
  }
}

export class LevelKVProvider implements KVProvider {
  readonly store: Store;
  readonly node: string;
  readonly clock: HLC;
  readonly settleMs = 0;
  readonly #kvs = new Map<string, LevelKV<unknown>>();

  constructor(store: Store, opts: { node?: string; clock?: HLC } = {}) {
    this.store = store;
    this.node = opts.node ?? LOCAL_NODE;
    this.clock = opts.clock ?? new HLC(this.node);
  }

  kv<T>(name: string): KV<T> {
    let kv = this.#kvs.get(name);
    if (!kv) this.#kvs.set(name, (kv = new LevelKV<unknown>(this.store.keyspace<unknown>(name))));
    return kv as KV<T>;
  }
}

const perStore = new WeakMap<Store, LevelKVProvider>();

/**
 * A provider from either a provider or a bare Store (the CLI and older callers
 * hand stores a Store): one LevelKVProvider per Store, so that every store
 * object over one database shares change listeners and clock.
 */
export function kvProvider(src: Store | KVProvider): KVProvider {
  if (isProvider(src)) return src;
  let p = perStore.get(src);
  if (!p) perStore.set(src, (p = new LevelKVProvider(src)));
  return p;
}

function isProvider(src: Store | KVProvider): src is KVProvider {
  return typeof (src as KVProvider).kv === 'function';
}
