// Routing across the pool (DESIGN.md "How a stanza flows"). Every node
// publishes its sessions in the replicated keyspace 'routes' (full JID -> the
// owning node, priority, last presence, roster interest, carbons), so every
// node sees every session. Sessions on other nodes appear to the router as
// RemoteSession objects behind the same Routable interface as local ones:
// modules apply RFC 6121 delivery rules (highest priority across all nodes,
// carbons, presence broadcast) unchanged, and a delivery to a remote session is
// one point-to-point message to its node ('route' protocol), never gossip.
//
// Consistency: the owner is the only writer of its routes. A full JID bound on
// two nodes resolves to the newest binding (last writer wins in the keyspace);
// the node whose binding lost ends its session with <conflict/>. Routes of a
// failed or departed member are purged by every node (tombstones); a node that
// was only cut off writes its live routes again when it sees them deleted.
import { Element } from '../xmpp/element.ts';
import { parseElement } from '../xmpp/parser.ts';
import { JID, parseJID } from '../xmpp/jid.ts';
import { StreamError, StanzaError } from '../xmpp/errors.ts';
import type { Store } from '../store/db.ts';
import type { Logger } from '../admin/log.ts';
import type { Pool, MemberInfo } from '../pool/types.ts';
import { ReplicatedKeyspace } from '../pool/replicated.ts';
import { decode, wallOf, type HLC } from '../pool/hlc.ts';
import type { Router, Routable, RemoteSessions } from './router.ts';
import type { Session } from '../c2s/session.ts';

export const ROUTE_PROTOCOL = 'route';
/** How long an owner has to confirm a forwarded stanza before it is treated as undeliverable. */
const FORWARD_TIMEOUT_MS = 5000;

/** A resource on another node became available (or appeared available). */
export interface RemoteAvailableEvent {
  session: RemoteSession;
  /**
   * Whether the remote node very likely knew this local session's current
   * presence when the remote resource became available (so its initial
   * presence probe already answered it): route versions more than the gossip
   * delay apart.
   */
  knew(local: Routable): boolean;
}

/** A resource vanished with its failed node: nobody sent unavailable presence for it. */
export interface RemoteFailedEvent {
  jid: JID;
}

/** Gossip reaches every member well within this; beyond it, a route is taken as known. */
const GOSSIP_WINDOW_MS = 1000;

export interface RouteEntry {
  /** Peer id of the owning node. */
  node: string;
  /** Server id of the owning node (for people reading status). */
  server: string;
  priority: number | null;
  /** Last available presence as XML; null while unavailable. */
  presence: string | null;
  interested: boolean;
  carbons: boolean;
  since: number;
}

/** A session on another node, as the router and modules see it. */
export class RemoteSession implements Routable {
  readonly jid: JID;
  entry: RouteEntry;
  closed = false;
  readonly #routing: PoolRouting;
  #presence: Element | null | undefined;

  constructor(jid: JID, entry: RouteEntry, routing: PoolRouting) {
    this.jid = jid;
    this.entry = entry;
    this.#routing = routing;
  }

  get priority(): number | null { return this.entry.priority; }
  get interested(): boolean { return this.entry.interested; }
  get carbons(): boolean { return this.entry.carbons; }

  get presence(): Element | null {
    if (this.#presence === undefined) {
      try {
        this.#presence = this.entry.presence ? parseElement(this.entry.presence) : null;
      } catch {
        this.#presence = null;
      }
    }
    return this.#presence;
  }

  update(entry: RouteEntry): void {
    this.entry = entry;
    this.#presence = undefined;
  }

  send(stanza: Element): void {
    if (this.closed) return;
    this.#routing.forward(this, stanza);
  }
}

export interface PoolRoutingDeps {
  router: Router;
  pool: Pool;
  store: Store;
  log: Logger;
  clock?: HLC;
  /** Ends a local session that lost its full JID to a newer binding on another node. */
  onConflict(session: Session): void;
}

export class PoolRouting implements RemoteSessions {
  readonly #d: PoolRoutingDeps;
  #routes: ReplicatedKeyspace<RouteEntry> | null = null;
  /** Remote sessions by bare JID, then full JID. */
  readonly #index = new Map<string, Map<string, RemoteSession>>();
  readonly #unhook: Array<() => void> = [];
  #loadTimer: NodeJS.Timeout | null = null;
  /** Forwarded stanzas and bytes, for status and benchmarks. */
  readonly stats = { forwarded: 0, forwardedBytes: 0, batches: 0, received: 0, failed: 0 };
  readonly #outbox = new Map<string, Outgoing[]>();
  #flushScheduled = false;

  constructor(deps: PoolRoutingDeps) {
    this.#d = deps;
  }

  get routes(): ReplicatedKeyspace<RouteEntry> {
    if (!this.#routes) throw new Error('pool routing is not started');
    return this.#routes;
  }

  async start(): Promise<void> {
    const { pool, store, router, log } = this.#d;
    pool.handle(ROUTE_PROTOCOL, (data) => this.#receive(data));
    const routes = await ReplicatedKeyspace.open<RouteEntry>({
      name: 'routes', pool, store, clock: this.#d.clock, log: log.child('routes'),
      // Routes are soft state: rebuilt by the owners after a crash, so no fsync per login.
      durable: false,
      // A route is dead once its owner is; there is nothing to resurrect after a day.
      tombstoneTtlMs: 10 * 60_000,
    });
    this.#routes = routes;
    // Routes this node published before a crash or restart are stale now.
    await routes.purgeWhere((_k, v) => v.node === pool.peerId);
    for (const [key, value] of routes.entries()) this.#indexPut(key, value);
    routes.onChange((key, value, origin) => this.#changed(key, value, origin));
    await routes.start();

    const hooks = router.hooks;
    this.#unhook.push(
      hooks.on<Session>('session-bound', (s) => void this.#publish(s)),
      hooks.on<Session>('session-updated', (s) => void this.#publish(s)),
      hooks.on<{ session: Session }>('session-closed', ({ session }) => void this.#withdraw(session)),
      pool.on('failed', (m) => void this.#purgeMember(m)),
      pool.on('left', (m) => void this.#purgeMember(m)),
    );
    router.remote = this;
    this.#reportLoad();
  }

  async stop(): Promise<void> {
    for (const u of this.#unhook.splice(0)) u();
    if (this.#loadTimer) clearTimeout(this.#loadTimer);
    this.#d.router.remote = null;
    if (this.#routes) {
      // A planned leave: withdraw our routes so the others need not wait for 'left'.
      await this.#routes.purgeWhere((_k, v) => v.node === this.#d.pool.peerId);
      await this.#routes.flush();
      await this.#routes.stop();
    }
  }

  // ---- RemoteSessions ----------------------------------------------------------

  sessionsOf(bare: string): Routable[] {
    const m = this.#index.get(bare);
    return m ? [...m.values()] : [];
  }

  get(full: string): Routable | undefined {
    return this.#index.get(bareOf(full))?.get(full);
  }

  /** Routes by the server id of their owner: how many sessions this node believes each node serves. */
  byOwner(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [, v] of this.routes.entries()) out[v.server] = (out[v.server] ?? 0) + 1;
    return out;
  }

  /** Number of sessions on other nodes. */
  get remoteCount(): number {
    let n = 0;
    for (const m of this.#index.values()) n += m.size;
    return n;
  }

  // ---- publishing our sessions ---------------------------------------------------

  #entryOf(s: Session): RouteEntry {
    return {
      node: this.#d.pool.peerId,
      server: this.#d.pool.serverId,
      priority: s.priority,
      presence: s.presence ? s.presence.toString() : null,
      interested: s.interested,
      carbons: s.carbons,
      since: s.created,
    };
  }

  async #publish(s: Session): Promise<void> {
    if (s.closed) return;
    await this.routes.put(s.jid.toString(), this.#entryOf(s));
    this.#reportLoad();
  }

  async #withdraw(s: Session): Promise<void> {
    const key = s.jid.toString();
    // A newer binding elsewhere owns the key now: leave it alone.
    if (this.routes.get(key)?.node !== this.#d.pool.peerId) return;
    const current = this.#d.router.getLocalSession(s.jid);
    if (current && current !== s) return;
    await this.routes.del(key);
    this.#reportLoad();
  }

  #reportLoad(): void {
    if (this.#loadTimer) return;
    this.#loadTimer = setTimeout(() => {
      this.#loadTimer = null;
      this.#d.pool.setLoad(this.#d.router.sessionCount);
    }, 200);
    this.#loadTimer.unref();
  }

  async #purgeMember(m: MemberInfo): Promise<void> {
    if (!this.#routes || m.peerId === this.#d.pool.peerId) return;
    const n = await this.#routes.purgeWhere((_k, v) => v.node === m.peerId);
    if (n) this.#d.log.info(`purged ${n} routes of ${m.serverId} (${m.state})`);
  }

  /**
   * RFC 6121 §4.5.2: a session that ends without unavailable presence gets one
   * from the server. A node that ends a session itself sends it; a route
   * deleted by another node than its owner was purged (its node failed or was
   * cut off), so nobody did: every node sends it to its own local sessions
   * that could see the resource. Decided from the tombstone's writer, so it
   * does not matter whether this node or another one purged first.
   */
  #announceVanished(key: string, gone: RemoteSession): void {
    const version = this.#routes?.version(key);
    if (!version) return;
    let writer: string;
    try {
      writer = decode(version).node;
    } catch {
      return;
    }
    if (writer === gone.entry.server) return;
    void this.#d.router.hooks.emit<RemoteFailedEvent>('remote-session-failed', { jid: gone.jid })
      .catch((e: unknown) => this.#d.log.error('remote-session-failed handler failed:', e));
  }

  #announceAvailable(key: string, session: RemoteSession): void {
    const routes = this.#routes;
    if (!routes) return;
    const theirs = wallOf(routes.version(key) ?? '0');
    const knew = (local: Routable): boolean => {
      const mine = routes.version(local.jid.toString());
      return mine !== undefined && wallOf(mine) < theirs - GOSSIP_WINDOW_MS;
    };
    void this.#d.router.hooks.emit<RemoteAvailableEvent>('remote-session-available', { session, knew })
      .catch((e: unknown) => this.#d.log.error('remote-session-available handler failed:', e));
  }

  // ---- replicated changes ---------------------------------------------------------

  #changed(key: string, value: RouteEntry | undefined, origin: 'local' | 'remote'): void {
    const self = this.#d.pool.peerId;
    if (value && value.node !== self) {
      const before = this.get(key) as RemoteSession | undefined;
      const wasAvailable = before !== undefined && before.priority !== null;
      this.#indexPut(key, value);
      const now = this.get(key) as RemoteSession | undefined;
      if (now && value.priority !== null && !wasAvailable) this.#announceAvailable(key, now);
      if (origin === 'remote') {
        // RFC 6120 §7.7.2.2 across the pool: the newest binding of a full JID wins.
        const local = this.#localSession(key);
        if (local) {
          this.#d.log.info(`${key} bound on ${value.server}: ending the older session here`);
          this.#d.onConflict(local);
        }
      }
      return;
    }
    const gone = this.get(key) as RemoteSession | undefined;
    this.#indexDel(key);
    if (!value && gone && gone.priority !== null) this.#announceVanished(key, gone);
    if (!value && origin === 'remote') {
      // Our live route deleted by others (we were taken for failed): publish it again.
      const local = this.#localSession(key);
      if (local && !local.closed) void this.#publish(local);
    }
  }

  #localSession(full: string): Session | undefined {
    let jid: JID;
    try {
      jid = parseJID(full);
    } catch {
      return undefined;
    }
    return this.#d.router.getLocalSession(jid) as Session | undefined;
  }

  #indexPut(full: string, entry: RouteEntry): void {
    if (entry.node === this.#d.pool.peerId) return;
    let jid: JID;
    try {
      jid = parseJID(full);
    } catch {
      return;
    }
    const bare = jid.toBareString();
    let m = this.#index.get(bare);
    if (!m) this.#index.set(bare, (m = new Map()));
    const existing = m.get(full);
    if (existing) existing.update(entry);
    else m.set(full, new RemoteSession(jid, entry, this));
  }

  #indexDel(full: string): void {
    const bare = bareOf(full);
    const m = this.#index.get(bare);
    const s = m?.get(full);
    if (!m || !s) return;
    s.closed = true;
    m.delete(full);
    if (m.size === 0) this.#index.delete(bare);
  }

  // ---- point-to-point delivery -------------------------------------------------------

  /**
   * Sends a stanza to the node that owns a remote session. The owner confirms
   * what it received: a one-way send would count as done once written to a
   * connection that may already be dead, losing a stanza we acknowledged to
   * its sender. Unconfirmed stanzas follow the rules for an unavailable
   * resource (at least once: a confirmation lost with a dying node can mean a
   * duplicate, never a loss). Stanzas for one node in the same turn of the
   * event loop travel as one confirmed batch, in order: one request, one
   * encryption and one write instead of one each per stanza.
   */
  forward(target: RemoteSession, stanza: Element): void {
    // Serialised now: callers may change the element once it is handed over.
    const frame = Buffer.from(target.jid.toString() + '\n' + stanza.toString());
    this.stats.forwarded++;
    this.stats.forwardedBytes += frame.length;
    const node = target.entry.node;
    let queue = this.#outbox.get(node);
    if (!queue) this.#outbox.set(node, (queue = []));
    queue.push({ target, stanza, frame });
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => this.#flushOutbox());
    }
  }

  #flushOutbox(): void {
    this.#flushScheduled = false;
    const outbox = [...this.#outbox];
    this.#outbox.clear();
    for (const [node, items] of outbox) {
      for (let i = 0; i < items.length; i += MAX_BATCH) this.#sendBatch(node, items.slice(i, i + MAX_BATCH));
    }
  }

  #sendBatch(node: string, items: Outgoing[]): void {
    this.stats.batches++;
    this.#d.pool.request(node, ROUTE_PROTOCOL, encodeBatch(items.map((it) => it.frame)), FORWARD_TIMEOUT_MS).catch((e: unknown) => {
      this.stats.failed += items.length;
      this.#d.log.debug(`cannot reach ${items[0].target.entry.server} for ${items.length} stanzas: ${String(e)}`);
      for (const it of items) this.#undeliverable(it.target, it.stanza);
    });
  }

  /**
   * The owning node is unreachable: the session is as good as gone. Forget it
   * here and route the stanza again, so it follows RFC 6121 rules for an
   * unavailable resource (another resource, offline storage, or an error).
   */
  #undeliverable(target: RemoteSession, stanza: Element): void {
    this.#indexDel(target.jid.toString());
    this.#reroute(target.jid.toString(), stanza);
  }

  /**
   * RFC 6121 §8.5.3.2 for a resource that is not there after all: a message
   * is routed again to that full JID (another resource or offline storage take
   * it), an IQ request gets service-unavailable, anything else is dropped as
   * it would be for a resource that just went away.
   */
  #reroute(target: string, stanza: Element): void {
    const type = stanza.attrs.type;
    if (stanza.name === 'message' && type !== 'error') {
      const copy = stanza.clone();
      copy.attrs.to = target;
      if (!copy.attrs.from) copy.attrs.from = this.#d.router.domain;
      void this.#d.router.route(copy);
    } else if (stanza.name === 'iq' && (type === 'get' || type === 'set')) {
      this.#d.router.sendError(stanza, new StanzaError('service-unavailable'));
    }
  }

  /** A batch of stanzas from another node for our sessions, delivered in order. */
  #receive(data: Uint8Array): void {
    let frames: Buffer[];
    try {
      frames = decodeBatch(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    } catch (e) {
      return void this.#d.log.warn('malformed route batch:', String(e));
    }
    for (const f of frames) this.#deliver(f);
  }

  #deliver(frame: Buffer): void {
    this.stats.received++;
    const text = frame.toString('utf8');
    const nl = text.indexOf('\n');
    if (nl === -1) return void this.#d.log.warn('malformed route frame');
    const target = text.slice(0, nl);
    let stanza: Element;
    let jid: JID;
    try {
      jid = parseJID(target);
      stanza = parseElement(text.slice(nl + 1));
    } catch (e) {
      return void this.#d.log.warn('malformed routed stanza:', String(e));
    }
    const local = this.#d.router.getLocalSession(jid);
    if (local && !local.closed) return local.send(stanza);
    // The sender's view was stale: this session is gone from here. Drop our
    // route if it is still published and let the stanza follow the rules for an
    // unavailable resource.
    if (this.#routes?.get(target)?.node === this.#d.pool.peerId) void this.#routes.del(target);
    this.#reroute(target, stanza);
  }
}

/** The bare part of a (prepared) full JID string. */
function bareOf(full: string): string {
  const slash = full.indexOf('/');
  return slash === -1 ? full : full.slice(0, slash);
}

interface Outgoing { target: RemoteSession; stanza: Element; frame: Buffer }

/** Stanzas per confirmed batch. */
const MAX_BATCH = 256;

/** Frames as [u32 length][bytes]... */
function encodeBatch(frames: Buffer[]): Buffer {
  let size = 0;
  for (const f of frames) size += 4 + f.length;
  const out = Buffer.allocUnsafe(size);
  let o = 0;
  for (const f of frames) {
    out.writeUInt32BE(f.length, o);
    f.copy(out, o + 4);
    o += 4 + f.length;
  }
  return out;
}

function decodeBatch(b: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let o = 0;
  while (o < b.length) {
    if (o + 4 > b.length) throw new Error('truncated frame length');
    const n = b.readUInt32BE(o);
    if (o + 4 + n > b.length) throw new Error('truncated frame');
    out.push(b.subarray(o + 4, o + 4 + n));
    o += 4 + n;
  }
  return out;
}

export function conflictError(): StreamError {
  return new StreamError('conflict', 'replaced by a new session with the same resource on another node');
}
