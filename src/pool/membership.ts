// The pool's group membership service (DESIGN.md "Shoal, mapped": the Shoal group
// membership service and its events: joined, planned leave, suspected, failed).
//
// Every node publishes a heartbeat (server id, addresses, load, start time, sequence
// number) on a gossip topic; gossip relays it, so a node learns of peers it has no
// connection to yet and dials them, and the pool becomes a full mesh. Admission is
// a direct exchange: when a connection opens each end sends its record ("hello")
// and the other answers 'welcome' or 'refused'. A peer becomes a member in my view
// only once it has welcomed me, so a node that anyone refuses (a duplicate server
// id) is a member nowhere, not even transiently in its own view.
//
// Failure detection combines connection loss and silence:
// - a lost connection is redialled at once; a killed process refuses the dial, so
//   two failed redials with no sign of life since the loss make the member failed
//   within a fraction of a second;
// - a silent member (a partition, a machine that vanished) is suspected after about
//   half the failure timeout and pinged; still silent, it is failed so that at most
//   failureTimeout passes between its last heartbeat period and the verdict.
// A failed member is redialled with backoff; its welcome over a new connection
// brings it back ('joined'). A planned stop sends 'left' to every member first.
import type { MemberInfo, MemberState, MembershipEvent } from './types.ts';
import type { Logger } from '../admin/log.ts';

/** What membership needs from the node: implemented by Libp2pPool over libp2p. */
export interface MembershipTransport {
  /** Current announce addresses of this node. */
  addresses(): string[];
  publish(topic: string, data: Uint8Array): Promise<void>;
  subscribe(topic: string, handler: (data: Uint8Array, fromPeer: string) => void): () => void;
  handle(name: string, handler: (data: Uint8Array, fromPeer: string) => Promise<Uint8Array | void>): void;
  request(peer: string, name: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array>;
  /** Resolves when the peer answered a ping. */
  ping(peer: string, timeoutMs: number): Promise<void>;
  /** Opens a connection (no-op if one exists). */
  dial(peer: string, addresses: string[], timeoutMs: number): Promise<void>;
  isConnected(peer: string): boolean;
  /** Drops every connection to the peer at once, without a graceful close. */
  disconnect(peer: string): void;
  /** Fails pending point-to-point operations to the peer. */
  forgetPeer(peer: string, why: string): void;
}

export interface MembershipInit {
  serverId: string;
  peerId: string;
  startedAt?: number;
  transport: MembershipTransport;
  log: Logger;
  /** A killed or unreachable member is failed within this time. Default 3000 ms. */
  failureTimeoutMs?: number;
  /** Heartbeat period. Default failureTimeout / 6. */
  heartbeatMs?: number;
  /** Failed and left members stay listed this long. Default 10 min. */
  forgetAfterMs?: number;
  /** How long a refused peer (duplicate server id) is kept out before it may try again. Default 30 s. */
  refuseForMs?: number;
  /** Called when a peer is refused, or when this node is refused by a peer. */
  onRefused?: (info: RefusalInfo) => void;
  /** Announced to the others: 'relay' for a relay-only node (it serves no clients). */
  role?: string;
}

export interface RefusalInfo {
  /** 'refused-peer': we refused it; 'refused-by-peer': it refused us. */
  kind: 'refused-peer' | 'refused-by-peer';
  peerId: string;
  serverId: string;
  /** Peer id of the member that holds the server id. */
  holder: string;
}

export const MEMBERSHIP_TOPIC = 'imnode/membership/1';
export const MEMBERSHIP_PROTOCOL = 'membership';

interface Announce {
  v: 1;
  t: 'hb' | 'hello' | 'left';
  serverId: string;
  peerId: string;
  addrs: string[];
  sessions: number;
  startedAt: number;
  seq: number;
  /** Absent on a normal node; 'relay' on a relay-only node. */
  role?: string;
}

type Reply = { v: 1; t: 'welcome' } & Omit<Announce, 'v' | 't'> | { v: 1; t: 'refused'; serverId: string; holder: string } | { v: 1; t: 'ok' };

interface Entry extends MemberInfo {
  seq: number;
  role?: string;
  stateSince: number;
  /** When the last connection to it was lost while it was alive; 0 when connected or not applicable. */
  lostAt: number;
  redialFailures: number;
  nextDialAt: number;
  lastDialAt: number;
  backoffMs: number;
  dialing: boolean;
  pinging: boolean;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

function isAnnounce(x: unknown): x is Announce {
  const a = x as Announce;
  return !!a && typeof a === 'object' && a.v === 1 && typeof a.t === 'string' && typeof a.serverId === 'string' && a.serverId.length > 0 &&
    a.serverId.length <= 256 && typeof a.peerId === 'string' && Array.isArray(a.addrs) && a.addrs.every((s) => typeof s === 'string') &&
    typeof a.sessions === 'number' && typeof a.startedAt === 'number' && typeof a.seq === 'number';
}

export class Membership {
  readonly serverId: string;
  readonly peerId: string;
  readonly startedAt: number;
  readonly failureTimeoutMs: number;
  readonly heartbeatMs: number;
  readonly role: string | undefined;
  private readonly suspectAfterMs: number;
  private readonly failAfterMs: number;
  private readonly forgetAfterMs: number;
  private readonly refuseForMs: number;
  private readonly t: MembershipTransport;
  private readonly log: Logger;
  private readonly onRefused?: (info: RefusalInfo) => void;
  private readonly entries = new Map<string, Entry>();
  /** Peers kept out, and which side refused (both usually do). */
  private readonly refused = new Map<string, { until: number; byUs: boolean; byThem: boolean }>();
  /** Peers heard from but not admitted (their welcome has not come yet). */
  private readonly pending = new Map<string, { a: Announce; seenAt: number; lastDialAt: number }>();
  private readonly helloInFlight = new Set<string>();
  private readonly lastHello = new Map<string, number>();
  private readonly listeners = new Map<MembershipEvent, Set<(m: MemberInfo) => void>>();
  private sessions = 0;
  private seq = 0;
  private lastPublish = 0;
  private timer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;
  private running = false;

  constructor(init: MembershipInit) {
    this.serverId = init.serverId;
    this.peerId = init.peerId;
    this.startedAt = init.startedAt ?? Date.now();
    this.t = init.transport;
    this.log = init.log;
    this.onRefused = init.onRefused;
    this.role = init.role;
    this.failureTimeoutMs = init.failureTimeoutMs ?? 3000;
    this.heartbeatMs = init.heartbeatMs ?? Math.max(100, Math.round(this.failureTimeoutMs / 6));
    // The member's last heartbeat came up to one period before it went silent, so the
    // silence allowed is one period short of the timeout: failed within failureTimeout
    // of the event, not of its last heartbeat.
    this.failAfterMs = Math.max(this.heartbeatMs * 2, this.failureTimeoutMs - this.heartbeatMs);
    this.suspectAfterMs = Math.max(this.heartbeatMs * 1.5, Math.round(this.failAfterMs / 2));
    this.forgetAfterMs = init.forgetAfterMs ?? 10 * 60_000;
    this.refuseForMs = init.refuseForMs ?? 30_000;
    this.t.handle(MEMBERSHIP_PROTOCOL, (data, from) => this.onDirect(data, from));
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.unsubscribe = this.t.subscribe(MEMBERSHIP_TOPIC, (data, from) => this.onGossip(data, from));
    this.tick();
    // Checked twice per heartbeat so that detection lags the deadline by a quarter period at most.
    this.timer = setInterval(() => this.tick(), Math.max(50, Math.round(this.heartbeatMs / 2)));
    this.timer.unref?.();
  }

  /** Planned leave: tells every member directly (and by gossip), then goes quiet. */
  async leave(timeoutMs = 1500): Promise<void> {
    if (!this.running) return;
    this.running = false;
    clearInterval(this.timer);
    const bye = enc.encode(JSON.stringify(this.announce('left')));
    const targets = [...this.entries.values()].filter((e) => e.state === 'alive' || e.state === 'suspected');
    await Promise.allSettled([
      this.t.publish(MEMBERSHIP_TOPIC, bye),
      ...targets.map((e) => this.t.request(e.peerId, MEMBERSHIP_PROTOCOL, bye, timeoutMs)),
    ]);
    this.unsubscribe?.();
  }

  setLoad(sessions: number): void {
    this.sessions = Math.max(0, Math.floor(sessions));
  }

  members(): MemberInfo[] {
    const now = Date.now();
    const self: MemberInfo = {
      serverId: this.serverId, peerId: this.peerId, addresses: this.t.addresses(), state: 'alive',
      sessions: this.sessions, startedAt: this.startedAt, lastSeen: now,
    };
    return [self, ...[...this.entries.values()].map(snapshot)].sort((a, b) => (a.serverId < b.serverId ? -1 : a.serverId > b.serverId ? 1 : a.peerId < b.peerId ? -1 : 1));
  }

  member(peerId: string): MemberInfo | undefined {
    if (peerId === this.peerId) return this.members().find((m) => m.peerId === peerId);
    const e = this.entries.get(peerId);
    return e && snapshot(e);
  }

  on(event: MembershipEvent, fn: (m: MemberInfo) => void): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  /** The role the member announced ('relay'), undefined for a normal node or an unknown peer. */
  roleOf(peerId: string): string | undefined {
    if (peerId === this.peerId) return this.role;
    return this.entries.get(peerId)?.role;
  }

  /** True while the peer is kept out (duplicate server id); the connection gater asks this. */
  isRefused(peerId: string): boolean {
    const r = this.refused.get(peerId);
    if (!r) return false;
    if (r.until > Date.now()) return true;
    this.refused.delete(peerId);
    return false;
  }

  /** Called by the pool when the first connection to a peer opens. */
  onConnect(peer: string): void {
    if (!this.running) return;
    if (this.isRefused(peer)) {
      this.t.disconnect(peer);
      return;
    }
    const e = this.entries.get(peer);
    if (e) {
      e.lostAt = 0;
      e.redialFailures = 0;
    }
    this.sendHello(peer);
  }

  /** Called by the pool when the last connection to a peer closed. */
  onDisconnect(peer: string): void {
    if (!this.running) return;
    const e = this.entries.get(peer);
    if (!e || (e.state !== 'alive' && e.state !== 'suspected')) return;
    e.lostAt = Date.now();
    e.redialFailures = 0;
    e.nextDialAt = 0;
    this.redial(e);
  }

  /** Called by the pool for every discovery sighting (mDNS answer): dial members we lost. */
  onSighting(peer: string): void {
    const e = this.entries.get(peer);
    if (!e || e.state !== 'failed' || e.dialing) return;
    if (Date.now() - e.lastDialAt < 1000) return; // sightings come in bursts; one dial a second is plenty
    this.redial(e);
  }

  // ---- incoming --------------------------------------------------------------------

  private onGossip(data: Uint8Array, from: string): void {
    if (!this.running) return;
    let a: unknown;
    try {
      a = JSON.parse(dec.decode(data));
    } catch {
      return;
    }
    if (!isAnnounce(a) || a.peerId !== from) return; // gossip is signed: the sender is who it says
    if (a.t === 'left') this.onLeft(a);
    else this.observe(a, false);
  }

  private async onDirect(data: Uint8Array, from: string): Promise<Uint8Array> {
    let a: unknown;
    try {
      a = JSON.parse(dec.decode(data));
    } catch {
      throw new Error('malformed membership message');
    }
    if (!isAnnounce(a) || a.peerId !== from) throw new Error('malformed membership message');
    if (!this.running) return reply({ v: 1, t: 'ok' });
    if (a.t === 'left') {
      this.onLeft(a);
      return reply({ v: 1, t: 'ok' });
    }
    const holder = this.observe(a, true);
    if (holder) return reply({ v: 1, t: 'refused', serverId: a.serverId, holder });
    return reply({ ...this.announce('hello'), v: 1, t: 'welcome' });
  }

  private sendHello(peer: string): void {
    if (this.helloInFlight.has(peer) || !this.running) return;
    this.helloInFlight.add(peer);
    this.lastHello.set(peer, Date.now());
    const hello = enc.encode(JSON.stringify(this.announce('hello')));
    this.t.request(peer, MEMBERSHIP_PROTOCOL, hello, Math.max(2000, this.failureTimeoutMs)).then(
      (bytes) => {
        this.helloInFlight.delete(peer);
        this.onHelloReply(bytes, peer);
      },
      // Retried from the periodic check while the connection lasts.
      (err: Error) => {
        this.helloInFlight.delete(peer);
        this.log.debug(`hello to ${peer} failed: ${err.message}`);
      },
    );
  }

  private onHelloReply(bytes: Uint8Array, peer: string): void {
    if (!this.running) return;
    let r: Reply;
    try {
      r = JSON.parse(dec.decode(bytes)) as Reply;
    } catch {
      return;
    }
    if (r.t === 'refused') {
      const holder = typeof r.holder === 'string' ? r.holder : 'unknown';
      const loggedOurSide = this.refused.get(peer)?.byUs ?? false;
      if (this.keepOut(peer, 'byThem')) {
        if (holder !== peer) {
          this.log.error(`pool peer ${peer} refused this node: server id '${r.serverId}' is already used by member ${holder}; ` +
            'this node cannot join the pool until its --server-id is unique');
        } else if (!loggedOurSide) {
          this.log.error(`pool peer ${peer} refused this node: it uses the same server id '${r.serverId}'; every node of the pool needs a unique --server-id`);
        }
        this.onRefused?.({ kind: 'refused-by-peer', peerId: peer, serverId: r.serverId, holder });
      }
      return;
    }
    if (r.t === 'welcome') {
      const a = { ...r, v: 1 as const, t: 'hello' as const };
      if (isAnnounce(a) && a.peerId === peer) this.admit(a);
    }
  }

  private onLeft(a: Announce): void {
    this.pending.delete(a.peerId);
    const e = this.entries.get(a.peerId);
    if (!e || e.startedAt !== a.startedAt || e.state === 'left') return;
    this.setState(e, 'left');
    this.log.info(`pool member ${e.serverId} (${e.peerId}) left`);
    this.t.forgetPeer(e.peerId, 'member left the pool');
    this.emit('left', e);
  }

  /** Refusal check shared by every path; returns the holder's peer id when the peer is refused. */
  private conflict(a: Announce): string | undefined {
    const holder = this.holderOf(a.serverId, a.peerId);
    if (this.isRefused(a.peerId)) {
      // It may have refused us first; our side of the refusal still deserves its log line.
      if (holder && !this.refused.get(a.peerId)!.byUs) this.refuse(a, holder);
      return holder ?? 'unknown';
    }
    if (holder) this.refuse(a, holder);
    return holder;
  }

  /**
   * A record heard from a peer (gossip heartbeat, or its hello to us). Updates a
   * member; for a peer not admitted yet, remembers it and makes sure a connection
   * and our hello follow. Returns the holder's peer id when the peer is refused.
   */
  private observe(a: Announce, direct: boolean): string | undefined {
    if (a.peerId === this.peerId) return undefined;
    const holder = this.conflict(a);
    if (holder) return holder;
    const now = Date.now();
    const e = this.entries.get(a.peerId);
    if (e && a.startedAt < e.startedAt) return undefined; // from an earlier run of that node, late
    if (e && a.startedAt === e.startedAt) {
      if (e.state === 'left') return undefined; // that run said goodbye; only a new run comes back
      if (e.state === 'failed') {
        // Only its welcome over a live connection brings a failed member back: gossip may be stale.
        if (this.t.isConnected(e.peerId)) this.sendHello(e.peerId);
        else this.onSighting(e.peerId);
        return undefined;
      }
      if (!direct && a.seq <= e.seq) return undefined;
      this.refresh(e, a, now);
      return undefined;
    }
    if (e) this.restarted(e);
    this.pending.set(a.peerId, { a, seenAt: now, lastDialAt: this.pending.get(a.peerId)?.lastDialAt ?? 0 });
    this.approach(a.peerId);
    return undefined;
  }

  /** Our hello was welcomed: the peer is a member (new, back, or refreshed). */
  private admit(a: Announce): void {
    if (a.peerId === this.peerId || this.conflict(a)) return;
    this.pending.delete(a.peerId);
    const now = Date.now();
    let e = this.entries.get(a.peerId);
    if (e && a.startedAt < e.startedAt) return;
    if (e && a.startedAt > e.startedAt) {
      this.restarted(e);
      e = undefined;
    }
    if (!e) {
      // A failed or left run of the same server id under another peer key is replaced.
      for (const other of this.entries.values()) {
        if (other.serverId === a.serverId && other.peerId !== a.peerId) this.entries.delete(other.peerId);
      }
      e = {
        serverId: a.serverId, peerId: a.peerId, addresses: a.addrs.slice(0, 32), state: 'alive', sessions: a.sessions,
        startedAt: a.startedAt, lastSeen: now, seq: a.seq, role: typeof a.role === 'string' ? a.role.slice(0, 32) : undefined, stateSince: now, lostAt: 0, redialFailures: 0, nextDialAt: 0,
        lastDialAt: 0, backoffMs: 0, dialing: false, pinging: false,
      };
      this.entries.set(a.peerId, e);
      this.log.info(`pool member ${e.serverId} (${e.peerId}) joined`);
      this.emit('joined', e);
      return;
    }
    if (e.state === 'left') return;
    if (e.state === 'failed') {
      this.update(e, a, now);
      e.lostAt = 0;
      e.redialFailures = 0;
      e.backoffMs = 0;
      this.setState(e, 'alive');
      this.log.info(`pool member ${e.serverId} (${e.peerId}) is back`);
      this.emit('joined', e);
      return;
    }
    this.refresh(e, a, now);
  }

  private refresh(e: Entry, a: Announce, now: number): void {
    const changed = this.update(e, a, now);
    if (e.state === 'suspected') {
      this.setState(e, 'alive');
      this.log.info(`pool member ${e.serverId} (${e.peerId}) is alive again`);
      this.emit('updated', e);
    } else if (changed) {
      this.emit('updated', e);
    }
  }

  /** The peer runs again under a new start time: its previous run failed without telling. */
  private restarted(e: Entry): void {
    this.entries.delete(e.peerId);
    if (e.state !== 'alive' && e.state !== 'suspected') return;
    this.setState(e, 'failed');
    this.log.warn(`pool member ${e.serverId} (${e.peerId}) restarted; its previous run is failed`);
    this.t.forgetPeer(e.peerId, 'member restarted');
    this.emit('failed', e);
  }

  /** Gets a connection and a hello to a peer not admitted yet. */
  private approach(peer: string): void {
    const p = this.pending.get(peer);
    if (!p || !this.running) return;
    const now = Date.now();
    if (this.t.isConnected(peer)) {
      if (now - (this.lastHello.get(peer) ?? 0) >= 1000) this.sendHello(peer);
      return;
    }
    if (now - p.lastDialAt < 2000) return;
    p.lastDialAt = now;
    const timeout = Math.min(2000, Math.max(500, Math.round(this.failureTimeoutMs / 3)));
    // onConnect sends the hello.
    this.t.dial(peer, p.a.addrs, timeout).catch((err: Error) => this.log.debug(`cannot reach pool peer ${peer}: ${err.message}`));
  }

  private update(e: Entry, a: Announce, now: number): boolean {
    const addrs = a.addrs.slice(0, 32);
    const changed = e.sessions !== a.sessions || e.addresses.join(' ') !== addrs.join(' ');
    e.addresses = addrs;
    e.sessions = a.sessions;
    e.seq = Math.max(e.seq, a.seq);
    e.lastSeen = now;
    return changed;
  }

  /** Peer id of the alive or suspected member (or this node) that holds serverId, other than peerId. */
  private holderOf(serverId: string, peerId: string): string | undefined {
    if (serverId === this.serverId) return this.peerId;
    for (const e of this.entries.values()) {
      if (e.serverId === serverId && e.peerId !== peerId && (e.state === 'alive' || e.state === 'suspected')) return e.peerId;
    }
    return undefined;
  }

  private refuse(a: Announce, holder: string): void {
    if (!this.keepOut(a.peerId, 'byUs')) return;
    const peer = `pool peer ${a.peerId} (${a.addrs[0] ?? 'no address'})`;
    if (holder === this.peerId) {
      const which = a.startedAt > this.startedAt ? 'it started after this node, so it is the duplicate' : 'it started before this node, so this node is the duplicate';
      this.log.error(`refusing ${peer}: it uses server id '${a.serverId}', the same as this node; ${which}: every node of the pool needs a unique --server-id`);
    } else {
      this.log.error(`refusing ${peer}: its server id '${a.serverId}' is already used by member ${holder}; every node of the pool needs a unique --server-id`);
    }
    this.onRefused?.({ kind: 'refused-peer', peerId: a.peerId, serverId: a.serverId, holder });
  }

  /** Keeps the peer out for a while; true when this side of the refusal is new (worth a log line). */
  private keepOut(peer: string, side: 'byUs' | 'byThem'): boolean {
    const cur = this.isRefused(peer) ? this.refused.get(peer)! : { until: 0, byUs: false, byThem: false };
    const fresh = !cur[side];
    cur[side] = true;
    cur.until = Date.now() + this.refuseForMs;
    this.refused.set(peer, cur);
    this.pending.delete(peer);
    const e = this.entries.get(peer);
    if (e) {
      this.entries.delete(peer);
      if (e.state === 'alive' || e.state === 'suspected') {
        this.setState(e, 'failed');
        this.t.forgetPeer(peer, 'refused');
        this.emit('failed', e);
      }
    }
    // Let the refusal reach the peer before the connection goes.
    setTimeout(() => this.t.disconnect(peer), 200).unref?.();
    return fresh;
  }

  // ---- the periodic check ----------------------------------------------------------

  private tick(): void {
    if (!this.running) return;
    const now = Date.now();
    if (now - this.lastPublish >= this.heartbeatMs * 0.75) {
      this.lastPublish = now;
      this.t.publish(MEMBERSHIP_TOPIC, enc.encode(JSON.stringify(this.announce('hb')))).catch((err: Error) => {
        this.log.debug(`heartbeat not published: ${err.message}`);
      });
    }
    for (const e of [...this.entries.values()]) {
      if (e.state === 'alive' || e.state === 'suspected') {
        const silent = now - e.lastSeen;
        if (silent >= this.failAfterMs) {
          this.fail(e, `silent for ${silent} ms`);
          continue;
        }
        if (silent >= this.suspectAfterMs) {
          if (e.state === 'alive') this.suspect(e, `silent for ${silent} ms`);
          this.probe(e, this.failAfterMs - silent);
        }
        if (!this.t.isConnected(e.peerId) && !e.dialing && now >= e.nextDialAt) this.redial(e);
      } else if (now - e.stateSince >= this.forgetAfterMs) {
        this.entries.delete(e.peerId);
      } else if (e.state === 'failed' && !e.dialing && now >= e.nextDialAt) {
        this.redial(e);
      }
    }
    for (const [peer, p] of this.pending) {
      if (now - p.seenAt > Math.max(30_000, 4 * this.failureTimeoutMs)) this.pending.delete(peer);
      else this.approach(peer);
    }
    for (const [peer, r] of this.refused) if (r.until <= now) this.refused.delete(peer);
    for (const [peer, at] of this.lastHello) if (now - at > 60_000) this.lastHello.delete(peer);
  }

  private probe(e: Entry, timeoutMs: number): void {
    if (e.pinging) return;
    e.pinging = true;
    const startedAt = e.startedAt;
    this.t.ping(e.peerId, Math.max(250, timeoutMs)).then(
      () => {
        const cur = this.entries.get(e.peerId);
        if (cur !== e || e.startedAt !== startedAt || (e.state !== 'alive' && e.state !== 'suspected')) return;
        e.lastSeen = Date.now();
        if (e.state === 'suspected') {
          this.setState(e, 'alive');
          this.emit('updated', e);
        }
      },
      () => {},
    ).finally(() => {
      e.pinging = false;
    });
  }

  private redial(e: Entry): void {
    if (e.dialing || !this.running) return;
    e.dialing = true;
    e.lastDialAt = Date.now();
    const timeout = Math.min(2000, Math.max(500, Math.round(this.failureTimeoutMs / 3)));
    this.t.dial(e.peerId, e.addresses, timeout).then(
      () => {
        e.dialing = false;
        e.redialFailures = 0;
        e.nextDialAt = 0;
      },
      (err: Error) => {
        e.dialing = false;
        e.redialFailures++;
        if (this.entries.get(e.peerId) !== e || !this.running) return;
        if (e.state === 'failed') {
          e.backoffMs = Math.min(5000, Math.max(1000, e.backoffMs * 2));
          e.nextDialAt = Date.now() + e.backoffMs;
          return;
        }
        if (e.state !== 'alive' && e.state !== 'suspected') return;
        if (e.lostAt && e.lastSeen <= e.lostAt) {
          // Connection lost, redial failed, and no word from it since: a killed
          // process refuses at once, so two such failures in a row mean it is gone.
          if (e.redialFailures >= 2) {
            this.fail(e, `connection lost and redial failed (${err.message})`);
            return;
          }
          if (e.state === 'alive') this.suspect(e, `connection lost and redial failed (${err.message})`);
          e.nextDialAt = Date.now() + 150;
          setTimeout(() => {
            if (this.entries.get(e.peerId) === e && (e.state === 'alive' || e.state === 'suspected') && !this.t.isConnected(e.peerId)) this.redial(e);
          }, 150).unref?.();
          return;
        }
        e.nextDialAt = Date.now() + 1000;
      },
    );
  }

  private suspect(e: Entry, why: string): void {
    this.setState(e, 'suspected');
    this.log.warn(`pool member ${e.serverId} (${e.peerId}) suspected: ${why}`);
    this.emit('suspected', e);
  }

  private fail(e: Entry, why: string): void {
    this.setState(e, 'failed');
    e.backoffMs = 1000;
    e.nextDialAt = Date.now() + e.backoffMs;
    this.log.warn(`pool member ${e.serverId} (${e.peerId}) failed: ${why}`);
    // A half-open connection (partition) would otherwise linger and hide the heal.
    this.t.disconnect(e.peerId);
    this.t.forgetPeer(e.peerId, 'member failed');
    this.emit('failed', e);
  }

  private setState(e: Entry, state: MemberState): void {
    e.state = state;
    e.stateSince = Date.now();
  }

  private emit(event: MembershipEvent, e: Entry): void {
    const set = this.listeners.get(event);
    if (!set) return;
    const m = snapshot(e);
    for (const fn of [...set]) {
      try {
        fn(m);
      } catch (err) {
        this.log.error(`membership '${event}' listener failed:`, err);
      }
    }
  }

  private announce(t: Announce['t']): Announce {
    return {
      v: 1, t, serverId: this.serverId, peerId: this.peerId, addrs: this.t.addresses(), sessions: this.sessions,
      startedAt: this.startedAt, seq: ++this.seq, ...(this.role ? { role: this.role } : {}),
    };
  }
}

function snapshot(e: Entry): MemberInfo {
  return {
    serverId: e.serverId, peerId: e.peerId, addresses: [...e.addresses], state: e.state, sessions: e.sessions,
    startedAt: e.startedAt, lastSeen: e.lastSeen,
  };
}

function reply(r: Reply): Uint8Array {
  return enc.encode(JSON.stringify(r));
}
