// Hostile and broken input must end only the offending stream, with the right
// stream error, while everyone else carries on:
//   RFC 6120 §11.1 (restricted XML: no DTD, comments, processing instructions,
//   entity references but the predefined ones), §11.3 (well-formedness ->
//   not-well-formed), §11.6 (UTF-8 only -> unsupported-encoding), §4.9.3.19
//   (policy-violation for a stanza over the size limit), §4.9.1.1 (the header
//   precedes any stream error).
// alice and bob (xmpp.js) exchange messages all along; every one must arrive,
// exactly once, before, during and after each attack.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { startServer, prepareTemplate, type TestServer } from '../helpers/imnode.ts';
import { connect, xml, type TestClient, type XmlEl } from '../helpers/xmppjs.ts';
import { RawClient, trustOnly } from '../helpers/raw.ts';

const USERS = { alice: 'wonderland', bob: 'builder' };
const MiB = 1024 * 1024;

/** Two clients sending each other a message every few milliseconds, counting what arrives. */
class Pump {
  readonly a: TestClient;
  readonly b: TestClient;
  readonly sent = new Set<string>();
  readonly got = new Map<string, number>();
  readonly sendErrors: string[] = [];
  #timer: NodeJS.Timeout | null = null;
  #n = 0;
  #changed: Array<() => void> = [];

  constructor(a: TestClient, b: TestClient) {
    this.a = a;
    this.b = b;
    for (const c of [a, b]) {
      c.xmpp.on('stanza', (s: XmlEl) => {
        const id = s.attrs.id;
        if (s.name !== 'message' || !id?.startsWith('pump-')) return;
        if (s.attrs.type === 'error') this.sendErrors.push(s.toString());
        else this.got.set(id, (this.got.get(id) ?? 0) + 1);
        const fns = this.#changed;
        this.#changed = [];
        for (const f of fns) f();
      });
    }
  }

  start(everyMs = 10): void {
    this.#timer = setInterval(() => {
      const n = this.#n++;
      for (const [from, to, tag] of [[this.a, this.b, 'ab'], [this.b, this.a, 'ba']] as const) {
        const id = `pump-${tag}-${n}`;
        this.sent.add(id);
        from.send(xml('message', { to: to.jid, id, type: 'chat' }, xml('body', {}, `${tag} ${n}`)))
          .catch((e: Error) => this.sendErrors.push(`${id}: ${e.message}`));
      }
    }, everyMs);
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  missing(): string[] {
    return [...this.sent].filter((id) => !this.got.has(id));
  }

  /** Waits until everything sent so far has arrived; fails naming what did not. */
  async sync(what: string, ms = 5000): Promise<void> {
    const target = [...this.sent];
    const deadline = Date.now() + ms;
    while (target.some((id) => !this.got.has(id))) {
      const left = deadline - Date.now();
      if (left <= 0) {
        const lost = target.filter((id) => !this.got.has(id));
        assert.unreachable(`${what}: ${lost.length} of ${target.length} messages did not arrive (${lost.slice(0, 5).join(', ')}...); errors: ${this.sendErrors.slice(0, 3).join(' | ')}`);
      }
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 100));
        this.#changed.push(() => { clearTimeout(t); r(); });
      });
    }
    assert.equal(this.sendErrors, [], `${what}: message errors`);
  }
}

let server: TestServer | null = null;
let alice: TestClient | null = null;
let bob: TestClient | null = null;
let pump: Pump | null = null;

test.before(async () => {
  server = await startServer({ template: await prepareTemplate(USERS) });
  trustOnly(server);
  alice = await connect(server, { username: 'alice', password: USERS.alice, resource: 'pump', mechanism: 'PLAIN' });
  bob = await connect(server, { username: 'bob', password: USERS.bob, resource: 'pump', mechanism: 'PLAIN' });
  await alice.send(xml('presence'));
  await bob.send(xml('presence'));
  pump = new Pump(alice, bob);
  pump.start();
});

test.after(async () => {
  pump?.stop();
  await alice?.stop();
  await bob?.stop();
  await server?.stop();
});

function srv(): TestServer {
  assert.ok(server && pump, 'set-up failed');
  return server;
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m, 'no VmRSS in /proc status');
  return Number(m[1]) / 1024;
}

/**
 * One raw connection, set up by `prepare` (nothing, a header, or a full login),
 * sends `bad`; the server must answer with `conditions` and close that stream,
 * its header first, while the pump keeps flowing.
 */
async function attack(name: string, prepare: 'none' | 'header' | 'login', bad: string | Buffer, conditions: string[]): Promise<void> {
  const s = srv();
  await pump!.sync(`before ${name}`);
  const c = await RawClient.to(s);
  try {
    if (prepare === 'header') {
      c.open();
      await c.features();
    } else if (prepare === 'login') {
      await c.login('alice', USERS.alice, 'attacker-' + Math.random().toString(36).slice(2));
    }
    c.send(bad);
    const cond = await c.streamError();
    assert.ok(conditions.includes(cond), `${name}: got ${cond}, expected ${conditions.join(' or ')}`);
    await c.waitClosed(5000);
    const header = c.transcript.indexOf('<stream:stream');
    assert.ok(header !== -1 && header < c.transcript.indexOf('<stream:error'), `${name}: no stream header before the error`);
    assert.is(c.parseError, null, `${name}: the server's own output was not well-formed: ${c.parseError}`);
  } finally {
    c.destroy();
  }
  await pump!.sync(`after ${name}`);
}

// ---- restricted XML (§11.1) ------------------------------------------------------------

function laughs(): string {
  let dtd = '<!ENTITY lol0 "lol">';
  for (let i = 1; i < 10; i++) dtd += `<!ENTITY lol${i} "${`&lol${i - 1};`.repeat(10)}">`;
  return `<!DOCTYPE stream:stream [${dtd}]>`;
}

const HEADER = "<stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

test('billion laughs in the prolog: restricted-xml', () =>
  attack('billion laughs (prolog)', 'none', `<?xml version='1.0'?>${laughs()}${HEADER}<message><body>&lol9;</body></message>`, ['restricted-xml']));

test('billion laughs inside the stream: restricted-xml', () =>
  attack('billion laughs (in stream)', 'header', `${laughs()}<message><body>&lol9;</body></message>`, ['restricted-xml']));

test('an undeclared entity reference in a stanza: restricted-xml', () =>
  attack('entity reference', 'login', `<message to='bob@localhost/pump' type='chat'><body>&lol9;</body></message>`, ['restricted-xml']));

test('a comment between stanzas: restricted-xml', () =>
  attack('comment', 'header', '<!-- a comment -->', ['restricted-xml']));

test('a comment inside a stanza: restricted-xml', () =>
  attack('comment in stanza', 'login', `<message to='bob@localhost/pump' type='chat'><!-- hidden --><body>x</body></message>`, ['restricted-xml']));

test('a processing instruction: restricted-xml', () =>
  attack('processing instruction', 'header', "<?php system('id'); ?>", ['restricted-xml']));

test('a processing instruction inside a stanza: restricted-xml', () =>
  attack('processing instruction in stanza', 'login', "<message to='bob@localhost/pump'><?foo bar?><body>x</body></message>", ['restricted-xml']));

// ---- not well-formed (§11.3) and bad encodings (§11.6) ------------------------------------------

test('mismatched tags: not-well-formed', () =>
  attack('mismatched tags', 'login', "<message to='bob@localhost/pump' type='chat'><body>x</message></body>", ['not-well-formed']));

test('garbage instead of a header: not-well-formed', () =>
  attack('garbage header', 'none', 'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n', ['not-well-formed']));

test('an unquoted attribute: not-well-formed', () =>
  attack('unquoted attribute', 'login', '<message to=bob@localhost><body>x</body></message>', ['not-well-formed']));

for (const [name, bytes] of [
  ['a truncated two-byte sequence', [0xc3, 0x28]],
  ['an overlong encoding of /', [0xc0, 0xaf]],
  ['an encoded UTF-16 surrogate', [0xed, 0xa0, 0x80]],
  ['a byte that never occurs in UTF-8', [0xff]],
] as const) {
  test(`invalid UTF-8 (${name}): unsupported-encoding or not-well-formed`, () =>
    attack(`invalid UTF-8 (${name})`, 'login', Buffer.concat([
      Buffer.from("<message to='bob@localhost/pump' type='chat'><body>"), Buffer.from(bytes), Buffer.from('</body></message>'),
    ]), ['unsupported-encoding', 'not-well-formed']));
}

test('an encoding other than UTF-8 declared: unsupported-encoding', () =>
  attack('UTF-16 declaration', 'none', `<?xml version='1.0' encoding='ISO-8859-1'?>${HEADER}`, ['unsupported-encoding']));

// ---- size (§4.9.3.19, §13.12) --------------------------------------------------------------------

test('10 MiB stanzas: policy-violation, streams closed, memory bounded', async () => {
  const s = srv();
  const big = Buffer.concat([
    Buffer.from("<message to='bob@localhost/pump' type='chat'><body>"), Buffer.alloc(10 * MiB, 'a'), Buffer.from('</body></message>'),
  ]);
  // Four at once: a server that buffered a stanza whole would need 40 MiB at least.
  const round = async (tag: string): Promise<{ before: number; peak: number }> => {
    const clients: RawClient[] = [];
    try {
      for (let i = 0; i < 4; i++) {
        const c = await RawClient.to(s);
        clients.push(c);
        await c.login('alice', USERS.alice, `big-${tag}-${i}`);
      }
      const before = rssMiB(s.pid);
      let peak = before;
      const sampler = setInterval(() => { try { peak = Math.max(peak, rssMiB(s.pid)); } catch { /* gone */ } }, 5);
      try {
        const conds = await Promise.all(clients.map(async (c) => {
          c.send(big);
          const cond = await c.streamError(10_000);
          await c.waitClosed(10_000);
          return cond;
        }));
        assert.equal(conds, ['policy-violation', 'policy-violation', 'policy-violation', 'policy-violation']);
      } finally {
        clearInterval(sampler);
      }
      peak = Math.max(peak, rssMiB(s.pid));
      return { before, peak };
    } finally {
      for (const c of clients) c.destroy();
    }
  };
  await pump!.sync('before the big stanzas');
  // The first round grows the heap to its working size; measure the next ones.
  // A server that buffered the stanzas would peak 40 MiB higher in every round;
  // the garbage collector growing its heap now and then (more so on a busy
  // machine) explains a jump in one round, not in all of them.
  await round('warm-up');
  const rounds = [await round('1'), await round('2'), await round('3')];
  const shown = rounds.map((r) => `${r.before.toFixed(1)} -> ${r.peak.toFixed(1)} MiB`).join(', ');
  const growth = Math.min(...rounds.map((r) => r.peak - r.before));
  assert.ok(growth < 16, `RSS grew by at least ${growth.toFixed(1)} MiB in every round of 4 x 10 MiB refused stanzas (${shown})`);
  // Nor is anything kept: 120 MiB were refused over the rounds.
  const drift = rounds[rounds.length - 1].peak - rounds[0].before;
  assert.ok(drift < 48, `RSS keeps growing: ${shown}`);
  await pump!.sync('after the big stanzas');
});

// ---- a client that does not read ----------------------------------------------------------------

test('a client that never reads while flooded is cut off; the others are not', async () => {
  const s = srv();
  const lazy = await RawClient.to(s);
  let flooder: TestClient | null = null;
  try {
    const lazyJid = await lazy.login('bob', USERS.bob, 'lazy');
    lazy.send('<presence/>');
    await new Promise((r) => setTimeout(r, 100));
    // From now on nothing is read: the kernel buffers fill, then the server's.
    lazy.socket.pause();
    flooder = await connect(s, { username: 'alice', password: USERS.alice, resource: 'flood', mechanism: 'PLAIN' });
    const chunk = 'z'.repeat(64 * 1024);
    const t0 = Date.now();
    let sent = 0;
    // 40 MiB in 64 KiB messages: well past the server's per-connection output limit.
    while (sent < 40 * MiB && Date.now() - t0 < 20_000) {
      await flooder.send(xml('message', { to: lazyJid, type: 'chat' }, xml('body', {}, chunk)));
      sent += chunk.length;
      if (sent % (4 * MiB) === 0) await pump!.sync('during the flood');
    }
    assert.ok(sent >= 40 * MiB, `the flood was too slow to test anything (${(sent / MiB).toFixed(1)} MiB in 20 s)`);
    // Reading again, the client finds what the kernel buffered and then the end:
    // the server cut it off instead of queueing 40 MiB for it.
    lazy.socket.resume();
    await lazy.waitClosed(10_000);
    const received = Buffer.byteLength(lazy.transcript);
    assert.ok(received < 24 * MiB, `the lazy client still received ${(received / MiB).toFixed(1)} MiB of a 40 MiB flood`);
    await pump!.sync('after the flood');
  } finally {
    lazy.destroy();
    await flooder?.stop();
  }
});

// ---- and after all that -------------------------------------------------------------------------

test('after all of it: every message arrived exactly once and new logins work', async () => {
  const s = srv();
  await pump!.sync('at the end');
  pump!.stop();
  await new Promise((r) => setTimeout(r, 100));
  await pump!.sync('after stopping the pump');
  const dups = [...pump!.got].filter(([, n]) => n > 1).map(([id]) => id);
  assert.equal(dups, [], 'duplicated messages');
  assert.ok(pump!.sent.size > 100, `the pump ran too little to prove anything (${pump!.sent.size} messages)`);
  assert.equal(pump!.missing(), []);
  const fresh = await connect(s, { username: 'bob', password: USERS.bob, resource: 'fresh', mechanism: 'SCRAM-SHA-1' });
  try {
    const r = await fresh.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
    assert.is(r.attrs.type, 'result');
  } finally {
    await fresh.stop();
  }
});

test.run();
