// The server pool over libp2p (DESIGN.md "pool/" and "Shoal, mapped"): TCP, every
// connection wrapped by @libp2p/pnet with the key derived from the pool password
// (psk.ts), then noise and yamux; identify and ping; gossipsub for group messaging
// and membership heartbeats; mDNS (--autodiscover), a static peer list and relays
// (--relay, circuit relay v2: relay.ts) for discovery. libp2p 3 dials nothing by
// itself, so this class dials what discovery finds and keeps dialling the static
// peers and the relays. Membership is in membership.ts, point-to-point messaging
// in p2p.ts; a relay-only node is this class with relayServer set.
import { hostname } from 'node:os';
import { createLibp2p, type Libp2p } from 'libp2p';
import { tcp } from '@libp2p/tcp';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { identify, type Identify } from '@libp2p/identify';
import { ping, type Ping } from '@libp2p/ping';
import { mdns } from '@libp2p/mdns';
import { preSharedKey } from '@libp2p/pnet';
import { gossipsub, type GossipSub } from '@libp2p/gossipsub';
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id';
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import type { CircuitRelayService } from '@libp2p/circuit-relay-v2';
import type { Connection, PeerDiscovery, PeerId, PeerInfo, PrivateKey } from '@libp2p/interface';
import type { MemberInfo, MembershipEvent, PeerHandler, Pool } from './types.ts';
import type { Logger } from '../admin/log.ts';
import { Membership, MEMBERSHIP_PROTOCOL, type MembershipTransport, type RefusalInfo } from './membership.ts';
import { checkProtocolName, PeerMessaging, PeerUnreachableError } from './p2p.ts';
import { poolPsk } from './psk.ts';
import { loadOrCreatePeerKey } from './peer-key.ts';
import {
  CIRCUIT, RELAY_V2_HOP_CODEC, connectionInfo, dialDirectOrRelayed, DirectUpgrader, isRelayedAddr, relayClientStatus, RelayServerStats,
  type PoolConnectionInfo, type RelayClientStatus, type RelayServerOptions, type RelayServerStatus, type UpgradeHost,
} from './relay.ts';

export type { PoolConnectionInfo } from './relay.ts';

/**
 * Default TCP port of pool traffic. Outside the XMPP ports (5222/5223 c2s, 5269 s2s,
 * 5280/5281 HTTP, 5347 components) so that pool traffic gets its own firewall rule,
 * and below the ephemeral range so that an outgoing connection never holds it.
 */
export const DEFAULT_POOL_PORT = 7400;
export const MDNS_SERVICE_TAG = '_imnode._udp.local';
const USER_TOPIC_PREFIX = 'imnode/t/';
const SERVER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export class PoolConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PoolConfigError';
  }
}

export interface Libp2pPoolOptions {
  /** The node's data directory; the peer key lives in <dataDir>/pool/peer.key. */
  dataDir: string;
  /** XMPP domain: part of the pool key, so pools of different domains never mix. */
  domain: string;
  /** Pool password; empty or absent: the key derives from the domain alone (open LAN pool). */
  password?: string;
  /** Unique id of this node in the pool. Default: the host name. */
  serverId?: string;
  /** Listen multiaddrs. Default /ip4/0.0.0.0/tcp/<port>. */
  listen?: string[];
  /** Used when listen is not given. Default DEFAULT_POOL_PORT. */
  port?: number;
  /** Discover the other nodes of the subnet with mDNS. */
  autodiscover?: boolean;
  /** Static peers (multiaddrs, with or without /p2p/<peer id>), dialled and redialled. */
  peers?: string[];
  /** A killed or unreachable member is 'failed' within this time. Default 3000 ms. */
  failureTimeoutMs?: number;
  /** Membership heartbeat period. Default failureTimeout / 6. */
  heartbeatMs?: number;
  /** mDNS query period. Default 5000 ms. */
  mdnsIntervalMs?: number;
  /** Default timeout of request(). Default 10 s. */
  requestTimeoutMs?: number;
  /** Largest point-to-point payload. Default 16 MiB. */
  maxMessageBytes?: number;
  log: Logger;
  /** The node's key, if already loaded (loadOrCreatePeerKey); otherwise start() loads or creates it in dataDir. */
  privateKey?: PrivateKey;
  /** Told when a peer is refused or refuses us (duplicate server id). */
  onRefused?: (info: RefusalInfo) => void;
  /** Relays (multiaddrs of relay-only nodes, /p2p/<id> optional): dialled and redialled, a reservation kept on each. */
  relays?: string[];
  /** Makes this node a relay-only node: a circuit relay v2 server for the pool. */
  relayServer?: RelayServerOptions;
}

interface Services extends Record<string, unknown> {
  identify: Identify;
  ping: Ping;
  pubsub: GossipSub;
  mdns?: PeerDiscovery;
  relay?: CircuitRelayService;
  dcutr?: unknown;
}

function isLoopback(ma: Multiaddr | string): boolean {
  const s = ma.toString();
  return s.startsWith('/ip4/127.') || s.startsWith('/ip6/::1/');
}

/** Loopback addresses are announced only by a node that has nothing else (one-host tests). */
function announceFilter(addrs: Multiaddr[]): Multiaddr[] {
  const others = addrs.filter((a) => !isLoopback(a));
  return others.length ? others : addrs;
}

function withPeer(ma: Multiaddr, peer: string): Multiaddr {
  return ma.getComponents().some((c) => c.name === 'p2p') ? ma : ma.encapsulate(`/p2p/${peer}`);
}

export class Libp2pPool implements Pool {
  readonly serverId: string;
  private readonly opts: Libp2pPoolOptions;
  private readonly log: Logger;
  private node: Libp2p<Services> | undefined;
  private p2p: PeerMessaging | undefined;
  private membership: Membership | undefined;
  private readonly earlyHandlers = new Map<string, PeerHandler>();
  private readonly topicHandlers = new Map<string, Set<(data: Uint8Array, fromPeer: string) => void>>();
  private readonly listeners = new Map<MembershipEvent, Set<(m: MemberInfo) => void>>();
  private pubsubReady = false;
  private readonly dialing = new Map<string, number>();
  /** Discovered peers we could not connect to and said so. */
  private readonly noted = new Set<string>();
  private readonly staticPeers = new Map<string, { peer?: string; nextAt: number; backoffMs: number; busy: boolean; relay: boolean }>();
  private relayStats: RelayServerStats | undefined;
  private upgrader: DirectUpgrader | undefined;
  /** Peer ids seen announcing the relay role (a relay keeps its peer key across restarts). */
  private readonly knownRelays = new Set<string>();
  private staticTimer: NodeJS.Timeout | undefined;
  private state: 'new' | 'starting' | 'started' | 'stopping' | 'stopped' = 'new';
  private pendingLoad = 0;
  private myPeerId = '';
  /**
   * Messages and payload bytes this node handed to the pool (membership included),
   * before gossipsub, yamux, noise and pnet framing; gossipsub sends a published
   * message to every mesh peer, so the wire carries more. For status and benchmarks.
   */
  readonly traffic = { published: 0, publishedBytes: 0, sent: 0, sentBytes: 0, requests: 0, requestBytes: 0 };

  constructor(opts: Libp2pPoolOptions) {
    this.opts = opts;
    this.log = opts.log;
    this.serverId = opts.serverId ?? hostname();
    if (!SERVER_ID_RE.test(this.serverId)) {
      throw new PoolConfigError(`server id '${this.serverId}' is not valid: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
    }
    for (const p of opts.peers ?? []) {
      try {
        multiaddr(p);
      } catch {
        throw new PoolConfigError(`--peer ${p}: not a multiaddr (e.g. /ip4/10.0.0.2/tcp/${DEFAULT_POOL_PORT})`);
      }
    }
    for (const l of opts.listen ?? []) {
      try {
        multiaddr(l);
      } catch {
        throw new PoolConfigError(`--pool-listen ${l}: not a multiaddr (e.g. /ip4/0.0.0.0/tcp/${DEFAULT_POOL_PORT})`);
      }
    }
    if (opts.privateKey) this.myPeerId = peerIdFromPrivateKey(opts.privateKey).toString();
  }

  /** Known from construction when a privateKey is passed (see loadOrCreatePeerKey), else once start() has loaded it. */
  get peerId(): string {
    if (!this.myPeerId) throw new Error('the pool peer id is known once start() has loaded the peer key');
    return this.myPeerId;
  }

  async start(): Promise<void> {
    if (this.state !== 'new') throw new Error(`the pool cannot start: it is ${this.state}`);
    this.state = 'starting';
    try {
      await this.doStart();
    } catch (e) {
      this.state = 'stopped';
      throw e;
    }
  }

  private async doStart(): Promise<void> {
    const o = this.opts;
    const privateKey = o.privateKey ?? await loadOrCreatePeerKey(o.dataDir, this.log);
    const t0 = Date.now();
    const psk = await poolPsk(o.domain, o.password);
    this.log.debug(`pool key derived in ${Date.now() - t0} ms`);
    if (!o.password) {
      this.log.warn(`NO POOL PASSWORD: the pool key derives from the domain '${o.domain}' alone, so anyone who can reach this node ` +
        `can join the pool and read its traffic. Set --pool-password on every node outside a trusted LAN.`);
    }
    const relays = o.relayServer ? [] : o.relays ?? [];
    // One bare /p2p-circuit per relay: the transport then reserves on every relay we connect to (relay.ts says why not /<relay>/p2p-circuit).
    const listen = [...(o.listen?.length ? o.listen : [`/ip4/0.0.0.0/tcp/${o.port ?? DEFAULT_POOL_PORT}`]), ...relays.map(() => CIRCUIT)];

    // Loaded only where used: a node of a one-subnet pool does not pay for the import.
    const rs = relays.length || o.relayServer ? await import('./relay-services.ts') : undefined;
    // The gater consults membership, which exists only once the node does: hence the indirection.
    const refused = (p: PeerId): boolean => this.membership?.isRefused(p.toString()) ?? false;
    const node = await createLibp2p<Services>({
      start: false,
      privateKey,
      addresses: { listen, announceFilter },
      // Only a node with relays dials relayed addresses; a relay-only node never does (no relay of relays).
      transports: rs && !o.relayServer ? [tcp(), rs.relayTransport()] : [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      connectionProtector: preSharedKey({ psk }),
      connectionGater: {
        denyDialPeer: refused,
        denyInboundEncryptedConnection: refused,
        denyOutboundEncryptedConnection: refused,
        denyInboundRelayReservation: refused,
        denyOutboundRelayedConnection: (from, to) => refused(from) || refused(to),
      },
      connectionManager: { dialTimeout: 5000, maxConnections: 1024 },
      // Membership pings the members itself, on its own schedule.
      connectionMonitor: { enabled: false },
      nodeInfo: { name: 'imnode', version: '0.1.0' },
      services: {
        identify: identify(),
        ping: ping(),
        pubsub: gossipsub({
          allowPublishToZeroTopicPeers: true,
          emitSelf: false,
          fallbackToFloodsub: false,
          runOnLimitedConnection: true,
          heartbeatInterval: 700,
        }),
        ...(o.autodiscover ? { mdns: mdns({ interval: o.mdnsIntervalMs ?? 5000, serviceTag: MDNS_SERVICE_TAG }) } : {}),
        ...(rs && o.relayServer ? { relay: rs.relayServerService(o.relayServer) } : {}),
        // Hole punching only helps between public addresses (see relay.ts); useless without relays.
        ...(rs && relays.length ? { dcutr: rs.holePunching() } : {}),
      },
    });
    this.node = node;
    this.myPeerId = node.peerId.toString();

    this.p2p = new PeerMessaging({
      host: node,
      log: this.log.child('p2p'),
      requestTimeoutMs: o.requestTimeoutMs,
      maxFrameBytes: o.maxMessageBytes,
      reserved: [MEMBERSHIP_PROTOCOL],
    });
    for (const [name, h] of this.earlyHandlers) this.p2p.handle(name, h);
    this.earlyHandlers.clear();

    this.membership = new Membership({
      serverId: this.serverId,
      peerId: this.myPeerId,
      transport: this.transport(node, this.p2p),
      log: this.log.child('membership'),
      failureTimeoutMs: o.failureTimeoutMs,
      heartbeatMs: o.heartbeatMs,
      onRefused: o.onRefused,
      role: o.relayServer ? 'relay' : undefined,
    });
    this.membership.setLoad(this.pendingLoad);
    for (const ev of ['joined', 'left', 'suspected', 'failed', 'updated'] as const) {
      this.membership.on(ev, (m) => {
        if (this.roleOf(m.peerId) === 'relay') return;
        for (const fn of [...(this.listeners.get(ev) ?? [])]) {
          try {
            fn(m);
          } catch (e) {
            this.log.error(`pool '${ev}' listener failed:`, e);
          }
        }
      });
    }

    node.addEventListener('peer:discovery', (evt) => this.onDiscovered(evt.detail));
    // 'peer:discovery' fires only for peers new to the peer store; mDNS answers for a
    // known peer (one that failed and came back) arrive only here.
    node.services.mdns?.addEventListener('peer', (evt) => this.onDiscovered(evt.detail));
    node.addEventListener('peer:connect', (evt) => this.membership?.onConnect(evt.detail.toString()));
    node.addEventListener('peer:disconnect', (evt) => this.membership?.onDisconnect(evt.detail.toString()));
    node.services.pubsub.addEventListener('message', (evt) => {
      const msg = evt.detail;
      if (msg.type !== 'signed') return;
      const from = msg.from.toString();
      if (this.membership?.isRefused(from)) return;
      const set = this.topicHandlers.get(msg.topic);
      if (!set) return;
      for (const fn of [...set]) {
        try {
          fn(msg.data, from);
        } catch (e) {
          this.log.error(`handler of topic ${msg.topic} failed:`, e);
        }
      }
    });

    try {
      await node.start();
      // Topics subscribed before start (modules wire themselves up before the pool runs).
      for (const topic of this.topicHandlers.keys()) node.services.pubsub.subscribe(topic);
      this.pubsubReady = true;
      await this.p2p.start();
      if (node.services.relay) {
        this.relayStats = new RelayServerStats(node.services.relay, this.log.child('relay'));
        await this.relayStats.attach(node);
      }
    } catch (e) {
      await Promise.resolve(node.stop()).catch(() => {});
      const err = e as Error;
      if (err.name === 'UnsupportedListenAddressesError') {
        // libp2p's message spans lines with a stack; keep the cause only.
        const cause = /(E[A-Z]+)[^\n]*/.exec(err.message)?.[0] ?? err.message.split('\n')[0];
        throw new PoolConfigError(`cannot listen for pool traffic on ${listen.join(' ')}: ${cause}`);
      }
      throw e;
    }
    this.state = 'started';
    if (relays.length) {
      this.upgrader = new DirectUpgrader(this.upgradeHost(node), this.log.child('relay'));
      this.upgrader.start();
    }
    this.membership.start();
    for (const p of o.peers ?? []) this.staticPeers.set(p, { nextAt: 0, backoffMs: 0, busy: false, relay: false });
    for (const r of relays) this.staticPeers.set(r, { ...this.staticPeers.get(r) ?? { nextAt: 0, backoffMs: 0, busy: false }, relay: true });
    if (this.staticPeers.size) {
      this.dialStaticPeers();
      this.staticTimer = setInterval(() => this.dialStaticPeers(), 1000);
    }
    this.log.info(`pool node ${this.serverId} (${this.myPeerId}) listening on ${node.getMultiaddrs().map(String).join(' ') || listen.join(' ')}` +
      `${o.autodiscover ? ', mDNS discovery on' : ''}${o.peers?.length ? `, ${o.peers.length} static peer(s)` : ''}` +
      `${relays.length ? `, ${relays.length} relay(s)` : ''}${o.relayServer ? ', relay server on' : ''}`);
  }

  async stop(): Promise<void> {
    if (this.state === 'new') {
      this.state = 'stopped';
      return;
    }
    if (this.state !== 'started' && this.state !== 'starting') return;
    this.state = 'stopping';
    clearInterval(this.staticTimer);
    this.upgrader?.stop();
    await this.membership?.leave();
    await this.p2p?.stop();
    this.pubsubReady = false;
    await this.node?.stop();
    this.state = 'stopped';
    this.log.info('pool node stopped');
  }

  /**
   * The members that serve the domain. Relay-only nodes are left out, and so are
   * their events: they hold no sessions, rooms or user data, so routing,
   * replication and room sequencing must never pick one (allMembers() has them).
   */
  members(): MemberInfo[] {
    if (!this.membership) return [];
    return this.membership.members().filter((m) => this.roleOf(m.peerId) !== 'relay');
  }

  /** Every member, relays included, each with its role ('relay'); for status. */
  allMembers(): Array<MemberInfo & { role?: string }> {
    if (!this.membership) return [];
    return this.membership.members().map((m) => {
      const role = this.roleOf(m.peerId);
      return role ? { ...m, role } : m;
    });
  }

  member(peerId: string): MemberInfo | undefined {
    return this.membership?.member(peerId);
  }

  /** May be called before start(). */
  on(event: MembershipEvent, fn: (m: MemberInfo) => void): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  setLoad(sessions: number): void {
    this.pendingLoad = sessions;
    this.membership?.setLoad(sessions);
  }

  async publish(topic: string, data: Uint8Array): Promise<void> {
    this.traffic.published++;
    this.traffic.publishedBytes += data.byteLength;
    await this.started().services.pubsub.publish(USER_TOPIC_PREFIX + topic, data);
  }

  /** May be called before start(). */
  subscribe(topic: string, handler: (data: Uint8Array, fromPeer: string) => void): () => void {
    return this.subscribeRaw(USER_TOPIC_PREFIX + topic, handler);
  }

  async send(peerId: string, protocol: string, data: Uint8Array): Promise<void> {
    const refusal = this.unreachable(peerId);
    if (refusal) throw refusal;
    this.traffic.sent++;
    this.traffic.sentBytes += data.byteLength;
    // Not awaited before the call returns: the write is queued now, which keeps the order of calls.
    return this.p2pStarted().send(peerId, protocol, data);
  }

  async request(peerId: string, protocol: string, data: Uint8Array, timeoutMs?: number): Promise<Uint8Array> {
    const refusal = this.unreachable(peerId);
    if (refusal) throw refusal;
    this.traffic.requests++;
    this.traffic.requestBytes += data.byteLength;
    return this.p2pStarted().request(peerId, protocol, data, timeoutMs);
  }

  /** May be called before start(). */
  handle(protocol: string, handler: PeerHandler): void {
    if (protocol === MEMBERSHIP_PROTOCOL) throw new Error(`pool protocol name '${protocol}' is reserved`);
    checkProtocolName(protocol);
    if (this.p2p) this.p2p.handle(protocol, handler);
    else {
      if (this.earlyHandlers.has(protocol)) throw new Error(`pool protocol '${protocol}' already has a handler`);
      this.earlyHandlers.set(protocol, handler);
    }
  }

  /** This node's announced pool addresses (with /p2p/<id>), relayed ones included. */
  addresses(): string[] {
    return this.node && this.state === 'started' ? this.node.getMultiaddrs().map(String) : [];
  }

  /** The role a member announced ('relay' for a relay-only node), undefined for a normal node. */
  roleOf(peerId: string): string | undefined {
    if (peerId === this.myPeerId) return this.opts.relayServer ? 'relay' : undefined;
    const role = this.membership?.roleOf(peerId);
    if (role === 'relay') this.knownRelays.add(peerId);
    // Membership forgets a run before it reports its end ('failed' of a restarted relay): the peer id is remembered.
    return role ?? (this.knownRelays.has(peerId) ? 'relay' : undefined);
  }

  /** Open connections to other peers (members and relays): direct or relayed, and where to. */
  connections(): PoolConnectionInfo[] {
    if (!this.node || this.state !== 'started') return [];
    return connectionInfo(this.node.getConnections(), (peer) => this.membership?.member(peer)?.serverId);
  }

  /** The listed relays (--relay) and this node's reservations on them; empty on a relay-only node. */
  relays(): RelayClientStatus[] {
    const node = this.node && this.state === 'started' ? this.node : undefined;
    const listed = [...this.staticPeers].filter(([, s]) => s.relay).map(([address, s]) => ({ address, peer: s.peer }));
    return relayClientStatus(listed, node?.getMultiaddrs().map(String) ?? [],
      (peer) => !!node && node.getConnections(peerIdFromString(peer)).some((c) => c.status === 'open'));
  }

  /** Reservations held on this relay and what it carried; undefined unless this is a relay-only node. */
  relayServerStatus(): RelayServerStatus | undefined {
    return this.relayStats?.status();
  }

  /** Relayed connections replaced by direct ones since start. */
  get directUpgrades(): number {
    return this.upgrader?.upgraded ?? 0;
  }

  // ---- internals -------------------------------------------------------------------

  private upgradeHost(node: Libp2p<Services>): UpgradeHost {
    return {
      connections: (peer) => node.getConnections(peerIdFromString(peer)).filter((c: Connection) => c.status === 'open'),
      directAddresses: (peer) => {
        const m = this.membership?.member(peer);
        const out: Multiaddr[] = [];
        for (const a of m?.addresses ?? []) {
          if (isRelayedAddr(a) || isLoopback(a)) continue;
          try {
            out.push(withPeer(multiaddr(a), peer));
          } catch { /* garbage from a member; skip */ }
        }
        return out;
      },
      dial: (addrs, timeoutMs) => node.dial(addrs, { signal: AbortSignal.timeout(timeoutMs) }),
      // Relays are reached directly by definition (no relay of relays): members only.
      peers: () => this.members().filter((m) => m.peerId !== this.myPeerId && m.state === 'alive' && this.roleOf(m.peerId) !== 'relay').map((m) => m.peerId),
    };
  }

  private started(): Libp2p<Services> {
    if (!this.node || this.state !== 'started') throw new Error('the pool is not started');
    return this.node;
  }

  private p2pStarted(): PeerMessaging {
    this.started();
    return this.p2p!;
  }

  /** A member known to be gone is not worth a dial and a timeout. */
  private unreachable(peerId: string): Error | undefined {
    if (this.membership?.isRefused(peerId)) return new PeerUnreachableError(peerId, 'refused (duplicate server id)');
    const m = this.membership?.member(peerId);
    if (m && (m.state === 'failed' || m.state === 'left')) return new PeerUnreachableError(peerId, `member ${m.serverId} is ${m.state}`);
    return undefined;
  }

  private subscribeRaw(topic: string, handler: (data: Uint8Array, fromPeer: string) => void): () => void {
    let set = this.topicHandlers.get(topic);
    if (!set) {
      this.topicHandlers.set(topic, (set = new Set()));
      if (this.pubsubReady) this.node!.services.pubsub.subscribe(topic);
    }
    set.add(handler);
    return () => {
      const s = this.topicHandlers.get(topic);
      if (!s?.delete(handler) || s.size) return;
      this.topicHandlers.delete(topic);
      if (this.pubsubReady && this.state === 'started') this.node!.services.pubsub.unsubscribe(topic);
    };
  }

  private transport(node: Libp2p<Services>, p2p: PeerMessaging): MembershipTransport {
    return {
      addresses: () => node.getMultiaddrs().map(String),
      publish: async (topic, data) => {
        this.traffic.published++;
        this.traffic.publishedBytes += data.byteLength;
        await node.services.pubsub.publish(topic, data);
      },
      subscribe: (topic, handler) => this.subscribeRaw(topic, handler),
      handle: (name, handler) => p2p.handleInternal(name, handler),
      request: (peer, name, data, timeoutMs) => {
        this.traffic.requests++;
        this.traffic.requestBytes += data.byteLength;
        return p2p.request(peer, name, data, timeoutMs);
      },
      ping: async (peer, timeoutMs) => {
        await node.services.ping.ping(peerIdFromString(peer), { signal: AbortSignal.timeout(timeoutMs) });
      },
      dial: async (peer, addresses, timeoutMs) => {
        const id = peerIdFromString(peer);
        if (node.getConnections(id).length) return;
        const direct: Multiaddr[] = [], relayed: Multiaddr[] = [];
        for (const a of addresses) {
          try {
            (isRelayedAddr(a) ? relayed : direct).push(withPeer(multiaddr(a), peer));
          } catch { /* a member announced garbage; skip it */ }
        }
        // Without the relay transport (no --relay, or a relay-only node) relayed addresses are undialable.
        if (!relayed.length || !this.upgrader) {
          await node.dial(direct.length ? direct : id, { signal: AbortSignal.timeout(timeoutMs) });
          return;
        }
        await dialDirectOrRelayed(node, id, direct, relayed, timeoutMs);
      },
      isConnected: (peer) => node.getConnections(peerIdFromString(peer)).length > 0,
      disconnect: (peer) => {
        for (const c of node.getConnections(peerIdFromString(peer))) c.abort(new Error('dropped by pool membership'));
      },
      forgetPeer: (peer, why) => p2p.closePeer(peer, why),
    };
  }

  /** Dials a peer found by discovery, unless connected, refused, or tried a moment ago. */
  private onDiscovered(info: PeerInfo): void {
    const node = this.node;
    if (!node || this.state !== 'started') return;
    const peer = info.id.toString();
    if (peer === this.myPeerId || this.membership?.isRefused(peer)) return;
    if (node.getConnections(info.id).length) return;
    const m = this.membership?.member(peer);
    if (m?.state === 'failed') {
      this.membership!.onSighting(peer);
      return;
    }
    if (m?.state === 'left') return; // gone on purpose; its next run will have a new start time and hello us
    const now = Date.now();
    if ((this.dialing.get(peer) ?? 0) > now) return;
    this.dialing.set(peer, now + 2000);
    const addrs = announceFilter(info.multiaddrs).map((a) => withPeer(a, peer));
    node.dial(addrs.length ? addrs : info.id, { signal: AbortSignal.timeout(5000) }).then(
      () => this.log.debug(`connected to discovered peer ${peer}`),
      // Another pool (other password or domain) on the same subnet ends here, every time: say it once.
      (e: Error) => {
        const first = !this.noted.has(peer);
        if (first && this.noted.size < 1000) this.noted.add(peer);
        this.log[first ? 'info' : 'debug'](`cannot connect to discovered peer ${peer} (another pool with another password or domain, or unreachable): ${e.message}`);
      },
    );
    for (const [p, until] of this.dialing) if (until <= now) this.dialing.delete(p);
  }

  /** A --relay address that answers without relaying (a normal node, an old version) would fail silently: say it once. */
  private checkRelay(addr: string, peer: PeerId): void {
    setTimeout(() => {
      const node = this.node;
      if (!node || this.state !== 'started') return;
      node.peerStore.get(peer).then((p) => {
        if (p.protocols.length && !p.protocols.includes(RELAY_V2_HOP_CODEC)) {
          this.log.warn(`--relay ${addr} answers but is not a relay (no circuit relay v2 service; is it started with --relay-only?)`);
        }
      }, () => { /* not identified yet: it may be reconnecting */ });
    }, 5000).unref?.();
  }

  private dialStaticPeers(): void {
    const node = this.node;
    if (!node || this.state !== 'started') return;
    const now = Date.now();
    for (const [addr, s] of this.staticPeers) {
      if (s.busy || s.nextAt > now) continue;
      if (s.peer && (node.getConnections(peerIdFromString(s.peer)).length || this.membership?.isRefused(s.peer))) continue;
      s.busy = true;
      node.dial(multiaddr(addr), { signal: AbortSignal.timeout(5000) }).then(
        (conn) => {
          const first = s.relay && s.peer === undefined;
          s.peer = conn.remotePeer.toString();
          s.backoffMs = 0;
          s.nextAt = 0;
          if (first) this.checkRelay(addr, conn.remotePeer);
        },
        (e: Error) => {
          s.backoffMs = Math.min(10_000, Math.max(1000, s.backoffMs * 2));
          s.nextAt = Date.now() + s.backoffMs;
          this.log.debug(`static peer ${addr} not reachable: ${e.message}; next try in ${s.backoffMs} ms`);
        },
      ).finally(() => {
        s.busy = false;
      });
    }
  }
}
