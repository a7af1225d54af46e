// A tiny raw-socket XMPP client for the tests no real client library would
// let us write: bad stream headers, malformed XML, spoofed addresses, XEP-0198
// by hand. It writes whatever it is told, byte for byte, and reads the
// server's output with the project's own StreamParser (RFC 6120 §4 framing),
// recording every top-level element so tests can wait for one.
import * as net from 'node:net';
import * as tls from 'node:tls';
import { StreamParser } from '../../src/xmpp/parser.ts';
import type { Element } from '../../src/xmpp/element.ts';
import type { StreamError } from '../../src/xmpp/errors.ts';
import { startServer, prepareTemplate, type StartOptions, type TestServer } from './imnode.ts';

export const NS_STREAMS = 'urn:ietf:params:xml:ns:xmpp-streams';
export const NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';
export const NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';
export const NS_TLS = 'urn:ietf:params:xml:ns:xmpp-tls';
export const NS_BIND = 'urn:ietf:params:xml:ns:xmpp-bind';
export const NS_SM = 'urn:xmpp:sm:3';

const BASE_CA = tls.getCACertificates('default');

/**
 * Makes this process trust exactly one test server's self-signed certificate
 * (for xmpp.js, which uses the default trust store). Unlike accumulating
 * certificates, this works when several servers ran in one process: their
 * certificates all have the subject CN=localhost, and OpenSSL would pick the
 * first one with that subject as the issuer and fail verification.
 */
export function trustOnly(server: TestServer): void {
  tls.setDefaultCACertificates([...BASE_CA, server.certPem()]);
}

/** Runs fn against a fresh server with these accounts whose certificate alone this process trusts; stops it after. */
export async function withServer(users: Record<string, string>, opts: StartOptions, fn: (s: TestServer) => Promise<void>): Promise<void> {
  const server = await startServer({ template: await prepareTemplate(users), ...opts });
  trustOnly(server);
  try {
    await fn(server);
  } finally {
    await server.stop();
  }
}

export interface RawOptions {
  host?: string;
  /** Direct TLS (XEP-0368): TLS from the first byte. */
  tls?: boolean;
  /** PEM of the certificate to trust (the server's self-signed one). */
  ca?: string;
  /** Name the certificate must carry. */
  servername?: string;
}

interface Waiter { pred: (el: Element) => boolean; resolve: (el: Element) => void }

export class RawClient {
  socket: net.Socket;
  readonly opts: RawOptions;
  /** Attributes of the server's stream header, once received. */
  header: Record<string, string> | null = null;
  /** Received elements not yet taken by next(). */
  readonly pending: Element[] = [];
  /** Every element received, taken or not. */
  readonly all: Element[] = [];
  /** The server sent its closing </stream:stream>. */
  ended = false;
  /** The TCP connection is gone. */
  closed = false;
  /** The server's output was not valid XMPP (a server bug). */
  parseError: StreamError | null = null;
  /** Every byte received, decoded (for diagnostics). */
  transcript = '';
  #parser: StreamParser;
  #waiters: Waiter[] = [];
  #change: Array<() => void> = [];
  readonly #closedPromise: Promise<void>;
  #resolveClosed!: () => void;

  private constructor(socket: net.Socket, opts: RawOptions) {
    this.socket = socket;
    this.opts = opts;
    this.#closedPromise = new Promise((r) => (this.#resolveClosed = r));
    this.#parser = this.#newParser();
    this.#attach(socket);
  }

  static connect(port: number, opts: RawOptions = {}): Promise<RawClient> {
    const host = opts.host ?? '127.0.0.1';
    return new Promise((resolve, reject) => {
      let s: net.Socket;
      const fail = (e: Error) => reject(e);
      if (opts.tls) {
        s = tls.connect({ host, port, servername: opts.servername ?? 'localhost', ca: opts.ca, ALPNProtocols: ['xmpp-client'] }, () => {
          s.off('error', fail);
          resolve(new RawClient(s, opts));
        });
      } else {
        s = net.connect({ host, port }, () => {
          s.off('error', fail);
          resolve(new RawClient(s, opts));
        });
      }
      s.once('error', fail);
    });
  }

  /** Connects to a test server's STARTTLS port, trusting its certificate. */
  static to(server: TestServer, opts: RawOptions = {}): Promise<RawClient> {
    const o = { ca: server.certPem(), ...opts };
    return RawClient.connect(o.tls ? server.tlsPort : server.port, o);
  }

  #newParser(): StreamParser {
    return new StreamParser({
      onStreamStart: (_name, attrs) => {
        this.header = attrs;
        this.#notify();
      },
      onStanza: (el) => {
        this.all.push(el);
        for (let i = 0; i < this.#waiters.length; i++) {
          if (this.#waiters[i].pred(el)) {
            const w = this.#waiters.splice(i, 1)[0];
            w.resolve(el);
            return;
          }
        }
        this.pending.push(el);
      },
      onStreamEnd: () => {
        this.ended = true;
        this.#notify();
      },
      onError: (err) => {
        this.parseError = err;
        this.#notify();
      },
    }, { maxStanzaSize: 64 * 1024 * 1024 });
  }

  #attach(s: net.Socket): void {
    s.on('data', (d: Buffer) => {
      this.transcript += d.toString('utf8');
      this.#parser.write(d);
    });
    s.on('error', () => { /* a reset after a stream error is expected; closed covers it */ });
    s.on('close', () => {
      if (s !== this.socket) return;
      this.closed = true;
      this.#resolveClosed();
      this.#notify();
    });
  }

  #notify(): void {
    const fns = this.#change;
    this.#change = [];
    for (const f of fns) f();
  }

  /** Waits until cond() holds, re-checking on every event; rejects after ms. */
  #until(cond: () => boolean, ms: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      if (cond()) return resolve();
      const timer = setTimeout(() => reject(new Error(`raw client: timed out after ${ms} ms waiting for ${what}; received so far:\n${this.transcript.slice(-2000)}`)), ms);
      const check = () => {
        if (cond()) {
          clearTimeout(timer);
          resolve();
        } else {
          this.#change.push(check);
        }
      };
      this.#change.push(check);
    });
  }

  // ---- output ---------------------------------------------------------------

  send(data: string | Buffer): void {
    if (!this.socket.destroyed) this.socket.write(data);
  }

  /** Sends a stream header; attrs override the defaults (null drops one). */
  open(attrs: Record<string, string | null> = {}, opts: { prolog?: boolean } = {}): void {
    const all: Record<string, string | null> = {
      to: 'localhost', version: '1.0', xmlns: 'jabber:client', 'xmlns:stream': 'http://etherx.jabber.org/streams', ...attrs,
    };
    let s = opts.prolog === false ? '' : "<?xml version='1.0'?>";
    s += '<stream:stream';
    for (const [k, v] of Object.entries(all)) if (v !== null) s += ` ${k}='${v}'`;
    this.send(s + '>');
  }

  /** Drops the parser state for a stream restart (after <proceed/> or SASL <success/>). */
  restart(): void {
    this.#parser.reset();
    this.header = null;
    this.ended = false;
  }

  // ---- input -----------------------------------------------------------------

  waitHeader(ms = 5000): Promise<Record<string, string>> {
    return this.#until(() => this.header !== null, ms, 'the stream header').then(() => this.header!);
  }

  /** The next received element matching pred (taken from pending). */
  next(pred: (el: Element) => boolean = () => true, ms = 5000, what = 'an element'): Promise<Element> {
    const i = this.pending.findIndex(pred);
    if (i !== -1) return Promise.resolve(this.pending.splice(i, 1)[0]);
    return new Promise((resolve, reject) => {
      const w: Waiter = { pred, resolve: (el) => { clearTimeout(timer); resolve(el); } };
      const timer = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        reject(new Error(`raw client: timed out after ${ms} ms waiting for ${what}; received so far:\n${this.transcript.slice(-2000)}`));
      }, ms);
      this.#waiters.push(w);
    });
  }

  nextNamed(name: string, xmlns?: string, ms = 5000): Promise<Element> {
    return this.next((el) => el.is(name, xmlns), ms, `<${name}${xmlns ? ` xmlns='${xmlns}'` : ''}/>`);
  }

  features(ms = 5000): Promise<Element> {
    return this.next((el) => el.name === 'stream:features', ms, '<stream:features/>');
  }

  /**
   * Waits for a stream error and the end of the stream (closing tag or TCP
   * close); returns the defined condition (RFC 6120 §4.9.3).
   */
  async streamError(ms = 5000): Promise<string> {
    const el = await this.next((e) => e.name === 'stream:error', ms, '<stream:error/>');
    const cond = el.elements.find((c) => c.getNS() === NS_STREAMS && c.name !== 'text');
    return cond ? cond.name : '(no condition)';
  }

  /** Resolves when the stream was closed by the server (closing tag or TCP close). */
  waitEnded(ms = 5000): Promise<void> {
    return this.#until(() => this.ended || this.closed, ms, 'the end of the stream');
  }

  waitClosed(ms = 5000): Promise<void> {
    return Promise.race([
      this.#closedPromise,
      new Promise<void>((_, reject) => setTimeout(() => reject(new Error('raw client: the TCP connection was not closed within ' + ms + ' ms')), ms).unref()),
    ]);
  }

  // ---- negotiation --------------------------------------------------------------

  /** STARTTLS (RFC 6120 §5): sends <starttls/>, upgrades, opens the new stream, returns its features. */
  async starttls(): Promise<Element> {
    this.send(`<starttls xmlns='${NS_TLS}'/>`);
    await this.nextNamed('proceed', NS_TLS);
    const plain = this.socket;
    plain.removeAllListeners('data');
    this.restart();
    const secure = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({ socket: plain, servername: this.opts.servername ?? 'localhost', ca: this.opts.ca }, () => resolve(s));
      s.once('error', reject);
    });
    this.socket = secure;
    this.#attach(secure);
    this.open();
    await this.waitHeader();
    return this.features();
  }

  /** SASL PLAIN; resolves with <success/> (and restarts the stream) or <failure/>. */
  async authPlain(user: string, password: string, authzid = ''): Promise<Element> {
    const payload = Buffer.from(`${authzid}\0${user}\0${password}`).toString('base64');
    this.send(`<auth xmlns='${NS_SASL}' mechanism='PLAIN'>${payload}</auth>`);
    const r = await this.next((el) => el.getNS() === NS_SASL && (el.name === 'success' || el.name === 'failure'), 10_000, 'the SASL outcome');
    if (r.name === 'success') this.restart();
    return r;
  }

  /** Opens a stream, reads its features; with STARTTLS when offered and secure is true. */
  async hello(secure = true): Promise<Element> {
    this.open();
    await this.waitHeader();
    let f = await this.features();
    if (secure && !this.opts.tls && f.getChild('starttls', NS_TLS)) f = await this.starttls();
    return f;
  }

  /** STARTTLS (unless direct TLS), PLAIN, bind. Resolves with the bound full JID. */
  async login(user: string, password: string, resource?: string): Promise<string> {
    await this.hello(true);
    const r = await this.authPlain(user, password);
    if (r.name !== 'success') throw new Error(`raw login of ${user} failed: ${r.toString()}`);
    this.open();
    await this.waitHeader();
    const f = await this.features();
    if (!f.getChild('bind', NS_BIND)) throw new Error('no bind feature after authentication: ' + f.toString());
    const res = resource ? `<resource>${resource}</resource>` : '';
    this.send(`<iq type='set' id='bind1'><bind xmlns='${NS_BIND}'>${res}</bind></iq>`);
    const iq = await this.next((el) => el.name === 'iq' && el.attrs.id === 'bind1', 5000, 'the bind result');
    const jid = iq.getChild('bind', NS_BIND)?.getChildText('jid');
    if (iq.attrs.type !== 'result' || !jid) throw new Error('bind failed: ' + iq.toString());
    return jid;
  }

  /** Closes our stream (RFC 6120 §4.4) and waits for the server to close its side. */
  async close(ms = 3000): Promise<void> {
    if (this.closed) return;
    this.send('</stream:stream>');
    try {
      await this.waitClosed(ms);
    } finally {
      this.destroy();
    }
  }

  /** Drops the TCP connection without closing the stream. */
  destroy(): void {
    this.socket.destroy();
    if (this.socket instanceof tls.TLSSocket) {
      // The plain socket under a STARTTLS one goes with it.
      (this.socket as tls.TLSSocket & { _parent?: net.Socket })._parent?.destroy();
    }
  }
}

/** The defined condition of a stanza error (RFC 6120 §8.3.3), or null. */
export function stanzaErrorCondition(el: Element): string | null {
  const err = el.getChild('error');
  if (!err) return null;
  const c = err.elements.find((e) => e.getNS() === NS_STANZAS && e.name !== 'text');
  return c ? c.name : null;
}
