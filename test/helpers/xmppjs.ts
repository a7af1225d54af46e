// Drives the server with @xmpp/client (xmpp.js), a client library written by
// others: every stanza it receives is recorded so tests can wait for one.
// @ts-ignore xmpp.js ships no types
import { client, xml } from '@xmpp/client';
import type { TestServer } from './imnode.ts';

export { xml };

export interface XmlEl {
  name: string;
  attrs: Record<string, string>;
  children: Array<XmlEl | string>;
  is(name: string, xmlns?: string): boolean;
  getChild(name: string, xmlns?: string): XmlEl | undefined;
  getChildren(name: string, xmlns?: string): XmlEl[];
  getChildText(name: string, xmlns?: string): string | null;
  getText(): string;
  toString(): string;
}

export interface TestClient {
  xmpp: any;
  jid: string;
  received: XmlEl[];
  send(el: XmlEl): Promise<void>;
  iq(el: XmlEl, timeoutMs?: number): Promise<XmlEl>;
  waitFor(pred: (s: XmlEl) => boolean, timeoutMs?: number, what?: string): Promise<XmlEl>;
  stop(): Promise<void>;
}

export interface ConnectOptions {
  username: string;
  password: string;
  resource?: string;
  /** Use the direct TLS port (XEP-0368) instead of STARTTLS. */
  directTls?: boolean;
  /** Keep xmpp.js's automatic reconnection (for resumption tests). */
  reconnect?: boolean;
  /** Pick the SASL mechanism (xmpp.js offers SCRAM-SHA-1 and PLAIN). */
  mechanism?: 'SCRAM-SHA-1' | 'PLAIN';
}

let iqCounter = 0;

/** An IQ error reply as an exception, shaped like xmpp.js's StanzaError (condition, text, element). */
export class IqError extends Error {
  readonly condition: string;
  readonly text: string;
  /** The error's type attribute (cancel, modify, auth, wait, continue). */
  readonly type: string;
  /** An application-specific condition element, if any (RFC 6120 §8.3.2). */
  readonly application: XmlEl | undefined;
  readonly element: XmlEl;
  constructor(reply: XmlEl) {
    const err = reply.getChild('error');
    const cond = err?.children.find((c): c is XmlEl => typeof c !== 'string' && c.attrs.xmlns === 'urn:ietf:params:xml:ns:xmpp-stanzas' && c.name !== 'text');
    const condition = cond?.name ?? 'undefined-condition';
    const text = err?.getChildText('text', 'urn:ietf:params:xml:ns:xmpp-stanzas') ?? '';
    super(text ? `${condition} - ${text}` : condition);
    this.name = 'StanzaError';
    this.condition = condition;
    this.text = text;
    this.type = err?.attrs.type ?? '';
    this.application = err?.children.find((c): c is XmlEl => typeof c !== 'string' && c.attrs.xmlns !== 'urn:ietf:params:xml:ns:xmpp-stanzas');
    this.element = reply;
  }
}

/** Sends an IQ that must fail; resolves with its error (a result rejects). */
export async function expectIqError(c: TestClient, el: XmlEl): Promise<IqError> {
  try {
    const r = await c.iq(el);
    throw new Error('expected an error, got ' + r.toString());
  } catch (e) {
    if (!(e instanceof IqError)) throw e;
    return e;
  }
}

function stanzaError(reply: XmlEl): IqError {
  return new IqError(reply);
}

export async function connect(server: TestServer, opts: ConnectOptions): Promise<TestClient> {
  // Direct TLS verifies the certificate against the host name in the URL, so use the name.
  const service = opts.directTls ? `xmpps://localhost:${server.tlsPort}` : `xmpp://127.0.0.1:${server.port}`;
  const credentials = opts.mechanism
    ? async (authenticate: any, mechanisms: string[]) => {
      if (!mechanisms.includes(opts.mechanism!)) throw new Error(`server does not offer ${opts.mechanism}: ${mechanisms}`);
      await authenticate({ username: opts.username, password: opts.password }, opts.mechanism);
    }
    : { username: opts.username, password: opts.password };
  const xmpp = client({ service, domain: server.domain, resource: opts.resource, credentials, username: opts.username, password: opts.password });
  if (!opts.reconnect) xmpp.reconnect.stop();
  const received: XmlEl[] = [];
  const waiters: Array<{ pred: (s: XmlEl) => boolean; resolve: (s: XmlEl) => void }> = [];
  xmpp.on('error', () => { /* surfaced through start() or waitFor timeouts */ });
  xmpp.on('stanza', (s: XmlEl) => {
    received.push(s);
    for (let i = 0; i < waiters.length; i++) {
      if (waiters[i].pred(s)) {
        waiters[i].resolve(s);
        waiters.splice(i, 1);
        i--;
      }
    }
  });
  let address: any;
  try {
    address = await xmpp.start();
  } catch (e) {
    // A failed login leaves the socket open: close it, or it outlives the test.
    xmpp.reconnect.stop();
    try { await xmpp.stop(); } catch { /* already gone */ }
    throw e;
  }
  // xmpp.js reports "online" before it sends <enable/> (XEP-0198) and counts
  // received stanzas only once <enabled/> is back: wait for it, so that the
  // acknowledgements it sends later are right. imnode always offers it.
  const sm = xmpp.streamManagement;
  for (let i = 0; i < 150 && !sm.enabled; i++) await new Promise((r) => setTimeout(r, 20));
  const tc: TestClient = {
    xmpp,
    jid: address.toString(),
    received,
    send: (el) => xmpp.send(el),
    async iq(el, timeoutMs = 5000) {
      // Not xmpp.js's iqCaller: it attaches its rejection handler only after the
      // socket write completes, so a quick error reply is an unhandled rejection
      // (and it hides results from the XEP-0198 counter). Replies with an id we
      // did not register go through the normal stanza path instead.
      const id = el.attrs.id ?? `iq-${++iqCounter}`;
      el.attrs.id = id;
      const reply = tc.waitFor((s) => s.name === 'iq' && s.attrs.id === id && (s.attrs.type === 'result' || s.attrs.type === 'error'), timeoutMs, `the reply to IQ ${id}`);
      await xmpp.send(el);
      const r = await reply;
      if (r.attrs.type === 'error') throw stanzaError(r);
      return r;
    },
    waitFor(pred, timeoutMs = 5000, what = 'a stanza') {
      const seen = received.find(pred);
      if (seen) {
        received.splice(received.indexOf(seen), 1);
        return Promise.resolve(seen);
      }
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${tc.jid}: timed out waiting for ${what}`)), timeoutMs);
        waiters.push({
          pred,
          resolve: (s) => {
            clearTimeout(timer);
            received.splice(received.indexOf(s), 1);
            resolve(s);
          },
        });
      });
    },
    async stop() {
      xmpp.reconnect.stop();
      try { await xmpp.stop(); } catch { /* already gone */ }
    },
  };
  return tc;
}

/** Resolves with the error xmpp.js gives when login fails. */
export async function connectFails(server: TestServer, opts: ConnectOptions): Promise<Error> {
  try {
    const c = await connect(server, opts);
    await c.stop();
  } catch (e) {
    return e as Error;
  }
  throw new Error(`login of ${opts.username} unexpectedly succeeded`);
}
