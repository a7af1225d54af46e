// Offline message queues (XEP-0160 storage). One queue per user in arrival
// order: keys are <user>/<zero-padded sequence number>, so a prefix scan returns
// the queue in order. '/' cannot occur in a localpart (RFC 7622 §3.3.1), so one
// user's prefix never matches another's. The sequence number and the count live
// in a per-user meta record written in the same atomic, fsync'ed batch as the
// message, so a crash leaves either both or neither.
import type { Store, Keyspace } from './db.ts';

export interface OfflineMeta {
  /** Sequence number of the next message. */
  next: number;
  /** Messages in the queue. */
  count: number;
}

export interface StoredMessage {
  key: string;
  /** The stanza as serialised XML. */
  xml: string;
}

export const OFFLINE_KEYSPACE = 'offline';
export const OFFLINE_META_KEYSPACE = 'offline-meta';

// Number.MAX_SAFE_INTEGER has 16 digits: the padding keeps lexical order = numeric order.
const SEQ_DIGITS = 16;

export class OfflineStore {
  readonly #store: Store;
  readonly #messages: Keyspace<string>;
  readonly #meta: Keyspace<OfflineMeta>;
  // LevelDB has no compare-and-set: each user's read-modify-write of the meta
  // record, and each drain, runs alone.
  readonly #locks = new Map<string, Promise<unknown>>();

  constructor(store: Store) {
    this.#store = store;
    this.#messages = store.keyspace<string>(OFFLINE_KEYSPACE);
    this.#meta = store.keyspace<OfflineMeta>(OFFLINE_META_KEYSPACE);
  }

  /**
   * Appends a message to the user's queue unless it already holds `limit`
   * messages (then resolves false). Resolves once the write is on disk.
   */
  push(user: string, xml: string, limit: number): Promise<boolean> {
    checkUser(user);
    return this.#withLock(user, async () => {
      const meta = (await this.#meta.get(user)) ?? { next: 0, count: 0 };
      if (meta.count >= limit) return false;
      const key = user + '/' + String(meta.next).padStart(SEQ_DIGITS, '0');
      await this.#store.batch([
        this.#messages.putOp(key, xml),
        this.#meta.putOp(user, { next: meta.next + 1, count: meta.count + 1 }),
      ]);
      return true;
    });
  }

  async count(user: string): Promise<number> {
    checkUser(user);
    return (await this.#meta.get(user))?.count ?? 0;
  }

  /** The user's queue, oldest first. */
  async list(user: string): Promise<StoredMessage[]> {
    checkUser(user);
    const out: StoredMessage[] = [];
    for await (const [key, xml] of this.#messages.entries(user + '/')) out.push({ key, xml });
    return out;
  }

  /**
   * Hands the queue to `deliver`, which returns the keys it actually handed
   * over; those are then deleted (fsync'ed). Runs with the queue locked, so two
   * resources coming online at once cannot both get the same messages.
   * Resolves with the number of messages removed.
   */
  drain(user: string, deliver: (messages: StoredMessage[]) => string[] | Promise<string[]>): Promise<number> {
    checkUser(user);
    return this.#withLock(user, async () => {
      const messages = await this.list(user);
      if (messages.length === 0) return 0;
      const done = new Set(await deliver(messages));
      const keys = messages.map((m) => m.key).filter((k) => done.has(k));
      if (keys.length === 0) return 0;
      const left = messages.length - keys.length;
      const meta = (await this.#meta.get(user)) ?? { next: 0, count: messages.length };
      await this.#store.batch([
        ...keys.map((k) => this.#messages.delOp(k)),
        // An empty queue leaves nothing behind; numbering may restart from zero.
        left === 0 ? this.#meta.delOp(user) : this.#meta.putOp(user, { next: meta.next, count: left }),
      ]);
      return keys.length;
    });
  }

  /** Deletes the user's whole queue (account deletion); returns how many messages. */
  clear(user: string): Promise<number> {
    checkUser(user);
    return this.#withLock(user, async () => {
      const keys = await this.#messages.keys(user + '/');
      await this.#store.batch([...keys.map((k) => this.#messages.delOp(k)), this.#meta.delOp(user)]);
      return keys.length;
    });
  }

  async #withLock<T>(user: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#locks.get(user) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.#locks.set(user, tail);
    try {
      return await run;
    } finally {
      if (this.#locks.get(user) === tail) this.#locks.delete(user);
    }
  }
}

function checkUser(user: string): void {
  // Misuse, not a client error: an empty name would address every queue.
  if (typeof user !== 'string' || user === '' || user.includes('/')) throw new TypeError('user must be a prepared localpart');
}
