// LevelDB behind typed keyspaces. One database per data dir; each keyspace is a
// sublevel-like prefix ("accounts!alice"). Writes that the server acknowledges to
// a client (roster changes, offline messages) go with sync so they survive a crash
// of the machine, not only of the process.
import { Level } from 'level';

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

export interface WriteOptions {
  /** fsync before resolving. Default true: acknowledged data must be on disk. */
  sync?: boolean;
}

export type BatchOp = { type: 'put'; keyspace: string; key: string; value: unknown } | { type: 'del'; keyspace: string; key: string };

const SEP = '!';
// The highest code point keeps range scans inside one prefix.
const END = '\uffff';

export class Store {
  readonly db: Level<string, unknown>;
  readonly location: string;
  #keyspaces = new Map<string, Keyspace<unknown>>();

  private constructor(db: Level<string, unknown>, location: string) {
    this.db = db;
    this.location = location;
  }

  static async open(location: string): Promise<Store> {
    const db = new Level<string, unknown>(location, { valueEncoding: 'json' });
    await db.open();
    return new Store(db, location);
  }

  keyspace<T>(name: string): Keyspace<T> {
    if (name.includes(SEP)) throw new Error(`keyspace name must not contain '${SEP}': ${name}`);
    let ks = this.#keyspaces.get(name);
    if (!ks) {
      ks = new Keyspace<unknown>(this, name);
      this.#keyspaces.set(name, ks);
    }
    return ks as Keyspace<T>;
  }

  /** Atomic write across keyspaces. */
  async batch(ops: BatchOp[], opts: WriteOptions = {}): Promise<void> {
    await this.db.batch(
      ops.map((op) => op.type === 'put'
        ? { type: 'put' as const, key: op.keyspace + SEP + op.key, value: op.value }
        : { type: 'del' as const, key: op.keyspace + SEP + op.key }),
      { sync: opts.sync ?? true } as never,
    );
  }

  async close(): Promise<void> {
    if (this.db.status === 'open' || this.db.status === 'opening') await this.db.close();
  }
}

export class Keyspace<T> {
  readonly store: Store;
  readonly name: string;
  readonly #prefix: string;

  constructor(store: Store, name: string) {
    this.store = store;
    this.name = name;
    this.#prefix = name + SEP;
  }

  async get(key: string): Promise<T | undefined> {
    const v = await this.store.db.get(this.#prefix + key);
    return v === undefined ? undefined : (v as T);
  }

  async put(key: string, value: T, opts: WriteOptions = {}): Promise<void> {
    await this.store.db.put(this.#prefix + key, value, { sync: opts.sync ?? true } as never);
  }

  async del(key: string, opts: WriteOptions = {}): Promise<void> {
    await this.store.db.del(this.#prefix + key, { sync: opts.sync ?? true } as never);
  }

  putOp(key: string, value: T): BatchOp {
    return { type: 'put', keyspace: this.name, key, value };
  }

  delOp(key: string): BatchOp {
    return { type: 'del', keyspace: this.name, key };
  }

  /** Entries whose key starts with `prefix`, in key order. */
  async *entries(prefix = ''): AsyncGenerator<[string, T]> {
    const gte = this.#prefix + prefix;
    for await (const [k, v] of this.store.db.iterator({ gte, lt: gte + END })) {
      yield [k.slice(this.#prefix.length), v as T];
    }
  }

  async keys(prefix = ''): Promise<string[]> {
    const out: string[] = [];
    const gte = this.#prefix + prefix;
    for await (const k of this.store.db.keys({ gte, lt: gte + END })) out.push(k.slice(this.#prefix.length));
    return out;
  }

  /** Deletes every key under `prefix`; returns how many. */
  async clear(prefix = '', opts: WriteOptions = {}): Promise<number> {
    const keys = await this.keys(prefix);
    if (keys.length) await this.store.batch(keys.map((k) => this.delOp(k)), opts);
    return keys.length;
  }
}
