// Hybrid logical clock (Kulkarni, Demirbas et al., "Logical Physical Clocks and
// Consistent Snapshots in Globally Distributed Databases", 2014): the version
// stamp of every write in the replicated keyspaces (src/pool/replicated.ts).
//
// A timestamp is (wall ms, logical counter, node id). `wall` follows the
// physical clock when the clock moves forward and stays put when it goes back,
// so versions issued by one node are strictly increasing across clock steps and
// (once witnessed at load) across restarts. Receiving a remote stamp moves the
// clock past it, so a write that causally follows another always gets a larger
// version whatever the skew between the two machines. The node id breaks ties
// between stamps with equal (wall, logical) from different nodes, which makes
// the order total and identical on every node.
//
// Skew is bounded: a remote stamp more than `maxDriftMs` ahead of our physical
// clock is refused (ClockDriftError) instead of dragging our clock (and every
// version we issue afterwards) into its future. Callers retry such data later,
// once real time has caught up with it.

/** Default bound on how far ahead of our clock a remote stamp may be. */
export const DEFAULT_MAX_DRIFT_MS = 60_000;
/** The logical counter fits 16 bits; past that, the clock borrows one ms. */
export const MAX_LOGICAL = 0xffff;
/** 48 bits of milliseconds reach the year 10889. */
const MAX_WALL = 2 ** 48 - 1;
const WALL_DIGITS = 12;
const LOGICAL_DIGITS = 4;
const PREFIX = WALL_DIGITS + LOGICAL_DIGITS;

export interface Timestamp {
  /** Milliseconds since the epoch (the largest physical time seen). */
  wall: number;
  logical: number;
  /** Server id of the node that issued the stamp. */
  node: string;
}

export class ClockDriftError extends Error {
  readonly remoteWall: number;
  readonly physical: number;
  readonly maxDriftMs: number;

  constructor(remoteWall: number, physical: number, maxDriftMs: number) {
    super(`remote clock is ${remoteWall - physical} ms ahead of ours (limit ${maxDriftMs} ms)`);
    this.name = 'ClockDriftError';
    this.remoteWall = remoteWall;
    this.physical = physical;
    this.maxDriftMs = maxDriftMs;
  }
}

export interface HLCOptions {
  maxDriftMs?: number;
  /** Physical clock; tests inject a fake one. */
  now?: () => number;
}

export class HLC {
  readonly node: string;
  readonly maxDriftMs: number;
  readonly physical: () => number;
  #wall = 0;
  #logical = 0;

  constructor(node: string, opts: HLCOptions = {}) {
    if (!node) throw new Error('HLC node id must not be empty');
    this.node = node;
    this.maxDriftMs = opts.maxDriftMs ?? DEFAULT_MAX_DRIFT_MS;
    this.physical = opts.now ?? Date.now;
  }

  /** Stamp for a local event (a write, a message sent). Strictly greater than every stamp issued or witnessed before. */
  now(): Timestamp {
    const pt = this.physical();
    if (pt > this.#wall) {
      this.#wall = pt;
      this.#logical = 0;
    } else {
      this.#tick(this.#logical + 1);
    }
    return this.last();
  }

  /** Encoded form of now(). */
  nowString(): string {
    const t = this.now();
    return encodeParts(t.wall, t.logical, t.node);
  }

  /** Would update() accept this remote stamp (wall not too far ahead of our clock)? */
  accepts(remoteWall: number): boolean {
    return remoteWall <= this.physical() + this.maxDriftMs;
  }

  /**
   * Receive: moves the clock past a remote stamp and returns the new local stamp.
   * Throws ClockDriftError, leaving the clock untouched, if the stamp is too far ahead.
   */
  update(remote: Timestamp | string): Timestamp {
    const r = typeof remote === 'string' ? decode(remote) : remote;
    const pt = this.physical();
    if (r.wall > pt + this.maxDriftMs) throw new ClockDriftError(r.wall, pt, this.maxDriftMs);
    this.#merge(pt, r.wall, r.logical);
    return this.last();
  }

  /**
   * Moves the clock past a stamp without the drift check: for stamps already
   * accepted earlier, read back from disk at start-up.
   */
  witness(remote: Timestamp | string): void {
    const r = typeof remote === 'string' ? decode(remote) : remote;
    if (r.wall > this.#wall || (r.wall === this.#wall && r.logical > this.#logical)) {
      this.#wall = r.wall;
      this.#logical = r.logical;
    }
  }

  /** The last stamp issued or witnessed (no tick). */
  last(): Timestamp {
    return { wall: this.#wall, logical: this.#logical, node: this.node };
  }

  #merge(pt: number, rw: number, rl: number): void {
    const lw = this.#wall;
    if (pt > lw && pt > rw) {
      this.#wall = pt;
      this.#logical = 0;
    } else if (rw > lw) {
      this.#wall = rw;
      this.#tick(rl + 1);
    } else if (lw > rw) {
      this.#tick(this.#logical + 1);
    } else {
      this.#tick(Math.max(this.#logical, rl) + 1);
    }
  }

  // The counter only overflows if one node issues 65536 stamps within one ms;
  // borrowing a millisecond from the future keeps the order and costs nothing.
  #tick(logical: number): void {
    if (logical > MAX_LOGICAL) {
      this.#wall += 1;
      this.#logical = 0;
    } else {
      this.#logical = logical;
    }
  }
}

/**
 * Compact string form: 12 hex digits of wall, 4 of logical, then the node id.
 * The fixed-width prefix makes plain string comparison equal to compare(),
 * so versions can be compared, stored and sorted as strings.
 */
export function encode(t: Timestamp): string {
  return encodeParts(t.wall, t.logical, t.node);
}

export function encodeParts(wall: number, logical: number, node: string): string {
  if (!Number.isInteger(wall) || wall < 0 || wall > MAX_WALL) throw new RangeError(`HLC wall out of range: ${wall}`);
  if (!Number.isInteger(logical) || logical < 0 || logical > MAX_LOGICAL) throw new RangeError(`HLC logical out of range: ${logical}`);
  return wall.toString(16).padStart(WALL_DIGITS, '0') + logical.toString(16).padStart(LOGICAL_DIGITS, '0') + node;
}

const HEX = /^[0-9a-f]+$/;

export function decode(s: string): Timestamp {
  const head = s.slice(0, PREFIX);
  if (s.length <= PREFIX || !HEX.test(head)) throw new Error(`not an HLC timestamp: ${JSON.stringify(s)}`);
  return { wall: parseInt(head.slice(0, WALL_DIGITS), 16), logical: parseInt(head.slice(WALL_DIGITS), 16), node: s.slice(PREFIX) };
}

/** Wall time of an encoded stamp, without decoding the rest. */
export function wallOf(s: string): number {
  return parseInt(s.slice(0, WALL_DIGITS), 16);
}

export function compare(a: Timestamp, b: Timestamp): number {
  if (a.wall !== b.wall) return a.wall < b.wall ? -1 : 1;
  if (a.logical !== b.logical) return a.logical < b.logical ? -1 : 1;
  return a.node < b.node ? -1 : a.node > b.node ? 1 : 0;
}
