// Offline message queues (XEP-0160 storage). One queue per user in arrival
// order, in a KV keyspace (src/store/kv.ts): plain LevelDB on one node,
// replicated to every node in a pool without LDAP, so a message stored on one
// node is delivered when the user logs in on any other.
//
// Keys are <user>/<stamp>/<node>: the stamp is the provider's hybrid logical
// clock (16 hex digits, time then counter), the node its server id. They sort
// by time, and two nodes storing for one user at the same instant never pick
// the same key, so nothing is overwritten; a prefix scan returns the queue in
// order ('/' cannot occur in a localpart, RFC 7622 §3.3.1, so one user's
// prefix never matches another's). Keys of the older layout (<user>/<16
// decimal digits>) sort before every stamp and are drained like the others.
// The count is the number of keys: a counter record could not stay right when
// two nodes store at once. The limit is checked per node, so concurrent
// stores on two nodes may exceed it by a few messages.
//
// Exactly once across nodes. A drain hands the queue over and deletes what it
// handed over (in a pool, tombstones that replicate). On one node, a per-user
// lock serialises drains. In a pool, two nodes may drain one queue at once
// (two resources of one user logging in on two nodes at the same instant, or
// a message replicated to a node while the user's resource there flushes), so
// a drain first takes a claim: it writes <user>/claim = {node, nonce, until},
// waits the provider's settle time, and reads it back. Last writer wins per
// key, so once both claims have reached both nodes, both see the same one;
// only its owner delivers, and it deletes the messages and the claim in one
// batch. A node that finds another node's live claim waits until it is
// released or expires (a claimant that died), then looks at the queue again:
// its own resource gets what is left. The outcome:
//  - gossip within the settle time (a healthy pool): each message is handed
//    out once, to one of the resources that came online;
//  - gossip slower than that (overload, partition): both claimants may believe
//    they won and the message reaches both resources: at least once, never
//    lost. We chose duplicates over loss, and over delaying every login
//    behind a pool-wide lock that a partition could hold.
import { KeyedLock } from './keyed-lock.ts';
import { randomBytes } from 'node:crypto';
import type { Store } from './db.ts';
import { kvProvider, type KV, type KVProvider } from './kv.ts';
import { encodeParts, MAX_LOGICAL } from '../pool/hlc.ts';

export interface StoredMessage {
  key: string;
  /** The stanza as serialised XML. */
  xml: string;
}

/** A node's claim on a user's queue while it drains it. */
export interface DrainClaim {
  node: string;
  nonce: string;
  /** ms since the epoch (the claimant's clock) after which the claim is void. */
  until: number;
}

export const OFFLINE_KEYSPACE = 'offline';
/** Where the per-user counters of the older layout were; nothing reads it any more. */
export const OFFLINE_META_KEYSPACE = 'offline-meta';

const CLAIM = 'claim';
const STAMP = /^[0-9a-f]{16}$/;
/** A claim outlives any drain of a live node: it only matters when its node died mid-drain. */
const DEFAULT_LEASE_MS = 10_000;
/** Rounds of "wait for the other claimant, look again" before giving the login up (the next one drains). */
const MAX_ROUNDS = 5;

type Value = string | DrainClaim;

export class OfflineStore {
  readonly #kv: KV<Value>;
  readonly #node: string;
  readonly #provider: KVProvider;
  readonly #settleMs: number;
  readonly #leaseMs: number;
  // Pushes of one user run alone (limit check, then write); so do drains. A
  // push does not wait for a drain, which may wait for another node's claim.
  readonly #pushLocks = new KeyedLock();
  readonly #drainLocks = new KeyedLock();

  /** A Store means its plain LevelDB keyspaces. */
  constructor(src: Store | KVProvider, opts: { leaseMs?: number } = {}) {
    this.#provider = kvProvider(src);
    this.#kv = this.#provider.kv<Value>(OFFLINE_KEYSPACE);
    this.#node = this.#provider.node;
    this.#settleMs = this.#provider.settleMs;
    this.#leaseMs = opts.leaseMs ?? DEFAULT_LEASE_MS;
  }

  /**
   * Appends a message to the user's queue unless it already holds `limit`
   * messages (then resolves false). Resolves once the write is on disk.
   */
  push(user: string, xml: string, limit: number): Promise<boolean> {
    checkUser(user);
    return this.#pushLocks.run(user, async () => {
      const keys = await this.#messageKeys(user);
      if (keys.length >= limit) return false;
      // After a restart with the clock set back, the stamp must still sort after the queue.
      if (keys.length) this.#witness(keys[keys.length - 1]);
      const t = this.#provider.clock.now();
      const key = `${user}/${encodeParts(t.wall, t.logical, '')}/${this.#node}`;
      await this.#kv.put(key, xml);
      return true;
    });
  }

  async count(user: string): Promise<number> {
    checkUser(user);
    return (await this.#messageKeys(user)).length;
  }

  /** The user's queue, oldest first. */
  async list(user: string): Promise<StoredMessage[]> {
    checkUser(user);
    const out: StoredMessage[] = [];
    const claim = claimKey(user);
    for await (const [key, xml] of this.#kv.entries(user + '/')) {
      if (key !== claim && typeof xml === 'string') out.push({ key, xml });
    }
    return out;
  }

  /**
   * Hands the queue to `deliver`, which returns the keys it actually handed
   * over; those are then deleted (fsync'ed, and replicated in a pool). Two
   * drains of one queue, on this node or (see the note at the top) on two
   * nodes of a pool, do not hand out the same message twice. Resolves with
   * the number of messages removed.
   */
  drain(user: string, deliver: (messages: StoredMessage[]) => string[] | Promise<string[]>): Promise<number> {
    checkUser(user);
    return this.#drainLocks.run(user, () => (this.#settleMs > 0 ? this.#drainClaimed(user, deliver) : this.#drainOnce(user, deliver, null)));
  }

  /**
   * Calls fn(user) when messages for a user arrive from another node (a pool
   * only): a resource of that user here that already got its queue should get
   * them too. Returns the unsubscribe function.
   */
  onRemoteMessage(fn: (user: string) => void): () => void {
    return this.#kv.onChange((key, origin) => {
      if (origin !== 'remote') return;
      const slash = key.indexOf('/');
      if (slash <= 0 || key.slice(slash + 1) === CLAIM) return;
      const user = key.slice(0, slash);
      // Deletions (another node delivered) need nothing.
      void this.#kv.get(key).then((v) => { if (v !== undefined) fn(user); }, () => undefined);
    });
  }

  /** Deletes the user's whole queue (account deletion); returns how many messages. */
  async clear(user: string): Promise<number> {
    checkUser(user);
    const n = (await this.#messageKeys(user)).length;
    await this.#kv.clear(user + '/');
    return n;
  }

  async #messageKeys(user: string): Promise<string[]> {
    const claim = claimKey(user);
    return (await this.#kv.keys(user + '/')).filter((k) => k !== claim);
  }

  #witness(key: string): void {
    const stamp = key.split('/')[1] ?? '';
    if (!STAMP.test(stamp)) return;
    const wall = parseInt(stamp.slice(0, 12), 16);
    const logical = Math.min(parseInt(stamp.slice(12), 16), MAX_LOGICAL);
    this.#provider.clock.witness({ wall, logical, node: this.#node });
  }

  async #drainOnce(user: string, deliver: (messages: StoredMessage[]) => string[] | Promise<string[]>, claim: string | null): Promise<number> {
    const messages = await this.list(user);
    let done: Set<string>;
    try {
      done = messages.length ? new Set(await deliver(messages)) : new Set();
    } catch (e) {
      if (claim) await this.#kv.del(claim);
      throw e;
    }
    const keys = messages.map((m) => m.key).filter((k) => done.has(k));
    // Messages first, the claim last: another node that sees the claim go has seen them go.
    const ops = keys.map((key) => ({ type: 'del' as const, key }));
    if (claim) ops.push({ type: 'del', key: claim });
    if (ops.length) await this.#kv.batch(ops);
    return keys.length;
  }

  async #drainClaimed(user: string, deliver: (messages: StoredMessage[]) => string[] | Promise<string[]>): Promise<number> {
    const key = claimKey(user);
    for (let round = 0; round < MAX_ROUNDS; round++) {
      if ((await this.#messageKeys(user)).length === 0) return 0;
      const held = await this.#claim(user);
      if (held && held.node !== this.#node && held.until > Date.now()) {
        await this.#released(key, held);
        continue;
      }
      const mine: DrainClaim = { node: this.#node, nonce: randomBytes(8).toString('hex'), until: Date.now() + this.#leaseMs };
      await this.#kv.put(key, mine);
      await sleep(this.#settleMs);
      const won = await this.#claim(user);
      if (won?.nonce !== mine.nonce) {
        // Another node's claim won; it delivers. Look again once it is done.
        if (won) await this.#released(key, won);
        continue;
      }
      return this.#drainOnce(user, deliver, key);
    }
    return 0;
  }

  async #claim(user: string): Promise<DrainClaim | undefined> {
    const v = await this.#kv.get(claimKey(user));
    return v && typeof v === 'object' ? v : undefined;
  }

  /** Resolves when the claim changes (released, replaced) or expires. */
  #released(key: string, held: DrainClaim): Promise<void> {
    return new Promise<void>((resolve) => {
      let unsubscribe = (): void => undefined;
      const finish = (): void => {
        clearTimeout(timer);
        unsubscribe();
        resolve();
      };
      const timer = setTimeout(finish, Math.max(0, Math.min(held.until - Date.now(), this.#leaseMs)) + 1);
      unsubscribe = this.#kv.onChange((k) => {
        if (k === key) finish();
      });
      // It may have gone between our read and the subscription.
      void this.#kv.get(key).then((v) => {
        if (!v || typeof v !== 'object' || v.nonce !== held.nonce) finish();
      });
    });
  }
}

function claimKey(user: string): string {
  return `${user}/${CLAIM}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function checkUser(user: string): void {
  // Misuse, not a client error: an empty name would address every queue.
  if (typeof user !== 'string' || user === '' || user.includes('/')) throw new TypeError('user must be a prepared localpart');
}
