// The LDAP user directory (ldapts): users are entries found with the operator's
// filter under the base DN; a password is checked by binding as the user's DN
// (RFC 4513 §5.1.3 simple bind), never by reading it. SCRAM works only with
// verifiers: RFC 5803 authPassword values read from the entry
// (--ldap-scram-verifiers), or, if the operator allows it (--ldap-scram-cache),
// the verifier derived from the password at the user's last successful PLAIN
// login on this node.
//
// Every answer goes through this node's LevelDB cache (cache.ts): a user found
// is searched again after --ldap-cache-ttl, an unknown one after
// --ldap-negative-cache-ttl, so a login with a warm cache costs one bind and no
// search (none at all with a cached SCRAM verifier). Concurrent lookups of one
// user share one search, concurrent logins with one password one bind.
//
// When the directory cannot be reached: users in the cache are still known
// (stale entries included), so everyone logged in keeps being served; a login
// needs the bind, so it fails with LdapUnavailableError (the SASL layer says
// temporary-auth-failure), except with a cached verifier; nothing waits longer
// than --ldap-timeout (connection-pool.ts).
import { createHash } from 'node:crypto';
import { InvalidCredentialsError, NoSuchObjectError, type Client, type Entry } from 'ldapts';
import type { Logger } from '../../admin/log.ts';
import type { Store } from '../db.ts';
import { ReadOnlyDirectoryError, type DirectoryProfile, type SharedGroup, type UserDirectory } from '../directory.ts';
import { prepLocal } from '../../xmpp/jid.ts';
import {
  deriveCredentials, verifyPassword as verifyScramPassword,
  type ScramCredential, type ScramHash, type StoredCredentials,
} from '../../xmpp/scram.ts';
import { LdapCache, type CacheEntry, type CachedUser } from './cache.ts';
import { LdapConnectionPool, LdapUnavailableError } from './connection-pool.ts';
import { renderFilter } from './filter.ts';
import type { LdapConfig } from './options.ts';

export { LdapUnavailableError };

/** Photos larger than this are left out of the cache and the vCard (the default --max-vcard-size is 64 KiB too). */
const MAX_PHOTO_BYTES = 64 * 1024;
/** Members kept per group: a shared roster group larger than this is cut (and logged). */
export const MAX_GROUP_MEMBERS = 500;
const MEMBER_ATTRIBUTES = ['member', 'uniqueMember', 'memberUid'];
const SWEEP_EVERY_MS = 10 * 60_000;
const AUTH_PASSWORD = 'authPassword';

export interface LdapDirectoryOptions {
  config: LdapConfig;
  store: Store;
  log: Logger;
  /** The clock (tests move it). */
  now?: () => number;
}

export interface LdapStats {
  searches: number;
  binds: number;
  cacheHits: number;
  cacheMisses: number;
  /** Answers from expired entries while the directory was unreachable. */
  staleHits: number;
  /** Lookups or binds that failed because the directory could not be used. */
  unavailable: number;
  /** Logins checked against a cached verifier (SCRAM, or PLAIN during an outage). */
  verifierLogins: number;
  /** Open connections, search and bind pools together (each at most --ldap-pool-size). */
  connections: number;
  up: boolean;
}

export class LdapDirectory implements UserDirectory {
  readonly kind = 'ldap';
  readonly writable = false;
  readonly scram: boolean;
  readonly cache: LdapCache;
  readonly #c: LdapConfig;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #search: LdapConnectionPool;
  readonly #bind: LdapConnectionPool;
  readonly #lookups = new Map<string, Promise<CachedUser | null>>();
  readonly #binds = new Map<string, Promise<boolean>>();
  #sweeper: NodeJS.Timeout | null = null;
  readonly #stats = { searches: 0, binds: 0, cacheHits: 0, cacheMisses: 0, staleHits: 0, unavailable: 0, verifierLogins: 0 };

  constructor(opts: LdapDirectoryOptions) {
    const c = opts.config;
    this.#c = c;
    this.#log = opts.log;
    this.#now = opts.now ?? Date.now;
    this.cache = new LdapCache(opts.store);
    this.scram = c.scramVerifiers || c.scramCache;
    const common = {
      url: c.url, startTls: c.startTls, ca: c.ca, connectTimeoutMs: c.connectTimeoutMs, timeoutMs: c.timeoutMs,
      size: c.poolSize, retryMaxMs: c.retryMaxMs,
    };
    this.#search = new LdapConnectionPool({ ...common, name: 'search', exclusive: false, bindDn: c.bindDn, bindPassword: c.bindPassword, log: opts.log });
    this.#bind = new LdapConnectionPool({ ...common, name: 'bind', exclusive: true, log: opts.log });
  }

  /** Connects once; an unreachable directory is logged, not fatal (cached users still work). */
  async start(): Promise<void> {
    if (await this.#search.probe()) this.#log.info(`LDAP directory ${this.#c.url}, users under ${this.#c.baseDn}`);
    else this.#log.warn(`LDAP directory ${this.#c.url} not reachable at start; cached users only until it is`);
    await this.sweep();
    this.#sweeper = setInterval(() => void this.sweep(), SWEEP_EVERY_MS);
    this.#sweeper.unref();
  }

  async stop(): Promise<void> {
    if (this.#sweeper) clearInterval(this.#sweeper);
    await Promise.all([this.#search.stop(), this.#bind.stop()]);
  }

  /** Drops expired "no such user" entries (see LdapCache.sweep). */
  async sweep(): Promise<number> {
    try {
      return await this.cache.sweep(this.#now(), this.#c.negativeTtlMs);
    } catch (e) {
      this.#log.warn('LDAP cache sweep failed:', e);
      return 0;
    }
  }

  stats(): LdapStats {
    return {
      ...this.#stats,
      connections: this.#search.stats.connections + this.#bind.stats.connections,
      up: this.#search.up && this.#bind.up,
    };
  }

  flushCache(username?: string): Promise<number> {
    return this.cache.flush(username);
  }

  // ---- lookups ----------------------------------------------------------------------

  /** The user's entry (from the cache when fresh); null for an unknown user. Throws LdapUnavailableError. */
  async lookup(username: string): Promise<CachedUser | null> {
    checkName(username);
    const cached = await this.cache.get(username);
    const now = this.#now();
    if (cached && now - cached.at < this.#ttl(cached)) {
      this.#stats.cacheHits++;
      return cached.kind === 'user' ? cached : null;
    }
    this.#stats.cacheMisses++;
    let p = this.#lookups.get(username);
    if (!p) {
      p = this.#recheck(username).finally(() => this.#lookups.delete(username));
      this.#lookups.set(username, p);
    }
    try {
      return await p;
    } catch (e) {
      if (!(e instanceof LdapUnavailableError)) {
        // An LDAP error answer to the search (no such base DN, a bad filter): configuration, not load.
        this.#log.warn(`LDAP search for ${username} failed: ${(e as Error).name}: ${(e as Error).message}`);
        throw e;
      }
      this.#stats.unavailable++;
      // Stale rather than nothing: the people already logged in must keep being served.
      if (cached?.kind === 'user') {
        this.#stats.staleHits++;
        return cached;
      }
      throw e;
    }
  }

  /**
   * Inside the shared lookup, the cache once more: a lookup whose cache read
   * began before another one's search ended, and whose turn came after it,
   * finds that search's entry here instead of searching again.
   */
  async #recheck(username: string): Promise<CachedUser | null> {
    const again = await this.cache.get(username);
    if (again && this.#now() - again.at < this.#ttl(again)) return again.kind === 'user' ? again : null;
    return this.#fetch(username);
  }

  #ttl(e: CacheEntry): number {
    return e.kind === 'user' ? this.#c.cacheTtlMs : this.#c.negativeTtlMs;
  }

  async #fetch(username: string): Promise<CachedUser | null> {
    const c = this.#c;
    const a = c.attributes;
    const attributes = [a.uid, a.name, a.email, a.photo, ...(c.scramVerifiers ? [AUTH_PASSWORD] : [])];
    this.#stats.searches++;
    const { searchEntries } = await this.#search.run((client) => client.search(c.baseDn, {
      scope: 'sub',
      filter: renderFilter(c.userFilter, { u: username }),
      attributes,
      explicitBufferAttributes: [a.photo],
      // Two are enough to see that the filter is ambiguous.
      sizeLimit: 2,
      timeLimit: Math.ceil(c.timeoutMs / 1000),
    }));
    const matching = searchEntries.filter((e) => values(e, a.uid).some((v) => samePrepared(v, username)));
    let entry: CachedUser | null = null;
    let groups: { names: string[]; members: Record<string, string[]> } | null = null;
    if (matching.length === 1 && c.sharedRoster) groups = await this.#fetchGroups(username, matching[0].dn);
    if (matching.length > 1) {
      // Which one is meant cannot be known; picking one would let the wrong person in.
      this.#log.warn(`LDAP: ${matching.length} entries match user ${username} (${matching.map((e) => e.dn).join('; ')}); treated as unknown`);
    } else if (matching.length === 1) {
      const e = matching[0];
      entry = {
        kind: 'user',
        dn: e.dn,
        profile: profileOf(e, c),
        groups: groups?.names ?? null,
        ...(groups ? { members: groups.members } : {}),
        ...(c.scramVerifiers ? { scram: parseAuthPasswords(values(e, AUTH_PASSWORD)) } : {}),
        at: this.#now(),
      };
    }
    await this.cache.put(username, entry ?? { kind: 'none', at: this.#now() });
    return entry;
  }

  async #fetchGroups(username: string, dn: string): Promise<{ names: string[]; members: Record<string, string[]> }> {
    const c = this.#c;
    this.#stats.searches++;
    const { searchEntries } = await this.#search.run((client) => client.search(c.groupBaseDn, {
      scope: 'sub',
      filter: renderFilter(c.groupFilter, { u: username, d: dn }),
      attributes: [c.attributes.group, ...MEMBER_ATTRIBUTES],
      sizeLimit: 1000,
      timeLimit: Math.ceil(c.timeoutMs / 1000),
    }));
    const members: Record<string, string[]> = {};
    for (const e of searchEntries) {
      const name = values(e, c.attributes.group)[0];
      if (!name) continue;
      const set = new Set(members[name] ?? []);
      for (const m of [...values(e, 'member'), ...values(e, 'uniqueMember')]) {
        const local = localpartOfDn(m, c.attributes.uid);
        if (local) set.add(local);
      }
      for (const m of values(e, 'memberUid')) {
        try { set.add(prepLocal(m)); } catch { /* not a localpart */ }
      }
      let list = [...set].sort();
      if (list.length > MAX_GROUP_MEMBERS) {
        this.#log.warn(`LDAP group ${name} has ${list.length} members; only ${MAX_GROUP_MEMBERS} are shared in rosters`);
        list = list.slice(0, MAX_GROUP_MEMBERS);
      }
      members[name] = list;
    }
    return { names: Object.keys(members).sort(), members };
  }

  async exists(username: string): Promise<boolean> {
    return (await this.lookup(username)) !== null;
  }

  async profile(username: string): Promise<DirectoryProfile | null> {
    return (await this.lookup(username))?.profile ?? null;
  }

  async groups(username: string): Promise<string[]> {
    return (await this.lookup(username))?.groups ?? [];
  }

  async sharedGroups(username: string): Promise<SharedGroup[]> {
    const members = (await this.lookup(username))?.members ?? {};
    return Object.keys(members).sort().map((name) => ({ name, members: members[name] }));
  }

  /** Every user the filter can find (`imnode user list`): the template with %u as a wildcard. */
  async list(): Promise<string[]> {
    const c = this.#c;
    const filter = c.userFilter.trim().replace(/%([%u])/g, (_, p: string) => (p === '%' ? '%' : '*'));
    this.#stats.searches++;
    const names = new Set<string>();
    await this.#search.run(async (client: Client) => {
      for await (const page of client.searchPaginated(c.baseDn, { scope: 'sub', filter, attributes: [c.attributes.uid], paged: { pageSize: 500 } })) {
        for (const e of page.searchEntries) {
          for (const v of values(e, c.attributes.uid)) {
            try { names.add(prepLocal(v)); } catch { /* not a possible localpart: not an XMPP user */ }
          }
        }
      }
    });
    return [...names].sort();
  }

  // ---- passwords --------------------------------------------------------------------

  async getCredentials(username: string): Promise<StoredCredentials | null> {
    if (!this.scram) return null;
    const user = await this.lookup(username);
    if (!user) return null;
    if (user.scram && Object.keys(user.scram).length) return user.scram as StoredCredentials;
    const v = await this.#verifier(username);
    if (v) this.#stats.verifierLogins++;
    return v;
  }

  async #verifier(username: string): Promise<StoredCredentials | null> {
    if (!this.#c.scramCache) return null;
    const v = await this.cache.getVerifier(username);
    if (!v || this.#now() - v.at >= this.#c.scramCacheTtlMs) return null;
    return v.creds;
  }

  async verifyPassword(username: string, password: string): Promise<boolean> {
    // RFC 4513 §5.1.2: a simple bind with an empty password is an unauthenticated bind, which succeeds.
    if (password === '') return false;
    let user: CachedUser | null;
    try {
      user = await this.lookup(username);
    } catch (e) {
      if (e instanceof LdapUnavailableError) return this.#offline(username, password, e);
      throw e;
    }
    if (!user) return false;
    const key = `${username}\0${createHash('sha256').update(password).digest('base64')}`;
    let p = this.#binds.get(key);
    if (!p) {
      p = this.#checkBind(username, user, password).finally(() => this.#binds.delete(key));
      this.#binds.set(key, p);
    }
    try {
      return await p;
    } catch (e) {
      if (e instanceof LdapUnavailableError) return this.#offline(username, password, e);
      throw e;
    }
  }

  async #checkBind(username: string, user: CachedUser, password: string): Promise<boolean> {
    this.#stats.binds++;
    let ok: boolean;
    try {
      await this.#bind.run((client) => client.bind(user.dn, password));
      ok = true;
    } catch (e) {
      if (e instanceof NoSuchObjectError) {
        // The cached DN is gone (entry moved or deleted): search afresh next time.
        await this.cache.flush(username);
        return false;
      }
      if (!(e instanceof InvalidCredentialsError)) {
        if (e instanceof LdapUnavailableError) this.#stats.unavailable++;
        // Neither yes nor no (a locked account, a directory that wants TLS for binds...):
        // the login fails as temporary, and the operator needs to know why.
        else this.#log.warn(`LDAP bind as ${user.dn} refused: ${(e as Error).name}: ${(e as Error).message}`);
        throw e;
      }
      ok = false;
    }
    if (this.#c.scramCache) await this.#keepVerifier(username, password, ok);
    return ok;
  }

  /** --ldap-scram-cache: the verifier follows what the directory said about this password. */
  async #keepVerifier(username: string, password: string, ok: boolean): Promise<void> {
    const cur = await this.cache.getVerifier(username);
    const matches = cur ? await verifyScramPassword(cur.creds, password) : false;
    if (ok) {
      // Derived only when the password is new to the cache: PBKDF2 on every login would cost more than the bind.
      if (!matches) await this.cache.putVerifier(username, await deriveCredentials(password), this.#now());
      else if (this.#now() - cur!.at > this.#c.scramCacheTtlMs / 2) await this.cache.putVerifier(username, cur!.creds, this.#now());
    } else if (matches) {
      // The directory refuses the password the verifier was made from: it was changed there.
      await this.cache.delVerifier(username);
    }
  }

  /** The directory is unreachable: a cached verifier may still check the password. */
  async #offline(username: string, password: string, e: LdapUnavailableError): Promise<boolean> {
    const v = await this.#verifier(username);
    if (!v) throw e;
    this.#stats.verifierLogins++;
    return verifyScramPassword(v, password);
  }

  // ---- managed in the directory -----------------------------------------------------

  async create(_username: string, _password: string): Promise<void> {
    throw new ReadOnlyDirectoryError();
  }

  async setPassword(_username: string, _password: string): Promise<void> {
    throw new ReadOnlyDirectoryError();
  }

  async delete(_username: string): Promise<void> {
    throw new ReadOnlyDirectoryError();
  }
}

function checkName(username: string): void {
  if (typeof username !== 'string' || username === '') throw new TypeError('username must be a non-empty prepared localpart');
}

function values(e: Entry, attr: string): string[] {
  // Attribute names are case-insensitive (RFC 4512 §2.5); ldapts keeps the server's spelling.
  const key = Object.keys(e).find((k) => k.toLowerCase() === attr.toLowerCase());
  if (key === undefined) return [];
  const v = e[key];
  const list = Array.isArray(v) ? v : [v];
  return list.map((x) => (Buffer.isBuffer(x) ? x.toString('utf8') : String(x)));
}

function buffers(e: Entry, attr: string): Buffer[] {
  const key = Object.keys(e).find((k) => k.toLowerCase() === attr.toLowerCase());
  if (key === undefined) return [];
  const v = e[key];
  const list = Array.isArray(v) ? v : [v];
  return list.map((x) => (Buffer.isBuffer(x) ? x : Buffer.from(String(x), 'utf8')));
}

/**
 * The localpart a member DN names when its first RDN is the uid attribute
 * ("uid=bob,ou=people,..."; RFC 4514 §2.4 escapes undone); null otherwise, since
 * finding it would take a search per member.
 */
export function localpartOfDn(dn: string, uidAttr: string): string | null {
  let i = 0;
  while (i < dn.length && dn[i] !== ',' && dn[i] !== '+') i += dn[i] === '\\' ? 2 : 1;
  const rdn = dn.slice(0, i);
  const eq = rdn.indexOf('=');
  if (eq < 0 || rdn.slice(0, eq).trim().toLowerCase() !== uidAttr.toLowerCase()) return null;
  const raw = rdn.slice(eq + 1).trim();
  // Hex escapes are UTF-8 bytes; everything else is text already (by code point, not UTF-16 unit).
  const chars = Array.from(raw);
  const bytes: Buffer[] = [];
  for (let j = 0; j < chars.length; j++) {
    const hex = chars.slice(j + 1, j + 3).join('');
    if (chars[j] === '\\' && /^[0-9a-fA-F]{2}$/.test(hex)) {
      bytes.push(Buffer.from([parseInt(hex, 16)]));
      j += 2;
    } else if (chars[j] === '\\' && j + 1 < chars.length) {
      bytes.push(Buffer.from(chars[++j], 'utf8'));
    } else {
      bytes.push(Buffer.from(chars[j], 'utf8'));
    }
  }
  try {
    return prepLocal(Buffer.concat(bytes).toString('utf8'));
  } catch {
    return null;
  }
}

function samePrepared(value: string, username: string): boolean {
  try {
    return prepLocal(value) === username;
  } catch {
    return false;
  }
}

function profileOf(e: Entry, c: LdapConfig): DirectoryProfile {
  const out: DirectoryProfile = {};
  const name = values(e, c.attributes.name)[0];
  const email = values(e, c.attributes.email)[0];
  const photo = buffers(e, c.attributes.photo)[0];
  if (name) out.name = name;
  if (email) out.email = email;
  if (photo && photo.length > 0 && photo.length <= MAX_PHOTO_BYTES) out.photo = photo.toString('base64');
  return out;
}

const SCHEMES: Record<string, ScramHash> = { 'SCRAM-SHA-1': 'SHA-1', 'SCRAM-SHA-256': 'SHA-256' };
const B64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * RFC 5803 §3: authPassword = scheme "$" iterations ":" salt "$" storedKey ":" serverKey
 * (RFC 3112 §3 allows spaces around the "$"). Values of other schemes, or malformed
 * ones, are ignored: the user then has no verifier for that hash.
 */
export function parseAuthPasswords(list: readonly string[]): Partial<StoredCredentials> {
  const out: Partial<StoredCredentials> = {};
  for (const raw of list) {
    const parts = raw.split('$').map((s) => s.trim());
    if (parts.length !== 3) continue;
    const hash = SCHEMES[parts[0].toUpperCase()];
    if (!hash) continue;
    const [iter, salt] = parts[1].split(':');
    const [storedKey, serverKey] = parts[2].split(':');
    const iterations = Number(iter);
    if (!Number.isInteger(iterations) || iterations < 1 || iterations > 10_000_000) continue;
    if (![salt, storedKey, serverKey].every((s) => s !== undefined && B64.test(s))) continue;
    const cred: ScramCredential = { salt, iterations, storedKey, serverKey };
    out[hash] = cred;
  }
  return out;
}
