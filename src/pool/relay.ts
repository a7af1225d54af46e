// Relays of the pool (DESIGN.md "Shoal, mapped": relay servers across subnets, the
// relay URI list), on libp2p Circuit Relay v2 (libp2p specs relay/circuit-v2.md:
// HOP RESERVE and CONNECT, STOP CONNECT, reservation vouchers and limits) and
// DCUtR (relay/DCUtR.md) for hole punching.
//
// What a pool needs from it, and the library's defaults do not give:
// - no limits: a public relay cuts each relayed connection after 2 min or 128 KiB
//   (DEFAULT_DURATION_LIMIT, DEFAULT_DATA_LIMIT), and a client marks a connection
//   with limits "limited", on which pool protocols do not run. A pool relay serves
//   members only (the pool key guards every connection to it), so it applies none.
// - reservations that come back: a reservation made on a listed relay
//   ("/<relay>/p2p-circuit" listen address) is never made again once the relay
//   restarts. The pool instead listens on bare "/p2p-circuit" (one per listed
//   relay) and keeps dialling the listed relays itself: the transport reserves on
//   any connected peer that speaks HOP, again after every reconnection.
// - direct connections between members on routed private networks: DCUtR only
//   upgrades to public addresses, so members reached through a relay try their
//   announced direct addresses themselves (DirectUpgrader) and drop the relayed
//   connection once a direct one is up.
//
// The libp2p services themselves are in relay-services.ts, loaded only by nodes
// that use relays: a node of a one-subnet pool does not pay for their import.
import type { CircuitRelayService } from '@libp2p/circuit-relay-v2';
import type { AbortOptions, Connection, PeerId, Stream } from '@libp2p/interface';
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import type { Logger } from '../admin/log.ts';

export const CIRCUIT = '/p2p-circuit';
/** The circuit relay v2 protocols (circuit-v2.md), as @libp2p/circuit-relay-v2 names them (test/unit/relay.test.ts checks). */
export const RELAY_V2_HOP_CODEC = '/libp2p/circuit/relay/0.2.0/hop';
export const RELAY_V2_STOP_CODEC = '/libp2p/circuit/relay/0.2.0/stop';

/** How many relayed connections (each a HOP stream on the dialer's connection to the relay) one peer may run. */
export const MAX_RELAYED_STREAMS = 1024;

export function isRelayedAddr(addr: Multiaddr | string): boolean {
  return addr.toString().includes(CIRCUIT);
}

/** The relay's peer id in a relayed address (/…/p2p/<relay>/p2p-circuit/…), if any. */
export function relayOf(addr: Multiaddr | string): string | undefined {
  const s = addr.toString();
  const i = s.indexOf(CIRCUIT);
  if (i < 0) return undefined;
  return /\/p2p\/([^/]+)$/.exec(s.slice(0, i))?.[1];
}

export interface RelayServerOptions {
  /** Members holding a reservation at once. Default 256. */
  maxReservations?: number;
}

/** A member's view of one reservation on this relay. */
export interface ReservationInfo {
  peerId: string;
  /** Where the member connects from, as the relay sees it (a NAT's outside address for a member behind one). */
  addr: string;
  expiresAt: number;
  /** Data and time limits of its relayed connections; null: none (a pool relay). */
  limit: { data?: string; durationSec?: number } | null;
}

export interface RelayServerStatus {
  reservations: ReservationInfo[];
  /** Relayed connections opened since start, and open now. */
  circuits: number;
  openCircuits: number;
  /** Bytes carried between members through this relay, both directions, since start. */
  relayedBytes: number;
}

interface NodeLike {
  handle(protocol: string, handler: (stream: Stream, connection: Connection) => void | Promise<void>, options?: Record<string, unknown>): Promise<void>;
  getConnections(): Connection[];
}

/**
 * Counts what a relay server carries. The library keeps no count without limits,
 * so the HOP handler is wrapped: the dialer's HOP stream and the STOP stream to the
 * destination are the two halves of each relayed connection; what arrives on
 * either is relayed to the other.
 */
export class RelayServerStats {
  circuits = 0;
  openCircuits = 0;
  relayedBytes = 0;
  private readonly counted = new WeakSet<Stream>();
  private readonly service: CircuitRelayService;
  private readonly log: Logger;

  constructor(service: CircuitRelayService, log: Logger) {
    this.service = service;
    this.log = log;
  }

  /** Call after the node started (the service registered its HOP handler then). */
  async attach(node: NodeLike): Promise<void> {
    const server = this.service as unknown as { onHop?: (stream: Stream, connection: Connection) => Promise<void> };
    if (typeof server.onHop !== 'function') {
      this.log.warn('relayed bytes are not counted: this version of @libp2p/circuit-relay-v2 has no onHop to wrap');
      return;
    }
    const onHop = server.onHop.bind(this.service);
    await node.handle(RELAY_V2_HOP_CODEC, async (stream, connection) => {
      await onHop(stream, connection);
      // After a successful CONNECT both halves exist (the dialer's HOP stream, the
      // STOP stream to the destination) and nothing has been relayed yet: the dialer
      // waits for the OK just written. Concurrent CONNECTs may find each other's
      // halves: whoever scans first counts them, none is missed. A reservation's HOP
      // stream is closed by then (a few bytes at most otherwise).
      for (const c of node.getConnections()) {
        for (const s of c.streams) {
          if (this.counted.has(s) || s.status !== 'open') continue;
          if (s.protocol === RELAY_V2_STOP_CODEC && s.direction === 'outbound') this.count(s, true);
          else if (s.protocol === RELAY_V2_HOP_CODEC && s.direction === 'inbound' && s !== stream) this.count(s, false);
        }
      }
      if (stream.status === 'open' && !this.counted.has(stream)) this.count(stream, false);
    }, { maxInboundStreams: MAX_RELAYED_STREAMS, maxOutboundStreams: MAX_RELAYED_STREAMS, runOnLimitedConnection: true, force: true });
  }

  private count(stream: Stream, circuit: boolean): void {
    this.counted.add(stream);
    stream.addEventListener('message', (evt) => {
      this.relayedBytes += evt.data.byteLength;
    });
    if (circuit) {
      this.circuits++;
      this.openCircuits++;
      stream.addEventListener('close', () => {
        this.openCircuits--;
      });
    }
  }

  status(): RelayServerStatus {
    const reservations: ReservationInfo[] = [];
    for (const [peer, r] of this.service.reservations.entries()) {
      reservations.push({
        peerId: peer.toString(),
        addr: r.addr.toString(),
        expiresAt: r.expiry.getTime(),
        limit: r.limit ? { data: r.limit.data?.toString(), durationSec: r.limit.duration } : null,
      });
    }
    reservations.sort((a, b) => (a.peerId < b.peerId ? -1 : 1));
    return { reservations, circuits: this.circuits, openCircuits: this.openCircuits, relayedBytes: this.relayedBytes };
  }
}

/** One listed relay as a normal node sees it. */
export interface RelayClientStatus {
  /** As configured (--relay). */
  address: string;
  /** Known once it answered. */
  peerId: string | null;
  connected: boolean;
  /** This node holds a reservation there (it announces relayed addresses through it). */
  reserved: boolean;
  /** The relayed addresses this node announces through it. */
  relayedAddresses: string[];
}

export interface UpgradeHost {
  /** Connections to the peer, open ones. */
  connections(peer: string): Connection[];
  /** Direct addresses (not relayed, not loopback) the member announces. */
  directAddresses(peer: string): Multiaddr[];
  dial(addrs: Multiaddr[], timeoutMs: number): Promise<Connection>;
  /** Pool members to consider (alive ones). */
  peers(): string[];
}

/**
 * Replaces relayed connections between members with direct ones where the network
 * routes: a member reached only through a relay is dialled on its direct addresses
 * now and then (backing off while that fails, as behind a NAT), and its relayed
 * connections are closed once a direct one is open, so that streams move to it.
 */
export class DirectUpgrader {
  private readonly host: UpgradeHost;
  private readonly log: Logger;
  private readonly state = new Map<string, { nextAt: number; backoffMs: number; busy: boolean }>();
  private timer: NodeJS.Timeout | undefined;
  readonly minBackoffMs: number;
  readonly maxBackoffMs: number;
  /** Relayed connections replaced by direct ones since start. */
  upgraded = 0;

  constructor(host: UpgradeHost, log: Logger, opts: { minBackoffMs?: number; maxBackoffMs?: number } = {}) {
    this.host = host;
    this.log = log;
    this.minBackoffMs = opts.minBackoffMs ?? 2000;
    this.maxBackoffMs = opts.maxBackoffMs ?? 60_000;
  }

  start(everyMs = 1000): void {
    this.timer = setInterval(() => this.tick(), everyMs);
    this.timer.unref?.();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** One pass; exposed for tests. */
  tick(now = Date.now()): void {
    const peers = new Set(this.host.peers());
    for (const p of this.state.keys()) if (!peers.has(p)) this.state.delete(p);
    for (const peer of peers) {
      const conns = this.host.connections(peer);
      if (!conns.length) continue;
      if (conns.some((c) => c.direct)) {
        this.dropRelayed(peer, conns);
        this.state.delete(peer);
        continue;
      }
      const addrs = this.host.directAddresses(peer);
      if (!addrs.length) continue;
      let s = this.state.get(peer);
      if (!s) this.state.set(peer, (s = { nextAt: now, backoffMs: 0, busy: false }));
      if (s.busy || s.nextAt > now) continue;
      s.busy = true;
      const st = s;
      this.host.dial(addrs, 3000).then(
        (conn) => {
          st.busy = false;
          if (!conn.direct) throw new Error('the dial gave a relayed connection');
          this.upgraded++;
          this.log.info(`direct connection to ${peer} via ${conn.remoteAddr.toString()} replaces the relayed one`);
          this.dropRelayed(peer, this.host.connections(peer));
        },
      ).catch((e: Error) => {
        st.busy = false;
        st.backoffMs = Math.min(this.maxBackoffMs, Math.max(this.minBackoffMs, st.backoffMs * 2));
        st.nextAt = Date.now() + st.backoffMs;
        this.log.debug(`no direct connection to ${peer} (${e.message}); staying relayed, next try in ${st.backoffMs} ms`);
      });
    }
  }

  private dropRelayed(peer: string, conns: Connection[]): void {
    if (!conns.some((c) => c.direct && c.status === 'open')) return;
    for (const c of conns) {
      if (c.direct || c.status !== 'open') continue;
      this.log.debug(`closing the relayed connection to ${peer} (${c.remoteAddr.toString()}): a direct one is open`);
      c.close().catch(() => c.abort(new Error('replaced by a direct connection')));
    }
  }
}

/** One open connection to a peer, for status: is it direct or through a relay? */
export interface PoolConnectionInfo {
  peerId: string;
  serverId?: string;
  remoteAddr: string;
  direction: 'inbound' | 'outbound';
  relayed: boolean;
  /** Through which relay (peer id), for a relayed one. */
  relay?: string;
  openedAt?: number;
}

export function connectionInfo(conns: Connection[], serverIdOf: (peer: string) => string | undefined): PoolConnectionInfo[] {
  const out: PoolConnectionInfo[] = [];
  for (const c of conns) {
    if (c.status !== 'open') continue;
    const peerId = c.remotePeer.toString();
    const relay = c.direct ? undefined : relayOf(c.remoteAddr);
    out.push({
      peerId, serverId: serverIdOf(peerId), remoteAddr: c.remoteAddr.toString(), direction: c.direction,
      relayed: !c.direct, ...(relay ? { relay } : {}), openedAt: c.timeline.open,
    });
  }
  return out.sort((a, b) => ((a.serverId ?? a.peerId) < (b.serverId ?? b.peerId) ? -1 : 1));
}

/** The listed relays with what this node's own addresses say of its reservations there. */
export function relayClientStatus(listed: Array<{ address: string; peer?: string }>, ownAddrs: string[], connected: (peer: string) => boolean): RelayClientStatus[] {
  const own = ownAddrs.filter(isRelayedAddr);
  return listed.map(({ address, peer }) => {
    const peerId = peer ?? /\/p2p\/([^/]+)$/.exec(address)?.[1] ?? null;
    const relayedAddresses = peerId ? own.filter((a) => relayOf(a) === peerId) : [];
    return { address, peerId, relayedAddresses, reserved: relayedAddresses.length > 0, connected: !!peerId && connected(peerId) };
  });
}

interface Dialer {
  dial(addrs: Multiaddr[], options?: AbortOptions): Promise<Connection>;
  getConnections(peer?: PeerId): Connection[];
}

/**
 * Dials a member that announces both kinds of address. Behind a NAT a direct
 * address may swallow the dial until the timeout, so the relayed one starts
 * shortly after and the first to connect wins; a relayed winner is replaced by a
 * direct connection later if one turns out to work (DirectUpgrader).
 */
export async function dialDirectOrRelayed(node: Dialer, id: PeerId, direct: Multiaddr[], relayed: Multiaddr[], timeoutMs: number): Promise<void> {
  const headStart = direct.length ? Math.min(300, Math.round(timeoutMs / 3)) : 0;
  const attempts: Promise<unknown>[] = [];
  // libp2p's dial queue merges a dial into a pending one for the same peer id, and
  // tries the merged addresses one after the other: a direct address that a NAT
  // silently drops would then hold the relayed one back until the whole dial times
  // out, every time. Dialled without the peer id the direct attempt is a job of
  // its own; the peer it reaches is checked here instead.
  if (direct.length) {
    attempts.push(node.dial(direct.map(withoutPeer), { signal: AbortSignal.timeout(timeoutMs) }).then((conn) => {
      if (conn.remotePeer.equals(id)) return conn;
      conn.abort(new Error(`expected ${id} at a direct address, reached ${conn.remotePeer}`));
      throw new Error(`a direct address of ${id} answered as ${conn.remotePeer}`);
    }));
  }
  attempts.push(new Promise((r) => setTimeout(r, headStart)).then(() => {
    if (node.getConnections(id).some((c) => c.status === 'open')) return;
    return node.dial(relayed, { signal: AbortSignal.timeout(timeoutMs - headStart) });
  }));
  for (const a of attempts) a.catch(() => {});
  await Promise.any(attempts).catch((e: AggregateError) => {
    throw e.errors?.[0] ?? e;
  });
}

/** The address without its trailing /p2p/<id> (see dialDirectOrRelayed). */
function withoutPeer(ma: Multiaddr): Multiaddr {
  const text = ma.toString();
  const i = text.lastIndexOf('/p2p/');
  return i > 0 ? multiaddr(text.slice(0, i)) : ma;
}
