// Where a stanza goes (RFC 6120 §10, RFC 6121 §8.5). The router turns each
// stanza into an event named by its kind, how it is addressed and, for IQ
// requests, its payload namespace (iq-get/host/urn:xmpp:ping), after Prosody.
// Modules hook those events; what nobody handles gets the RFC's default:
// service-unavailable for IQ requests, local delivery or silence for the rest.
import { Element } from '../xmpp/element.ts';
import { JID, parseJID, InvalidJIDError } from '../xmpp/jid.ts';
import { StanzaError, errorReply, toStanzaError } from '../xmpp/errors.ts';
import { Hooks } from './hooks.ts';
import type { Logger } from '../admin/log.ts';

/**
 * What routing and modules may know of a client session. c2s/session.ts
 * implements it for local sessions; the pool will implement it for sessions on
 * other nodes, so modules must not rely on more than this.
 */
export interface Routable {
  readonly jid: JID;
  /** Priority of the last available presence; null while not available. */
  readonly priority: number | null;
  /** Last available presence broadcast by this resource; null while unavailable. */
  readonly presence: Element | null;
  /** RFC 6121 §2.1.6: asked for the roster, so gets roster pushes. */
  readonly interested: boolean;
  /** XEP-0280 carbons enabled. */
  readonly carbons: boolean;
  readonly closed: boolean;
  send(stanza: Element): void;
}

/** Sessions on other nodes of the pool (src/router/pool-routing.ts provides them). */
export interface RemoteSessions {
  sessionsOf(bare: string): Routable[];
  get(full: string): Routable | undefined;
}

export type Scope = 'host' | 'bare' | 'full';

export interface StanzaEvent<S extends Routable = Routable> {
  stanza: Element;
  /** Stamped sender. */
  from: JID;
  /** Effective recipient: the 'to' attribute, or the sender's bare JID when absent. */
  to: JID;
  /** The local session that sent it, if any. */
  origin: S | null;
  scope: Scope;
}

export class Router {
  readonly domain: string;
  readonly hooks = new Hooks();
  readonly log: Logger;
  /** Local sessions by bare JID, then resource. */
  readonly #sessions = new Map<string, Map<string, Routable>>();
  /** Sessions on other nodes; null on a single node. */
  remote: RemoteSessions | null = null;

  constructor(opts: { domain: string; log: Logger }) {
    this.domain = opts.domain;
    this.log = opts.log;
  }

  // ---- session table ------------------------------------------------------

  addSession(s: Routable): Routable | undefined {
    const bare = s.jid.toBareString();
    let m = this.#sessions.get(bare);
    if (!m) this.#sessions.set(bare, (m = new Map()));
    const old = m.get(s.jid.resource);
    m.set(s.jid.resource, s);
    return old === s ? undefined : old;
  }

  removeSession(s: Routable): void {
    const bare = s.jid.toBareString();
    const m = this.#sessions.get(bare);
    if (!m || m.get(s.jid.resource) !== s) return;
    m.delete(s.jid.resource);
    if (m.size === 0) this.#sessions.delete(bare);
  }

  /** The session of a full JID, on this node or another one of the pool. */
  getSession(full: JID): Routable | undefined {
    return this.getLocalSession(full) ?? this.remote?.get(full.toString());
  }

  getLocalSession(full: JID): Routable | undefined {
    return this.#sessions.get(full.toBareString())?.get(full.resource);
  }

  /** All resources of an account (bound, available or not), on every node. */
  sessionsOf(bare: JID | string): Routable[] {
    const key = typeof bare === 'string' ? bare : bare.toBareString();
    const local = this.localSessionsOf(key);
    const remote = this.remote?.sessionsOf(key);
    return remote && remote.length ? local.concat(remote) : local;
  }

  /** The account's resources connected to this node. */
  localSessionsOf(bare: JID | string): Routable[] {
    const m = this.#sessions.get(typeof bare === 'string' ? bare : bare.toBareString());
    return m ? [...m.values()] : [];
  }

  /** Available resources of an account (RFC 6121 §8.5.3: those that sent initial presence). */
  availableSessionsOf(bare: JID | string): Routable[] {
    return this.sessionsOf(bare).filter((s) => s.priority !== null);
  }

  /** Sessions on this node. */
  get sessionCount(): number {
    let n = 0;
    for (const m of this.#sessions.values()) n += m.size;
    return n;
  }

  /** Every session on this node. */
  *localSessions(): Iterable<Routable> {
    for (const m of this.#sessions.values()) yield* m.values();
  }

  isLocalDomain(domain: string): boolean {
    return domain === this.domain;
  }

  // ---- routing ------------------------------------------------------------

  /**
   * Routes a stanza from a local client. `from` is already stamped. Returns a
   * promise only when a handler went async, so callers can keep per-session order.
   */
  routeFromClient(stanza: Element, origin: Routable): void | Promise<void> {
    let to: JID;
    const toAttr = stanza.attrs.to;
    if (toAttr === undefined || toAttr === '') {
      if (stanza.name === 'presence') {
        return this.#fire('presence/broadcast', { stanza, from: origin.jid, to: origin.jid.bare, origin, scope: 'bare' }, stanza);
      }
      to = origin.jid.bare;
    } else {
      try {
        to = parseJID(toAttr);
      } catch (e) {
        if (!(e instanceof InvalidJIDError)) throw e;
        // Not through sendError: route() would drop the reply, whose 'from' is this malformed address.
        if (stanza.attrs.type !== 'error') origin.send(errorReply(stanza, new StanzaError('jid-malformed', 'invalid recipient address')));
        return;
      }
    }
    const ev: StanzaEvent = { stanza, from: origin.jid, to, origin, scope: scopeOf(to) };
    const name = `out/${stanza.name}`;
    let first: boolean | Promise<boolean>;
    try {
      first = this.hooks.fire(name, ev);
    } catch (e) {
      return this.#handlerFailed(name, stanza, e);
    }
    if (first === true) return;
    if (first === false) return this.#dispatch(ev);
    return first.then(
      (stop) => (stop ? undefined : this.#dispatch(ev)),
      (e) => this.#handlerFailed(name, stanza, e),
    );
  }

  /**
   * Routes a stanza generated by the server or arriving from elsewhere. 'from'
   * and 'to' attributes must be set and valid.
   */
  route(stanza: Element, origin: Routable | null = null): void | Promise<void> {
    let from: JID, to: JID;
    try {
      from = parseJID(stanza.attrs.from ?? this.domain);
      to = parseJID(stanza.attrs.to ?? this.domain);
    } catch (e) {
      this.log.warn('dropping a stanza with an invalid address:', String(e));
      return;
    }
    return this.#dispatch({ stanza, from, to, origin, scope: scopeOf(to) });
  }

  #dispatch(ev: StanzaEvent): void | Promise<void> {
    const { stanza, to } = ev;
    if (!this.isLocalDomain(to.domain)) {
      // No server-to-server yet: RFC 6120 §10.4.
      return this.#fire('remote', ev, stanza);
    }
    const kind = stanza.name;
    if (kind === 'iq') {
      const type = stanza.attrs.type;
      if ((type === 'get' || type === 'set') && ev.scope !== 'full') {
        const payload = stanza.elements[0];
        const ns = payload ? payload.getNS() : '';
        return this.#fire(`iq-${type}/${ev.scope}/${ns}`, ev, stanza, `iq/${ev.scope}`);
      }
    }
    return this.#fire(`${kind}/${ev.scope}`, ev, stanza);
  }

  #fire(name: string, ev: StanzaEvent, stanza: Element, fallback?: string): void | Promise<void> {
    let r: boolean | Promise<boolean>;
    try {
      r = this.hooks.fire(name, ev);
      if (r === false && fallback) r = this.hooks.fire(fallback, ev);
    } catch (e) {
      this.#handlerFailed(name, stanza, e);
      return;
    }
    if (r === true) return;
    if (r === false) return this.#unhandled(ev);
    return r.then(
      (handled) => { if (!handled) return this.#unhandled(ev); },
      (e) => this.#handlerFailed(name, stanza, e),
    );
  }

  #handlerFailed(name: string, stanza: Element, e: unknown): void {
    if (!(e instanceof StanzaError)) this.log.error(`handler for ${name} failed:`, e);
    this.sendError(stanza, toStanzaError(e));
  }

  /** RFC 6120 §8.3 / RFC 6121 §8.5: what happens when no module took the stanza. */
  #unhandled(ev: StanzaEvent): void {
    const { stanza } = ev;
    const type = stanza.attrs.type;
    if (!this.isLocalDomain(ev.to.domain)) {
      // No server-to-server link (yet): RFC 6120 §10.4.3.
      if (type !== 'error' && type !== 'result') this.sendError(stanza, new StanzaError('remote-server-not-found'));
      return;
    }
    if (stanza.name === 'iq') {
      if (type === 'get' || type === 'set') {
        if (ev.scope === 'full' && this.deliverToFull(ev)) return;
        this.sendError(stanza, new StanzaError('service-unavailable'));
      } else if (ev.scope === 'full') {
        this.deliverToFull(ev);
      }
      return;
    }
    if (ev.scope === 'full' && this.deliverToFull(ev)) return;
    if (stanza.name === 'message' && type !== 'error' && type !== 'headline' && type !== 'groupchat') {
      // RFC 6121 §8.5.2.2.1/§8.5.3.2.1: no module took a message for a user
      // we cannot deliver to; the sender must learn that.
      if (ev.to.local !== '' || ev.to.domain !== this.domain) this.sendError(stanza, new StanzaError('service-unavailable'));
    }
  }

  /** Delivers to the exact full JID if that session is here. */
  deliverToFull(ev: StanzaEvent): boolean {
    const s = this.getSession(ev.to);
    if (!s || s.closed) return false;
    s.send(ev.stanza);
    return true;
  }

  /** Sends an error reply for `stanza` unless it is itself an error (RFC 6120 §8.3.1). */
  sendError(stanza: Element, err: StanzaError): void {
    if (stanza.attrs.type === 'error') return;
    const reply = errorReply(stanza, err);
    if (!reply.attrs.to) return;
    void this.route(reply);
  }

  /** Sends an IQ result for a request. */
  sendResult(request: Element, payload?: Element | null): void {
    const attrs: Record<string, string> = { type: 'result', id: request.attrs.id ?? '' };
    if (request.attrs.from) attrs.to = request.attrs.from;
    if (request.attrs.to) attrs.from = request.attrs.to;
    const reply = new Element('iq', attrs);
    if (payload) reply.append(payload);
    void this.route(reply);
  }
}

export function scopeOf(to: JID): Scope {
  // A domain's own resources (domain/resource) belong to the server too.
  if (to.local === '') return 'host';
  return to.resource === '' ? 'bare' : 'full';
}
