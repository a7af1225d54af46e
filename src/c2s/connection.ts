// One client connection: stream set-up and negotiation (RFC 6120 §4 streams,
// §5 STARTTLS, §6 SASL, §7 resource binding), the XEP-0198 wire elements, and
// the checks every client stanza passes before the router sees it (§8.1.2.1
// 'from' stamping, §8.2.3 IQ semantics).
import * as tls from 'node:tls';
import type * as net from 'node:net';
import { randomBytes } from 'node:crypto';
import { Element, x, escapeAttr } from '../xmpp/element.ts';
import { NS } from '../xmpp/ns.ts';
import { StreamError, StanzaError } from '../xmpp/errors.ts';
import { StreamParser } from '../xmpp/parser.ts';
import { JID, prepDomain, prepResource, tryParseJID, InvalidJIDError } from '../xmpp/jid.ts';
import { decodeSaslPayload, type SaslSession, type SaslStep } from './sasl/mechanism.ts';
import { Session } from './session.ts';
import type { C2SServer } from './server.ts';

type State = 'header' | 'open' | 'closing' | 'closed';

/** Output buffered beyond this means the client does not read: drop it. */
const MAX_BACKLOG = 16 * 1024 * 1024;
/** Unacknowledged stanzas before the server asks for an ack (XEP-0198 §4). */
const ACK_EVERY = 5;
/** RFC 6120 §6.4.5: a reasonable number of retries before the stream ends. */
const MAX_AUTH_ATTEMPTS = 5;

export class Connection {
  readonly server: C2SServer;
  socket: net.Socket;
  secure: boolean;
  readonly remoteAddress: string;
  readonly loopback: boolean;
  state: State = 'header';
  authenticated = false;
  username = '';
  session: Session | null = null;
  readonly streamId = randomBytes(9).toString('base64url');
  #headerSent = false;
  #parser: StreamParser;
  #out: string[] = [];
  #flushScheduled = false;
  #sasl: SaslSession | null = null;
  #saslBusy = false;
  #authAttempts = 0;
  /** Set while a handler is async: later stanzas wait so order is kept. */
  #busy: Promise<void> | null = null;
  #backlog: Element[] = [];
  /** The client closed its stream or we sent a stream error: do not hibernate. */
  #cleanClose = false;
  #closeTimer: NodeJS.Timeout | null = null;

  constructor(server: C2SServer, socket: net.Socket, secure: boolean) {
    this.server = server;
    this.socket = socket;
    this.secure = secure;
    this.remoteAddress = socket.remoteAddress ?? '?';
    this.loopback = isLoopback(this.remoteAddress);
    this.#parser = new StreamParser({
      onStreamStart: (name, attrs) => this.#onStreamStart(name, attrs),
      onStanza: (el) => this.#onElement(el),
      onStreamEnd: () => this.#onStreamEnd(),
      onError: (err) => this.close(err),
    }, { maxStanzaSize: server.opts.maxStanzaSize });
    this.#attach(socket);
  }

  get log() {
    return this.server.log;
  }

  #attach(socket: net.Socket): void {
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 60_000);
    socket.on('data', (d: Buffer) => this.#parser.write(d));
    socket.on('error', (e: Error) => this.log.debug(`connection ${this.remoteAddress}: ${e.message}`));
    socket.on('close', () => this.#onSocketClose(socket));
  }

  // ---- output -------------------------------------------------------------

  write(data: string): void {
    if (this.state === 'closed' || this.state === 'closing') return;
    this.#out.push(data);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      // One write per tick: many stanzas for the same client go out in one syscall.
      process.nextTick(() => this.#flush());
    }
  }

  #flush(): void {
    this.#flushScheduled = false;
    if (this.#out.length === 0 || this.socket.destroyed) return;
    const data = this.#out.length === 1 ? this.#out[0] : this.#out.join('');
    this.#out = [];
    this.socket.write(data);
    if (this.socket.writableLength > MAX_BACKLOG) {
      this.log.warn(`${this.remoteAddress} does not read its stream; closing it`);
      this.close(new StreamError('policy-violation', 'the client is not reading its stream'));
    }
  }

  writeStanza(el: Element): void {
    // Stanzas from other namespaces (none today) would need an xmlns; jabber:client is the stream default.
    this.write(el.toString());
  }

  maybeRequestAck(): void {
    const sm = this.session?.sm;
    if (!sm || sm.ackRequested || sm.unacked.length < ACK_EVERY) return;
    sm.ackRequested = true;
    this.write(`<r xmlns='${NS.sm}'/>`);
  }

  #sendHeader(to?: string): void {
    if (this.#headerSent) return;
    this.#headerSent = true;
    const toAttr = to ? ` to='${escapeAttr(to)}'` : '';
    this.write(`<?xml version='1.0'?><stream:stream xmlns='${NS.client}' xmlns:stream='${NS.stream}' id='${this.streamId}' from='${escapeAttr(this.server.domain)}'${toAttr} version='1.0' xml:lang='en'>`);
  }

  /** Ends the stream, with a stream error if given (RFC 6120 §4.4, §4.9). */
  close(err?: StreamError): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    // The server ends this stream for good: nothing to resume.
    this.#cleanClose = true;
    if (err) {
      this.#sendHeader();
      this.write(err.toElement().toString());
      if (err.condition !== 'see-other-host') this.log.debug(`stream error to ${this.remoteAddress}: ${err.condition}${err.text ? ' (' + err.text + ')' : ''}`);
    }
    this.write('</stream:stream>');
    this.state = 'closing';
    this.#flush();
    // Nothing the client sends now is used: allow for its closing tag, but a
    // client still pushing data (a 10 MiB stanza) is not read and thrown away
    // at our expense: stop reading, and TCP backpressure stops it until the
    // timer below drops the connection.
    const socket = this.socket;
    let after = 0;
    socket.removeAllListeners('data');
    socket.on('data', (d: Buffer) => {
      after += d.length;
      if (after > 4096) socket.pause();
    });
    socket.end();
    // A peer that never closes its side must not keep the socket forever.
    this.#closeTimer = setTimeout(() => this.socket.destroy(), 2000);
    this.#closeTimer.unref();
    // Out of routing now, not when the socket finally closes: what arrives for
    // the session meanwhile must go to another resource or offline, not into a
    // closed stream.
    this.#detachSession();
  }

  /** Drops the socket without a closing handshake (tests, replaced connections on resume). */
  destroy(): void {
    this.socket.destroy();
  }

  #onSocketClose(socket: net.Socket): void {
    if (socket !== this.socket) return; // the plain socket under a TLS one
    if (this.#closeTimer) clearTimeout(this.#closeTimer);
    this.state = 'closed';
    this.server.connections.delete(this);
    this.#detachSession();
  }

  /** The session loses this connection: it waits for resumption (XEP-0198) or ends. */
  #detachSession(): void {
    const session = this.session;
    if (!session || session.connection !== this) return;
    session.connection = null;
    if (session.sm.resumable && !this.#cleanClose) this.server.hibernate(session);
    else void this.server.endSession(session, 'disconnected');
  }

  // ---- stream header --------------------------------------------------------

  #onStreamStart(name: string, attrs: Record<string, string>): void {
    const from = attrs.from;
    this.#sendHeader(from && isPlausibleJid(from) ? from : undefined);
    const prefix = name.includes(':') ? name.slice(0, name.indexOf(':')) : '';
    const streamNs = prefix ? attrs['xmlns:' + prefix] : attrs.xmlns;
    if (name.slice(prefix ? prefix.length + 1 : 0) !== 'stream' || streamNs !== NS.stream) {
      return this.close(new StreamError('invalid-namespace', 'the stream element must be stream in ' + NS.stream));
    }
    if (attrs.xmlns !== NS.client) {
      return this.close(new StreamError('invalid-namespace', 'the content namespace must be jabber:client'));
    }
    const to = attrs.to;
    if (to !== undefined) {
      let domain = '';
      try { domain = prepDomain(to); } catch { /* invalid: not ours */ }
      if (domain !== this.server.domain) return this.close(new StreamError('host-unknown', `this server serves ${this.server.domain}`));
    }
    const major = parseInt((attrs.version ?? '0.9').split('.')[0], 10);
    if (!(major === 1)) return this.close(new StreamError('unsupported-version', 'XMPP 1.0 streams only'));
    this.state = 'open';
    this.write(this.#features().toString());
  }

  #features(): Element {
    const f = x('stream:features');
    const info = this.server.info;
    if (!this.authenticated) {
      const tlsAvailable = !this.secure && this.server.secureContext !== null;
      if (tlsAvailable) {
        const st = f.c('starttls', { xmlns: NS.tls });
        if (this.#tlsRequired) st.c('required');
      }
      if (!this.#tlsRequired) {
        const mechs = this.server.mechanisms.filter((m) => this.secure || !m.needsTls);
        if (mechs.length) {
          const el = f.c('mechanisms', { xmlns: NS.sasl });
          for (const m of mechs) el.c('mechanism').t(m.name);
        }
      }
    } else {
      f.c('bind', { xmlns: NS.bind });
      f.c('sm', { xmlns: NS.sm });
      // RFC 3921 sessions are a no-op now; old clients still look for the feature.
      f.c('session', { xmlns: NS.session }).c('optional');
    }
    for (const p of info.streamFeatures) {
      const el = p({ authenticated: this.authenticated, secure: this.secure, loopback: this.loopback });
      if (el) f.append(el);
    }
    return f;
  }

  get #tlsRequired(): boolean {
    const policy = this.server.opts.requireTls;
    if (this.secure || policy === 'never' || this.server.secureContext === null) return false;
    return policy === 'always' || !this.loopback;
  }

  #onStreamEnd(): void {
    this.#cleanClose = true;
    if (this.session) this.session.sm.resumable = false;
    this.close();
  }

  // ---- elements -------------------------------------------------------------

  #onElement(el: Element): void {
    if (this.state !== 'open') return;
    if (this.#busy) {
      this.#backlog.push(el);
      return;
    }
    const r = this.#handle(el);
    if (r) this.#wait(r);
  }

  #wait(p: Promise<void>): void {
    this.socket.pause();
    this.#busy = p.catch((e) => {
      this.log.error('error while handling a client element:', e);
    }).then(() => {
      this.#busy = null;
      while (this.#backlog.length && this.state === 'open') {
        const next = this.#backlog.shift()!;
        const r = this.#handle(next);
        if (r) return this.#wait(r);
      }
      // After a stream restart (SASL success) whatever was queued belonged to the old stream.
      this.#backlog = [];
      if (this.state === 'open' || this.state === 'header') this.socket.resume();
    });
  }

  #handle(el: Element): void | Promise<void> {
    const ns = el.getNS();
    if (!this.authenticated) return this.#handlePreAuth(el, ns);
    if (ns === NS.sm) return this.#handleSm(el);
    if (ns !== NS.client && ns !== '') return this.close(new StreamError('unsupported-stanza-type'));
    if (!this.session) return this.#handlePreBind(el);
    return this.#handleStanza(el, this.session);
  }

  #handlePreAuth(el: Element, ns: string): void | Promise<void> {
    if (el.name === 'starttls' && ns === NS.tls) return this.#startTls();
    if (ns === NS.sasl) {
      if (this.#tlsRequired) {
        this.write(x('failure', { xmlns: NS.sasl }, x('encryption-required')).toString());
        return this.close(new StreamError('policy-violation', 'STARTTLS is required before authentication'));
      }
      return this.#handleSasl(el);
    }
    if (el.name === 'iq' && (ns === NS.client || ns === '')) {
      // XEP-0077 registration before authentication, if a module offers it.
      const r = this.server.hooks.fire('preauth-iq', { connection: this, stanza: el });
      const done = (handled: boolean) => { if (!handled) this.close(new StreamError('not-authorized', 'authenticate first')); };
      if (r instanceof Promise) return r.then(done);
      return done(r);
    }
    this.close(new StreamError('not-authorized', 'authenticate first'));
  }

  // ---- STARTTLS (RFC 6120 §5) ------------------------------------------------

  #startTls(): void {
    const ctx = this.server.secureContext;
    if (this.secure || !ctx) {
      this.write(`<failure xmlns='${NS.tls}'/>`);
      return this.close();
    }
    this.write(`<proceed xmlns='${NS.tls}'/>`);
    this.#flush();
    const plain = this.socket;
    plain.removeAllListeners('data');
    const secure = new tls.TLSSocket(plain, { isServer: true, secureContext: ctx });
    this.socket = secure;
    this.secure = true;
    this.#parser.reset();
    this.state = 'header';
    this.#headerSent = false;
    this.#attach(secure);
    secure.on('secureConnect', () => undefined);
    plain.on('close', () => { if (!secure.destroyed) secure.destroy(); });
  }

  // ---- SASL (RFC 6120 §6) ------------------------------------------------------

  async #handleSasl(el: Element): Promise<void> {
    const name = el.getName();
    if (name === 'abort') {
      this.#sasl = null;
      return this.#saslFailure('aborted');
    }
    let step: SaslStep;
    if (name === 'auth') {
      const mechName = el.attrs.mechanism;
      const mech = this.server.mechanisms.find((m) => m.name === mechName && (this.secure || !m.needsTls));
      if (!mech) return this.#saslFailure('invalid-mechanism');
      if (this.#authAttempts >= MAX_AUTH_ATTEMPTS) {
        return this.close(new StreamError('policy-violation', 'too many authentication attempts'));
      }
      this.#authAttempts++;
      this.#sasl = mech.start(this.server.saslBackend);
    } else if (name !== 'response' || !this.#sasl) {
      return this.#saslFailure('malformed-request');
    }
    const data = decodeSaslPayload(el.text());
    if (data === null) {
      this.#sasl = null;
      return this.#saslFailure('incorrect-encoding');
    }
    this.#saslBusy = true;
    try {
      step = await this.#sasl!.step(data);
    } catch (e) {
      this.log.error('SASL mechanism failed:', e);
      step = { kind: 'failure', condition: 'temporary-auth-failure' };
    } finally {
      this.#saslBusy = false;
    }
    if (step.kind === 'challenge') {
      this.write(`<challenge xmlns='${NS.sasl}'>${step.data.length ? step.data.toString('base64') : '='}</challenge>`);
      return;
    }
    this.#sasl = null;
    if (step.kind === 'failure') {
      if (step.condition === 'not-authorized') {
        const wait = this.server.throttle.fail(this.remoteAddress);
        this.log.info(`authentication failure from ${this.remoteAddress}`);
        await sleep(wait);
      }
      return this.#saslFailure(step.condition, step.text);
    }
    this.server.throttle.succeed(this.remoteAddress);
    this.authenticated = true;
    this.username = step.username;
    const payload = step.data && step.data.length ? step.data.toString('base64') : '';
    this.write(payload ? `<success xmlns='${NS.sasl}'>${payload}</success>` : `<success xmlns='${NS.sasl}'/>`);
    // RFC 6120 §6.4.6: the client restarts the stream.
    this.#parser.reset();
    this.state = 'header';
    this.#headerSent = false;
  }

  #saslFailure(condition: string, text?: string): void {
    if (this.state !== 'open') return;
    const f = x('failure', { xmlns: NS.sasl }, x(condition));
    if (text) f.append(x('text', { 'xml:lang': 'en' }, text));
    this.write(f.toString());
  }

  // ---- resource binding (RFC 6120 §7) -------------------------------------------

  #handlePreBind(el: Element): void | Promise<void> {
    if (el.name !== 'iq') return this.close(new StreamError('not-authorized', 'bind a resource first'));
    const bind = el.getChild('bind', NS.bind);
    if (bind && el.attrs.type === 'set') return this.#bind(el, bind);
    if (el.getChild('session', NS.session) && el.attrs.type === 'set') {
      return this.write(x('iq', { type: 'result', id: el.attrs.id ?? '' }).toString());
    }
    this.#iqError(el, new StanzaError('not-authorized', 'bind a resource first'));
  }

  #bind(iq: Element, bind: Element): Promise<void> | void {
    let resource = bind.getChildText('resource')?.trim() ?? '';
    if (resource !== '') {
      try {
        resource = prepResource(resource);
      } catch (e) {
        if (!(e instanceof InvalidJIDError)) throw e;
        return this.#iqError(iq, new StanzaError('bad-request', 'invalid resource'));
      }
    } else {
      resource = 'imnode-' + randomBytes(6).toString('base64url');
    }
    const jid = new JID(this.username, this.server.domain, resource);
    const session = new Session(jid, this);
    this.session = session;
    this.server.bindSession(session);
    this.write(x('iq', { type: 'result', id: iq.attrs.id ?? '' },
      x('bind', { xmlns: NS.bind }, x('jid', null, jid.toString()))).toString());
    return this.server.hooks.emit('session-bound', session);
  }

  #iqError(iq: Element, err: StanzaError): void {
    this.write(x('iq', { type: 'error', id: iq.attrs.id ?? '' }, err.toElement()).toString());
  }

  // ---- XEP-0198 -----------------------------------------------------------------

  #handleSm(el: Element): void {
    const name = el.getName();
    const session = this.session;
    if (name === 'resume') return this.#resume(el);
    if (name === 'enable') {
      if (!session) return this.write(`<failed xmlns='${NS.sm}'><unexpected-request xmlns='${NS.stanzas}'/></failed>`);
      if (session.sm.enabled) return this.write(`<failed xmlns='${NS.sm}'><unexpected-request xmlns='${NS.stanzas}'/></failed>`);
      const sm = session.sm;
      sm.enabled = true;
      const wantResume = el.attrs.resume === 'true' || el.attrs.resume === '1';
      let attrs = '';
      if (wantResume) {
        sm.resumable = true;
        sm.id = randomBytes(18).toString('base64url');
        this.server.resumable.set(sm.id, session);
        attrs = ` id='${sm.id}' resume='true' max='${Math.round(this.server.opts.smResumeTimeout / 1000)}'`;
      }
      return this.write(`<enabled xmlns='${NS.sm}'${attrs}/>`);
    }
    if (!session || !session.sm.enabled) return this.close(new StreamError('unsupported-stanza-type', 'stream management is not enabled'));
    if (name === 'r') return this.write(`<a xmlns='${NS.sm}' h='${session.sm.inbound}'/>`);
    if (name === 'a') {
      const h = Number(el.attrs.h);
      if (!Number.isInteger(h) || h < 0 || !session.sm.ack(h)) {
        const err = new StreamError('undefined-condition', 'acknowledged more stanzas than were sent');
        return this.close(err);
      }
      return;
    }
    this.close(new StreamError('unsupported-stanza-type'));
  }

  #resume(el: Element): void {
    const failed = (cond: string) => this.write(`<failed xmlns='${NS.sm}'><${cond} xmlns='${NS.stanzas}'/></failed>`);
    if (this.session) return failed('unexpected-request');
    const session = this.server.resumable.get(el.attrs.previd ?? '');
    if (!session || session.closed || session.username !== this.username) return failed('item-not-found');
    const h = Number(el.attrs.h);
    if (!Number.isInteger(h) || h < 0 || !session.sm.ack(h)) return failed('unexpected-request');
    const old = session.connection;
    if (old && old !== this) {
      // The old TCP connection is dead but not noticed yet: drop it silently.
      old.session = null;
      old.destroy();
    }
    this.server.wake(session);
    session.connection = this;
    this.session = session;
    this.write(`<resumed xmlns='${NS.sm}' previd='${session.sm.id}' h='${session.sm.inbound}'/>`);
    for (const s of session.sm.unacked) this.writeStanza(s);
    if (session.sm.unacked.length) {
      session.sm.ackRequested = true;
      this.write(`<r xmlns='${NS.sm}'/>`);
    }
    this.log.debug(`session ${session.jid} resumed, ${session.sm.unacked.length} stanzas re-sent`);
  }

  // ---- stanzas --------------------------------------------------------------------

  #handleStanza(el: Element, session: Session): void | Promise<void> {
    const kind = el.name;
    if (kind !== 'message' && kind !== 'presence' && kind !== 'iq') {
      return this.close(new StreamError('unsupported-stanza-type', `<${el.name}/> is not a stanza`));
    }
    if (session.sm.enabled) session.sm.countInbound();
    // RFC 6120 §8.1.2.1: the server stamps 'from'; a client may only name itself.
    const from = el.attrs.from;
    if (from !== undefined && from !== session.jid.toString() && !sameSender(from, session.jid)) {
      return this.close(new StreamError('invalid-from', 'a client may only send from its own address'));
    }
    el.attrs.from = session.jid.toString();
    if (kind === 'iq') {
      const type = el.attrs.type;
      if (el.attrs.id === undefined) {
        return this.#iqError(el, new StanzaError('bad-request', 'an IQ needs an id'));
      }
      if (type === 'get' || type === 'set') {
        if (el.elements.length !== 1) return this.server.router.sendError(el, new StanzaError('bad-request', 'an IQ request has exactly one child'));
      } else if (type !== 'result' && type !== 'error') {
        return this.server.router.sendError(el, new StanzaError('bad-request', 'invalid IQ type'));
      }
    }
    return this.server.router.routeFromClient(el, session);
  }
}

/** The client's own full or bare JID, compared after preparation (ALICE@Example.com is alice@example.com). */
function sameSender(from: string, jid: JID): boolean {
  const f = tryParseJID(from);
  if (!f || f.local !== jid.local || f.domain !== jid.domain) return false;
  return f.resource === '' || f.resource === jid.resource;
}

function isLoopback(addr: string): boolean {
  return addr.startsWith('127.') || addr === '::1' || addr.startsWith('::ffff:127.');
}

function isPlausibleJid(s: string): boolean {
  return s.length < 3072 && !/[<>&'"\s]/.test(s);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
