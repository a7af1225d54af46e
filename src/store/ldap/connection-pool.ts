// A bounded pool of connections to one LDAP server (ldapts clients), with the
// rules that keep an outage of the directory from hurting the XMPP server:
//  - every operation, the wait for a free connection included, ends within
//    timeoutMs (LdapUnavailableError), whatever the server or network does;
//  - a connection that fails (closed, timed out) is dropped, not reused;
//  - while the server cannot be reached, operations fail at once instead of
//    each one waiting for a connect timeout, and a background attempt
//    reconnects with exponential backoff (250 ms doubling up to retryMaxMs).
// LDAP result codes (invalid credentials, no such object) are answers, not
// failures: they go back to the caller and the connection stays.
//
// Two ways to use a connection: shared (searches of the service account: RFC
// 4511 §4.1.1 lets several operations be outstanding on one connection) or
// exclusive (binds that check a user's password change the connection's
// identity, so nothing else may use it meanwhile).
import type * as tls from 'node:tls';
import { Client, ResultCodeError } from 'ldapts';
import type { Logger } from '../../admin/log.ts';

/** The directory cannot be used now (unreachable, too slow, every connection busy). */
export class LdapUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'LdapUnavailableError';
  }
}

export interface LdapPoolOptions {
  /** For logs: 'search', 'bind'. */
  name: string;
  url: string;
  startTls: boolean;
  /** PEM CA certificate(s) for ldaps:// and StartTLS; the system CAs otherwise. */
  ca?: string;
  /** Service account bound on every new connection; anonymous when absent. */
  bindDn?: string;
  bindPassword?: string;
  connectTimeoutMs: number;
  timeoutMs: number;
  size: number;
  /** One operation at a time per connection. */
  exclusive: boolean;
  retryMaxMs: number;
  log: Logger;
}

const RETRY_MIN_MS = 250;
/** Shared connections: operations outstanding at once on one of them. */
const MAX_SHARED = 16;

interface Conn {
  client: Client;
  busy: number;
}

interface Waiter {
  resolve(c: Conn): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
  deadline: number;
}

export interface LdapPoolStats {
  connections: number;
  connects: number;
  connectFailures: number;
  operations: number;
  failures: number;
  up: boolean;
}

export class LdapConnectionPool {
  readonly #o: LdapPoolOptions;
  readonly #conns = new Set<Conn>();
  /** Connections being opened, counted against the size. */
  #opening = 0;
  readonly #waiters: Waiter[] = [];
  #failures = 0;
  #downUntil = 0;
  #lastError = '';
  #retryTimer: NodeJS.Timeout | null = null;
  #stopped = false;
  readonly #stats = { connects: 0, connectFailures: 0, operations: 0, failures: 0 };

  constructor(opts: LdapPoolOptions) {
    this.#o = opts;
  }

  get stats(): LdapPoolStats {
    return { connections: this.#conns.size, ...this.#stats, up: this.#failures === 0 };
  }

  /** false while the server could not be reached at the last attempt. */
  get up(): boolean {
    return this.#failures === 0;
  }

  /**
   * Runs fn on a connection. Rejects with LdapUnavailableError when no connection
   * can be had or the operation does not end in time; with fn's own error for an
   * LDAP result code.
   */
  async run<T>(fn: (client: Client) => Promise<T>): Promise<T> {
    if (this.#stopped) throw new LdapUnavailableError('the LDAP connection pool is stopped');
    const deadline = Date.now() + this.#o.timeoutMs;
    const conn = await this.#acquire(deadline);
    this.#stats.operations++;
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new LdapUnavailableError(`no answer from ${this.#o.url} within ${this.#o.timeoutMs} ms`)), Math.max(1, deadline - Date.now()));
    });
    try {
      return await Promise.race([fn(conn.client), expired]);
    } catch (e) {
      if (e instanceof ResultCodeError) throw e;
      // Anything else (closed socket, timeout, protocol error) leaves the connection unusable.
      this.#stats.failures++;
      this.#drop(conn);
      if (e instanceof LdapUnavailableError) throw e;
      throw new LdapUnavailableError(`LDAP operation failed: ${(e as Error).message}`, { cause: e });
    } finally {
      clearTimeout(timer);
      this.#release(conn);
    }
  }

  /** Opens one connection now (start-up check); false, with the reason logged, when that fails. */
  async probe(): Promise<boolean> {
    try {
      const conn = await this.#open(Date.now() + this.#o.timeoutMs);
      this.#release(conn);
      return true;
    } catch {
      return false;
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    for (const w of this.#waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new LdapUnavailableError('the LDAP connection pool is stopped'));
    }
    // A hung server must not hold up the shutdown: unbind is a courtesy.
    await Promise.race([
      Promise.all([...this.#conns].map((c) => {
        this.#conns.delete(c);
        return c.client.unbind().catch(() => undefined);
      })),
      new Promise((r) => setTimeout(r, 1000).unref()),
    ]);
  }

  // ---- connections ------------------------------------------------------------------

  #usable(c: Conn): boolean {
    // ldapts reconnects a closed client by itself on the next operation, unbound and
    // without StartTLS: such a client must never be used again.
    return c.client.isConnected && (this.#o.bindDn === undefined || c.client.isBound);
  }

  #pick(): Conn | null {
    let best: Conn | null = null;
    for (const c of this.#conns) {
      if (!this.#usable(c)) {
        if (c.busy === 0) this.#drop(c);
        continue;
      }
      const limit = this.#o.exclusive ? 1 : MAX_SHARED;
      if (c.busy < limit && (!best || c.busy < best.busy)) best = c;
    }
    return best;
  }

  async #acquire(deadline: number): Promise<Conn> {
    const free = this.#pick();
    // Shared connections: a new one only when the others are loaded, so a few stay busy rather than many idle.
    if (free && (this.#o.exclusive || free.busy === 0 || this.#conns.size + this.#opening >= this.#o.size)) {
      free.busy++;
      return free;
    }
    if (this.#conns.size + this.#opening < this.#o.size) {
      if (Date.now() < this.#downUntil) {
        if (free) {
          free.busy++;
          return free;
        }
        throw new LdapUnavailableError(`the LDAP server ${this.#o.url} is unreachable (${this.#lastError}); retrying in the background`);
      }
      try {
        return await this.#open(deadline);
      } catch (e) {
        // A working connection, if loaded, still beats none.
        if (!free || !this.#usable(free)) throw e;
        free.busy++;
        return free;
      }
    }
    return new Promise<Conn>((resolve, reject) => {
      const w: Waiter = {
        resolve, reject, deadline,
        timer: setTimeout(() => {
          const i = this.#waiters.indexOf(w);
          if (i >= 0) this.#waiters.splice(i, 1);
          reject(new LdapUnavailableError(`no free LDAP connection within ${this.#o.timeoutMs} ms (${this.#o.size} ${this.#o.name} connections busy)`));
        }, Math.max(1, deadline - Date.now())),
      };
      this.#waiters.push(w);
    });
  }

  /** A new connection, bound as the service account, counted busy once. */
  async #open(deadline: number): Promise<Conn> {
    const o = this.#o;
    this.#opening++;
    const tlsOptions: tls.ConnectionOptions = o.ca ? { ca: o.ca } : {};
    const host = new URL(o.url).hostname;
    const servername = isIp(host) ? undefined : host;
    const client = new Client({
      url: o.url,
      connectTimeout: o.connectTimeoutMs,
      timeout: o.timeoutMs,
      // Only for ldaps://: ldapts also hands these to StartTLS's upgrade, where they break the handshake.
      ...(o.url.startsWith('ldaps:') ? { tlsOptions: { ...tlsOptions, servername } } : {}),
    });
    let timer: NodeJS.Timeout | undefined;
    const budget = Math.max(1, deadline - Date.now());
    try {
      const setup = (async () => {
        if (o.startTls) await client.startTLS({ ...tlsOptions, servername });
        if (o.bindDn !== undefined) await client.bind(o.bindDn, o.bindPassword ?? '');
        // An anonymous plain connection is opened by its first operation; open it now so that
        // a dead server shows here, not in the middle of a login. Any LDAP answer will do: a
        // directory that refuses anonymous reads of the root DSE is still reachable.
        else if (!o.startTls) {
          await client.search('', { scope: 'base', filter: '(objectClass=*)', attributes: ['1.1'], sizeLimit: 1 }).catch((e: unknown) => {
            if (!(e instanceof ResultCodeError)) throw e;
          });
        }
      })();
      await Promise.race([setup, new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no connection within ${budget} ms`)), budget);
      })]);
    } catch (e) {
      this.#opening--;
      client.unbind().catch(() => undefined);
      this.#failed(e);
      // A wrong service password is an answer, but no operation can work without the bind.
      throw new LdapUnavailableError(`cannot connect to ${o.url}: ${describe(e)}`, { cause: e });
    } finally {
      clearTimeout(timer);
    }
    this.#opening--;
    this.#stats.connects++;
    if (this.#failures > 0) o.log.info(`LDAP server ${o.url} reachable again (${o.name} connections)`);
    this.#failures = 0;
    this.#downUntil = 0;
    const conn: Conn = { client, busy: 1 };
    this.#conns.add(conn);
    if (this.#stopped) {
      this.#drop(conn);
      throw new LdapUnavailableError('the LDAP connection pool is stopped');
    }
    return conn;
  }

  #failed(e: unknown): void {
    this.#stats.connectFailures++;
    this.#failures++;
    this.#lastError = describe(e);
    const wait = Math.min(this.#o.retryMaxMs, RETRY_MIN_MS * 2 ** Math.min(this.#failures - 1, 20));
    this.#downUntil = Date.now() + wait;
    const msg = `LDAP server ${this.#o.url} unreachable (${this.#o.name} connections): ${this.#lastError}; next attempt in ${wait} ms`;
    if (this.#failures === 1) this.#o.log.warn(msg);
    else this.#o.log.debug(msg);
    this.#scheduleRetry(wait);
  }

  #scheduleRetry(wait: number): void {
    if (this.#retryTimer || this.#stopped) return;
    // A background attempt, so that the pool is connected again before the next login needs it.
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      if (this.#stopped || this.#failures === 0 || this.#conns.size + this.#opening >= this.#o.size) return;
      this.#open(Date.now() + this.#o.timeoutMs).then((c) => this.#release(c), () => undefined);
    }, wait);
    this.#retryTimer.unref();
  }

  #drop(conn: Conn): void {
    if (!this.#conns.delete(conn)) return;
    conn.client.unbind().catch(() => undefined);
  }

  #release(conn: Conn): void {
    conn.busy--;
    if (!this.#conns.has(conn)) {
      // Dropped: a waiter may open a new connection in its place.
      this.#wakeWithNew();
      return;
    }
    const w = this.#waiters.shift();
    if (!w) return;
    clearTimeout(w.timer);
    if (this.#usable(conn)) {
      conn.busy++;
      w.resolve(conn);
    } else {
      this.#drop(conn);
      this.#waiters.unshift(w);
      this.#wakeWithNew();
    }
  }

  #wakeWithNew(): void {
    if (!this.#waiters.length || this.#stopped) return;
    if (this.#conns.size + this.#opening >= this.#o.size) return;
    const w = this.#waiters.shift()!;
    clearTimeout(w.timer);
    if (Date.now() < this.#downUntil) {
      w.reject(new LdapUnavailableError(`the LDAP server ${this.#o.url} is unreachable (${this.#lastError})`));
      return;
    }
    this.#open(w.deadline).then(w.resolve, w.reject);
  }
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':') || host.startsWith('[');
}

function describe(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err?.code && typeof err.code === 'string') return `${err.code} ${err.message}`.trim();
  if (e instanceof ResultCodeError) return `${e.name} (${e.code}): ${e.message}`;
  return e instanceof Error ? e.message : String(e);
}
