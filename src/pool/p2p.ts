// Point-to-point messaging between pool members (DESIGN.md "Shoal, mapped": a
// point-to-point message to one member is a libp2p stream protocol to that peer).
//
// Each protocol name becomes the libp2p protocol /imnode/<name>/1.0.0. A sender keeps
// ONE long-lived outbound stream per (peer, protocol) and writes length-prefixed
// frames on it, so one-way messages arrive in the order they were sent; requests
// travel on the same stream with an id and their responses come back on it, possibly
// out of order. A receiver runs one-way handlers one at a time, in order, and pauses
// the stream while it is behind, which pushes back on a sender that outruns it.
//
// Frame: u32 BE length of what follows | u8 type | u32 BE id | payload.
import { peerIdFromString } from '@libp2p/peer-id';
import type { AbortOptions, Connection, PeerId, Stream, StreamHandler, StreamHandlerOptions } from '@libp2p/interface';
import type { PeerHandler } from './types.ts';
import type { Logger } from '../admin/log.ts';

export const PROTOCOL_VERSION = '1.0.0';

export function protocolId(name: string): string {
  return `/imnode/${name}/${PROTOCOL_VERSION}`;
}

const NAME_RE = /^[a-z][a-z0-9-]{0,62}$/;

export function checkProtocolName(name: string): void {
  if (!NAME_RE.test(name)) throw new Error(`invalid pool protocol name '${name}' (lower-case letters, digits and '-')`);
}

const T_MESSAGE = 0;
const T_REQUEST = 1;
const T_RESPONSE = 2;
const T_ERROR = 3;
const HEADER = 9;

/** The peer could not be reached, or the stream to it broke before the operation completed. */
export class PeerUnreachableError extends Error {
  readonly peerId: string;
  constructor(peerId: string, why: string, options?: ErrorOptions) {
    super(`peer ${peerId} unreachable: ${why}`, options);
    this.name = 'PeerUnreachableError';
    this.peerId = peerId;
  }
}

export class PeerRequestTimeoutError extends Error {
  constructor(peerId: string, protocol: string, ms: number) {
    super(`request ${protocol} to ${peerId} got no answer within ${ms} ms`);
    this.name = 'PeerRequestTimeoutError';
  }
}

/** The remote handler threw; the message is the remote's. */
export class PeerRequestError extends Error {
  constructor(peerId: string, protocol: string, remoteMessage: string) {
    super(`request ${protocol} to ${peerId} failed there: ${remoteMessage}`);
    this.name = 'PeerRequestError';
  }
}

export class FrameTooLargeError extends Error {
  constructor(size: number, max: number) {
    super(`frame of ${size} bytes exceeds the limit of ${max} bytes`);
    this.name = 'FrameTooLargeError';
  }
}

/** The part of a libp2p node this module needs (a Libp2p satisfies it). */
export interface StreamHost {
  handle(protocol: string, handler: StreamHandler, options?: StreamHandlerOptions): Promise<void>;
  unhandle(protocol: string, options?: AbortOptions): Promise<void>;
  dialProtocol(peer: PeerId, protocols: string, options?: AbortOptions): Promise<Stream>;
}

export interface PeerMessagingInit {
  host: StreamHost;
  log: Logger;
  /** Largest payload accepted or sent. Default 16 MiB. */
  maxFrameBytes?: number;
  /** Default timeout of request(). Default 10 s. */
  requestTimeoutMs?: number;
  /** Time allowed to open a stream (dial included). Default 5 s. */
  openTimeoutMs?: number;
  /** Time a send may wait for a peer that stopped reading. Default 10 s. */
  writeTimeoutMs?: number;
  /** Protocol names only this layer's owner may register (handleInternal). */
  reserved?: string[];
}

interface Frame { type: number; id: number; payload: Uint8Array }

type Chunk = Uint8Array | { subarray(): Uint8Array };

function bytesOf(chunk: Chunk): Uint8Array {
  return chunk instanceof Uint8Array ? chunk : chunk.subarray();
}

export function encodeFrame(type: number, id: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER - 4 + 4 + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, HEADER - 4 + payload.length);
  view.setUint8(4, type);
  view.setUint32(5, id);
  out.set(payload, HEADER);
  return out;
}

/** Splits a byte stream into frames; throws FrameTooLargeError on an oversized length. */
export class FrameDecoder {
  private buf: Uint8Array = new Uint8Array(0);
  private readonly max: number;
  constructor(maxPayload: number) {
    this.max = maxPayload;
  }
  push(chunk: Chunk): Frame[] {
    const data = bytesOf(chunk);
    if (this.buf.length === 0) this.buf = data;
    else {
      const joined = new Uint8Array(this.buf.length + data.length);
      joined.set(this.buf);
      joined.set(data, this.buf.length);
      this.buf = joined;
    }
    const frames: Frame[] = [];
    let off = 0;
    while (this.buf.length - off >= 4) {
      const view = new DataView(this.buf.buffer, this.buf.byteOffset + off);
      const len = view.getUint32(0);
      if (len < HEADER - 4) throw new Error(`malformed frame (length ${len})`);
      if (len - (HEADER - 4) > this.max) throw new FrameTooLargeError(len - (HEADER - 4), this.max);
      if (this.buf.length - off < 4 + len) break;
      const type = view.getUint8(4);
      const id = view.getUint32(5);
      // Copied: the payload outlives this chunk in handlers that keep it.
      const payload = this.buf.slice(off + HEADER, off + 4 + len);
      frames.push({ type, id, payload });
      off += 4 + len;
    }
    this.buf = off === this.buf.length ? new Uint8Array(0) : this.buf.subarray(off);
    return frames;
  }
}

interface Pending {
  resolve(data: Uint8Array): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

/** One outbound stream to (peer, protocol), its write queue and its pending requests. */
class Channel {
  private stream: Stream | undefined;
  private dead: Error | undefined;
  private tail: Promise<unknown>;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private readonly owner: PeerMessaging;
  readonly peer: string;
  readonly name: string;

  constructor(owner: PeerMessaging, peer: string, name: string) {
    this.owner = owner;
    this.peer = peer;
    this.name = name;
    this.tail = owner.openStream(peer, name).then(
      (stream) => this.attach(stream),
      (err: Error) => {
        this.fail(err);
        throw err;
      },
    );
    // The open error is reported through each write; this copy must not be "unhandled".
    this.tail.catch(() => {});
  }

  private attach(stream: Stream): void {
    if (this.dead) {
      stream.abort(this.dead);
      throw this.dead;
    }
    this.stream = stream;
    const decoder = new FrameDecoder(this.owner.maxFrameBytes);
    stream.addEventListener('message', (evt) => {
      let frames: Frame[];
      try {
        frames = decoder.push(evt.data);
      } catch (e) {
        this.fail(new PeerUnreachableError(this.peer, `bad data on ${this.name}: ${(e as Error).message}`));
        return;
      }
      for (const f of frames) this.onFrame(f);
    });
    stream.addEventListener('close', (evt) => {
      this.fail(new PeerUnreachableError(this.peer, `stream ${this.name} closed${evt.error ? ` (${evt.error.message})` : ''}`));
    });
    // The remote closing its side means it will answer nothing more.
    stream.addEventListener('remoteCloseWrite', () => {
      this.fail(new PeerUnreachableError(this.peer, `stream ${this.name} closed by the peer`));
    });
  }

  private onFrame(f: Frame): void {
    const p = this.pending.get(f.id);
    if (!p) return; // timed out already
    this.pending.delete(f.id);
    clearTimeout(p.timer);
    if (f.type === T_RESPONSE) p.resolve(f.payload);
    else if (f.type === T_ERROR) p.reject(new PeerRequestError(this.peer, this.name, new TextDecoder().decode(f.payload)));
    else p.reject(new PeerUnreachableError(this.peer, `unexpected frame type ${f.type} on ${this.name}`));
  }

  isDead(): boolean {
    return this.dead !== undefined;
  }

  /** Marks the channel unusable, fails what waits on it, and lets the owner forget it. */
  fail(err: Error): void {
    if (this.dead) return;
    this.dead = err;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    if (this.stream && this.stream.status === 'open') this.stream.abort(err);
    this.owner.forget(this);
  }

  write(frame: Uint8Array): Promise<void> {
    const p = this.tail.then(async () => {
      if (this.dead) throw this.dead;
      const stream = this.stream!;
      if (stream.writeStatus !== 'writable') {
        const err = new PeerUnreachableError(this.peer, `stream ${this.name} is ${stream.writeStatus}`);
        this.fail(err);
        throw err;
      }
      if (stream.writableNeedsDrain) {
        try {
          await stream.onDrain({ signal: AbortSignal.timeout(this.owner.writeTimeoutMs) });
        } catch (e) {
          const err = new PeerUnreachableError(this.peer, `peer stopped reading ${this.name}`, { cause: e });
          this.fail(err);
          throw err;
        }
        if (this.dead) throw this.dead;
      }
      try {
        stream.send(frame);
      } catch (e) {
        const err = new PeerUnreachableError(this.peer, `cannot write to ${this.name}: ${(e as Error).message}`, { cause: e });
        this.fail(err);
        throw err;
      }
    });
    this.tail = p.catch(() => {});
    return p;
  }

  request(payload: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    return new Promise<Uint8Array>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new PeerRequestTimeoutError(this.peer, this.name, timeoutMs));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.write(encodeFrame(T_REQUEST, id, payload)).catch((err: Error) => {
        if (!this.pending.delete(id)) return;
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  close(): void {
    this.fail(new PeerUnreachableError(this.peer, 'messaging stopped'));
  }
}

export class PeerMessaging {
  readonly maxFrameBytes: number;
  readonly writeTimeoutMs: number;
  private readonly host: StreamHost;
  private readonly log: Logger;
  private readonly requestTimeoutMs: number;
  private readonly openTimeoutMs: number;
  private readonly reserved: Set<string>;
  private readonly handlers = new Map<string, PeerHandler>();
  private readonly channels = new Map<string, Channel>();
  private readonly inbound = new Set<Stream>();
  private started = false;

  constructor(init: PeerMessagingInit) {
    this.host = init.host;
    this.log = init.log;
    this.maxFrameBytes = init.maxFrameBytes ?? 16 * 1024 * 1024;
    this.requestTimeoutMs = init.requestTimeoutMs ?? 10_000;
    this.openTimeoutMs = init.openTimeoutMs ?? 5_000;
    this.writeTimeoutMs = init.writeTimeoutMs ?? 10_000;
    this.reserved = new Set(init.reserved ?? []);
  }

  async start(): Promise<void> {
    this.started = true;
    for (const name of this.handlers.keys()) await this.register(name);
  }

  async stop(): Promise<void> {
    this.started = false;
    for (const ch of [...this.channels.values()]) ch.close();
    for (const s of this.inbound) s.abort(new Error('messaging stopped'));
    this.inbound.clear();
    for (const name of this.handlers.keys()) await this.host.unhandle(protocolId(name)).catch(() => {});
  }

  /** Registers the handler of a protocol name (one per name). */
  handle(name: string, handler: PeerHandler): void {
    if (this.reserved.has(name)) throw new Error(`pool protocol name '${name}' is reserved`);
    this.handleInternal(name, handler);
  }

  /** handle() for the names kept for the pool's own use. */
  handleInternal(name: string, handler: PeerHandler): void {
    checkProtocolName(name);
    if (this.handlers.has(name)) throw new Error(`pool protocol '${name}' already has a handler`);
    this.handlers.set(name, handler);
    if (this.started) {
      this.register(name).catch((e) => this.log.error(`cannot register protocol ${protocolId(name)}:`, e));
    }
  }

  /** One-way message, ordered with the others sent to the same peer and protocol. */
  send(peer: string, name: string, data: Uint8Array): Promise<void> {
    if (data.length > this.maxFrameBytes) return Promise.reject(new FrameTooLargeError(data.length, this.maxFrameBytes));
    return this.channel(peer, name).write(encodeFrame(T_MESSAGE, 0, data));
  }

  request(peer: string, name: string, data: Uint8Array, timeoutMs = this.requestTimeoutMs): Promise<Uint8Array> {
    if (data.length > this.maxFrameBytes) return Promise.reject(new FrameTooLargeError(data.length, this.maxFrameBytes));
    return this.channel(peer, name).request(data, timeoutMs);
  }

  /** Fails every outbound channel to a peer at once (it failed or left), instead of letting each time out. */
  closePeer(peer: string, why: string): void {
    for (const ch of [...this.channels.values()]) {
      if (ch.peer === peer) ch.fail(new PeerUnreachableError(peer, why));
    }
  }

  /** @internal called by Channel */
  async openStream(peer: string, name: string): Promise<Stream> {
    if (!this.started) throw new PeerUnreachableError(peer, 'the pool is not started');
    let id: PeerId;
    try {
      id = peerIdFromString(peer);
    } catch {
      throw new PeerUnreachableError(peer, 'not a valid peer id');
    }
    try {
      return await this.host.dialProtocol(id, protocolId(name), { signal: AbortSignal.timeout(this.openTimeoutMs) });
    } catch (e) {
      throw new PeerUnreachableError(peer, `cannot open ${protocolId(name)}: ${(e as Error).message}`, { cause: e });
    }
  }

  /** @internal called by Channel */
  forget(ch: Channel): void {
    const key = `${ch.peer} ${ch.name}`;
    if (this.channels.get(key) === ch) this.channels.delete(key);
  }

  private channel(peer: string, name: string): Channel {
    const key = `${peer} ${name}`;
    let ch = this.channels.get(key);
    if (!ch || ch.isDead()) {
      ch = new Channel(this, peer, name);
      this.channels.set(key, ch);
    }
    return ch;
  }

  private async register(name: string): Promise<void> {
    await this.host.handle(protocolId(name), (stream, connection) => this.onInbound(name, stream, connection), {
      maxInboundStreams: 256,
      maxOutboundStreams: 256,
      runOnLimitedConnection: true,
      force: true,
    });
  }

  private onInbound(name: string, stream: Stream, connection: Connection): void {
    const handler = this.handlers.get(name);
    const from = connection.remotePeer.toString();
    if (!handler) {
      stream.abort(new Error(`no handler for ${name}`));
      return;
    }
    this.inbound.add(stream);
    const decoder = new FrameDecoder(this.maxFrameBytes);
    const queue: Frame[] = [];
    let queued = 0;
    let running = false;
    let paused = false;
    const HIGH = 1024 * 1024;

    const respond = (type: number, id: number, payload: Uint8Array): void => {
      if (stream.writeStatus !== 'writable') return;
      try {
        stream.send(encodeFrame(type, id, payload));
      } catch (e) {
        this.log.debug(`cannot answer ${name} request from ${from}:`, e);
      }
    };
    const answer = async (f: Frame): Promise<void> => {
      try {
        const res = await handler(f.payload, from);
        const bytes = res ?? new Uint8Array(0);
        if (bytes.length > this.maxFrameBytes) throw new FrameTooLargeError(bytes.length, this.maxFrameBytes);
        respond(T_RESPONSE, f.id, bytes);
      } catch (e) {
        respond(T_ERROR, f.id, new TextEncoder().encode((e as Error)?.message ?? String(e)));
      }
    };
    const pump = async (): Promise<void> => {
      running = true;
      try {
        while (queue.length) {
          const f = queue.shift()!;
          queued -= f.payload.length;
          if (paused && queued < HIGH / 2 && stream.status === 'open') {
            paused = false;
            stream.resume();
          }
          if (f.type === T_MESSAGE) {
            try {
              await handler(f.payload, from);
            } catch (e) {
              this.log.warn(`handler of ${name} failed on a message from ${from}:`, e);
            }
          } else if (f.type === T_REQUEST) {
            // Started in order, answered when done: a slow request must not stall the messages behind it.
            void answer(f);
          } else {
            throw new Error(`unexpected frame type ${f.type}`);
          }
        }
      } catch (e) {
        stream.abort(e as Error);
      } finally {
        running = false;
      }
    };
    stream.addEventListener('message', (evt) => {
      let frames: Frame[];
      try {
        frames = decoder.push(evt.data);
      } catch (e) {
        this.log.warn(`bad data on ${name} from ${from}; closing the stream:`, e);
        stream.abort(e as Error);
        return;
      }
      for (const f of frames) {
        queue.push(f);
        queued += f.payload.length;
      }
      if (queued > HIGH && !paused) {
        paused = true;
        stream.pause();
      }
      if (!running) void pump();
    });
    stream.addEventListener('remoteCloseWrite', () => {
      stream.close().catch(() => {});
    });
    stream.addEventListener('close', () => {
      this.inbound.delete(stream);
    });
  }
}
