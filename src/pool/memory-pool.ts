// TEST DOUBLE. An in-process implementation of the Pool interface
// (src/pool/types.ts): several MemoryPool instances in one process talk through
// a shared MemoryHub, which can drop gossip messages and cut the hub into
// partitions. It exists only so that unit tests can drive the replication logic
// (src/pool/replicated.ts) through loss, partitions and heals deterministically;
// production wiring uses the libp2p pool and must never import this file.
//
// Semantics kept from the real pool: delivery is asynchronous and ordered per
// sender; publish reaches every other started, reachable, subscribed member and
// never the sender; request/send reject when the peer is unreachable; each
// member has its own view of the others and gets 'joined', 'failed' and 'left'
// events as the hub changes.
import type { MemberInfo, MembershipEvent, PeerHandler, Pool } from './types.ts';

export class UnreachableError extends Error {
  constructor(peer: string) {
    super(`peer unreachable: ${peer}`);
    this.name = 'UnreachableError';
  }
}

export interface MemoryHubOptions {
  /** Source of randomness for loss decisions (seed it in tests). Default Math.random. */
  random?: () => number;
}

export class MemoryHub {
  /** Probability that one gossip delivery (one message to one member) is lost. */
  gossipLoss = 0;
  /** Probability that a point-to-point request or send is lost (it then rejects). */
  requestLoss = 0;
  /** Counters, for tests and measurements. */
  readonly stats = { published: 0, delivered: 0, dropped: 0, requests: 0, gossipBytes: 0, requestBytes: 0 };
  readonly random: () => number;
  readonly #pools = new Map<string, MemoryPool>();
  #groups: Map<string, number> | null = null;
  #inflight = 0;

  constructor(opts: MemoryHubOptions = {}) {
    this.random = opts.random ?? Math.random;
  }

  /** Cuts the hub: members (by server id) in different groups cannot reach each other; unlisted members are alone. */
  partition(...groups: string[][]): void {
    this.#groups = new Map();
    groups.forEach((g, i) => g.forEach((id) => this.#groups!.set(id, i)));
    this.#refreshViews();
  }

  heal(): void {
    this.#groups = null;
    this.#refreshViews();
  }

  reachable(a: string, b: string): boolean {
    if (a === b) return true;
    if (!this.#groups) return true;
    const ga = this.#groups.get(a);
    return ga !== undefined && ga === this.#groups.get(b);
  }

  /** Resolves once no message or event is in flight. */
  async idle(): Promise<void> {
    while (this.#inflight > 0) await new Promise((r) => setImmediate(r));
  }

  pools(): MemoryPool[] {
    return [...this.#pools.values()];
  }

  /** @internal */
  deliver(fn: () => void | Promise<void>): void {
    this.#inflight++;
    setImmediate(async () => {
      try {
        await fn();
      } finally {
        this.#inflight--;
      }
    });
  }

  /** @internal */
  attach(p: MemoryPool): void {
    for (const other of this.#pools.values()) if (other.serverId === p.serverId) throw new Error(`duplicate server id: ${p.serverId}`);
    this.#pools.set(p.peerId, p);
    this.#refreshViews();
  }

  /** @internal */
  detach(p: MemoryPool): void {
    this.#pools.delete(p.peerId);
    for (const other of this.#pools.values()) other._see(p, 'left');
  }

  /** @internal */
  get(peerId: string): MemoryPool | undefined {
    return this.#pools.get(peerId);
  }

  #refreshViews(): void {
    for (const a of this.#pools.values()) {
      for (const b of this.#pools.values()) {
        if (a !== b) a._see(b, this.reachable(a.serverId, b.serverId) ? 'alive' : 'failed');
      }
    }
  }
}

export class MemoryPool implements Pool {
  readonly serverId: string;
  readonly peerId: string;
  readonly hub: MemoryHub;
  readonly startedAt = Date.now();
  #started = false;
  #sessions = 0;
  #view = new Map<string, MemberInfo>();
  #listeners = new Map<MembershipEvent, Set<(m: MemberInfo) => void>>();
  #topics = new Map<string, Set<(data: Uint8Array, fromPeer: string) => void>>();
  #handlers = new Map<string, PeerHandler>();

  constructor(hub: MemoryHub, serverId: string) {
    this.hub = hub;
    this.serverId = serverId;
    this.peerId = `mem-${serverId}`;
  }

  get started(): boolean {
    return this.#started;
  }

  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    this.hub.attach(this);
  }

  async stop(): Promise<void> {
    if (!this.#started) return;
    this.#started = false;
    this.hub.detach(this);
    this.#view.clear();
  }

  members(): MemberInfo[] {
    const self = this.#info(this, 'alive');
    return [self, ...this.#view.values()].map((m) => ({ ...m })).sort((a, b) => (a.serverId < b.serverId ? -1 : a.serverId > b.serverId ? 1 : 0));
  }

  member(peerId: string): MemberInfo | undefined {
    if (peerId === this.peerId) return this.#info(this, 'alive');
    const m = this.#view.get(peerId);
    return m && { ...m };
  }

  on(event: MembershipEvent, fn: (m: MemberInfo) => void): () => void {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  setLoad(sessions: number): void {
    this.#sessions = sessions;
  }

  async publish(topic: string, data: Uint8Array): Promise<void> {
    if (!this.#started) throw new Error('pool not started');
    this.hub.stats.published++;
    for (const p of this.hub.pools()) {
      if (p === this || !p.#started || !this.hub.reachable(this.serverId, p.serverId)) continue;
      const handlers = p.#topics.get(topic);
      if (!handlers?.size) continue;
      if (this.hub.gossipLoss > 0 && this.hub.random() < this.hub.gossipLoss) {
        this.hub.stats.dropped++;
        continue;
      }
      this.hub.stats.delivered++;
      this.hub.stats.gossipBytes += data.length;
      const copy = data.slice();
      const from = this.peerId;
      this.hub.deliver(() => {
        // A partition cut while the message was in flight loses it, as a real link would.
        if (!p.#started || !this.hub.reachable(this.serverId, p.serverId)) return;
        for (const h of [...(p.#topics.get(topic) ?? [])]) h(copy, from);
      });
    }
  }

  subscribe(topic: string, handler: (data: Uint8Array, fromPeer: string) => void): () => void {
    let set = this.#topics.get(topic);
    if (!set) this.#topics.set(topic, (set = new Set()));
    set.add(handler);
    return () => set.delete(handler);
  }

  async send(peerId: string, protocol: string, data: Uint8Array): Promise<void> {
    await this.request(peerId, protocol, data, undefined, true);
  }

  request(peerId: string, protocol: string, data: Uint8Array, timeoutMs = 10_000, oneWay = false): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      const target = this.hub.get(peerId);
      if (!this.#started || !target || !target.#started || !this.hub.reachable(this.serverId, target.serverId)) {
        reject(new UnreachableError(peerId));
        return;
      }
      if (this.hub.requestLoss > 0 && this.hub.random() < this.hub.requestLoss) {
        reject(new Error(`request to ${peerId} lost`));
        return;
      }
      this.hub.stats.requests++;
      this.hub.stats.requestBytes += data.length;
      const timer = setTimeout(() => reject(new Error(`request to ${peerId} timed out`)), timeoutMs);
      const copy = data.slice();
      this.hub.deliver(async () => {
        try {
          const handler = target.#handlers.get(protocol);
          if (!handler) throw new Error(`${peerId} does not handle ${protocol}`);
          const res = await handler(copy, this.peerId);
          if (!this.hub.reachable(this.serverId, target.serverId)) throw new UnreachableError(peerId);
          const out = res ? res.slice() : new Uint8Array(0);
          if (!oneWay) this.hub.stats.requestBytes += out.length;
          resolve(out);
        } catch (err) {
          reject(err);
        } finally {
          clearTimeout(timer);
        }
      });
    });
  }

  handle(protocol: string, handler: PeerHandler): void {
    this.#handlers.set(protocol, handler);
  }

  /** @internal the hub tells this member what it now sees of another. */
  _see(other: MemoryPool, state: 'alive' | 'failed' | 'left'): void {
    if (!this.#started) return;
    const prev = this.#view.get(other.peerId);
    if (state === 'left') {
      if (!prev) return;
      this.#view.delete(other.peerId);
      this.#emit('left', { ...prev, state: 'left' });
      return;
    }
    if (prev?.state === state) return;
    if (!prev && state === 'failed') return;
    const info = this.#info(other, state);
    this.#view.set(other.peerId, info);
    this.#emit(state === 'alive' ? 'joined' : 'failed', info);
  }

  #info(p: MemoryPool, state: MemberInfo['state']): MemberInfo {
    return { serverId: p.serverId, peerId: p.peerId, addresses: [`memory://${p.serverId}`], state, sessions: p.#sessions, startedAt: p.startedAt, lastSeen: Date.now() };
  }

  #emit(event: MembershipEvent, m: MemberInfo): void {
    const set = this.#listeners.get(event);
    if (!set?.size) return;
    this.hub.deliver(() => {
      for (const fn of [...set]) fn({ ...m });
    });
  }
}
