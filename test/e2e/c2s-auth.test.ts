// Client authentication end to end, with clients written by others (xmpp.js,
// slixmpp) and a raw socket for what they would never send:
//   RFC 6120 §5 (STARTTLS, mandatory TLS), §6 (SASL: mechanisms offered,
//   failures, §6.4.5 retries), §7 (resource binding, §7.7.2.2 conflicts),
//   XEP-0368 (direct TLS), RFC 4616 (PLAIN only over TLS), RFC 5802/7677 (SCRAM).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as tls from 'node:tls';
import { startServer, prepareTemplate, type TestServer } from '../helpers/imnode.ts';
import { connect, connectFails, type TestClient } from '../helpers/xmppjs.ts';
import { Slix, slixArgs, slixLogin } from '../helpers/slix.ts';
import { RawClient, trustOnly, withServer, NS_SASL, NS_TLS, NS_BIND, stanzaErrorCondition } from '../helpers/raw.ts';
import type { Element } from '../../src/xmpp/element.ts';

const USERS = { alice: 'wonderland', bob: 'builder' };

// Tests that need no special option share one server (started once, stopped in test.after).
let shared: TestServer | null = null;
test.before(async () => {
  shared = await startServer({ template: await prepareTemplate(USERS) });
});
test.after(async () => {
  await shared?.stop();
});

async function withShared(fn: (s: TestServer) => Promise<void>): Promise<void> {
  assert.ok(shared, 'the shared server did not start');
  trustOnly(shared);
  await fn(shared);
}

function mechanisms(features: Element): string[] {
  const m = features.getChild('mechanisms', NS_SASL);
  return m ? m.getChildren('mechanism').map((e) => e.text()) : [];
}

/** The TLS socket under an xmpp.js client, or null if the stream is not encrypted. */
function xmppjsTls(c: TestClient): tls.TLSSocket | null {
  const s = c.xmpp.socket?.socket;
  return s instanceof tls.TLSSocket ? s : null;
}

/** One failed PLAIN attempt on an already secured raw stream; returns the condition and how long it took. */
async function timedPlainFailure(c: RawClient, user: string, password: string): Promise<{ condition: string; ms: number }> {
  const t0 = performance.now();
  const r = await c.authPlain(user, password);
  const ms = performance.now() - t0;
  assert.is(r.name, 'failure', 'expected a SASL failure, got ' + r.toString());
  return { condition: r.elements[0]?.name ?? '', ms };
}

// ---- successful logins -----------------------------------------------------------

test('xmpp.js: STARTTLS then SCRAM-SHA-1, certificate verified', () => withShared(async (server) => {
  let c: TestClient | undefined;
  try {
    c = await connect(server, { username: 'alice', password: USERS.alice, resource: 'phone', mechanism: 'SCRAM-SHA-1' });
    assert.is(c.jid, 'alice@localhost/phone');
    const sock = xmppjsTls(c);
    assert.ok(sock, 'the stream was not upgraded with STARTTLS');
    assert.ok(sock.authorized, 'xmpp.js did not verify the certificate');
  } finally {
    await c?.stop();
  }
}));

test('xmpp.js: PLAIN over STARTTLS', () => withShared(async (server) => {
  let c: TestClient | undefined;
  try {
    c = await connect(server, { username: 'bob', password: USERS.bob, resource: 'desk', mechanism: 'PLAIN' });
    assert.is(c.jid, 'bob@localhost/desk');
    assert.ok(xmppjsTls(c), 'PLAIN must only happen over TLS');
  } finally {
    await c?.stop();
  }
}));

for (const mechanism of ['SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN'] as const) {
  test(`slixmpp: STARTTLS then ${mechanism}`, () => withShared(async (server) => {
    let s: Slix | undefined;
    try {
      s = await slixLogin(server, { username: 'alice', password: USERS.alice, resource: 'py', mechanism });
      const start = s.history.find((e) => e.ev === 'session_start')!;
      assert.is(start.jid, 'alice@localhost/py');
      assert.is(start.mechanism, mechanism);
      assert.match(String(start.tls), /^TLSv1\.[23]$/);
    } finally {
      await s?.stop();
    }
  }));
}

test('slixmpp refuses the certificate without the right trust anchor or name', () => withShared(async (server) => {
  // Proves the other slixmpp tests verify the certificate for real.
  for (const extra of [{ cafile: '' }, { tls_name: 'example.org' }]) {
    const s = await Slix.start({ name: 'untrusting' });
    try {
      const err = await s.connect({ ...slixArgs(server, { username: 'alice', password: USERS.alice }), ...extra }, 5000).then(() => null, (e: Error) => e);
      assert.ok(err, `slixmpp logged in with ${JSON.stringify(extra)}`);
      assert.not.ok(s.history.some((e) => e.ev === 'session_start'));
    } finally {
      await s.stop();
    }
  }
}));

test('direct TLS (XEP-0368): xmpp.js and slixmpp', () => withShared(async (server) => {
  assert.ok(server.tlsPort > 0, 'no direct TLS port in the ready line');
  let c: TestClient | undefined;
  let s: Slix | undefined;
  try {
    c = await connect(server, { username: 'alice', password: USERS.alice, resource: 'xmppjs', directTls: true });
    assert.is(c.jid, 'alice@localhost/xmppjs');
    assert.ok(xmppjsTls(c)?.authorized, 'xmpp.js direct TLS not verified');
    s = await slixLogin(server, { username: 'bob', password: USERS.bob, resource: 'slix', directTls: true, mechanism: 'SCRAM-SHA-256' });
    const start = s.history.find((e) => e.ev === 'session_start')!;
    assert.is(start.jid, 'bob@localhost/slix');
    assert.match(String(start.tls), /^TLSv1\.[23]$/);
    // A raw direct TLS stream offers no STARTTLS (it is already encrypted) but offers PLAIN.
    const raw = await RawClient.to(server, { tls: true });
    try {
      const f = await raw.hello();
      assert.not.ok(f.getChild('starttls', NS_TLS), 'STARTTLS offered on a TLS stream');
      assert.ok(mechanisms(f).includes('PLAIN'));
    } finally {
      raw.destroy();
    }
  } finally {
    await c?.stop();
    await s?.stop();
  }
}));

// ---- what is offered when ----------------------------------------------------------

test('PLAIN is offered only over TLS; SCRAM is offered before', () => withShared(async (server) => {
  const c = await RawClient.to(server);
  try {
    const f = await c.hello(false);
    assert.ok(f.getChild('starttls', NS_TLS), 'no STARTTLS offered');
    const before = mechanisms(f);
    assert.not.ok(before.includes('PLAIN'), 'PLAIN offered without TLS: ' + before);
    assert.ok(before.includes('SCRAM-SHA-256') && before.includes('SCRAM-SHA-1'), 'SCRAM not offered: ' + before);
    // Trying PLAIN anyway must fail without looking at the password.
    const r = await c.authPlain('alice', USERS.alice);
    assert.is(r.name, 'failure');
    assert.ok(['invalid-mechanism', 'encryption-required'].includes(r.elements[0]?.name), r.toString());
    const after = mechanisms(await c.starttls());
    assert.ok(after.includes('PLAIN'), 'PLAIN not offered over TLS: ' + after);
    const ok = await c.authPlain('alice', USERS.alice);
    assert.is(ok.name, 'success', ok.toString());
  } finally {
    c.destroy();
  }
}));

test('--require-tls never still keeps PLAIN behind TLS', () => withServer(USERS, { args: ['--require-tls', 'never'] }, async (server) => {
  const c = await RawClient.to(server);
  try {
    const f = await c.hello(false);
    const st = f.getChild('starttls', NS_TLS);
    assert.ok(st, 'STARTTLS must still be offered');
    assert.not.ok(st.getChild('required'), 'STARTTLS required although --require-tls never');
    assert.not.ok(mechanisms(f).includes('PLAIN'));
    assert.ok(mechanisms(f).includes('SCRAM-SHA-256'));
  } finally {
    c.destroy();
  }
}));

test('--require-tls always: auth before STARTTLS fails with encryption-required', () => withServer(USERS, { args: ['--require-tls', 'always'] }, async (server) => {
  const c = await RawClient.to(server);
  let s: Slix | undefined;
  try {
    const f = await c.hello(false);
    assert.ok(f.getChild('starttls', NS_TLS)?.getChild('required'), 'STARTTLS not marked required: ' + f.toString());
    assert.is(mechanisms(f).length, 0, 'mechanisms offered before the mandatory STARTTLS');
    // SCRAM with a client-first message, as a client that ignores the features would send it.
    c.send(`<auth xmlns='${NS_SASL}' mechanism='SCRAM-SHA-1'>${Buffer.from('n,,n=alice,r=abcdefghijklmnop').toString('base64')}</auth>`);
    const r = await c.next((el) => el.getNS() === NS_SASL, 5000, 'the SASL failure');
    assert.is(r.name, 'failure');
    assert.ok(r.getChild('encryption-required'), r.toString());
    await c.waitEnded();
    assert.ok(!c.all.some((el) => el.name === 'success'));
    // With TLS, the same policy lets a real client in.
    s = await slixLogin(server, { username: 'alice', password: USERS.alice, mechanism: 'SCRAM-SHA-256' });
    const raw2 = await RawClient.to(server);
    try {
      assert.match(await raw2.login('bob', USERS.bob, 'r'), /^bob@localhost\/r$/);
    } finally {
      raw2.destroy();
    }
  } finally {
    c.destroy();
    await s?.stop();
  }
}));

// ---- failures ------------------------------------------------------------------------

test('wrong password: not-authorized, after at least --auth-fail-delay', () => withServer(USERS, { args: ['--auth-fail-delay', '200ms'] }, async (server) => {
  const err = await connectFails(server, { username: 'alice', password: 'not-the-password', mechanism: 'SCRAM-SHA-1' }) as Error & { condition?: string };
  assert.is(err.condition, 'not-authorized', String(err));
  const c = await RawClient.to(server);
  try {
    await c.hello();
    const { condition, ms } = await timedPlainFailure(c, 'alice', 'wrong');
    assert.is(condition, 'not-authorized');
    assert.ok(ms >= 195, `the failure came after ${ms.toFixed(0)} ms, before the 200 ms delay`);
    // The stream stays usable: the right password still works (RFC 6120 §6.4.5 retries).
    const ok = await c.authPlain('alice', USERS.alice);
    assert.is(ok.name, 'success', ok.toString());
  } finally {
    c.destroy();
  }
}));

test('unknown user: not-authorized, as slowly as a wrong password', () => withServer(USERS, { args: ['--auth-fail-delay', '200ms'] }, async (server) => {
  const err = await connectFails(server, { username: 'nobody', password: 'x', mechanism: 'SCRAM-SHA-1' }) as Error & { condition?: string };
  assert.is(err.condition, 'not-authorized', String(err));
  const s = await Slix.start({ name: 'nobody' });
  try {
    await s.command('connect', slixArgs(server, { username: 'nobody', password: 'x', mechanism: 'SCRAM-SHA-256' }));
    const ev = await s.waitFor((e) => e.ev === 'failed_auth' || e.ev === 'session_start', 5000, 'failed_auth');
    assert.is(ev.ev, 'failed_auth');
    assert.is(ev.condition, 'not-authorized');
  } finally {
    await s.stop();
  }
  const c = await RawClient.to(server);
  try {
    await c.hello();
    const { condition, ms } = await timedPlainFailure(c, 'nobody', 'x');
    assert.is(condition, 'not-authorized');
    assert.ok(ms >= 195, `unknown user answered in ${ms.toFixed(0)} ms: faster than a wrong password, which reveals accounts`);
  } finally {
    c.destroy();
  }
}));

test('repeated failures from one address get slower; a success resets that', () => withServer(USERS, { args: ['--auth-fail-delay', '50ms'] }, async (server) => {
  const times: number[] = [];
  // One attempt per connection: the throttle must follow the address, not the stream.
  for (let i = 0; i < 6; i++) {
    const c = await RawClient.to(server);
    try {
      await c.hello();
      const r = await timedPlainFailure(c, 'alice', 'guess' + i);
      assert.is(r.condition, 'not-authorized');
      times.push(r.ms);
    } finally {
      c.destroy();
    }
  }
  const shown = times.map((t) => t.toFixed(0)).join(', ');
  // Base 50 ms: 50, 50, 50, 100, 200, 400 by the throttle's doubling after three failures.
  assert.ok(times[0] >= 45 && times[0] < 300, `first failure: ${shown}`);
  assert.ok(times[5] >= 350, `the sixth failure in a row was not slowed down: ${shown}`);
  assert.ok(times[5] > times[0] * 3, `no growth: ${shown}`);
  const ok = await RawClient.to(server);
  try {
    await ok.login('alice', USERS.alice);
  } finally {
    ok.destroy();
  }
  const c = await RawClient.to(server);
  try {
    await c.hello();
    const r = await timedPlainFailure(c, 'alice', 'typo');
    assert.ok(r.ms < 400, `after a success the delay should be back to the base, was ${r.ms.toFixed(0)} ms`);
  } finally {
    c.destroy();
  }
}));

test('too many attempts on one stream end it, even with the right password last', () => withServer(USERS, { args: ['--auth-fail-delay', '10ms'] }, async (server) => {
  const plain = (pw: string) => `<auth xmlns='${NS_SASL}' mechanism='PLAIN'>${Buffer.from(`\0alice\0${pw}`).toString('base64')}</auth>`;
  /** Sends an attempt; resolves with the SASL outcome or the stream error that ended the stream. */
  const attempt = async (c: RawClient, pw: string) => {
    c.send(plain(pw));
    const el = await c.next((e) => e.name === 'stream:error' || (e.getNS() === NS_SASL && (e.name === 'failure' || e.name === 'success')), 5000, 'an answer');
    return el.name === 'stream:error' ? 'stream-error' : el.name;
  };
  let failures = 0;
  const a = await RawClient.to(server);
  try {
    await a.hello();
    for (let i = 0; i < 10; i++) {
      const r = await attempt(a, 'wrong' + i);
      if (r === 'stream-error') break;
      assert.is(r, 'failure');
      failures++;
    }
    // RFC 6120 §6.4.5: at least 2 and at most 5 retries, then a stream error (SHOULD be policy-violation).
    assert.ok(failures >= 2 && failures <= 6, `${failures} failed attempts before the stream ended`);
    assert.ok(a.all.some((e) => e.name === 'stream:error'), 'the stream was never ended');
    const err = a.all.find((e) => e.name === 'stream:error')!;
    assert.ok(err.getChild('policy-violation'), err.toString());
    await a.waitEnded();
  } finally {
    a.destroy();
  }
  // A success forgets this address's failures, so the next stream is not slowed down.
  const ok = await RawClient.to(server);
  try {
    await ok.login('bob', USERS.bob);
  } finally {
    ok.destroy();
  }
  // The same number of failures, then the right password: still refused.
  const b = await RawClient.to(server);
  try {
    await b.hello();
    for (let i = 0; i < failures; i++) assert.is(await attempt(b, 'wrong' + i), 'failure');
    assert.is(await attempt(b, USERS.alice), 'stream-error', 'authenticated after too many attempts');
    await b.waitEnded();
    assert.not.ok(b.all.some((el) => el.name === 'success'));
  } finally {
    b.destroy();
  }
}));

// ---- resource binding --------------------------------------------------------------------

test('resource binding: client-chosen, server-generated, too long', () => withShared(async (server) => {
  const clients: TestClient[] = [];
  try {
    const chosen = await connect(server, { username: 'alice', password: USERS.alice, resource: 'laptop', mechanism: 'PLAIN' });
    clients.push(chosen);
    assert.is(chosen.jid, 'alice@localhost/laptop');
    const gen1 = await connect(server, { username: 'alice', password: USERS.alice, mechanism: 'PLAIN' });
    clients.push(gen1);
    const gen2 = await connect(server, { username: 'alice', password: USERS.alice, mechanism: 'PLAIN' });
    clients.push(gen2);
    for (const g of [gen1, gen2]) assert.match(g.jid, /^alice@localhost\/.+$/);
    assert.is.not(gen1.jid, gen2.jid, 'two generated resources are the same');
    // RFC 6120 §7.7.2.1: a resource that cannot be prepared is a bad-request.
    const raw = await RawClient.to(server);
    try {
      await raw.hello();
      assert.is((await raw.authPlain('alice', USERS.alice)).name, 'success');
      raw.open();
      await raw.features();
      raw.send(`<iq type='set' id='b'><bind xmlns='${NS_BIND}'><resource>${'r'.repeat(1100)}</resource></bind></iq>`);
      const iq = await raw.next((el) => el.attrs.id === 'b');
      assert.is(iq.attrs.type, 'error');
      assert.is(stanzaErrorCondition(iq), 'bad-request');
    } finally {
      raw.destroy();
    }
  } finally {
    for (const c of clients) await c.stop();
  }
}));

test('a second session with the same full JID replaces the first, which gets <conflict/>', () => withShared(async (server) => {
  const first = await RawClient.to(server);
  const second = await RawClient.to(server);
  try {
    assert.is(await first.login('alice', USERS.alice, 'same'), 'alice@localhost/same');
    assert.is(await second.login('alice', USERS.alice, 'same'), 'alice@localhost/same');
    assert.is(await first.streamError(), 'conflict');
    await first.waitEnded();
    // The newcomer owns the address: a message to it comes back to the second stream only.
    second.send(`<message to='alice@localhost/same' id='m1' type='chat'><body>mine</body></message>`);
    const m = await second.next((el) => el.name === 'message' && el.attrs.id === 'm1');
    assert.is(m.getChildText('body'), 'mine');
    assert.not.ok(first.all.some((el) => el.name === 'message'));
  } finally {
    first.destroy();
    second.destroy();
  }
}));

test.run();
