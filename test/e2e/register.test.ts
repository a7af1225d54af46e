// XEP-0077 in-band registration against the real server. xmpp.js cannot
// register, so account creation goes through a tiny raw client on loopback
// that reads the server's stream with the project's own StreamParser; logins,
// password changes and removal use xmpp.js.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { StreamParser } from '../../src/xmpp/parser.ts';
import type { Element } from '../../src/xmpp/element.ts';
import { startServer, trustServerCert, type TestServer } from '../helpers/imnode.ts';
import { connect, connectFails, xml, type TestClient, type XmlEl } from '../helpers/xmppjs.ts';

// xmpp.js's iqCaller attaches its handler to an IQ's promise only after the
// socket write callback; an error answer that beats it is an "unhandled"
// rejection for a moment, and the caller still gets it. Only that is tolerated.
process.on('unhandledRejection', (e) => { if ((e as Error | undefined)?.name !== 'StanzaError') throw e; });

const REGISTER = 'jabber:iq:register';
const FEATURE = 'http://jabber.org/features/iq-register';
const STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';

/** A client that speaks just enough of RFC 6120 to send IQs before authenticating. */
class RawClient {
  readonly socket: net.Socket;
  readonly received: Element[] = [];
  features: Element | null = null;
  ended = false;
  #waiters: Array<{ pred: (el: Element) => boolean; resolve: (el: Element) => void }> = [];
  #closed: Promise<void>;

  private constructor(socket: net.Socket, domain: string) {
    this.socket = socket;
    const parser = new StreamParser({
      onStreamStart: () => undefined,
      onStanza: (el) => {
        if (el.is('features')) this.features = el;
        this.received.push(el);
        for (const w of [...this.#waiters]) {
          if (w.pred(el)) {
            this.#waiters.splice(this.#waiters.indexOf(w), 1);
            w.resolve(el);
          }
        }
      },
      onStreamEnd: () => { this.ended = true; },
      onError: () => { this.ended = true; },
    });
    socket.on('data', (d: Buffer) => parser.write(d));
    socket.on('error', () => undefined);
    this.#closed = new Promise((r) => socket.on('close', () => r()));
    socket.write(`<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='${domain}' version='1.0'>`);
  }

  static async open(server: TestServer, opts: { directTls?: boolean } = {}): Promise<RawClient> {
    const socket = opts.directTls
      ? tls.connect({ host: '127.0.0.1', port: server.tlsPort, servername: server.domain, ca: [server.certPem()] })
      : net.connect({ host: '127.0.0.1', port: server.port });
    await new Promise<void>((resolve, reject) => {
      socket.once(opts.directTls ? 'secureConnect' : 'connect', () => resolve());
      socket.once('error', reject);
    });
    const c = new RawClient(socket, server.domain);
    await c.next((el) => el.is('features'), 'stream features');
    return c;
  }

  next(pred: (el: Element) => boolean, what: string, ms = 5000): Promise<Element> {
    const seen = this.received.find(pred);
    if (seen) {
      this.received.splice(this.received.indexOf(seen), 1);
      return Promise.resolve(seen);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
      this.#waiters.push({ pred, resolve: (el) => {
        clearTimeout(timer);
        this.received.splice(this.received.indexOf(el), 1);
        resolve(el);
      } });
    });
  }

  #n = 0;
  async iq(type: 'get' | 'set', query: string): Promise<Element> {
    const id = `raw${++this.#n}`;
    this.socket.write(`<iq type='${type}' id='${id}'>${query}</iq>`);
    return this.next((el) => el.is('iq') && el.attrs.id === id, `the answer to ${id}`);
  }

  register(username: string, password: string): Promise<Element> {
    return this.iq('set', `<query xmlns='${REGISTER}'><username>${username}</username><password>${password}</password></query>`);
  }

  async close(): Promise<void> {
    if (!this.socket.destroyed) this.socket.end('</stream:stream>');
    const t = setTimeout(() => this.socket.destroy(), 1000);
    await this.#closed;
    clearTimeout(t);
  }

  waitClosed(ms = 3000): Promise<boolean> {
    return Promise.race([this.#closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);
  }
}

function condition(iq: Element): string | undefined {
  const err = iq.getChild('error');
  return err?.elements.find((e) => e.getNS() === STANZAS && e.name !== 'text')?.name;
}

function hasFeature(c: RawClient): boolean {
  return !!c.features?.getChild('register', FEATURE);
}

async function iqError(c: TestClient, el: XmlEl): Promise<string> {
  try {
    const r = await c.iq(el);
    throw new Error('expected an error, got ' + r.toString());
  } catch (e) {
    const err = e as { condition?: string };
    if (!err.condition) throw e;
    return err.condition;
  }
}

let open: TestServer; // --allow-registration, no throttle
let closed: TestServer; // the default: registration off
const raws: RawClient[] = [];
const clients: TestClient[] = [];

async function raw(server: TestServer, opts?: { directTls?: boolean }): Promise<RawClient> {
  const c = await RawClient.open(server, opts);
  raws.push(c);
  return c;
}

async function login(server: TestServer, username: string, password: string, resource?: string): Promise<TestClient> {
  const c = await connect(server, { username, password, resource });
  clients.push(c);
  return c;
}

test.before(async () => {
  open = await startServer({ domain: 'localhost', users: { alice: 'pw-alice' }, args: ['--allow-registration', '--registration-throttle', '0'] });
  trustServerCert(open);
  closed = await startServer({ domain: 'closed.test', users: { dave: 'pw-dave' } });
  trustServerCert(closed);
});

test.after(async () => {
  for (const c of raws) await c.close();
  for (const c of clients) await c.stop();
  await open?.stop();
  await closed?.stop();
});

test('registration on: the stream feature, the form, a new account that can log in', async () => {
  const c = await raw(open);
  assert.ok(hasFeature(c), c.features?.toString());
  const form = await c.iq('get', `<query xmlns='${REGISTER}'/>`);
  assert.is(form.attrs.type, 'result', form.toString());
  const q = form.getChild('query', REGISTER)!;
  assert.ok(q.getChild('instructions') && q.getChild('username') && q.getChild('password'), form.toString());
  assert.not.ok(q.getChild('registered'));
  const r = await c.register('newbie', 's3cret &amp; more');
  assert.is(r.attrs.type, 'result', r.toString());
  const x = await login(open, 'newbie', 's3cret & more');
  assert.match(x.jid, /^newbie@localhost\//);
});

test('the feature is offered on direct TLS too', async () => {
  const c = await raw(open, { directTls: true });
  assert.ok(hasFeature(c), c.features?.toString());
  const r = await c.register('tlsuser', 'pw');
  assert.is(r.attrs.type, 'result', r.toString());
});

test('a taken username: conflict; the old password still works', async () => {
  const c = await raw(open);
  const r = await c.register('alice', 'other');
  assert.is(r.attrs.type, 'error');
  assert.is(condition(r), 'conflict');
  await login(open, 'alice', 'pw-alice');
  // Case-folded to the same account (RFC 7622 §3.3).
  const c2 = await raw(open);
  assert.is(condition(await c2.register('ALICE', 'other')), 'conflict');
});

test('missing, empty or invalid fields: not-acceptable, no account', async () => {
  const c = await raw(open);
  assert.is(condition(await c.register('emptypw', '')), 'not-acceptable');
  assert.is(condition(await c.iq('set', `<query xmlns='${REGISTER}'><username>nopw</username></query>`)), 'not-acceptable');
  assert.is(condition(await c.register('', 'pw')), 'not-acceptable');
  assert.is(condition(await c.register('bad@name', 'pw')), 'not-acceptable');
  assert.is(condition(await c.register('bad:name', 'pw')), 'not-acceptable');
  // The stream is still usable after errors.
  assert.is((await c.register('finallyok', 'pw')).attrs.type, 'result');
  await connectFails(open, { username: 'emptypw', password: '' }).catch(() => undefined);
  await connectFails(open, { username: 'nopw', password: 'x' });
});

test('one account per stream: a second registration is not-acceptable', async () => {
  const c = await raw(open);
  assert.is((await c.register('first1', 'pw')).attrs.type, 'result');
  assert.is(condition(await c.register('second1', 'pw')), 'not-acceptable');
  await connectFails(open, { username: 'second1', password: 'pw' });
});

test('<remove/> before authentication: unexpected-request', async () => {
  const c = await raw(open);
  assert.is(condition(await c.iq('set', `<query xmlns='${REGISTER}'><remove/></query>`)), 'unexpected-request');
});

test('any other IQ before authentication still closes the stream', async () => {
  const c = await raw(open);
  c.socket.write(`<iq type='get' id='v'><query xmlns='jabber:iq:version'/></iq>`);
  const err = await c.next((el) => el.is('error'), 'a stream error');
  assert.ok(err.getChild('not-authorized'), err.toString());
  assert.ok(await c.waitClosed());
});

test('registration off (the default): no feature, service-unavailable, the stream stays open', async () => {
  const c = await raw(closed);
  assert.not.ok(hasFeature(c), c.features?.toString());
  const r = await c.iq('get', `<query xmlns='${REGISTER}'/>`);
  assert.is(condition(r), 'service-unavailable');
  const r2 = await c.register('sneaky', 'pw');
  assert.is(condition(r2), 'service-unavailable');
  assert.not.ok(c.ended, 'the stream was closed');
  await connectFails(closed, { username: 'sneaky', password: 'pw' });
});

test('throttle: a second account from the same address within the interval is refused', async () => {
  const s = await startServer({ domain: 'throttle.test', users: { taken: 'pw' }, args: ['--allow-registration'] });
  try {
    trustServerCert(s);
    // A failed attempt does not use up the address's turn.
    const a = await raw(s);
    assert.is(condition(await a.register('taken', 'pw')), 'conflict');
    const a2 = await raw(s);
    assert.is((await a2.register('one', 'pw')).attrs.type, 'result');
    const b = await raw(s);
    const r = await b.register('two', 'pw');
    assert.is(condition(r), 'not-acceptable');
    assert.is(r.getChild('error')!.attrs.type, 'wait');
    await connectFails(s, { username: 'two', password: 'pw' });
  } finally {
    await s.stop();
  }
});

test('password change: own account only, never to an empty password', async () => {
  const a = await login(open, 'alice', 'pw-alice', 'pwchange');
  const info = await a.iq(xml('iq', { type: 'get', to: open.domain }, xml('query', { xmlns: REGISTER })));
  const q = info.getChild('query', REGISTER)!;
  assert.ok(q.getChild('registered'), info.toString());
  assert.is(q.getChildText('username'), 'alice');
  assert.is(await iqError(a, xml('iq', { type: 'set', to: open.domain }, xml('query', { xmlns: REGISTER }, xml('username', {}, 'newbie'), xml('password', {}, 'hacked')))), 'forbidden');
  assert.is(await iqError(a, xml('iq', { type: 'set', to: open.domain }, xml('query', { xmlns: REGISTER }, xml('password', {}, 'nouser')))), 'bad-request');
  assert.is(await iqError(a, xml('iq', { type: 'set', to: open.domain }, xml('query', { xmlns: REGISTER }, xml('username', {}, 'alice'), xml('password', {})))), 'not-acceptable');
  await (await login(open, 'alice', 'pw-alice')).stop();
  await (await login(open, 'newbie', 's3cret & more')).stop();
  const r = await a.iq(xml('iq', { type: 'set', to: open.domain }, xml('query', { xmlns: REGISTER }, xml('username', {}, 'alice'), xml('password', {}, 'pw-alice-2'))));
  assert.is(r.attrs.type, 'result');
  await connectFails(open, { username: 'alice', password: 'pw-alice' });
  await (await login(open, 'alice', 'pw-alice-2')).stop();
  // Without a 'to' (the own account) works as well.
  await a.iq(xml('iq', { type: 'set' }, xml('query', { xmlns: REGISTER }, xml('username', {}, 'alice'), xml('password', {}, 'pw-alice'))));
  await (await login(open, 'alice', 'pw-alice')).stop();
});

test('password change works with registration off', async () => {
  const d = await login(closed, 'dave', 'pw-dave');
  const r = await d.iq(xml('iq', { type: 'set', to: closed.domain }, xml('query', { xmlns: REGISTER }, xml('username', {}, 'dave'), xml('password', {}, 'pw-dave-2'))));
  assert.is(r.attrs.type, 'result');
  await connectFails(closed, { username: 'dave', password: 'pw-dave' });
  await (await login(closed, 'dave', 'pw-dave-2')).stop();
});

test('account removal: result, every session ends with not-authorized, data gone', async () => {
  const c = await raw(open);
  assert.is((await c.register('leaver', 'pw')).attrs.type, 'result');
  const s1 = await login(open, 'leaver', 'pw', 'one');
  const s2 = await login(open, 'leaver', 'pw', 'two');
  await s1.iq(xml('iq', { type: 'set' }, xml('vCard', { xmlns: 'vcard-temp' }, xml('FN', {}, 'Leaver'))));
  const errors: string[] = [];
  for (const s of [s1, s2]) s.xmpp.on('error', (e: { condition?: string }) => errors.push(e.condition ?? String(e)));
  const offline = Promise.all([s1, s2].map((s) => new Promise<void>((r) => s.xmpp.once('disconnect', () => r()))));
  // xmpp.js may see the stream end before it settles the request.
  const answer = s1.iq(xml('iq', { type: 'set' }, xml('query', { xmlns: REGISTER }, xml('remove', {}))));
  const r = await answer;
  assert.is(r.attrs.type, 'result');
  await Promise.race([offline, new Promise((_, rej) => setTimeout(() => rej(new Error('sessions still open')), 5000))]);
  assert.ok(errors.filter((e) => e === 'not-authorized').length >= 2, `stream errors: ${errors}`);
  await connectFails(open, { username: 'leaver', password: 'pw' });
  // A new account with the same name starts from nothing.
  const c2 = await raw(open);
  assert.is((await c2.register('leaver', 'pw2')).attrs.type, 'result');
  const again = await login(open, 'leaver', 'pw2');
  const v = await again.iq(xml('iq', { type: 'get' }, xml('vCard', { xmlns: 'vcard-temp' })));
  assert.is(v.getChild('vCard', 'vcard-temp')!.children.length, 0, v.toString());
});

test('<remove/> with other children: bad-request, nothing removed', async () => {
  const a = await login(open, 'alice', 'pw-alice');
  const cond = await iqError(a, xml('iq', { type: 'set' }, xml('query', { xmlns: REGISTER }, xml('remove', {}), xml('username', {}, 'alice'))));
  assert.is(cond, 'bad-request');
  await (await login(open, 'alice', 'pw-alice')).stop();
});

test.run();
