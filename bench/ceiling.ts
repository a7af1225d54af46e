// The ceiling of the one-to-one scenario (issue 8, scenario 6): the least a
// Node process must do to serve the bench's clients. It answers the same
// exchange as a server (RFC 6120 §4 stream headers, §6 SASL SCRAM-SHA-1 as in
// RFC 5802 with keys derived once per user, §7 bind, a XEP-0199 ping) and
// forwards each <message/> to the session its `to` names with `from` stamped
// in, on one write per destination per read: no XML parser, no checks, no
// routing table beyond a Map. imnode's messages/s divided by this one's is
// how much of the room a real server leaves unused.
//
// It knows the bench's accounts by convention (uN has password secret-N) and
// gives each user a fixed salt, so the load generator's key cache serves it
// like any server. Not a server: anything it does not expect closes the
// connection.
// Run: node bench/ceiling.ts --port N [--domain localhost]; prints "ceiling: listening on N".
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { port: { type: 'string' }, domain: { type: 'string' } } });
const PORT = Number(values.port ?? 0);
const DOMAIN = values.domain ?? 'localhost';
const ITERATIONS = 4096;

const HEADER = `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' ` +
  `from='${DOMAIN}' version='1.0' id='`;
const SASL_FEATURES = "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism></mechanisms></stream:features>";
const BIND_FEATURES = "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>";

interface Keys { serverKey: Buffer; salt: string }
const keyCache = new Map<string, Keys>();

function keysOf(user: string): Keys {
  let k = keyCache.get(user);
  if (!k) {
    const salt = createHash('sha1').update(`ceiling:${user}`).digest().subarray(0, 16);
    const salted = pbkdf2Sync(`secret-${user.slice(1)}`, salt, ITERATIONS, 20, 'sha1');
    k = { serverKey: createHmac('sha1', salted).update('Server Key').digest(), salt: salt.toString('base64') };
    keyCache.set(user, k);
  }
  return k;
}

const sessions = new Map<string, Conn>();
/** Connections with output waiting for the end of the current read. */
const dirty: Conn[] = [];

class Conn {
  readonly socket: net.Socket;
  buf = '';
  state: 'header' | 'auth' | 'response' | 'header2' | 'bind' | 'up' = 'header';
  user = '';
  jid = '';
  out = '';
  clientFirstBare = '';
  serverFirst = '';

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.buf += d;
      try {
        this.drain();
      } catch (e) {
        process.stderr.write(`ceiling: ${(e as Error).message}; connection closed\n`);
        socket.destroy();
      }
      for (const c of dirty.splice(0)) c.flush();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      if (this.jid && sessions.get(this.jid) === this) sessions.delete(this.jid);
    });
  }

  send(s: string): void {
    if (this.out === '') dirty.push(this);
    this.out += s;
  }

  flush(): void {
    if (this.out && !this.socket.destroyed) this.socket.write(this.out);
    this.out = '';
  }

  /** Takes every complete top-level element off the buffer. */
  drain(): void {
    for (;;) {
      const start = this.buf.indexOf('<');
      if (start < 0) { this.buf = ''; return; }
      const b = this.buf;
      if (b.startsWith('<?', start)) {
        const end = b.indexOf('?>', start);
        if (end < 0) return;
        this.buf = b.slice(end + 2);
        continue;
      }
      if (b.startsWith('<stream:stream', start)) {
        const end = b.indexOf('>', start);
        if (end < 0) return;
        this.buf = b.slice(end + 1);
        this.send(HEADER + randomBytes(6).toString('hex') + "'>" + (this.state === 'header' ? SASL_FEATURES : BIND_FEATURES));
        this.state = this.state === 'header' ? 'auth' : 'bind';
        continue;
      }
      if (b.startsWith('</stream:stream>', start)) {
        this.send('</stream:stream>');
        this.flush();
        this.socket.end();
        this.buf = '';
        return;
      }
      // The element's name, then either '/>' closing its start tag or '</name>'.
      let i = start + 1;
      while (i < b.length && b[i] !== ' ' && b[i] !== '>' && b[i] !== '/') i++;
      if (i >= b.length) return;
      const name = b.slice(start + 1, i);
      const tagEnd = b.indexOf('>', i);
      if (tagEnd < 0) return;
      let end: number;
      if (b[tagEnd - 1] === '/') end = tagEnd + 1;
      else {
        const close = b.indexOf(`</${name}>`, tagEnd);
        if (close < 0) return;
        end = close + name.length + 3;
      }
      this.element(name, b.slice(start, end), tagEnd);
      this.buf = b.slice(end);
    }
  }

  element(name: string, el: string, tagEnd: number): void {
    if (name === 'message' && this.state === 'up') {
      const to = /\sto='([^']*)'/.exec(el.slice(0, tagEnd));
      const dest = to ? sessions.get(to[1]) : undefined;
      if (dest) dest.send(`<message from='${this.jid}'${el.slice(8)}`);
      return;
    }
    if (name === 'auth' && this.state === 'auth') {
      const first = Buffer.from(el.slice(el.indexOf('>') + 1, el.lastIndexOf('<')), 'base64').toString();
      this.clientFirstBare = first.slice(first.indexOf(',', first.indexOf(',') + 1) + 1);
      const m = /^n=([^,]*),r=(.*)$/.exec(this.clientFirstBare);
      if (!m) throw new Error('bad client-first-message');
      this.user = m[1];
      this.serverFirst = `r=${m[2]}${randomBytes(12).toString('base64')},s=${keysOf(this.user).salt},i=${ITERATIONS}`;
      this.send(`<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>${Buffer.from(this.serverFirst).toString('base64')}</challenge>`);
      this.state = 'response';
      return;
    }
    if (name === 'response' && this.state === 'response') {
      const final = Buffer.from(el.slice(el.indexOf('>') + 1, el.lastIndexOf('<')), 'base64').toString();
      // No proof check: the ceiling trusts its clients; it signs so that they trust it.
      const authMessage = `${this.clientFirstBare},${this.serverFirst},${final.slice(0, final.lastIndexOf(',p='))}`;
      const v = createHmac('sha1', keysOf(this.user).serverKey).update(authMessage).digest('base64');
      this.send(`<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>${Buffer.from(`v=${v}`).toString('base64')}</success>`);
      this.state = 'header2';
      return;
    }
    if (name === 'iq' && this.state === 'bind') {
      const res = /<resource>([^<]*)<\/resource>/.exec(el)?.[1] ?? randomBytes(4).toString('hex');
      this.jid = `${this.user}@${DOMAIN}/${res}`;
      sessions.set(this.jid, this);
      this.send(`<iq type='result' id='${/\sid='([^']*)'/.exec(el)?.[1] ?? ''}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>${this.jid}</jid></bind></iq>`);
      this.state = 'up';
      return;
    }
    if (name === 'iq' && this.state === 'up') {
      this.send(`<iq type='result' id='${/\sid='([^']*)'/.exec(el)?.[1] ?? ''}' from='${DOMAIN}' to='${this.jid}'/>`);
      return;
    }
    if (name === 'presence' && this.state === 'up') return;
    throw new Error(`unexpected <${name}> in state ${this.state}`);
  }
}

const server = net.createServer({ noDelay: true }, (s) => new Conn(s));
server.listen({ port: PORT, host: '127.0.0.1', backlog: 4096 }, () => {
  process.stdout.write(`ceiling: listening on ${(server.address() as net.AddressInfo).port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
