// Rooms across the pool (DESIGN.md "How a stanza flows": a room's stanzas are
// applied once and every node delivers to its own occupants).
//
// Each room has one sequencer: the alive member that wins rendezvous hashing
// of the room JID over the members' peer ids, so every node picks the same one
// without talking. Other nodes forward the room's stanzas to it point to point
// on the 'muc' protocol (entering presence as a request whose answer carries the
// join event; the rest one-way, in order on the same stream, so that one
// session's messages do not wait a round trip each); it stamps them (time,
// number), applies them to its copy of
// the room (room.ts, deterministic) and sends each input that changed the room
// to the members that have occupants in it ('muc-event', ordered per peer).
// Those apply the same inputs in the same order to their replica and send what
// results to their own sessions. A node hears only the rooms its users are in.
// Why not one gossipsub topic per room (as DESIGN.md first had it): a publisher
// learns of a new subscriber only when the subscriber's announcement arrives on
// another stream than the join request (and grafts it into the mesh at the next
// heartbeat), so the events right after a join could be published before the
// joining node counts as subscribed, and lost to it; gossipsub also gives no
// order, which the room needs. The room's state already says exactly which
// nodes need each event, so the sequencer sends to those, in order, on one
// stream per peer: no node without occupants in a room hears it, and with one
// sequencer per room the fan-out is the number of copies a flood publish to the
// topic's subscribers would make.
// A replica that sees a gap asks the sequencer for the missing inputs, or a
// snapshot when the log is too short. Answers to whoever sent a stanza
// (errors, IQ results, invitations) go through the router from the
// sequencer, since their recipient may be no occupant.
//
// Failure: when a member fails or leaves, each node that has a replica asks
// the room's (possibly new) sequencer to remove the occupants of the gone
// node; a new sequencer first takes over the most advanced copy it can find
// (its own or one a member hands over), so the room lives on.
// A single node (no pool) is the degenerate case: always the sequencer.
import { createHash } from 'node:crypto';
import type { Pool } from '../../pool/types.ts';
import type { Logger } from '../../admin/log.ts';
import type { Element } from '../../xmpp/element.ts';
import { KeyedLock } from '../../store/keyed-lock.ts';
import type { MucStore, RoomRecord } from '../../store/muc.ts';
import { apply, type Applied, type Output, type RoomInput } from './room.ts';
import type { Defaults, RoomConfig, RoomState } from './state.ts';

export const MUC_PROTOCOL = 'muc';
export const MUC_EVENT_PROTOCOL = 'muc-event';
const LOG_KEEP = 1000;
const REQUEST_TIMEOUT = 5000;
/** How long a forwarder keeps retrying while the pool settles on a new sequencer. */
const FORWARD_PATIENCE = 15_000;

export interface RoomEvent { room: string; seq: number; input: RoomInput }

interface Replica {
  state: RoomState | null;
  /** Number of the last event applied. */
  seq: number;
  /** Recent events, for replicas that missed some. */
  log: RoomEvent[];
  /** Events received ahead of a gap. */
  pending: Map<number, RoomEvent>;
  /** This node took over as the room's sequencer (it holds the authoritative copy). */
  sequencing: boolean;
  /** Local users are entering: keep the replica though no local occupant yet. */
  joining: number;
  fetching: boolean;
}

type Wire =
  /** oneWay: sent without waiting for the answer (pool.send on the same stream, so in order with requests). */
  | { op: 'input'; room: string; input: RoomInput; hops: number; oneWay?: boolean }
  | { op: 'events'; room: string; from: number }
  | { op: 'snapshot'; room: string }
  | { op: 'list' };

export interface RoomsOptions {
  pool: Pool | null;
  store: MucStore;
  defaults: Defaults;
  log: Logger;
  /** Sends to a session of this node; false if there is none. */
  deliver(to: string, stanza: Element): boolean;
  /** Whether a full JID is a session of this node (only their stanzas are built here). */
  isLocal(to: string): boolean;
  /** Sends through the router (any node of the pool). */
  route(stanza: Element): void;
  now?: () => number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const encode = (v: unknown): Uint8Array => enc.encode(JSON.stringify(v));
const decode = <T>(b: Uint8Array): T => JSON.parse(dec.decode(b)) as T;

export class Rooms {
  readonly #o: RoomsOptions;
  readonly #pool: Pool | null;
  readonly #self: string;
  readonly #replicas = new Map<string, Replica>();
  readonly #lock = new KeyedLock();
  readonly #unsubs: Array<() => void> = [];
  readonly #now: () => number;
  #lastStamp = 0;
  readonly stats = { sequenced: 0, applied: 0, forwarded: 0, gapFetches: 0, snapshots: 0 };

  constructor(o: RoomsOptions) {
    this.#o = o;
    this.#pool = o.pool;
    this.#self = o.pool?.peerId ?? 'local';
    this.#now = o.now ?? Date.now;
  }

  get nodeId(): string {
    return this.#self;
  }

  start(): void {
    const pool = this.#pool;
    if (!pool) return;
    pool.handle(MUC_PROTOCOL, (data, from) => this.#onRequest(decode<Wire>(data), from));
    pool.handle(MUC_EVENT_PROTOCOL, (data, from) => {
      const ev = decode<RoomEvent>(data);
      void this.#lock.run(ev.room, () => this.#receive(ev, from)).catch((e: unknown) => this.#o.log.warn(`room ${ev.room}: event ${ev.seq} failed:`, String(e)));
    });
    const gone = (m: { peerId: string }) => void this.#memberGone(m.peerId);
    this.#unsubs.push(pool.on('failed', gone), pool.on('left', gone), pool.on('joined', () => this.#membersChanged()));
  }

  stop(): void {
    for (const u of this.#unsubs.splice(0)) u();
    this.#replicas.clear();
  }

  /** The local copy of a room, if this node holds one. */
  get(room: string): RoomState | null {
    return this.#replicas.get(room)?.state ?? null;
  }

  rooms(): string[] {
    return [...this.#replicas.keys()].filter((r) => this.#replicas.get(r)!.state !== null);
  }

  /** Public rooms with their names (§6.3), from every member's copies; a member that does not answer in time is left out. */
  async publicRooms(timeoutMs = 2000): Promise<Map<string, string>> {
    const out = new Map(this.#publicHere());
    if (!this.#pool) return out;
    const others = this.#pool.members().filter((m) => m.state === 'alive' && m.peerId !== this.#self);
    const lists = await Promise.all(others.map((m) => this.#pool!.request(m.peerId, MUC_PROTOCOL, encode({ op: 'list' } satisfies Wire), timeoutMs)
      .then((b) => decode<Array<[string, string]>>(b)).catch(() => [])));
    for (const l of lists) for (const [jid, name] of l) out.set(jid, name);
    return out;
  }

  #publicHere(): Array<[string, string]> {
    const out: Array<[string, string]> = [];
    for (const [jid, r] of this.#replicas) {
      const s = r.state;
      if (s && s.config.public && !s.locked) out.push([jid, s.config.name]);
    }
    return out;
  }

  /** The member that sequences the room (rendezvous hashing over the alive members). */
  sequencerOf(room: string): string {
    const pool = this.#pool;
    if (!pool) return this.#self;
    let best = this.#self;
    let bestScore = '';
    for (const m of pool.members()) {
      if (m.state !== 'alive' && m.peerId !== this.#self) continue;
      const score = createHash('sha256').update(room).update('\0').update(m.peerId).digest('hex');
      if (score > bestScore) {
        bestScore = score;
        best = m.peerId;
      }
    }
    return best;
  }

  /**
   * A stanza from a local user (or the server on its behalf) to the room.
   * Resolves once the room has handled it and this node delivered what it had to.
   */
  async submit(room: string, from: string, stanza: Element): Promise<void> {
    const input: RoomInput = { kind: 'stanza', from, node: this.#self, xml: stanza.toString(), now: 0 };
    const entering = stanza.name === 'presence' && stanza.attrs.type === undefined;
    await this.#forward(room, input, entering);
  }

  async #forward(room: string, input: RoomInput, entering: boolean): Promise<void> {
    const t0 = this.#now();
    for (let attempt = 0; ; attempt++) {
      const seq = this.sequencerOf(room);
      if (seq === this.#self) {
        await this.#lock.run(room, () => this.#sequence(room, input));
        return;
      }
      let r: Replica | undefined;
      if (entering) {
        // The joiner's presence, history and subject come from applying the join here:
        // hold a replica from before the join is sequenced.
        r = await this.#ensureReplica(room, seq);
      }
      try {
        this.stats.forwarded++;
        if (!entering) {
          // Nothing to wait for: the sequencer sends the event to every node with
          // occupants and the answers through the router. Not waiting lets one
          // session's stanzas follow each other without a round trip each, in
          // order (one stream per peer and protocol).
          await this.#pool!.send(seq, MUC_PROTOCOL, encode({ op: 'input', room, input, hops: 0, oneWay: true } satisfies Wire));
          return;
        }
        const resp = await this.#pool!.request(seq, MUC_PROTOCOL, encode({ op: 'input', room, input, hops: 0 } satisfies Wire), REQUEST_TIMEOUT);
        const { events } = decode<{ events: RoomEvent[] }>(resp);
        for (const ev of events) await this.#lock.run(room, () => this.#receive(ev, seq));
        return;
      } catch (e) {
        if (this.#now() - t0 > FORWARD_PATIENCE) throw e;
        this.#o.log.debug(`forwarding to the sequencer of ${room} failed (attempt ${attempt + 1}):`, String(e));
        await new Promise((res) => setTimeout(res, 300));
      } finally {
        if (r) {
          r.joining--;
          this.#maybeDrop(room);
        }
      }
    }
  }

  /** Applies an input as the room's sequencer; returns the event when it changed the room. */
  async #sequence(room: string, input: RoomInput): Promise<RoomEvent | null> {
    const r = await this.#takeOver(room);
    let now = this.#now();
    // Stamps never go back, so history order and 'since' agree.
    if (now <= this.#lastStamp) now = this.#lastStamp + 1;
    this.#lastStamp = now;
    const stamped: RoomInput = { ...input, now };
    // Read before: apply changes the state in place.
    const nodes = nodesOf(r.state, new Set());
    const before = { subject: r.state?.subject?.stamp ?? 0 };
    const applied = apply(r.state, stamped, { room, defaults: this.#o.defaults, wants: this.#o.isLocal, replies: true, inPlace: true });
    this.stats.sequenced++;
    for (const out of applied.outputs) {
      if (out.route) this.#o.route(out.stanza);
      else this.#o.deliver(out.to, out.stanza);
    }
    if (!applied.mutated) return null;
    const ev: RoomEvent = { room, seq: r.seq + 1, input: stamped };
    this.#commit(r, ev, applied);
    if (this.#pool) {
      // Nodes with occupants before or after: a leaving occupant's node must hear its exit.
      const data = encode(ev);
      for (const node of nodesOf(applied.state, nodes)) {
        if (node === this.#self) continue;
        this.#pool.send(node, MUC_EVENT_PROTOCOL, data).catch((e: unknown) => this.#o.log.debug(`room ${room}: event ${ev.seq} to ${node} failed:`, String(e)));
      }
    }
    await this.#persist(room, before, applied.state, applied);
    return ev;
  }

  #commit(r: Replica, ev: RoomEvent, applied: Applied): void {
    r.state = applied.state;
    r.seq = ev.seq;
    r.log.push(ev);
    if (r.log.length > LOG_KEEP) r.log.splice(0, r.log.length - LOG_KEEP);
  }

  async #persist(room: string, before: { subject: number }, after: RoomState | null, applied: Applied): Promise<void> {
    const subjectChanged = before.subject !== (after?.subject?.stamp ?? 0);
    if (!applied.persist && !(after?.config.persistent && subjectChanged)) return;
    try {
      if (after && after.config.persistent && !after.locked) {
        const rec: RoomRecord = { config: { ...after.config }, affiliations: { ...after.affiliations }, subject: after.subject, created: after.created };
        await this.#o.store.put(room, rec);
      } else if (await this.#o.store.get(room)) {
        await this.#o.store.del(room);
      }
    } catch (e) {
      this.#o.log.warn(`storing room ${room} failed:`, String(e));
    }
  }

  /** The sequencer's copy: its own if current, else the most advanced a member has, else the stored room. */
  async #takeOver(room: string): Promise<Replica> {
    let r = this.#replicas.get(room);
    if (r?.sequencing) return r;
    if (!r) {
      r = newReplica();
      this.#replicas.set(room, r);
    }
    if (this.#pool) {
      const others = this.#pool.members().filter((m) => m.state === 'alive' && m.peerId !== this.#self);
      const snaps = await Promise.all(others.map((m) => this.#pool!.request(m.peerId, MUC_PROTOCOL, encode({ op: 'snapshot', room } satisfies Wire), REQUEST_TIMEOUT)
        .then((b) => decode<{ state: RoomState | null; seq: number; log: RoomEvent[] } | null>(b)).catch(() => null)));
      for (const s of snaps) {
        if (s && s.seq > r.seq) {
          r.state = s.state;
          r.seq = s.seq;
          r.log = s.log;
          this.stats.snapshots++;
        }
      }
    }
    if (r.state === null && r.seq === 0) {
      const rec = await this.#o.store.get(room);
      if (rec) r.state = fromRecord(room, rec, this.#o.defaults);
    }
    r.sequencing = true;
    r.pending.clear();
    return r;
  }

  // ---- replicas ----------------------------------------------------------------------

  /** A replica held for a local user who is entering (its `joining` count taken: the caller gives it back). */
  async #ensureReplica(room: string, sequencer: string): Promise<Replica> {
    const have = this.#replicas.get(room);
    if (have) {
      have.joining++;
      return have;
    }
    return this.#lock.run(room, async () => {
      const again = this.#replicas.get(room);
      if (again) {
        again.joining++;
        return again;
      }
      const r = newReplica();
      r.joining++;
      this.#replicas.set(room, r);
      // Events sequenced after the snapshot and before this node's join reach it
      // with the join's answer (a gap it fills from the sequencer).
      try {
        await this.#fetchSnapshot(room, r, sequencer);
      } catch (e) {
        r.joining--;
        this.#maybeDrop(room);
        throw e;
      }
      return r;
    });
  }

  async #fetchSnapshot(room: string, r: Replica, sequencer: string): Promise<void> {
    const b = await this.#pool!.request(sequencer, MUC_PROTOCOL, encode({ op: 'snapshot', room } satisfies Wire), REQUEST_TIMEOUT);
    const s = decode<{ state: RoomState | null; seq: number } | null>(b);
    this.stats.snapshots++;
    if (s && s.seq >= r.seq) {
      r.state = s.state;
      r.seq = s.seq;
    }
    this.#drain(room, r);
  }

  /** An event from the sequencer (gossip, or the answer to a forwarded stanza). */
  async #receive(ev: RoomEvent, from: string): Promise<void> {
    const r = this.#replicas.get(ev.room);
    if (!r || r.sequencing || ev.seq <= r.seq) return;
    r.pending.set(ev.seq, ev);
    this.#drain(ev.room, r);
    if (r.pending.size && !r.fetching) await this.#fillGap(ev.room, r, from);
  }

  #drain(room: string, r: Replica): void {
    for (const seq of [...r.pending.keys()]) if (seq <= r.seq) r.pending.delete(seq);
    for (let next = r.pending.get(r.seq + 1); next; next = r.pending.get(r.seq + 1)) {
      r.pending.delete(next.seq);
      const applied = apply(r.state, next.input, { room, defaults: this.#o.defaults, wants: this.#o.isLocal, replies: false, inPlace: true });
      this.stats.applied++;
      this.#commit(r, next, applied);
      for (const out of applied.outputs) if (!out.route) this.#o.deliver(out.to, out.stanza);
    }
    this.#maybeDrop(room);
  }

  async #fillGap(room: string, r: Replica, sequencer: string): Promise<void> {
    r.fetching = true;
    this.stats.gapFetches++;
    try {
      const b = await this.#pool!.request(sequencer, MUC_PROTOCOL, encode({ op: 'events', room, from: r.seq + 1 } satisfies Wire), REQUEST_TIMEOUT);
      const resp = decode<{ events: RoomEvent[] } | { snapshot: { state: RoomState | null; seq: number } }>(b);
      if ('events' in resp) {
        for (const ev of resp.events) if (ev.seq > r.seq) r.pending.set(ev.seq, ev);
      } else if (resp.snapshot.seq > r.seq) {
        // Too far behind for the log: start again from the sequencer's copy.
        r.state = resp.snapshot.state;
        r.seq = resp.snapshot.seq;
      }
      this.#drain(room, r);
    } catch (e) {
      this.#o.log.warn(`room ${room}: catching up from event ${r.seq + 1} failed:`, String(e));
    } finally {
      r.fetching = false;
    }
  }

  /** A replica that serves no local occupant and is no sequencer's copy is dropped with its subscription. */
  #maybeDrop(room: string): void {
    const r = this.#replicas.get(room);
    if (!r || r.joining > 0 || r.fetching) return;
    // A sequencer keeps the number of a room that ended, so a new room of that name continues it.
    if (r.sequencing && this.sequencerOf(room) === this.#self) return;
    if (r.state && this.#hasLocalOccupant(r.state)) return;
    this.#replicas.delete(room);
  }

  #hasLocalOccupant(s: RoomState): boolean {
    for (const o of Object.values(s.occupants)) for (const sess of Object.values(o.sessions)) if (sess.node === this.#self) return true;
    return false;
  }

  // ---- requests from other members -----------------------------------------------------

  async #onRequest(w: Wire, from: string): Promise<Uint8Array> {
    if (w.op === 'list') return encode(this.#publicHere());
    if (w.op === 'snapshot') {
      const r = this.#replicas.get(w.room);
      return encode(r ? { state: r.state, seq: r.seq, log: r.log.slice(-100) } : null);
    }
    if (w.op === 'events') {
      return this.#lock.run(w.room, async () => {
        const r = this.#replicas.get(w.room);
        if (!r) return encode({ events: [] });
        const first = r.log[0]?.seq ?? r.seq + 1;
        if (w.from < first) return encode({ snapshot: { state: r.state, seq: r.seq } });
        return encode({ events: r.log.filter((e) => e.seq >= w.from) });
      });
    }
    // A stanza to sequence. If this node is not the sequencer in its own view, pass it on once.
    const seq = this.sequencerOf(w.room);
    if (seq !== this.#self && w.hops < 1 && seq !== from) {
      if (!w.oneWay) return this.#pool!.request(seq, MUC_PROTOCOL, encode({ ...w, hops: w.hops + 1 }), REQUEST_TIMEOUT);
      await this.#pool!.send(seq, MUC_PROTOCOL, encode({ ...w, hops: w.hops + 1 }));
      return encode({ events: [] });
    }
    const sequenced = this.#lock.run(w.room, () => this.#sequence(w.room, w.input));
    if (w.oneWay) {
      // Queued in order by the room's lock; the stream goes on with the next frame.
      sequenced.catch((e: unknown) => this.#o.log.warn(`room ${w.room}: an input from ${from} failed:`, String(e)));
      return encode({ events: [] });
    }
    const ev = await sequenced;
    return encode({ events: ev ? [ev] : [] });
  }

  // ---- membership ------------------------------------------------------------------------

  async #memberGone(peer: string): Promise<void> {
    this.#membersChanged();
    for (const room of [...this.#replicas.keys()]) {
      const r = this.#replicas.get(room);
      if (!r?.state) continue;
      const affected = Object.values(r.state.occupants).some((o) => Object.values(o.sessions).some((s) => s.node === peer));
      if (!affected && !r.sequencing) continue;
      try {
        await this.#forward(room, { kind: 'node-gone', node: peer, now: 0 }, false);
      } catch (e) {
        this.#o.log.warn(`room ${room}: removing the occupants of ${peer} failed:`, String(e));
      }
    }
  }

  #membersChanged(): void {
    for (const [room, r] of this.#replicas) {
      if (r.sequencing && this.sequencerOf(room) !== this.#self) {
        // Another member sequences it now; this copy follows its events again.
        r.sequencing = false;
        this.#maybeDrop(room);
      }
    }
  }
}

function newReplica(): Replica {
  return { state: null, seq: 0, log: [], pending: new Map(), sequencing: false, joining: 0, fetching: false };
}

/** The pool members with occupants in the room, added to `into`. */
function nodesOf(s: RoomState | null, into: Set<string>): Set<string> {
  if (s) for (const o of Object.values(s.occupants)) for (const sess of Object.values(o.sessions)) into.add(sess.node);
  return into;
}

/** A persistent room as stored: its configuration and affiliations, no occupants (§10.2). */
export function fromRecord(room: string, rec: RoomRecord, defaults: Defaults): RoomState {
  return {
    jid: room,
    config: { ...defaults.config, ...(rec.config as Partial<RoomConfig>) },
    affiliations: rec.affiliations as RoomState['affiliations'],
    occupants: {},
    subject: rec.subject,
    history: [],
    locked: false,
    created: rec.created,
    seq: 0,
  };
}

export type { Output };
