// Roster storage (RFC 6121 §2.1): per user, the roster items, the pending
// inbound subscription requests (§3.1.3: kept with their stanza until the user
// answers) and the version counter of roster versioning (§2.6).
//
// Every record of one user lives under the key prefix "<username>/", so a change
// (items, pending requests, version) is written as one atomic batch. Each item
// remembers the version at which it last changed and removed items leave a
// tombstone, so a client's old version can be answered with just the changes
// (§2.6.3). Rosters are cached once read, since presence reads the roster on
// every broadcast.
//
// The records live in a KV keyspace (src/store/kv.ts): plain LevelDB on one
// node, replicated in a pool without LDAP. Every record of an update is under
// the user's prefix of one keyspace, so the update stays one atomic batch on
// the node that makes it. Writes from other nodes drop the user's cached
// roster (onChange 'remote'). Concurrent updates of one roster on two nodes
// merge per record, last writer wins: different items both survive; the
// version counter (meta) takes one node's value, so two changes may share a
// version number, and a client that cached the roster between them may miss
// one until it fetches the whole roster. Loading therefore lifts the counter
// to the highest item version seen, so versions never go backwards.
import { KeyedLock } from './keyed-lock.ts';
import { randomBytes } from 'node:crypto';
import type { Store } from './db.ts';
import { kvProvider, type KV, type KVOp, type KVProvider } from './kv.ts';

export type Subscription = 'none' | 'to' | 'from' | 'both';

export interface RosterItem {
  /** Bare JID of the contact. */
  jid: string;
  name?: string;
  subscription: Subscription;
  /** Pending out (§3.1.2): the user asked the contact for a subscription. */
  ask?: 'subscribe';
  /** Subscription pre-approved by the user (§3.4). */
  approved?: boolean;
  groups: string[];
}

/** A subscription request the user has not answered yet (state "Pending In"). */
export interface PendingRequest {
  jid: string;
  /** The subscribe stanza as received (XML), redelivered at each initial presence. */
  stanza: string;
  /** ms since the epoch */
  time: number;
}

/** One change of a committed update, for roster pushes: the new item, or its removal. */
export interface RosterChange {
  jid: string;
  /** null when the item was removed. */
  item: RosterItem | null;
  ver: string;
}

interface StoredItem extends RosterItem { ver: number }
interface Tombstone { jid: string; ver: number; removed: true }
interface Meta {
  ver: number;
  /** Random per roster, so a version from a wiped and re-created roster never matches. */
  epoch: string;
  /** Changes up to this version were pruned: older client versions get the full roster. */
  floor: number;
}

type Record_ = StoredItem | Tombstone | PendingRequest | Meta;

export const ROSTER_KEYSPACE = 'roster';
/** Removed items remembered for version deltas; beyond this the oldest go. */
const MAX_TOMBSTONES = 256;
const CACHE_MAX = 10_000;
const EMPTY_META: Meta = { ver: 0, epoch: '', floor: 0 };

function itemKey(user: string, jid: string): string {
  return `${user}/i/${jid}`;
}
function pendingKey(user: string, jid: string): string {
  return `${user}/p/${jid}`;
}
function metaKey(user: string): string {
  return `${user}/meta`;
}

function copyItem(i: RosterItem): RosterItem {
  const c: RosterItem = { jid: i.jid, subscription: i.subscription, groups: [...i.groups] };
  if (i.name !== undefined && i.name !== '') c.name = i.name;
  if (i.ask === 'subscribe') c.ask = 'subscribe';
  if (i.approved === true) c.approved = true;
  return c;
}

function sameItem(a: RosterItem, b: RosterItem): boolean {
  return a.jid === b.jid && (a.name ?? '') === (b.name ?? '') && a.subscription === b.subscription &&
    a.ask === b.ask && (a.approved === true) === (b.approved === true) &&
    a.groups.length === b.groups.length && a.groups.every((g, i) => g === b.groups[i]);
}

/** A read-only snapshot of one user's roster. */
export class Roster {
  readonly user: string;
  readonly #items: Map<string, StoredItem>;
  readonly #tombstones: Map<string, number>;
  readonly #pending: Map<string, PendingRequest>;
  readonly #meta: Meta;

  constructor(user: string, items: Map<string, StoredItem>, tombstones: Map<string, number>, pending: Map<string, PendingRequest>, meta: Meta) {
    this.user = user;
    this.#items = items;
    this.#tombstones = tombstones;
    this.#pending = pending;
    this.#meta = meta;
  }

  get size(): number {
    return this.#items.size;
  }

  /** The roster version string (§2.6): opaque to clients. */
  get version(): string {
    return this.#verString(this.#meta.ver);
  }

  get(jid: string): RosterItem | undefined {
    const i = this.#items.get(jid);
    return i ? copyItem(i) : undefined;
  }

  items(): RosterItem[] {
    return [...this.#items.values()].map(copyItem);
  }

  pending(jid: string): PendingRequest | undefined {
    return this.#pending.get(jid);
  }

  pendingRequests(): PendingRequest[] {
    return [...this.#pending.values()];
  }

  /**
   * The changes a client holding version `ver` has not seen, oldest first, or
   * null when they are not known (foreign or pruned version): send the whole roster.
   */
  changesSince(ver: string): RosterChange[] | null {
    const n = this.#parseVer(ver);
    if (n === null || n < this.#meta.floor || n > this.#meta.ver) return null;
    const out: Array<RosterChange & { n: number }> = [];
    for (const i of this.#items.values()) if (i.ver > n) out.push({ jid: i.jid, item: copyItem(i), ver: this.#verString(i.ver), n: i.ver });
    for (const [jid, v] of this.#tombstones) if (v > n) out.push({ jid, item: null, ver: this.#verString(v), n: v });
    out.sort((a, b) => a.n - b.n);
    return out.map(({ jid, item, ver: v }) => ({ jid, item, ver: v }));
  }

  #verString(n: number): string {
    return this.#meta.epoch ? `${this.#meta.epoch}-${n}` : String(n);
  }

  #parseVer(ver: string): number | null {
    const epoch = this.#meta.epoch;
    if (!epoch) return ver === '0' ? 0 : null;
    if (!ver.startsWith(epoch + '-')) return null;
    const rest = ver.slice(epoch.length + 1);
    return /^\d{1,15}$/.test(rest) ? Number(rest) : null;
  }

  /** Internal: the raw state a transaction starts from. */
  raw(): { items: Map<string, StoredItem>; tombstones: Map<string, number>; pending: Map<string, PendingRequest>; meta: Meta } {
    return { items: this.#items, tombstones: this.#tombstones, pending: this.#pending, meta: this.#meta };
  }
}

/** The working copy of one update; nothing is written until the update function returns. */
export class RosterTx {
  readonly user: string;
  readonly #base: Roster;
  readonly #items = new Map<string, RosterItem | null>();
  readonly #pending = new Map<string, PendingRequest | null>();

  constructor(base: Roster) {
    this.user = base.user;
    this.#base = base;
  }

  get(jid: string): RosterItem | undefined {
    if (this.#items.has(jid)) {
      const i = this.#items.get(jid);
      return i ? copyItem(i) : undefined;
    }
    return this.#base.get(jid);
  }

  put(item: RosterItem): void {
    this.#items.set(item.jid, copyItem(item));
  }

  remove(jid: string): void {
    this.#items.set(jid, null);
  }

  /** Number of items once this update is applied. */
  get size(): number {
    let n = this.#base.size;
    for (const [jid, i] of this.#items) {
      const had = this.#base.get(jid) !== undefined;
      if (i && !had) n++;
      else if (!i && had) n--;
    }
    return n;
  }

  pending(jid: string): PendingRequest | undefined {
    if (this.#pending.has(jid)) return this.#pending.get(jid) ?? undefined;
    return this.#base.pending(jid);
  }

  setPending(req: PendingRequest): void {
    this.#pending.set(req.jid, { ...req });
  }

  deletePending(jid: string): void {
    this.#pending.set(jid, null);
  }

  /** Internal: the batch and the new snapshot. */
  commit(): { ops: KVOp<Record_>[]; roster: Roster; changes: RosterChange[] } {
    const base = this.#base.raw();
    const items = new Map(base.items);
    const tombstones = new Map(base.tombstones);
    const pending = new Map(base.pending);
    const meta: Meta = { ...base.meta };
    const ops: KVOp<Record_>[] = [];
    const put = (key: string, value: Record_): void => void ops.push({ type: 'put', key, value });
    const del = (key: string): void => void ops.push({ type: 'del', key });
    const changed: Array<{ jid: string; item: RosterItem | null; n: number }> = [];
    for (const [jid, item] of this.#items) {
      const old = base.items.get(jid);
      if (item === null ? !old : old && sameItem(old, item)) continue;
      if (!meta.epoch) meta.epoch = randomBytes(4).toString('hex');
      const n = ++meta.ver;
      if (item) {
        const stored: StoredItem = { ...copyItem(item), ver: n };
        items.set(jid, stored);
        tombstones.delete(jid);
        put(itemKey(this.user, jid), stored);
      } else {
        items.delete(jid);
        tombstones.set(jid, n);
        put(itemKey(this.user, jid), { jid, ver: n, removed: true });
      }
      changed.push({ jid, item, n });
    }
    if (tombstones.size > MAX_TOMBSTONES) {
      const oldest = [...tombstones].sort((a, b) => a[1] - b[1]).slice(0, tombstones.size - MAX_TOMBSTONES);
      for (const [jid, v] of oldest) {
        tombstones.delete(jid);
        meta.floor = Math.max(meta.floor, v);
        del(itemKey(this.user, jid));
      }
    }
    for (const [jid, req] of this.#pending) {
      if (req) {
        pending.set(jid, req);
        put(pendingKey(this.user, jid), req);
      } else if (pending.delete(jid)) {
        del(pendingKey(this.user, jid));
      }
    }
    if (changed.length) put(metaKey(this.user), meta);
    const roster = new Roster(this.user, items, tombstones, pending, meta);
    const verString = (n: number) => `${meta.epoch}-${n}`;
    return { ops, roster, changes: changed.map((c) => ({ jid: c.jid, item: c.item ? copyItem(c.item) : null, ver: verString(c.n) })) };
  }
}

export interface UpdateResult<T> {
  value: T;
  /** Item changes, in version order: what to push to interested resources. */
  changes: RosterChange[];
  roster: Roster;
}

export class RosterStore {
  readonly #kv: KV<Record_>;
  readonly #cache = new Map<string, Roster>();
  /**
   * Per user, bumped when another node changed the roster: a snapshot read or
   * built before the bump must not enter the cache after it.
   */
  readonly #gen = new Map<string, number>();
  /** Per-user queue: read-modify-write of one roster never interleaves (on this node). */
  readonly #locks = new KeyedLock();

  /** A Store means its plain LevelDB keyspaces. */
  constructor(src: Store | KVProvider) {
    this.#kv = kvProvider(src).kv<Record_>(ROSTER_KEYSPACE);
    this.#kv.onChange((key, origin) => {
      if (origin !== 'remote') return;
      const slash = key.indexOf('/');
      if (slash > 0) this.#invalidate(key.slice(0, slash));
    });
  }

  /** The current roster of a local user (username = prepared localpart). */
  async get(user: string): Promise<Roster> {
    const hit = this.#cache.get(user);
    if (hit) return hit;
    const gen = this.#gen.get(user);
    const items = new Map<string, StoredItem>();
    const tombstones = new Map<string, number>();
    const pending = new Map<string, PendingRequest>();
    let meta = EMPTY_META;
    const prefix = `${user}/`;
    let top = 0;
    for await (const [key, value] of this.#kv.entries(prefix)) {
      const rest = key.slice(prefix.length);
      if (rest === 'meta') meta = value as Meta;
      else if (rest.startsWith('i/')) {
        const v = value as StoredItem | Tombstone;
        top = Math.max(top, v.ver);
        if ('removed' in v) tombstones.set(v.jid, v.ver);
        else items.set(v.jid, v);
      } else if (rest.startsWith('p/')) {
        const p = value as PendingRequest;
        pending.set(p.jid, p);
      }
    }
    // Records merged from two nodes: the counter must not lag behind an item.
    if (top > meta.ver) meta = { ...meta, ver: top };
    const roster = new Roster(user, items, tombstones, pending, meta);
    // A local write may have landed while we read; it put its own snapshot in the cache.
    const cached = this.#cache.get(user);
    if (cached) return cached;
    return this.#gen.get(user) === gen ? this.#remember(roster) : roster;
  }

  /**
   * Runs `fn` on a working copy of the user's roster, alone for that user, then
   * writes everything it changed in one synced batch. If `fn` throws, nothing is
   * written. `fn` must not wait for another update of the same user.
   */
  update<T>(user: string, fn: (tx: RosterTx) => T | Promise<T>): Promise<UpdateResult<T>> {
    return this.#locks.run(user, async () => {
      const gen = this.#gen.get(user);
      const base = await this.get(user);
      const tx = new RosterTx(base);
      const value = await fn(tx);
      const { ops, roster, changes } = tx.commit();
      if (ops.length) {
        await this.#kv.batch(ops);
        // If another node wrote meanwhile, the snapshot lacks its records: read again next time.
        if (this.#gen.get(user) === gen) this.#remember(roster);
        else this.#cache.delete(user);
      }
      return { value, changes, roster: ops.length ? roster : base };
    });
  }

  /** Deletes a user's whole roster (account removal). */
  clear(user: string): Promise<void> {
    return this.#locks.run(user, async () => {
      await this.#kv.clear(`${user}/`);
      this.#cache.delete(user);
    });
  }

  #invalidate(user: string): void {
    this.#cache.delete(user);
    this.#gen.set(user, (this.#gen.get(user) ?? 0) + 1);
  }

  #remember(roster: Roster): Roster {
    this.#cache.delete(roster.user);
    if (this.#cache.size >= CACHE_MAX) {
      const oldest = this.#cache.keys().next();
      if (!oldest.done) this.#cache.delete(oldest.value);
    }
    this.#cache.set(roster.user, roster);
    return roster;
  }
}

const instances = new WeakMap<KVProvider, RosterStore>();

/** The one RosterStore of a provider: the roster and presence modules must share its locks and cache. */
export function rosterStore(src: Store | KVProvider): RosterStore {
  const kv = kvProvider(src);
  let r = instances.get(kv);
  if (!r) instances.set(kv, (r = new RosterStore(kv)));
  return r;
}
