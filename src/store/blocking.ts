// Blocklists (XEP-0191) by account: one key per blocked JID ("alice/romeo@example.net"),
// so that a block or unblock of many JIDs is one atomic batch and needs no
// read-modify-write of a whole list. Localparts cannot contain '/', so the
// account prefix is unambiguous. Kept in a KV keyspace (src/store/kv.ts):
// plain LevelDB on one node, replicated in a pool without LDAP, where blocks
// made on two nodes at once both survive (they are different keys) and
// onRemoteChange lets the in-memory lists drop what another node changed.
import type { Store } from './db.ts';
import { kvProvider, type KV, type KVProvider } from './kv.ts';

export const BLOCKLIST_KEYSPACE = 'blocklist';

export class BlocklistStore {
  readonly #kv: KV<true>;

  /** A Store means its plain LevelDB keyspaces. */
  constructor(src: Store | KVProvider) {
    this.#kv = kvProvider(src).kv<true>(BLOCKLIST_KEYSPACE);
  }

  /** The blocked JIDs of an account, as stored (prepared JID strings). */
  async list(username: string): Promise<string[]> {
    const prefix = username + '/';
    return (await this.#kv.keys(prefix)).map((k) => k.slice(prefix.length));
  }

  /** Resolves once the whole change is on disk. */
  async add(username: string, jids: readonly string[]): Promise<void> {
    if (jids.length) await this.#kv.batch(jids.map((j) => ({ type: 'put', key: `${username}/${j}`, value: true })));
  }

  async remove(username: string, jids: readonly string[]): Promise<void> {
    if (jids.length) await this.#kv.batch(jids.map((j) => ({ type: 'del', key: `${username}/${j}` })));
  }

  /** Removes every entry of the account in one batch; returns what was there. */
  async clear(username: string): Promise<string[]> {
    const jids = await this.list(username);
    await this.remove(username, jids);
    return jids;
  }

  /** Calls fn(username) when another node changed that account's list. Returns the unsubscribe function. */
  onRemoteChange(fn: (username: string) => void): () => void {
    return this.#kv.onChange((key, origin) => {
      const slash = key.indexOf('/');
      if (origin === 'remote' && slash > 0) fn(key.slice(0, slash));
    });
  }
}
