// The local admin channel of a running node: HTTP/1.1 over a unix socket at
// <data-dir>/admin.sock, for `imnode pool status` and for account changes while the
// server runs (LevelDB allows one process per database, so `imnode user` cannot
// open it then). Who may use it is decided by the file system alone: the socket is
// mode 0600 in the (0700) data dir, so only the node's own user (and root) connects;
// nothing here listens on the network.
//
//   GET    /health                 200 "ok"
//   GET    /status                 200 JSON from the status provider (see AdminStatus)
//   GET    /users                  200 {"users": [name, ...]}
//   POST   /users                  {"name", "password"} -> 201 | 409 user-exists
//   GET    /users/NAME             200 {"name"} | 404 unknown-user
//   PUT    /users/NAME/password    {"password"} -> 204 | 404 unknown-user
//   DELETE /users/NAME             204 | 404 unknown-user
//   POST   /cache/flush            {"name"?} -> 200 {"flushed": n}: drops cached directory data (LDAP)
// Errors are JSON {"error": message, "code": code}; /users answers 501 when the
// node gave no account provider. The client side (AdminClient) is at the end.
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { chmod, lstat, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from './log.ts';
import type { MemberInfo } from '../pool/types.ts';
import { ReadOnlyDirectoryError, UnknownUserError, UserExistsError } from '../store/directory.ts';
import { prepLocal, prepPassword } from '../xmpp/jid.ts';

export const ADMIN_SOCKET_NAME = 'admin.sock';
const MAX_BODY = 64 * 1024;
/** sun_path holds 108 bytes on Linux (with the final NUL), 104 elsewhere. */
const MAX_SOCKET_PATH = process.platform === 'linux' ? 107 : 103;

export function adminSocketPath(dataDir: string): string {
  return join(dataDir, ADMIN_SOCKET_NAME);
}

/**
 * What GET /status should answer (the provider's object is sent as is; the CLI
 * reads these fields and tolerates missing ones).
 */
export interface AdminStatus {
  serverId?: string;
  peerId?: string;
  domain: string;
  version?: string;
  /** Seconds since the node started. */
  uptime: number;
  /** Client sessions on this node. */
  sessions: number;
  /** Listening ports by name, e.g. {"c2s": 5222, "tls": 5223, "pool": 7400}. */
  ports: Record<string, number>;
  /** The pool as this node sees it, itself included; absent or empty without a pool. */
  members?: MemberInfo[];
  /** 'relay' on a relay-only node (--relay-only). */
  role?: string;
  /** Open pool connections: to which member, from which address, direct or relayed (PoolConnectionInfo). */
  connections?: object[];
  /** A normal node's --relay list and its reservations there (RelayClientStatus). */
  relays?: object[];
  /** A relay-only node's reservations, relayed connections and bytes (RelayServerStatus). */
  relay?: object;
}

/** Account operations for POST/PUT/DELETE /users; names arrive prepared (RFC 7622 localparts). */
export interface AdminUsers {
  /** Throws UserExistsError. */
  add(name: string, password: string): Promise<void>;
  /** Throws UnknownUserError. */
  passwd(name: string, password: string): Promise<void>;
  /** Throws UnknownUserError. */
  del(name: string): Promise<void>;
  list(): Promise<string[]>;
  /** Faster than list() when given. */
  exists?(name: string): Promise<boolean>;
}

export interface AdminServerOptions {
  dataDir: string;
  log: Logger;
  status: () => Promise<object> | object;
  users?: AdminUsers;
  /** The node's cache of an external directory (LDAP); /cache answers 501 without it. */
  cache?: { flush(name?: string): Promise<number> };
}

export interface AdminServer {
  readonly path: string;
  /** Closes the socket and removes its file. */
  stop(): Promise<void>;
}

/** Another live process answers on the socket already. */
export class AdminSocketInUseError extends Error {
  constructor(path: string) {
    super(`another process answers on the admin socket ${path}`);
    this.name = 'AdminSocketInUseError';
  }
}

class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

/** true when something accepts connections on the socket file. */
function answers(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    const done = (v: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(true), timeoutMs);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

export async function startAdminServer(opts: AdminServerOptions): Promise<AdminServer> {
  const path = adminSocketPath(opts.dataDir);
  // Short enough: the temporary name below is a few bytes longer than the final one.
  const tmp = join(opts.dataDir, `.admin.${process.pid}`);
  for (const p of [path, tmp]) {
    if (Buffer.byteLength(p) > MAX_SOCKET_PATH) {
      throw new Error(`the admin socket path ${p} is longer than a unix socket allows (${MAX_SOCKET_PATH} bytes): use a shorter --data-dir`);
    }
  }
  const log = opts.log;

  const existing = await lstat(path).catch((e: unknown) => {
    if (errno(e) === 'ENOENT') return undefined;
    throw e;
  });
  if (existing && !existing.isSocket()) throw new Error(`${path} exists and is not a socket; move it away`);
  // A socket file nobody answers on is what a killed node leaves behind.
  if (existing && await answers(path)) throw new AdminSocketInUseError(path);

  const server = createServer((req, res) => {
    handle(req, res, opts).catch((e: unknown) => {
      log.error(`admin ${req.method} ${req.url} failed:`, e);
      if (!res.headersSent) sendJson(res, 500, { error: 'internal error (see the node log)', code: 'internal' });
      else res.destroy();
    });
  });
  server.requestTimeout = 30_000;
  server.headersTimeout = 10_000;
  server.keepAliveTimeout = 1000;

  // Bound under a temporary name, restricted, then renamed into place: the socket is
  // never reachable with the umask's mode, and a stale file is replaced atomically.
  await unlink(tmp).catch(() => {});
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(tmp, () => {
      server.off('error', reject);
      resolve();
    });
  });
  let ino: number;
  try {
    await chmod(tmp, 0o600);
    await rename(tmp, path);
    ino = (await lstat(path)).ino;
  } catch (e) {
    await closeServer(server);
    await unlink(tmp).catch(() => {});
    throw e;
  }
  server.on('error', (e) => log.error('admin socket error:', e));
  log.debug(`admin channel on ${path}`);

  let stopped: Promise<void> | undefined;
  return {
    path,
    stop() {
      stopped ??= (async () => {
        await closeServer(server);
        // Only our own file: never remove a socket another node put there since.
        const now = await lstat(path).catch(() => undefined);
        if (now && now.ino === ino) await unlink(path).catch(() => {});
      })();
      return stopped;
    },
  };
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

// ---- requests -----------------------------------------------------------------------

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

function sendEmpty(res: ServerResponse, status: number): void {
  res.writeHead(status);
  res.end();
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new HttpError(413, 'too-large', `request body over ${MAX_BODY} bytes`);
    chunks.push(chunk as Buffer);
  }
  let data: unknown;
  try {
    data = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpError(400, 'bad-request', 'the body must be JSON');
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) throw new HttpError(400, 'bad-request', 'the body must be a JSON object');
  return data as Record<string, unknown>;
}

function field(body: Record<string, unknown>, name: string): string {
  const v = body[name];
  if (typeof v !== 'string' || v === '') throw new HttpError(400, 'bad-request', `"${name}" must be a non-empty string`);
  return v;
}

function userName(raw: string): string {
  try {
    return prepLocal(raw);
  } catch (e) {
    throw new HttpError(400, 'bad-name', `'${raw}' is not a valid user name (${(e as Error).message})`);
  }
}

function password(raw: string): string {
  try {
    return prepPassword(raw);
  } catch {
    // Never quote the password.
    throw new HttpError(400, 'bad-password', 'the password contains characters that are not allowed (RFC 8265 OpaqueString)');
  }
}

function allow(req: IncomingMessage, methods: string[]): void {
  if (!methods.includes(req.method ?? '')) throw new HttpError(405, 'method-not-allowed', `${req.method} not allowed here (${methods.join(', ')})`);
}

async function handle(req: IncomingMessage, res: ServerResponse, opts: AdminServerOptions): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://admin');
  try {
    let parts: string[];
    try {
      parts = url.pathname.split('/').filter(Boolean).map((p) => decodeURIComponent(p));
    } catch {
      throw new HttpError(400, 'bad-request', 'malformed percent-encoding in the path');
    }
    if (parts.length === 1 && parts[0] === 'health') {
      allow(req, ['GET', 'HEAD']);
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
      res.end(req.method === 'HEAD' ? undefined : 'ok');
      return;
    }
    if (parts.length === 1 && parts[0] === 'status') {
      allow(req, ['GET']);
      sendJson(res, 200, await opts.status());
      return;
    }
    if (parts[0] === 'users' && parts.length <= 3) {
      await handleUsers(req, res, parts.slice(1), opts);
      return;
    }
    if (parts.length === 2 && parts[0] === 'cache' && parts[1] === 'flush') {
      allow(req, ['POST']);
      if (!opts.cache) throw new HttpError(501, 'no-cache', 'this node keeps no directory cache (no --ldap-url)');
      const body = await readJson(req);
      const name = body.name === undefined ? undefined : userName(field(body, 'name'));
      const flushed = await opts.cache.flush(name);
      opts.log.info(`admin channel: flushed ${flushed} directory cache entries${name ? ` of ${name}` : ''}`);
      sendJson(res, 200, { flushed });
      return;
    }
    throw new HttpError(404, 'not-found', `no such resource: ${url.pathname}`);
  } catch (e) {
    if (e instanceof HttpError) {
      sendJson(res, e.status, { error: e.message, code: e.code });
      return;
    }
    throw e;
  }
}

async function handleUsers(req: IncomingMessage, res: ServerResponse, rest: string[], opts: AdminServerOptions): Promise<void> {
  const users = opts.users;
  if (!users) throw new HttpError(501, 'no-accounts', 'this node does not manage accounts over the admin channel');
  const log = opts.log;
  try {
    if (rest.length === 0) {
      allow(req, ['GET', 'POST']);
      if (req.method === 'GET') {
        sendJson(res, 200, { users: (await users.list()).sort() });
        return;
      }
      const body = await readJson(req);
      const name = userName(field(body, 'name'));
      await users.add(name, password(field(body, 'password')));
      log.info(`admin channel: created user ${name}`);
      sendJson(res, 201, { name });
      return;
    }
    const name = userName(rest[0]);
    if (rest.length === 2) {
      if (rest[1] !== 'password') throw new HttpError(404, 'not-found', `no such resource: /users/${rest[0]}/${rest[1]}`);
      allow(req, ['PUT']);
      const body = await readJson(req);
      await users.passwd(name, password(field(body, 'password')));
      log.info(`admin channel: changed the password of ${name}`);
      sendEmpty(res, 204);
      return;
    }
    allow(req, ['GET', 'DELETE']);
    if (req.method === 'GET') {
      const exists = users.exists ? await users.exists(name) : (await users.list()).includes(name);
      if (!exists) throw new UnknownUserError(name);
      sendJson(res, 200, { name });
      return;
    }
    await users.del(name);
    log.info(`admin channel: deleted user ${name}`);
    sendEmpty(res, 204);
  } catch (e) {
    // By name as well: a directory other than the embedded one may have its own classes.
    const kind = e instanceof Error ? e.name : '';
    if (e instanceof UserExistsError || kind === 'UserExistsError') throw new HttpError(409, 'user-exists', (e as Error).message);
    if (e instanceof UnknownUserError || kind === 'UnknownUserError') throw new HttpError(404, 'unknown-user', (e as Error).message);
    if (e instanceof ReadOnlyDirectoryError) throw new HttpError(403, 'read-only', e.message);
    throw e;
  }
}

// ---- client -------------------------------------------------------------------------

/** Nothing answers on the admin socket: no node runs with this data dir. */
export class AdminUnavailableError extends Error {
  readonly path: string;
  /** 'no-socket': no socket file; 'stale': a socket file nobody answers on. */
  readonly reason: 'no-socket' | 'stale';
  constructor(path: string, reason: 'no-socket' | 'stale') {
    super(reason === 'no-socket' ? `no admin socket at ${path}` : `nothing answers on ${path} (left by a node that did not stop cleanly)`);
    this.name = 'AdminUnavailableError';
    this.path = path;
    this.reason = reason;
  }
}

/** The node answered with an error status. */
export class AdminRequestError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'AdminRequestError';
    this.status = status;
    this.code = code;
  }
}

export interface AdminResponse {
  status: number;
  body: unknown;
}

/** Talks to the admin channel of the node running with `dataDir`. */
export class AdminClient {
  readonly path: string;
  readonly #timeoutMs: number;

  constructor(dataDir: string, opts: { timeoutMs?: number } = {}) {
    this.path = adminSocketPath(dataDir);
    // Account changes derive SCRAM keys on the node: allow for a busy one.
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
  }

  /** true when a node answers /health. */
  async available(): Promise<boolean> {
    try {
      await this.request('GET', '/health', undefined, 3000);
      return true;
    } catch (e) {
      if (e instanceof AdminUnavailableError) return false;
      throw e;
    }
  }

  /**
   * One request. Rejects with AdminUnavailableError when nothing listens, with
   * AdminRequestError for an error status, with an Error otherwise (timeout, EACCES).
   */
  request(method: string, path: string, body?: unknown, timeoutMs = this.#timeoutMs): Promise<AdminResponse> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request({
        socketPath: this.path, method, path,
        headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          clearTimeout(timer);
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          if (/json/.test(String(res.headers['content-type']))) {
            try { parsed = JSON.parse(text); } catch { /* keep the text */ }
          }
          const status = res.statusCode ?? 0;
          if (status >= 400) {
            const err = parsed as { error?: unknown; code?: unknown } | undefined;
            reject(new AdminRequestError(status, typeof err?.code === 'string' ? err.code : String(status),
              typeof err?.error === 'string' ? err.error : `the node answered ${status}`));
            return;
          }
          resolve({ status, body: parsed });
        });
      });
      const timer = setTimeout(() => req.destroy(new Error(`the node did not answer on ${this.path} within ${timeoutMs / 1000} s`)), timeoutMs);
      req.on('error', (e) => {
        clearTimeout(timer);
        const code = errno(e);
        if (code === 'ENOENT') reject(new AdminUnavailableError(this.path, 'no-socket'));
        else if (code === 'ECONNREFUSED') reject(new AdminUnavailableError(this.path, 'stale'));
        else if (code === 'EACCES') reject(new Error(`permission denied on ${this.path}: run this as the user the node runs as`));
        else reject(e);
      });
      req.end(payload);
    });
  }

  async status(): Promise<Record<string, unknown>> {
    const r = await this.request('GET', '/status');
    if (r.body === null || typeof r.body !== 'object') throw new Error('the node sent a status that is not a JSON object');
    return r.body as Record<string, unknown>;
  }

  // Account operations, throwing the directory's errors so callers handle both paths alike.

  async listUsers(): Promise<string[]> {
    const r = await this.request('GET', '/users');
    return (r.body as { users?: string[] }).users ?? [];
  }

  async userExists(name: string): Promise<boolean> {
    try {
      await this.request('GET', `/users/${encodeURIComponent(name)}`);
      return true;
    } catch (e) {
      if (e instanceof AdminRequestError && e.code === 'unknown-user') return false;
      throw e;
    }
  }

  async addUser(name: string, pw: string): Promise<void> {
    await this.#users(name, () => this.request('POST', '/users', { name, password: pw }));
  }

  async setPassword(name: string, pw: string): Promise<void> {
    await this.#users(name, () => this.request('PUT', `/users/${encodeURIComponent(name)}/password`, { password: pw }));
  }

  async deleteUser(name: string): Promise<void> {
    await this.#users(name, () => this.request('DELETE', `/users/${encodeURIComponent(name)}`));
  }

  /** Drops the node's cached directory data of one user, or all; resolves with how many entries went. */
  async flushCache(name?: string): Promise<number> {
    const r = await this.request('POST', '/cache/flush', name === undefined ? {} : { name });
    return Number((r.body as { flushed?: unknown }).flushed ?? 0);
  }

  async #users(name: string, fn: () => Promise<AdminResponse>): Promise<void> {
    try {
      await fn();
    } catch (e) {
      if (e instanceof AdminRequestError && e.code === 'user-exists') throw new UserExistsError(name);
      if (e instanceof AdminRequestError && e.code === 'unknown-user') throw new UnknownUserError(name);
      throw e;
    }
  }
}
