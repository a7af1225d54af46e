// A minimal XMPP client for the load generator, one per TCP connection on
// loopback, with no TLS (the server's default --require-tls not-loopback allows
// that): RFC 6120 §4 stream, §6 SASL (SCRAM-SHA-1 only, see scram.ts), §7 bind,
// then RFC 6121 §4.2 initial presence and a XEP-0199 ping whose answer tells the
// session is fully set up (the server handles a client's stanzas in order, so the
// presence was processed before the ping was). Everything is a plain state
// machine over the project's StreamParser; outgoing data is written once per tick.
// With `tls` in the target, the first stream negotiates STARTTLS (RFC 6120 §5)
// before SASL; the certificate is not verified (the bench's own, self-signed).
import * as net from 'node:net';
import * as tls from 'node:tls';
import { StreamParser } from '../../src/xmpp/parser.ts';
import type { Element } from '../../src/xmpp/element.ts';
import { ScramClient, type ScramKeyCache } from './scram.ts';

const NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';
const NS_BIND = 'urn:ietf:params:xml:ns:xmpp-bind';
const NS_TLS = 'urn:ietf:params:xml:ns:xmpp-tls';

export interface Target {
  host: string;
  port: number;
  domain: string;
  keys: ScramKeyCache;
  /** STARTTLS before SASL. */
  tls?: boolean;
}

export interface Account {
  username: string;
  password: string;
  resource: string;
}

export type Phase = 'new' | 'connecting' | 'features' | 'starttls' | 'challenge' | 'success' | 'features2' | 'bind' | 'ping' | 'ready' | 'closing' | 'closed' | 'failed';

export class BenchClient {
  readonly target: Target;
  readonly account: Account;
  phase: Phase = 'new';
  /** Full JID the server bound. */
  jid = '';
  /** performance.now() at connect, when the bind result arrived and when the ping was answered. */
  startedAt = 0;
  boundAt = 0;
  readyAt = 0;
  /** Stanzas after the login (and during it, other than the answers it waits for). */
  onStanza: (el: Element) => void = () => {};
  /** The connection ended or failed after the login without close() being called. */
  onDown: (err: Error) => void = () => {};
  #socket: net.Socket | null = null;
  #secured = false;
  readonly #parser: StreamParser;
  #out: string[] = [];
  #flushScheduled = false;
  #scram: ScramClient | null = null;
  #login: { resolve: () => void; reject: (e: Error) => void } | null = null;
  #closed: Promise<void> | null = null;
  #closedResolve: () => void = () => {};

  constructor(target: Target, account: Account) {
    this.target = target;
    this.account = account;
    this.#parser = new StreamParser({
      onStreamStart: () => {},
      onStanza: (el) => this.#onElement(el),
      onStreamEnd: () => {
        if (this.phase !== 'closing') this.#fail(new Error('the server closed the stream'));
        this.#socket?.end();
      },
      onError: (err) => this.#fail(new Error(`unparsable data from the server: ${err.condition} ${err.text ?? ''}`)),
    });
  }

  /** Resolves once bound, available and the ping is answered. */
  login(): Promise<void> {
    if (this.phase !== 'new') throw new Error('login() called twice');
    this.phase = 'connecting';
    this.startedAt = performance.now();
    this.#closed = new Promise((r) => (this.#closedResolve = r));
    return new Promise((resolve, reject) => {
      this.#login = { resolve, reject };
      const s = net.connect({ host: this.target.host, port: this.target.port, noDelay: true });
      this.#socket = s;
      s.on('connect', () => {
        this.phase = 'features';
        this.#header();
      });
      this.#listen(s);
    });
  }

  #listen(s: net.Socket): void {
    s.on('data', (d: Buffer) => this.#parser.write(d));
    s.on('error', (e) => this.#fail(e));
    s.on('close', () => {
      // The TCP socket under TLS closes with the TLS one, which reports it.
      if (s !== this.#socket) return;
      // Reported before the phase says closed: #fail ignores connections already closed.
      if (this.phase !== 'closing' && this.phase !== 'failed') this.#fail(new Error('the server closed the connection'));
      if (this.phase !== 'failed') this.phase = 'closed';
      this.#closedResolve();
    });
  }

  send(data: string): void {
    if (this.phase === 'closed' || this.phase === 'failed') return;
    this.#out.push(data);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      process.nextTick(() => this.#flush());
    }
  }

  /** Closes the stream (RFC 6120 §4.4) and resolves when the server closed the TCP connection. */
  close(): Promise<void> {
    if (this.phase === 'ready') {
      this.phase = 'closing';
      this.send('</stream:stream>');
    } else if (this.phase !== 'closing' && this.phase !== 'closed' && this.phase !== 'failed') {
      this.phase = 'closing';
      this.#socket?.destroy();
    }
    return this.#closed ?? Promise.resolve();
  }

  destroy(): void {
    if (this.phase !== 'closed' && this.phase !== 'failed') this.phase = 'closing';
    this.#socket?.destroy();
  }

  #flush(): void {
    this.#flushScheduled = false;
    const s = this.#socket;
    if (!s || s.destroyed || this.#out.length === 0) return;
    s.write(this.#out.length === 1 ? this.#out[0] : this.#out.join(''));
    this.#out = [];
  }

  #header(): void {
    this.send(`<?xml version='1.0'?><stream:stream to='${this.target.domain}' xmlns='jabber:client' ` +
      `xmlns:stream='http://etherx.jabber.org/streams' version='1.0' xml:lang='en'>`);
  }

  #fail(err: Error): void {
    if (this.phase === 'failed' || this.phase === 'closed') return;
    const wasUp = this.phase === 'ready';
    const closing = this.phase === 'closing';
    this.phase = 'failed';
    this.#socket?.destroy();
    if (this.#login) {
      const l = this.#login;
      this.#login = null;
      l.reject(new Error(`${this.account.username}: ${err.message}`));
    } else if (wasUp || !closing) {
      this.onDown(new Error(`${this.account.username}: ${err.message}`));
    }
  }

  #onElement(el: Element): void {
    if (el.name === 'stream:error') {
      const cond = el.children.find((c) => typeof c !== 'string' && c.name !== 'text');
      const text = el.getChildText('text');
      // A stream error while we close is the server's business (e.g. system-shutdown at the end).
      if (this.phase === 'closing') return;
      return this.#fail(new Error(`stream error ${typeof cond === 'object' ? cond.name : '?'}${text ? ': ' + text : ''}`));
    }
    switch (this.phase) {
      case 'features': return this.#onFeatures(el);
      case 'starttls': return this.#onProceed(el);
      case 'challenge': return this.#onChallenge(el);
      case 'success': return this.#onSuccess(el);
      case 'features2': return this.#onFeatures2(el);
      case 'bind': return this.#onBind(el);
      case 'ping':
        if (el.name === 'iq' && el.attrs.id === 'bench-ping') return this.#onPing(el);
        return this.onStanza(el);
      case 'ready': return this.onStanza(el);
      default: return;
    }
  }

  #unexpected(el: Element): void {
    this.#fail(new Error(`unexpected in phase ${this.phase}: ${el.toString().slice(0, 300)}`));
  }

  #onFeatures(el: Element): void {
    if (el.name !== 'stream:features') return this.#unexpected(el);
    if (this.target.tls && !this.#secured) {
      if (!el.getChild('starttls', NS_TLS)) return this.#fail(new Error(`STARTTLS not offered: ${el.toString()}`));
      this.phase = 'starttls';
      this.send(`<starttls xmlns='${NS_TLS}'/>`);
      return;
    }
    const mechs = el.getChild('mechanisms', NS_SASL)?.getChildren('mechanism').map((m) => m.text()) ?? [];
    if (!mechs.includes('SCRAM-SHA-1')) return this.#fail(new Error(`SCRAM-SHA-1 not offered (${mechs.join(' ') || 'no mechanisms'}): ${el.toString()}`));
    this.#scram = new ScramClient(this.account.username, this.account.password, this.target.keys);
    this.phase = 'challenge';
    this.send(`<auth xmlns='${NS_SASL}' mechanism='SCRAM-SHA-1'>${this.#scram.first()}</auth>`);
  }

  #onProceed(el: Element): void {
    if (el.name !== 'proceed') return this.#unexpected(el);
    const raw = this.#socket!;
    raw.removeAllListeners('data');
    const s = tls.connect({ socket: raw, servername: this.target.domain, rejectUnauthorized: false });
    this.#socket = s;
    this.#secured = true;
    this.#listen(s);
    this.#parser.reset();
    this.phase = 'features';
    s.once('secureConnect', () => this.#header());
  }

  #onChallenge(el: Element): void {
    if (el.name !== 'challenge') return this.#unexpected(el);
    this.phase = 'success';
    this.#scram!.respond(el.text()).then(
      (resp) => this.send(`<response xmlns='${NS_SASL}'>${resp}</response>`),
      (e: Error) => this.#fail(e),
    );
  }

  #onSuccess(el: Element): void {
    if (el.name !== 'success') return this.#unexpected(el);
    try {
      this.#scram!.verify(el.text());
    } catch (e) {
      return this.#fail(e as Error);
    }
    this.#scram = null;
    // RFC 6120 §6.4.6: a new stream on the same connection.
    this.#parser.reset();
    this.phase = 'features2';
    this.#header();
  }

  #onFeatures2(el: Element): void {
    if (el.name !== 'stream:features') return this.#unexpected(el);
    if (!el.getChild('bind', NS_BIND)) return this.#fail(new Error(`no bind feature: ${el.toString()}`));
    this.phase = 'bind';
    this.send(`<iq type='set' id='bench-bind'><bind xmlns='${NS_BIND}'><resource>${this.account.resource}</resource></bind></iq>`);
  }

  #onBind(el: Element): void {
    if (el.name !== 'iq' || el.attrs.id !== 'bench-bind') return this.#unexpected(el);
    const jid = el.getChild('bind', NS_BIND)?.getChildText('jid');
    if (el.attrs.type !== 'result' || !jid) return this.#fail(new Error(`bind failed: ${el.toString()}`));
    this.jid = jid;
    this.boundAt = performance.now();
    this.phase = 'ping';
    this.send(`<presence/><iq type='get' id='bench-ping' to='${this.target.domain}'><ping xmlns='urn:xmpp:ping'/></iq>`);
  }

  #onPing(el: Element): void {
    if (el.attrs.type !== 'result') return this.#fail(new Error(`ping not answered with a result: ${el.toString()}`));
    this.phase = 'ready';
    this.readyAt = performance.now();
    const l = this.#login!;
    this.#login = null;
    l.resolve();
  }
}
