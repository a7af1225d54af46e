// The user directory: who the accounts are and how to check their passwords.
// The embedded implementation keeps accounts in LevelDB as SCRAM keys only
// (RFC 5802 §3, RFC 7677), never the password, so that SCRAM logins work and a copy
// of the database does not reveal passwords. An LDAP directory implements the same
// interface in another file.
//
// The accounts live in a KV keyspace (src/store/kv.ts): plain LevelDB on one
// node, replicated to every node in a pool without LDAP, so an account made on
// one node logs in on any other. Two nodes registering one name at the same
// moment would both succeed locally and the last writer would win silently; so
// in a pool, create() writes, waits the provider's settle time and reads back:
// only the registration whose record survived succeeds, the other gets
// UserExistsError (XEP-0077 conflict). Exactly one wins while gossip arrives
// within the settle time; under a partition both may "succeed" and the later
// write wins when it heals.
import { KeyedLock } from './keyed-lock.ts';
import { StanzaError } from '../xmpp/errors.ts';
import type { Store } from './db.ts';
import { kvProvider, type KV, type KVProvider } from './kv.ts';
import {
  DEFAULT_ITERATIONS, deriveCredentials, verifyPassword as verifyScramPassword,
  type StoredCredentials,
} from '../xmpp/scram.ts';

/** Usernames are prepared localparts (RFC 7622 §3.3); the caller prepares them. */
export interface UserDirectory {
  /** 'embedded', 'ldap', ... */
  readonly kind: string;
  exists(username: string): Promise<boolean>;
  /** null for an unknown user, or for a directory that holds no SCRAM keys. */
  getCredentials(username: string): Promise<StoredCredentials | null>;
  /** false for an unknown user. */
  verifyPassword(username: string, password: string): Promise<boolean>;
  /** Throws UserExistsError. */
  create(username: string, password: string): Promise<void>;
  /** Throws UnknownUserError. */
  setPassword(username: string, password: string): Promise<void>;
  /** Throws UnknownUserError. */
  delete(username: string): Promise<void>;
  list(): Promise<string[]>;
  // Optional parts, for directories other than the embedded one (LDAP):
  /** false when getCredentials never returns keys (SCRAM is then not offered). Default true. */
  readonly scram?: boolean;
  /** false when create, setPassword and delete throw ReadOnlyDirectoryError. Default true. */
  readonly writable?: boolean;
  /** Profile attributes the directory keeps (vCard); null for an unknown user. */
  profile?(username: string): Promise<DirectoryProfile | null>;
  /** Names of the groups the user is in; [] for an unknown user. */
  groups?(username: string): Promise<string[]>;
  /** The user's groups with their members (prepared localparts), for shared roster groups. */
  sharedGroups?(username: string): Promise<SharedGroup[]>;
  /** Drops cached directory data of one user or of all; returns how many entries went. */
  flushCache?(username?: string): Promise<number>;
  /** Counters for the status page and the benchmark. */
  stats?(): object;
  start?(): Promise<void>;
  stop?(): Promise<void>;
}

/** What a directory may know about a user besides the password. */
export interface DirectoryProfile {
  /** Display name (vCard FN). */
  name?: string;
  email?: string;
  /** JPEG, base64. */
  photo?: string;
}

export interface SharedGroup {
  name: string;
  /** Prepared localparts, the user included. */
  members: string[];
}

/**
 * The directory is managed elsewhere (LDAP): accounts are not created or changed
 * here. A StanzaError, so that in-band password changes and removals (XEP-0077
 * §3.2, §3.3) are refused with not-allowed rather than an internal error.
 */
export class ReadOnlyDirectoryError extends StanzaError {
  constructor(message = 'the user directory is read-only (LDAP): manage accounts in the directory') {
    super('not-allowed', message);
    this.name = 'ReadOnlyDirectoryError';
  }
}

export class UserExistsError extends Error {
  readonly username: string;
  constructor(username: string) {
    super(`user already exists: ${username}`);
    this.name = 'UserExistsError';
    this.username = username;
  }
}

export class UnknownUserError extends Error {
  readonly username: string;
  constructor(username: string) {
    super(`unknown user: ${username}`);
    this.name = 'UnknownUserError';
    this.username = username;
  }
}

export interface AccountRecord {
  creds: StoredCredentials;
  /** ms since the epoch */
  created: number;
}

export const ACCOUNTS_KEYSPACE = 'accounts';

export class EmbeddedDirectory implements UserDirectory {
  readonly kind = 'embedded';
  readonly #accounts: KV<AccountRecord>;
  readonly #iterations: number;
  readonly #settleMs: number;
  // Per-name queue of mutations: LevelDB has no compare-and-set, so the check for an
  // existing account and the write must not interleave with another write of that name.
  readonly #locks = new KeyedLock();

  /** A Store means its plain LevelDB keyspaces (one node, the CLI). */
  constructor(src: Store | KVProvider, opts: { iterations?: number } = {}) {
    const kv = kvProvider(src);
    this.#accounts = kv.kv<AccountRecord>(ACCOUNTS_KEYSPACE);
    this.#iterations = opts.iterations ?? DEFAULT_ITERATIONS;
    this.#settleMs = kv.settleMs;
  }

  async exists(username: string): Promise<boolean> {
    return (await this.#accounts.get(checkName(username))) !== undefined;
  }

  async getCredentials(username: string): Promise<StoredCredentials | null> {
    return (await this.#accounts.get(checkName(username)))?.creds ?? null;
  }

  async verifyPassword(username: string, password: string): Promise<boolean> {
    const rec = await this.#accounts.get(checkName(username));
    if (!rec) return false;
    return verifyScramPassword(rec.creds, password);
  }

  async create(username: string, password: string): Promise<void> {
    checkName(username);
    // Derived outside the lock: PBKDF2 is the slow part and needs no exclusivity.
    const creds = await deriveCredentials(password, this.#iterations);
    await this.#locks.run(username, async () => {
      if ((await this.#accounts.get(username)) !== undefined) throw new UserExistsError(username);
      await this.#accounts.put(username, { creds, created: Date.now() });
      if (this.#settleMs > 0) {
        await new Promise((r) => setTimeout(r, this.#settleMs));
        const now = await this.#accounts.get(username);
        // The salt is random per derivation: another node's record has another one.
        if (now && now.creds['SHA-256']?.salt !== creds['SHA-256'].salt) throw new UserExistsError(username);
      }
    });
  }

  async setPassword(username: string, password: string): Promise<void> {
    checkName(username);
    const creds = await deriveCredentials(password, this.#iterations);
    await this.#locks.run(username, async () => {
      const rec = await this.#accounts.get(username);
      if (!rec) throw new UnknownUserError(username);
      await this.#accounts.put(username, { ...rec, creds });
    });
  }

  async delete(username: string): Promise<void> {
    checkName(username);
    await this.#locks.run(username, async () => {
      if ((await this.#accounts.get(username)) === undefined) throw new UnknownUserError(username);
      await this.#accounts.del(username);
    });
  }

  list(): Promise<string[]> {
    return this.#accounts.keys();
  }
}

function checkName(username: string): string {
  // Misuse, not a client error: callers prepare names, and an empty one would address the whole keyspace.
  if (typeof username !== 'string' || username === '') throw new TypeError('username must be a non-empty prepared localpart');
  return username;
}
