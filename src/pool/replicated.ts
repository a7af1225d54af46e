// Replicated keyspaces: the "distributed state cache" of DESIGN.md ("Shoal,
// mapped"). Every node holds a full copy of each replicated keyspace in memory,
// persisted in LevelDB (src/store/db.ts), and the copies converge.
//
// Consistency model. Eventual consistency, last writer wins per key. Every put
// and every delete carries a version, a hybrid logical clock stamp
// (src/pool/hlc.ts); a replica keeps per key the write with the largest version
// and ignores smaller ones, so replicas that have seen the same writes hold the
// same state whatever the order of arrival. No transactions across keys, no
// read-your-writes across nodes: another node sees a write after gossip
// (milliseconds) or, if gossip lost it, after an anti-entropy round (seconds).
//
// Concurrent writes. Two nodes writing one key at once both succeed locally;
// when the writes meet, the larger version wins on every node (wall time, then
// logical counter, then server id) and onChange reports the replacement where
// the loser was visible. A delete is the write of a tombstone and is ordered
// the same way. A write that causally follows another (made on a node that had
// seen it) always wins, because the HLC has moved past the stamp it saw.
//
// Clock skew. Causal order holds whatever the skew; among concurrent writes the
// node whose clock runs ahead wins. A stamp more than maxDriftMs (default 60 s)
// ahead of our clock is not applied: anti-entropy offers it again every round
// and it is applied once our clock is within the bound. So one wrong clock can
// neither drag the others into its future nor stop convergence for good.
//
// Tombstone expiry, and nodes away for longer. A tombstone is compacted
// tombstoneTtlMs (default 24 h) after its stamp. Forgetting a delete is what
// could resurrect a key: a node that was away (or on the other side of a
// partition) for longer than the TTL still holds the old value and would offer
// it back to nodes that no longer remember the delete. Rather than refusing to
// talk to such a node, every replica keeps, for each of the 256 hash buckets,
// a compaction horizon: the largest version of a tombstone it has compacted in
// that bucket (persisted, and sent with every bucket it serves). Then:
//  - for a key it holds nothing for, a replica never accepts a version at or
//    below its own horizon of that bucket (it may be a write it deleted and
//    forgot);
//  - after pulling a whole bucket from a peer, it drops (locally, without
//    tombstone) its entries the peer holds nothing for whose version is at or
//    below the peer's horizon (the peer may have deleted and forgotten them),
//    then adopts the peer's horizon if larger.
// A forgotten delete can only dominate versions below the horizon, so entries
// above it replicate normally: a returning node keeps and publishes its recent
// writes and loses only those of its old entries that the pool deleted. The
// price: a write older than the TTL that never reached the other side (a
// partition longer than the TTL) may be dropped instead of merged. Deleting
// rather than resurrecting is the right side to err on for routes and rosters.
//
// Purging the entries of a failed node (purgeWhere) writes tombstones, like
// del(). Every node that runs it issues its own; the largest wins and the
// outcome (deleted) is the same everywhere. Local-only deletion would be wrong
// under partitions: nodes that have not seen the failure yet would hand the
// entries back by anti-entropy, and the outcome would depend on who talked to
// whom first. A tombstone makes the purge a cut in HLC time: it deletes exactly
// the writes before it. An owner that was only cut off, not dead, writes its
// entries again (the router does so when onChange reports a remote delete of a
// key it still serves), and those rewrites win over every earlier purge.
//
// Propagation. Local writes are coalesced for batchDelayMs (5 ms), published on
// the gossipsub topic imnode/state/<name> and written to LevelDB in one batch
// (one fsync for all puts waiting). Anti-entropy repairs what gossip lost: keys
// fall into 256 buckets by hash; a bucket's summary is the XOR of a 64-bit hash
// of (key, version) over its live entries, kept up to date on every change, so a
// digest costs O(buckets). A round (point-to-point protocol 'sync') fetches a
// peer's 256 summaries, then pulls only the differing buckets, page by page.
// When a member joins, the round with it is the full sync. Rounds run every
// digestIntervalMs (5 s) with the next alive member in turn; when we still hold
// something the peer lacks after a round, we hint it to pull from us now.
// Tombstones are left out of the summaries: holding a tombstone or nothing is
// the same visible state. The wire format is in src/pool/replicated-wire.ts.
import { createHash } from 'node:crypto';
import type { Keyspace, Store } from '../store/db.ts';
import type { Logger } from '../admin/log.ts';
import type { Pool } from './types.ts';
import { HLC, wallOf } from './hlc.ts';
import { BUCKETS, WireError, bucketOf, decodeFrame, encodeFrame, hash64, type Frame, type WireEntry, type WireSection } from './replicated-wire.ts';

export const SYNC_PROTOCOL = 'sync';
export const TOPIC_PREFIX = 'imnode/state/';

export type ChangeOrigin = 'local' | 'remote';
export type ChangeListener<T> = (key: string, value: T | undefined, origin: ChangeOrigin) => void;

export interface ValueCodec<T> {
  encode(value: T): Uint8Array;
  decode(bytes: Uint8Array): T;
}

const te = new TextEncoder();
const td = new TextDecoder();
/** The default value codec. */
export const jsonCodec: ValueCodec<unknown> = {
  encode: (v) => te.encode(JSON.stringify(v)),
  decode: (b) => JSON.parse(td.decode(b)),
};

export interface ReplicatedOptions<T> {
  name: string;
  pool: Pool;
  store: Store;
  /** One clock per node, shared by its keyspaces. Default: a new HLC named after pool.serverId. */
  clock?: HLC;
  /** Encoding of values on the wire (LevelDB keeps them as JSON). Default JSON. */
  codec?: ValueCodec<T>;
  tombstoneTtlMs?: number;
  batchDelayMs?: number;
  /** Entries per gossip message. */
  maxBatch?: number;
  /** Period of anti-entropy rounds; 0 disables them (joins still sync). */
  digestIntervalMs?: number;
  compactIntervalMs?: number;
  /** Entries per sync response page. */
  pageEntries?: number;
  requestTimeoutMs?: number;
  /** fsync local writes before put()/del() resolve. Default true. */
  durable?: boolean;
  log?: Logger;
}

export interface SyncStats {
  peer: string;
  /** Buckets that differed. */
  buckets: number;
  pages: number;
  received: number;
  applied: number;
  dropped: number;
  /** Entries refused for clock drift, retried next round. */
  rejected: number;
  bytes: number;
  ms: number;
}

interface Entry<T> { v: string; d: T | undefined; t: boolean }
interface Rec<T> { v: string; d?: T; t?: 1 }
interface MetaRec { horizon: Record<string, string> }

// ---------------------------------------------------------------------------
// One 'sync' handler per pool, dispatching to the keyspaces by name.

type FrameHandler = (f: Frame, fromPeer: string) => Frame | void;
const registries = new WeakMap<Pool, Map<string, FrameHandler>>();

function register(pool: Pool, name: string, fn: FrameHandler): void {
  let reg = registries.get(pool);
  if (!reg) {
    const map = (reg = new Map());
    registries.set(pool, map);
    pool.handle(SYNC_PROTOCOL, (data, from) => {
      let f: Frame;
      try {
        f = decodeFrame(data);
      } catch (err) {
        return encodeFrame({ type: 'error', ks: '', message: (err as Error).message });
      }
      const h = map.get(f.ks);
      if (!h) return f.type === 'hint' ? undefined : encodeFrame({ type: 'error', ks: f.ks, message: 'no such keyspace here' });
      const res = h(f, from);
      return res ? encodeFrame(res) : undefined;
    });
  }
  if (reg.has(name)) throw new Error(`keyspace ${name} is already replicated on this pool`);
  reg.set(name, fn);
}

const H = new Uint32Array(2);
const silent: Logger = { error() {}, warn() {}, info() {}, debug() {}, child: () => silent };
const PAGE_BYTES = 512 * 1024;
const GOSSIP_BYTES = 60 * 1024;
const DAY = 24 * 3600_000;

// ---------------------------------------------------------------------------

export class ReplicatedKeyspace<T> {
  readonly name: string;
  readonly topic: string;
  readonly pool: Pool;
  readonly clock: HLC;
  readonly codec: ValueCodec<T>;
  readonly tombstoneTtlMs: number;
  readonly #o: { batchDelayMs: number; maxBatch: number; digestIntervalMs: number; compactIntervalMs: number; pageEntries: number; requestTimeoutMs: number; durable: boolean };
  readonly #log: Logger;
  readonly #db: Keyspace<Rec<T>>;
  readonly #meta: Keyspace<MetaRec>;
  readonly #map = new Map<string, Entry<T>>();
  readonly #bucketKeys: Set<string>[] = Array.from({ length: BUCKETS }, () => new Set<string>());
  readonly #hashes = new Uint32Array(BUCKETS * 2);
  readonly #horizon: string[] = new Array<string>(BUCKETS).fill('');
  readonly #listeners = new Set<ChangeListener<T>>();
  readonly #rounds = new Map<string, Promise<SyncStats>>();
  readonly #again = new Set<string>();
  #tombstones = 0;
  #pending = new Map<string, Entry<T> | null>();
  #outgoing = new Map<string, Entry<T>>();
  #waiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  #metaDirty = false;
  #flushTimer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> = Promise.resolve();
  #timers: NodeJS.Timeout[] = [];
  #unsubs: (() => void)[] = [];
  #started = false;
  #registered = false;
  #turn = 0;

  private constructor(o: ReplicatedOptions<T>) {
    if (!o.name || /[!/\s]/.test(o.name)) throw new Error(`bad replicated keyspace name: ${JSON.stringify(o.name)}`);
    this.name = o.name;
    this.topic = TOPIC_PREFIX + o.name;
    this.pool = o.pool;
    this.clock = o.clock ?? new HLC(o.pool.serverId);
    this.codec = o.codec ?? (jsonCodec as ValueCodec<T>);
    this.tombstoneTtlMs = o.tombstoneTtlMs ?? DAY;
    this.#o = {
      batchDelayMs: o.batchDelayMs ?? 5,
      maxBatch: o.maxBatch ?? 256,
      digestIntervalMs: o.digestIntervalMs ?? 5000,
      compactIntervalMs: o.compactIntervalMs ?? Math.min(60_000, Math.max(1000, this.tombstoneTtlMs / 4)),
      pageEntries: o.pageEntries ?? 2000,
      requestTimeoutMs: o.requestTimeoutMs ?? 10_000,
      durable: o.durable ?? true,
    };
    this.#log = (o.log ?? silent).child(`state:${o.name}`);
    this.#db = o.store.keyspace<Rec<T>>(`rs.${o.name}`);
    this.#meta = o.store.keyspace<MetaRec>('rs-meta');
  }

  /** Loads the replica from LevelDB; start() then joins the pool's replication. */
  static async open<T>(o: ReplicatedOptions<T>): Promise<ReplicatedKeyspace<T>> {
    const ks = new ReplicatedKeyspace<T>(o);
    await ks.#load();
    return ks;
  }

  async #load(): Promise<void> {
    let max = '';
    for await (const [key, rec] of this.#db.entries()) {
      const e: Entry<T> = rec.t ? { v: rec.v, d: undefined, t: true } : { v: rec.v, d: rec.d as T, t: false };
      this.#install(key, e, bucketOf(key));
      if (rec.v > max) max = rec.v;
    }
    const meta = await this.#meta.get(this.name);
    for (const [b, v] of Object.entries(meta?.horizon ?? {})) {
      this.#horizon[Number(b)] = v;
      if (v > max) max = v;
    }
    // Versions issued after a restart must exceed those issued before it, even if the clock went back.
    if (max) this.clock.witness(max);
  }

  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    if (!this.#registered) {
      register(this.pool, this.name, (f, from) => this.#serve(f, from));
      this.#registered = true;
    }
    this.#unsubs.push(this.pool.subscribe(this.topic, (data, from) => this.#onGossip(data, from)));
    this.#unsubs.push(this.pool.on('joined', (m) => {
      if (m.peerId !== this.pool.peerId) this.#background(m.peerId, true);
    }));
    if (this.#o.digestIntervalMs > 0) this.#timers.push(setInterval(() => this.#periodic(), this.#o.digestIntervalMs));
    this.#timers.push(setInterval(() => void this.compact().catch((err) => this.#log.warn('compaction failed', err)), this.#o.compactIntervalMs));
    for (const t of this.#timers) t.unref();
    void this.syncAll();
  }

  /** Stops replicating (the sync handler answers 'no such keyspace' afterwards) and flushes to LevelDB. */
  async stop(): Promise<void> {
    if (!this.#started) return;
    this.#started = false;
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    for (const u of this.#unsubs) u();
    this.#unsubs = [];
    registries.get(this.pool)?.delete(this.name);
    this.#registered = false;
    await Promise.allSettled([...this.#rounds.values()]);
    await this.flush();
  }

  get(key: string): T | undefined {
    const e = this.#map.get(key);
    return e && !e.t ? e.d : undefined;
  }

  has(key: string): boolean {
    const e = this.#map.get(key);
    return !!e && !e.t;
  }

  /** Version (encoded HLC stamp) of the key's current write, tombstones included. */
  version(key: string): string | undefined {
    return this.#map.get(key)?.v;
  }

  /** Live entries whose key starts with prefix, in key order. O(size): index hot paths through onChange. */
  entries(prefix = ''): [string, T][] {
    const out: [string, T][] = [];
    for (const [k, e] of this.#map) if (!e.t && k.startsWith(prefix)) out.push([k, e.d as T]);
    return out.sort((a, b) => (a[0] < b[0] ? -1 : 1));
  }

  get size(): number {
    return this.#map.size - this.#tombstones;
  }

  stats(): { live: number; tombstones: number; horizons: number } {
    return { live: this.size, tombstones: this.#tombstones, horizons: this.#horizon.filter(Boolean).length };
  }

  /** Resolves once the write is in LevelDB (fsynced unless durable: false). */
  put(key: string, value: T): Promise<void> {
    if (value === undefined) return Promise.reject(new TypeError('undefined is not a value; use del()'));
    return this.#local(key, { v: this.clock.nowString(), d: value, t: false }, true);
  }

  del(key: string): Promise<void> {
    return this.#local(key, { v: this.clock.nowString(), d: undefined, t: true }, true);
  }

  /**
   * Deletes, with tombstones, every live entry matching pred (e.g. the routes of
   * a failed node: `(k, v) => v.node === 'n2'`). Returns how many. Safe to run on
   * every node at once; see the note at the top of this file.
   */
  async purgeWhere(pred: (key: string, value: T) => boolean): Promise<number> {
    const victims: string[] = [];
    for (const [k, e] of this.#map) if (!e.t && pred(k, e.d as T)) victims.push(k);
    for (const k of victims) void this.#local(k, { v: this.clock.nowString(), d: undefined, t: true }, false);
    if (victims.length) await this.flush();
    return victims.length;
  }

  onChange(fn: ChangeListener<T>): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** One hash of the whole visible state: equal on two replicas iff they hold the same live (key, version) pairs (up to 64-bit collisions). */
  digest(): string {
    const buf = Buffer.alloc(this.#hashes.length * 4);
    this.#hashes.forEach((h, i) => buf.writeUInt32BE(h, i * 4));
    return createHash('sha256').update(buf).digest('hex').slice(0, 32);
  }

  /** Writes pending changes to LevelDB and publishes pending local ones. */
  flush(): Promise<void> {
    this.#flushing = this.#flushing.then(() => this.#flushNow());
    return this.#flushing;
  }

  /** Removes tombstones older than the TTL, raising the horizons. Returns how many. */
  async compact(): Promise<number> {
    if (this.#tombstones === 0) return 0;
    const limit = this.clock.physical() - this.tombstoneTtlMs;
    let n = 0;
    for (const [key, e] of this.#map) {
      if (!e.t || wallOf(e.v) >= limit) continue;
      const b = bucketOf(key);
      this.#install(key, undefined, b);
      this.#pending.set(key, null);
      if (e.v > this.#horizon[b]) this.#horizon[b] = e.v;
      this.#metaDirty = true;
      n++;
    }
    if (n) await this.flush();
    return n;
  }

  /** One anti-entropy round with every alive member in turn. */
  async syncAll(): Promise<void> {
    for (const m of this.pool.members()) {
      if (m.peerId === this.pool.peerId || m.state !== 'alive' || !this.#started) continue;
      await this.syncWith(m.peerId).catch((err) => this.#log.debug(`sync with ${m.serverId} failed:`, err));
    }
  }

  /**
   * One anti-entropy round: pulls from the peer the buckets whose summaries
   * differ from ours. A round already running with that peer is reused (and
   * another one follows it).
   */
  syncWith(peerId: string, hint = true): Promise<SyncStats> {
    const running = this.#rounds.get(peerId);
    if (running) {
      this.#again.add(peerId);
      return running;
    }
    const p = this.#round(peerId, hint).finally(() => {
      this.#rounds.delete(peerId);
      if (this.#again.delete(peerId) && this.#started) this.#background(peerId, false);
    });
    this.#rounds.set(peerId, p);
    return p;
  }

  // -------------------------------------------------------------------------

  #install(key: string, e: Entry<T> | undefined, b: number): void {
    const prev = this.#map.get(key);
    if (prev) {
      if (prev.t) this.#tombstones--;
      else this.#xor(b, key, prev.v);
    }
    if (e) {
      this.#map.set(key, e);
      this.#bucketKeys[b].add(key);
      if (e.t) this.#tombstones++;
      else this.#xor(b, key, e.v);
    } else if (prev) {
      this.#map.delete(key);
      this.#bucketKeys[b].delete(key);
    }
  }

  #xor(b: number, key: string, v: string): void {
    hash64(key + '\u0000' + v, H);
    this.#hashes[2 * b] ^= H[0];
    this.#hashes[2 * b + 1] ^= H[1];
  }

  #emit(key: string, value: T | undefined, origin: ChangeOrigin): void {
    for (const fn of this.#listeners) {
      try {
        fn(key, value, origin);
      } catch (err) {
        this.#log.error(`onChange listener failed for ${key}:`, err);
      }
    }
  }

  #local(key: string, e: Entry<T>, wait: boolean): Promise<void> {
    if (typeof key !== 'string' || key === '') return Promise.reject(new TypeError('key must be a non-empty string'));
    const prev = this.#map.get(key);
    this.#install(key, e, bucketOf(key));
    this.#pending.set(key, e);
    this.#outgoing.set(key, e);
    const done = wait ? new Promise<void>((resolve, reject) => this.#waiters.push({ resolve, reject })) : Promise.resolve();
    this.#schedule();
    if ((prev && !prev.t) || !e.t) this.#emit(key, e.d, 'local');
    return done;
  }

  /** Applies one remote write by the rules in the note at the top. */
  #apply(w: WireEntry): 'applied' | 'skipped' | 'rejected' {
    if (!this.clock.accepts(wallOf(w.v))) return 'rejected';
    const b = bucketOf(w.key);
    const cur = this.#map.get(w.key);
    if (cur ? w.v <= cur.v : this.#horizon[b] !== '' && w.v <= this.#horizon[b]) return 'skipped';
    const e: Entry<T> = w.t ? { v: w.v, d: undefined, t: true } : { v: w.v, d: this.codec.decode(w.d!), t: false };
    this.#install(w.key, e, b);
    this.#pending.set(w.key, e);
    if (!e.t || (cur && !cur.t)) this.#emit(w.key, e.d, 'remote');
    return 'applied';
  }

  #applyAll(entries: WireEntry[], stats?: SyncStats): void {
    let max = '';
    for (const w of entries) {
      let r: 'applied' | 'skipped' | 'rejected';
      try {
        r = this.#apply(w);
      } catch (err) {
        this.#log.warn(`bad value for ${w.key}:`, err);
        continue;
      }
      if (r === 'rejected') {
        if (stats) stats.rejected++;
        else this.#log.warn(`ignoring ${w.key}: its version ${w.v} is too far ahead of our clock`);
        continue;
      }
      if (r === 'applied' && stats) stats.applied++;
      if (w.v > max) max = w.v;
    }
    // Every stamp in max passed the drift check: witnessing it is the HLC receive step.
    if (max) this.clock.witness(max);
    this.#schedule();
  }

  #onGossip(data: Uint8Array, from: string): void {
    let f: Frame;
    try {
      f = decodeFrame(data);
    } catch (err) {
      this.#log.warn(`bad gossip from ${from}:`, err);
      return;
    }
    if (f.type === 'changes' && f.ks === this.name) this.#applyAll(f.entries);
  }

  #wire(key: string, e: Entry<T>): WireEntry {
    return e.t ? { key, v: e.v, t: true } : { key, v: e.v, t: false, d: this.codec.encode(e.d as T) };
  }

  #serve(f: Frame, from: string): Frame | void {
    switch (f.type) {
      case 'digest-req': return { type: 'digest', ks: this.name, hashes: this.#hashes.slice() };
      case 'pull': return this.#page(f.buckets, f.after);
      case 'hint':
        if (this.#started) this.#background(from, false);
        return;
      default: return { type: 'error', ks: this.name, message: `unexpected ${f.type} request` };
    }
  }

  #page(buckets: number[], after: string): Frame {
    const sections: WireSection[] = [];
    let count = 0;
    let bytes = 0;
    for (const [i, b] of buckets.entries()) {
      if (!Number.isInteger(b) || b < 0 || b >= BUCKETS) return { type: 'error', ks: this.name, message: `bad bucket ${b}` };
      const keys = [...this.#bucketKeys[b]].sort();
      let j = 0;
      if (i === 0 && after) while (j < keys.length && keys[j] <= after) j++;
      const entries: WireEntry[] = [];
      for (; j < keys.length && count < this.#o.pageEntries && bytes < PAGE_BYTES; j++, count++) {
        const w = this.#wire(keys[j], this.#map.get(keys[j])!);
        bytes += keys[j].length + 16 + (w.d?.length ?? 0);
        entries.push(w);
      }
      const complete = j === keys.length;
      sections.push({ bucket: b, horizon: this.#horizon[b], complete, entries });
      if (!complete || count >= this.#o.pageEntries || bytes >= PAGE_BYTES) break;
    }
    return { type: 'page', ks: this.name, sections };
  }

  async #ask(peerId: string, f: Frame, stats: SyncStats): Promise<Frame> {
    const req = encodeFrame(f);
    const res = await this.pool.request(peerId, SYNC_PROTOCOL, req, this.#o.requestTimeoutMs);
    if (!this.#started) throw new Error('keyspace stopped');
    stats.bytes += req.length + res.length;
    const out = decodeFrame(res);
    if (out.type === 'error') throw new Error(`${peerId}: ${out.message}`);
    return out;
  }

  async #round(peerId: string, hint: boolean): Promise<SyncStats> {
    const t0 = performance.now();
    const stats: SyncStats = { peer: peerId, buckets: 0, pages: 0, received: 0, applied: 0, dropped: 0, rejected: 0, bytes: 0, ms: 0 };
    const dig = await this.#ask(peerId, { type: 'digest-req', ks: this.name }, stats);
    if (dig.type !== 'digest' || dig.hashes.length !== BUCKETS * 2) throw new WireError('expected a digest');
    const theirs = dig.hashes;
    const todo: number[] = [];
    for (let b = 0; b < BUCKETS; b++) if (!this.#same(b, theirs)) todo.push(b);
    stats.buckets = todo.length;
    let after = '';
    const seen = new Set<string>();
    while (todo.length) {
      const page = await this.#ask(peerId, { type: 'pull', ks: this.name, buckets: todo, after }, stats);
      if (page.type !== 'page') throw new WireError('expected a page');
      stats.pages++;
      let progressed = false;
      for (const s of page.sections) {
        if (s.bucket !== todo[0]) throw new WireError(`page out of order: bucket ${s.bucket}, expected ${todo[0]}`);
        for (const w of s.entries) {
          if (bucketOf(w.key) !== s.bucket) throw new WireError(`key ${w.key} is not in bucket ${s.bucket}`);
          seen.add(w.key);
        }
        stats.received += s.entries.length;
        this.#applyAll(s.entries, stats);
        if (s.complete) {
          this.#settleBucket(s.bucket, s.horizon, seen, stats);
          seen.clear();
          todo.shift();
          after = '';
          progressed = true;
        } else if (s.entries.length) {
          after = s.entries[s.entries.length - 1].key;
          progressed = true;
        }
      }
      if (!progressed) throw new WireError('sync page made no progress');
    }
    if (hint && this.#started) {
      for (let b = 0; b < BUCKETS; b++) {
        if (this.#same(b, theirs)) continue;
        this.pool.send(peerId, SYNC_PROTOCOL, encodeFrame({ type: 'hint', ks: this.name })).catch(() => {});
        break;
      }
    }
    stats.ms = performance.now() - t0;
    if (stats.applied || stats.dropped) this.#log.debug(`synced from ${peerId}:`, stats);
    return stats;
  }

  #same(b: number, theirs: Uint32Array): boolean {
    return this.#hashes[2 * b] === theirs[2 * b] && this.#hashes[2 * b + 1] === theirs[2 * b + 1];
  }

  /** A whole bucket of the peer's has been seen: drop what it forgot deleting, adopt its horizon. */
  #settleBucket(b: number, horizon: string, seen: Set<string>, stats: SyncStats): void {
    if (!horizon) return;
    for (const key of [...this.#bucketKeys[b]]) {
      if (seen.has(key)) continue;
      const e = this.#map.get(key)!;
      if (e.v > horizon) continue;
      this.#install(key, undefined, b);
      this.#pending.set(key, null);
      stats.dropped++;
      if (!e.t) this.#emit(key, undefined, 'remote');
    }
    if (horizon > this.#horizon[b]) {
      this.#horizon[b] = horizon;
      this.#metaDirty = true;
    }
    this.#schedule();
  }

  #background(peerId: string, hint: boolean): void {
    this.syncWith(peerId, hint).catch((err) => this.#log.debug(`sync with ${peerId} failed:`, err));
  }

  #periodic(): void {
    const peers = this.pool.members().filter((m) => m.peerId !== this.pool.peerId && m.state === 'alive');
    if (!peers.length) return;
    this.#background(peers[this.#turn++ % peers.length].peerId, true);
  }

  #schedule(): void {
    if (this.#flushTimer || (!this.#pending.size && !this.#outgoing.size && !this.#metaDirty)) return;
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = undefined;
      void this.flush();
    }, this.#o.batchDelayMs);
  }

  async #flushNow(): Promise<void> {
    if (this.#flushTimer) clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    const pending = this.#pending;
    const outgoing = this.#outgoing;
    const waiters = this.#waiters;
    const meta = this.#metaDirty;
    this.#pending = new Map();
    this.#outgoing = new Map();
    this.#waiters = [];
    this.#metaDirty = false;
    // Gossip first: a crash before the fsync loses nothing the others cannot give back.
    if (outgoing.size && this.#started) this.#publish(outgoing);
    const ops = [...pending].map(([k, e]) => (e ? this.#db.putOp(k, e.t ? { v: e.v, t: 1 } : { v: e.v, d: e.d }) : this.#db.delOp(k)));
    if (meta) ops.push(this.#meta.putOp(this.name, { horizon: Object.fromEntries(this.#horizon.flatMap((v, b) => (v ? [[String(b), v]] : []))) }));
    try {
      if (ops.length) await this.#db.store.batch(ops, { sync: this.#o.durable && waiters.length > 0 });
      for (const w of waiters) w.resolve();
    } catch (err) {
      this.#log.error('writing replicated state failed:', err);
      for (const w of waiters) w.reject(err);
    }
  }

  #publish(outgoing: Map<string, Entry<T>>): void {
    let batch: WireEntry[] = [];
    let bytes = 0;
    const send = (): void => {
      const data = encodeFrame({ type: 'changes', ks: this.name, entries: batch });
      this.pool.publish(this.topic, data).catch((err) => this.#log.debug('publish failed:', err));
      batch = [];
      bytes = 0;
    };
    for (const [key, e] of outgoing) {
      const w = this.#wire(key, e);
      batch.push(w);
      bytes += key.length + 16 + (w.d?.length ?? 0);
      if (batch.length >= this.#o.maxBatch || bytes >= GOSSIP_BYTES) send();
    }
    if (batch.length) send();
  }
}
