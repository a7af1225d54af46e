// This node's LevelDB cache of the LDAP directory: what a search found about a
// user (DN, profile attributes, groups, SCRAM verifiers held by the directory),
// "no such user" (negative entries), and, when the operator allows it
// (--ldap-scram-cache), the SCRAM verifier derived at the user's last
// successful PLAIN login. Local keyspaces: never replicated in a pool (each
// node asks the shared directory itself), and not user data: `imnode cache
// flush` may drop them at any time. Entries carry the time they were written;
// the directory decides what is fresh (TTLs) and may use stale ones while the
// server is unreachable.
import type { Store, Keyspace } from '../db.ts';
import type { StoredCredentials } from '../../xmpp/scram.ts';
import type { DirectoryProfile } from '../directory.ts';

export const LDAP_USERS_KEYSPACE = 'ldap-users';
export const LDAP_VERIFIERS_KEYSPACE = 'ldap-verifiers';

export interface CachedUser {
  kind: 'user';
  dn: string;
  profile: DirectoryProfile;
  /** Group names; null when groups are not looked up. */
  groups: string[] | null;
  /** Members (prepared localparts) of each of those groups. */
  members?: Record<string, string[]>;
  /** RFC 5803 verifiers read from the entry (--ldap-scram-verifiers); absent otherwise. */
  scram?: Partial<StoredCredentials>;
  /** ms since the epoch. */
  at: number;
}

export interface CachedMissing {
  kind: 'none';
  at: number;
}

export type CacheEntry = CachedUser | CachedMissing;

export interface CachedVerifier {
  creds: StoredCredentials;
  at: number;
}

// Cache writes are not acknowledged to anyone: losing the last ones in a crash costs a search.
const NO_SYNC = { sync: false };

export class LdapCache {
  readonly #users: Keyspace<CacheEntry>;
  readonly #verifiers: Keyspace<CachedVerifier>;

  constructor(store: Store) {
    this.#users = store.keyspace<CacheEntry>(LDAP_USERS_KEYSPACE);
    this.#verifiers = store.keyspace<CachedVerifier>(LDAP_VERIFIERS_KEYSPACE);
  }

  get(username: string): Promise<CacheEntry | undefined> {
    return this.#users.get(username);
  }

  put(username: string, entry: CacheEntry): Promise<void> {
    return this.#users.put(username, entry, NO_SYNC);
  }

  getVerifier(username: string): Promise<CachedVerifier | undefined> {
    return this.#verifiers.get(username);
  }

  putVerifier(username: string, creds: StoredCredentials, at: number): Promise<void> {
    return this.#verifiers.put(username, { creds, at }, NO_SYNC);
  }

  delVerifier(username: string): Promise<void> {
    return this.#verifiers.del(username, NO_SYNC);
  }

  /** Drops one user's entries, or every entry; returns how many were dropped. */
  async flush(username?: string): Promise<number> {
    if (username === undefined) return (await this.#users.clear()) + (await this.#verifiers.clear());
    let n = 0;
    if ((await this.#users.get(username)) !== undefined) {
      await this.#users.del(username);
      n++;
    }
    if ((await this.#verifiers.get(username)) !== undefined) {
      await this.#verifiers.del(username);
      n++;
    }
    return n;
  }

  /**
   * Deletes "no such user" entries older than negativeTtlMs: names that do not
   * exist are not bounded by the directory (anyone can send to random names), so
   * they must not pile up. Returns how many went.
   */
  async sweep(now: number, negativeTtlMs: number): Promise<number> {
    const old: string[] = [];
    for await (const [key, e] of this.#users.entries()) {
      if (e.kind === 'none' && now - e.at >= negativeTtlMs) old.push(key);
    }
    if (old.length) await this.#users.store.batch(old.map((k) => this.#users.delOp(k)), NO_SYNC);
    return old.length;
  }

  /** Entries per keyspace (status, tests). */
  async count(): Promise<{ users: number; verifiers: number }> {
    return { users: (await this.#users.keys()).length, verifiers: (await this.#verifiers.keys()).length };
  }
}
