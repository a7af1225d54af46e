// Blocklists (XEP-0191) by account: one key per blocked JID ("alice/romeo@example.net"),
// so that a block or unblock of many JIDs is one atomic batch and needs no
// read-modify-write of a whole list. Localparts cannot contain '/', so the
// account prefix is unambiguous.
import type { Keyspace, Store } from './db.ts';

export const BLOCKLIST_KEYSPACE = 'blocklist';

export class BlocklistStore {
  readonly #store: Store;
  readonly #ks: Keyspace<true>;

  constructor(store: Store) {
    this.#store = store;
    this.#ks = store.keyspace<true>(BLOCKLIST_KEYSPACE);
  }

  /** The blocked JIDs of an account, as stored (prepared JID strings). */
  async list(username: string): Promise<string[]> {
    const prefix = username + '/';
    return (await this.#ks.keys(prefix)).map((k) => k.slice(prefix.length));
  }

  /** Resolves once the whole change is on disk. */
  async add(username: string, jids: readonly string[]): Promise<void> {
    if (jids.length) await this.#store.batch(jids.map((j) => this.#ks.putOp(`${username}/${j}`, true)));
  }

  async remove(username: string, jids: readonly string[]): Promise<void> {
    if (jids.length) await this.#store.batch(jids.map((j) => this.#ks.delOp(`${username}/${j}`)));
  }

  /** Removes every entry of the account in one batch; returns what was there. */
  async clear(username: string): Promise<string[]> {
    const jids = await this.list(username);
    await this.remove(username, jids);
    return jids;
  }
}
