// Wire encoding of the replicated keyspaces (src/pool/replicated.ts) and the
// key hash their anti-entropy buckets are built on. Both must be identical on
// every node of a pool, so any change here is a new WIRE_VERSION.
//
// Wire format (version 1, binary): u8 version, u8 type, keyspace name, a table
// of server ids, then the body. Strings are varint length + UTF-8. A version is
// 6 bytes of wall ms, varint logical, varint index into the server id table.
// An entry is key, version, u8 flags (1 = tombstone), then unless a tombstone a
// varint-length value encoded by the keyspace codec (JSON unless given).
// Frames: changes (gossip), digest-req/digest (256 bucket summaries as 2 x u32
// each), pull (bucket list + key cursor) / page (per bucket: flags complete and
// has-horizon, the compaction horizon, entries), hint (one-way), error.
import { encodeParts, wallOf } from './hlc.ts';

export const WIRE_VERSION = 1;
export const BUCKETS = 256;

const te = new TextEncoder();
const td = new TextDecoder();

// Hashing: 64 bits as two 32-bit lanes (FNV-style multiply per code unit, then
// a murmur3 finaliser), fast enough to hash every entry on load.

const scratch = new Uint32Array(2);

function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Writes the 64-bit hash of s into out[0], out[1]. */
export function hash64(s: string, out: Uint32Array): void {
  let a = 0x811c9dc5;
  let b = 0x9747b28c;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
  }
  out[0] = fmix(a ^ s.length);
  out[1] = fmix(b ^ out[0]);
}

export function bucketOf(key: string): number {
  hash64(key, scratch);
  return scratch[0] & (BUCKETS - 1);
}

// Codec.

export class WireError extends Error {
  constructor(msg: string) {
    super(msg);
    this.name = 'WireError';
  }
}

export interface WireEntry { key: string; v: string; t: boolean; d?: Uint8Array }
export interface WireSection { bucket: number; horizon: string; complete: boolean; entries: WireEntry[] }
export type Frame =
  | { type: 'changes'; ks: string; entries: WireEntry[] }
  | { type: 'digest-req'; ks: string }
  | { type: 'digest'; ks: string; hashes: Uint32Array }
  | { type: 'pull'; ks: string; buckets: number[]; after: string }
  | { type: 'page'; ks: string; sections: WireSection[] }
  | { type: 'hint'; ks: string }
  | { type: 'error'; ks: string; message: string };

const TYPES = ['changes', 'digest-req', 'digest', 'pull', 'page', 'hint', 'error'] as const;

class Writer {
  buf = new Uint8Array(256);
  len = 0;
  room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const b = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
  }
  u8(x: number): void {
    this.room(1);
    this.buf[this.len++] = x;
  }
  varint(x: number): void {
    this.room(8);
    while (x >= 0x80) {
      this.buf[this.len++] = (x % 0x80) | 0x80;
      x = Math.floor(x / 0x80);
    }
    this.buf[this.len++] = x;
  }
  u32(x: number): void {
    this.room(4);
    for (let s = 24; s >= 0; s -= 8) this.buf[this.len++] = (x >>> s) & 0xff;
  }
  u48(x: number): void {
    this.u8(Math.floor(x / 2 ** 40) & 0xff);
    this.u8(Math.floor(x / 2 ** 32) & 0xff);
    this.u32(x >>> 0);
  }
  bytes(b: Uint8Array): void {
    this.varint(b.length);
    this.room(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  str(s: string): void {
    this.bytes(te.encode(s));
  }
}

class Reader {
  readonly buf: Uint8Array;
  pos = 0;
  constructor(buf: Uint8Array) {
    this.buf = buf;
  }
  need(n: number): void {
    if (this.pos + n > this.buf.length) throw new WireError('truncated frame');
  }
  u8(): number {
    this.need(1);
    return this.buf[this.pos++];
  }
  varint(): number {
    let x = 0;
    for (let mul = 1; ; mul *= 0x80) {
      const b = this.u8();
      x += (b & 0x7f) * mul;
      if (b < 0x80) return x;
      if (mul > 2 ** 42) throw new WireError('varint too long');
    }
  }
  u32(): number {
    this.need(4);
    const b = this.buf;
    const p = (this.pos += 4) - 4;
    return ((b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]) >>> 0;
  }
  u48(): number {
    const hi = this.u8() * 2 ** 40 + this.u8() * 2 ** 32;
    return hi + this.u32();
  }
  bytes(): Uint8Array {
    const n = this.varint();
    this.need(n);
    return this.buf.subarray(this.pos, (this.pos += n));
  }
  str(): string {
    return td.decode(this.bytes());
  }
}

function writeVersion(w: Writer, nodes: Map<string, number>, v: string): void {
  const node = v.slice(16);
  let i = nodes.get(node);
  if (i === undefined) nodes.set(node, (i = nodes.size));
  w.u48(wallOf(v));
  w.varint(parseInt(v.slice(12, 16), 16));
  w.varint(i);
}

function readVersion(r: Reader, nodes: string[]): string {
  const wall = r.u48();
  const logical = r.varint();
  const node = nodes[r.varint()];
  if (node === undefined) throw new WireError('bad server id index');
  return encodeParts(wall, logical, node);
}

function writeEntries(w: Writer, nodes: Map<string, number>, entries: WireEntry[]): void {
  w.varint(entries.length);
  for (const e of entries) {
    w.str(e.key);
    writeVersion(w, nodes, e.v);
    w.u8(e.t ? 1 : 0);
    if (!e.t) w.bytes(e.d ?? new Uint8Array(0));
  }
}

function readEntries(r: Reader, nodes: string[]): WireEntry[] {
  const n = r.varint();
  const out: WireEntry[] = [];
  for (let i = 0; i < n; i++) {
    const key = r.str();
    const v = readVersion(r, nodes);
    const t = (r.u8() & 1) === 1;
    out.push(t ? { key, v, t } : { key, v, t, d: r.bytes() });
  }
  return out;
}

export function encodeFrame(f: Frame): Uint8Array {
  const nodes = new Map<string, number>();
  const body = new Writer();
  switch (f.type) {
    case 'changes': writeEntries(body, nodes, f.entries); break;
    case 'digest':
      body.varint(f.hashes.length);
      for (const h of f.hashes) body.u32(h);
      break;
    case 'pull':
      body.varint(f.buckets.length);
      for (const b of f.buckets) body.varint(b);
      body.str(f.after);
      break;
    case 'page':
      body.varint(f.sections.length);
      for (const s of f.sections) {
        body.varint(s.bucket);
        body.u8((s.complete ? 1 : 0) | (s.horizon ? 2 : 0));
        if (s.horizon) writeVersion(body, nodes, s.horizon);
        writeEntries(body, nodes, s.entries);
      }
      break;
    case 'error': body.str(f.message); break;
    default: break;
  }
  const w = new Writer();
  w.u8(WIRE_VERSION);
  w.u8(TYPES.indexOf(f.type) + 1);
  w.str(f.ks);
  w.varint(nodes.size);
  for (const n of nodes.keys()) w.str(n);
  w.room(body.len);
  w.buf.set(body.buf.subarray(0, body.len), w.len);
  return w.buf.subarray(0, w.len + body.len);
}

export function decodeFrame(data: Uint8Array): Frame {
  const r = new Reader(data);
  const ver = r.u8();
  if (ver !== WIRE_VERSION) throw new WireError(`unsupported wire version ${ver}`);
  const type = TYPES[r.u8() - 1];
  if (!type) throw new WireError('unknown frame type');
  const ks = r.str();
  const nodes: string[] = [];
  for (let n = r.varint(); n > 0; n--) nodes.push(r.str());
  let f: Frame;
  switch (type) {
    case 'changes': f = { type, ks, entries: readEntries(r, nodes) }; break;
    case 'digest': {
      const hashes = new Uint32Array(r.varint());
      for (let i = 0; i < hashes.length; i++) hashes[i] = r.u32();
      f = { type, ks, hashes };
      break;
    }
    case 'pull': {
      const buckets: number[] = [];
      for (let n = r.varint(); n > 0; n--) buckets.push(r.varint());
      f = { type, ks, buckets, after: r.str() };
      break;
    }
    case 'page': {
      const sections: WireSection[] = [];
      for (let n = r.varint(); n > 0; n--) {
        const bucket = r.varint();
        const flags = r.u8();
        const horizon = flags & 2 ? readVersion(r, nodes) : '';
        sections.push({ bucket, horizon, complete: (flags & 1) === 1, entries: readEntries(r, nodes) });
      }
      f = { type, ks, sections };
      break;
    }
    case 'error': f = { type, ks, message: r.str() }; break;
    default: f = { type, ks };
  }
  if (r.pos !== data.length) throw new WireError('trailing bytes in frame');
  return f;
}
