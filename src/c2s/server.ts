// Client listeners (RFC 6120 TCP with STARTTLS, XEP-0368 direct TLS) and the
// lifecycle of sessions: binding (a second session with the same full JID
// replaces the first, §7.7.2.2), hibernation for XEP-0198 resumption, and
// orderly shutdown with system-shutdown.
import * as net from 'node:net';
import * as tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { StreamError } from '../xmpp/errors.ts';
import type { Router } from '../router/router.ts';
import type { Hooks } from '../router/hooks.ts';
import type { Logger } from '../admin/log.ts';
import type { ServerInfo } from '../modules/server-info.ts';
import type { SaslBackend, SaslMechanismFactory } from './sasl/mechanism.ts';
import { AuthThrottle } from './throttle.ts';
import { Connection } from './connection.ts';
import type { Session } from './session.ts';

export interface C2SOptions {
  bind: string;
  port: number;
  /** Port 0 picks a free port. */
  tlsPort: number;
  /** XEP-0368 direct TLS listener on tlsPort. */
  directTls: boolean;
  requireTls: 'always' | 'not-loopback' | 'never';
  maxStanzaSize: number;
  smResumeTimeout: number;
  authFailDelay: number;
}

export interface SessionClosedEvent { session: Session; reason: string }

export class C2SServer {
  readonly opts: C2SOptions;
  readonly domain: string;
  readonly router: Router;
  readonly hooks: Hooks;
  readonly log: Logger;
  readonly info: ServerInfo;
  secureContext: tls.SecureContext | null;
  readonly mechanisms: SaslMechanismFactory[];
  readonly saslBackend: SaslBackend;
  readonly throttle: AuthThrottle;
  readonly connections = new Set<Connection>();
  readonly resumable = new Map<string, Session>();
  #servers: net.Server[] = [];
  #tlsOptions: tls.SecureContextOptions | null;
  #tlsServer: tls.Server | null = null;
  #stopping = false;
  /** Ports actually bound (after listen; useful with port 0). */
  readonly ports = { c2s: 0, tls: 0 };

  constructor(deps: {
    opts: C2SOptions; domain: string; router: Router; log: Logger; info: ServerInfo;
    tlsOptions: tls.SecureContextOptions | null; mechanisms: SaslMechanismFactory[]; saslBackend: SaslBackend;
  }) {
    this.opts = deps.opts;
    this.domain = deps.domain;
    this.router = deps.router;
    this.hooks = deps.router.hooks;
    this.log = deps.log;
    this.info = deps.info;
    this.#tlsOptions = deps.tlsOptions;
    this.secureContext = deps.tlsOptions ? tls.createSecureContext(deps.tlsOptions) : null;
    this.mechanisms = deps.mechanisms;
    this.saslBackend = deps.saslBackend;
    this.throttle = new AuthThrottle({ baseDelayMs: deps.opts.authFailDelay });
  }

  async start(): Promise<void> {
    const plain = net.createServer({ noDelay: true }, (s) => this.#accept(s, false));
    this.ports.c2s = await listen(plain, this.opts.bind, this.opts.port);
    this.#servers.push(plain);
    if (this.opts.directTls) {
      if (!this.#tlsOptions) throw new Error('direct TLS needs a certificate');
      // tls.createServer takes context options, not a SecureContext object.
      const secure = tls.createServer({ ...this.#tlsOptions, ALPNProtocols: ['xmpp-client'] }, (s) => this.#accept(s, true));
      secure.on('tlsClientError', (e) => this.log.debug('TLS handshake failed:', e.message));
      this.ports.tls = await listen(secure, this.opts.bind, this.opts.tlsPort);
      this.#servers.push(secure);
      this.#tlsServer = secure;
    }
  }

  /** Serves another certificate from now on (new connections; open ones keep theirs). */
  setTls(options: tls.SecureContextOptions): void {
    this.#tlsOptions = options;
    this.secureContext = tls.createSecureContext(options);
    this.#tlsServer?.setSecureContext({ ...options, ALPNProtocols: ['xmpp-client'] } as tls.SecureContextOptions);
  }

  #accept(socket: net.Socket, secure: boolean): void {
    if (this.#stopping) {
      socket.destroy();
      return;
    }
    const c = new Connection(this, socket, secure);
    this.connections.add(c);
  }

  bindSession(session: Session): void {
    session.onUpdate = (s) => void this.hooks.emit('session-updated', s);
    const old = this.router.addSession(session) as Session | undefined;
    if (old) {
      // RFC 6120 §7.7.2.2: the newest session wins.
      old.sm.resumable = false;
      if (old.connection) old.connection.close(new StreamError('conflict', 'replaced by a new session with the same resource'));
      void this.endSession(old, 'conflict', true);
    }
  }

  /** Ends a local session with a stream error (a newer binding elsewhere in the pool, account removal). */
  async kick(session: Session, err: StreamError): Promise<void> {
    session.sm.resumable = false;
    if (session.connection) session.connection.close(err);
    await this.endSession(session, err.condition);
  }

  hibernate(session: Session): void {
    const ms = this.opts.smResumeTimeout;
    this.log.debug(`session ${session.jid} detached; resumable for ${ms} ms`);
    session.sm.hibernateTimer = setTimeout(() => void this.endSession(session, 'resumption timed out'), ms);
    session.sm.hibernateTimer.unref();
    session.onOverflow = (s) => void this.endSession(s, 'too many stanzas queued while detached');
  }

  wake(session: Session): void {
    if (session.sm.hibernateTimer) clearTimeout(session.sm.hibernateTimer);
    session.sm.hibernateTimer = null;
    session.onOverflow = null;
  }

  /**
   * Ends a session for good: out of the routing table, unavailable to contacts
   * (session-closed hook), and what the client never acknowledged goes back
   * through the router so it is delivered elsewhere or stored offline.
   */
  async endSession(session: Session, reason: string, replaced = false): Promise<void> {
    if (session.closed) return;
    this.wake(session);
    session.closed = true;
    if (session.sm.id) this.resumable.delete(session.sm.id);
    if (!replaced) this.router.removeSession(session);
    const c = session.connection;
    if (c && c.state !== 'closed' && c.state !== 'closing') c.close();
    session.connection = null;
    try {
      await this.hooks.emit<SessionClosedEvent>('session-closed', { session, reason });
    } catch (e) {
      this.log.error('session-closed handler failed:', e);
    }
    const unacked = session.sm.unacked;
    session.sm.unacked = [];
    if (unacked.length) {
      this.log.debug(`re-routing ${unacked.length} unacknowledged stanzas of ${session.jid}`);
      for (const stanza of unacked) {
        try {
          await this.hooks.fire('sm-unacked', { session, stanza });
        } catch (e) {
          this.log.error('sm-unacked handler failed:', e);
        }
      }
    }
  }

  /** Stops accepting, ends every stream with system-shutdown, ends sessions. */
  async stop(): Promise<void> {
    this.#stopping = true;
    // server.close() calls back only once every connection is gone: await it last.
    const listenersClosed = Promise.all(this.#servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    const sessions = [...this.router.localSessions()] as Session[];
    for (const c of this.connections) {
      if (c.session) c.session.sm.resumable = false;
      c.close(new StreamError('system-shutdown', 'the server is shutting down'));
    }
    for (const s of sessions) await this.endSession(s, 'system-shutdown');
    for (const s of this.resumable.values()) await this.endSession(s, 'system-shutdown');
    // Give sockets a moment to flush their closing tags.
    const deadline = Date.now() + 1000;
    while (this.connections.size && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const c of this.connections) c.destroy();
    await listenersClosed;
  }

  newSecret(): Buffer {
    return randomBytes(32);
  }
}

function listen(server: net.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, backlog: 4096 }, () => {
      server.off('error', reject);
      const addr = server.address();
      resolve(typeof addr === 'object' && addr ? addr.port : port);
    });
  });
}
