// Stream-level rules, byte for byte through a raw socket:
//   RFC 6120 §4.7 (stream header attributes), §4.9 (stream errors: the header
//   always comes first, §4.9.1.1), §8.1.2.1 ('from' of client stanzas),
//   §8.2.3 (IQ semantics), §8.3.3 (stanza error conditions), §10.4 (remote
//   domains), §4.9.3.12 (nothing before authentication), §4.9.3.24.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startServer, prepareTemplate, type TestServer } from '../helpers/imnode.ts';
import { RawClient, stanzaErrorCondition } from '../helpers/raw.ts';

const USERS = { alice: 'wonderland', bob: 'builder' };

let server: TestServer | null = null;
test.before(async () => {
  server = await startServer({ template: await prepareTemplate(USERS) });
});
test.after(async () => {
  await server?.stop();
});

function srv(): TestServer {
  assert.ok(server, 'the server did not start');
  return server;
}

/** Opens a raw stream with a header built by the test; the client is destroyed after fn. */
async function withRaw(fn: (c: RawClient) => Promise<void>): Promise<void> {
  const c = await RawClient.to(srv());
  try {
    await fn(c);
  } finally {
    c.destroy();
  }
}

/** A logged-in raw client (STARTTLS, PLAIN, bind). */
async function withSession(fn: (c: RawClient, jid: string) => Promise<void>, resource = 'raw'): Promise<void> {
  await withRaw(async (c) => fn(c, await c.login('alice', USERS.alice, resource)));
}

/** Asserts the stream ended with `condition`, and that the server's header came before the error (§4.9.1.1). */
async function expectStreamError(c: RawClient, condition: string): Promise<void> {
  const cond = await c.streamError();
  assert.is(cond, condition, 'wrong stream error; transcript: ' + c.transcript);
  await c.waitEnded();
  const header = c.transcript.indexOf('<stream:stream');
  const error = c.transcript.indexOf('<stream:error');
  assert.ok(header !== -1 && header < error, 'the server did not send its stream header before the error: ' + c.transcript);
  assert.ok(c.ended || c.closed, 'the stream was not closed');
}

// ---- the stream header ---------------------------------------------------------------

test("header with another domain in 'to': host-unknown", () => withRaw(async (c) => {
  c.open({ to: 'example.org' });
  await expectStreamError(c, 'host-unknown');
  assert.is(c.header?.from, 'localhost', 'the error stream must come from the served domain');
}));

test("header without 'to' is accepted (RFC 6120 §4.7.2: the server picks the domain)", () => withRaw(async (c) => {
  c.open({ to: null });
  const h = await c.waitHeader();
  assert.is(h.from, 'localhost');
  await c.features();
  assert.not.ok(c.all.some((e) => e.name === 'stream:error'));
}));

test('header with a wrong stream namespace: invalid-namespace', () => withRaw(async (c) => {
  c.open({ 'xmlns:stream': 'http://example.org/not-streams' });
  await expectStreamError(c, 'invalid-namespace');
}));

test('header with a wrong content namespace: invalid-namespace', () => withRaw(async (c) => {
  c.open({ xmlns: 'jabber:server' });
  await expectStreamError(c, 'invalid-namespace');
}));

test("header with version='0.9': unsupported-version", () => withRaw(async (c) => {
  c.open({ version: '0.9' });
  await expectStreamError(c, 'unsupported-version');
}));

test("header without version (an XMPP 0.9 stream): unsupported-version", () => withRaw(async (c) => {
  c.open({ version: null });
  await expectStreamError(c, 'unsupported-version');
}));

test("header with version='1.1' is XMPP 1.x: accepted, answered as 1.0", () => withRaw(async (c) => {
  c.open({ version: '1.1' });
  const h = await c.waitHeader();
  assert.is(h.version, '1.0');
  await c.features();
}));

test('the response header carries a fresh stream id each time', () => withRaw(async (c) => {
  c.open();
  const h1 = await c.waitHeader();
  const c2 = await RawClient.to(srv());
  try {
    c2.open();
    const h2 = await c2.waitHeader();
    assert.ok(h1.id && h2.id, 'no stream id');
    assert.is.not(h1.id, h2.id);
  } finally {
    c2.destroy();
  }
}));

// ---- before authentication -----------------------------------------------------------------

test('a stanza before authentication: not-authorized', () => withRaw(async (c) => {
  await c.hello();
  c.send("<message to='bob@localhost' type='chat'><body>hello</body></message>");
  await expectStreamError(c, 'not-authorized');
}));

test('an IQ (not registration) before authentication: not-authorized', () => withRaw(async (c) => {
  await c.hello(false);
  c.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
  await expectStreamError(c, 'not-authorized');
}));

test('a message after authentication but before binding: not-authorized', () => withRaw(async (c) => {
  await c.hello();
  assert.is((await c.authPlain('alice', USERS.alice)).name, 'success');
  c.open();
  await c.features();
  c.send("<message to='bob@localhost' type='chat'><body>early</body></message>");
  await expectStreamError(c, 'not-authorized');
}));

// ---- after binding ----------------------------------------------------------------------

test("a spoofed 'from': invalid-from", () => withSession(async (c) => {
  c.send("<message from='bob@localhost/other' to='alice@localhost/raw' type='chat' id='s'><body>I am bob</body></message>");
  await expectStreamError(c, 'invalid-from');
  assert.not.ok(c.all.some((e) => e.name === 'message'), 'the spoofed message was delivered');
}));

test("'from' with the client's own bare or full JID is accepted and stamped", () => withSession(async (c, jid) => {
  c.send(`<message from='alice@localhost' to='${jid}' type='chat' id='own1'><body>1</body></message>`);
  c.send(`<message from='${jid}' to='${jid}' type='chat' id='own2'><body>2</body></message>`);
  for (const id of ['own1', 'own2']) {
    const m = await c.next((e) => e.name === 'message' && e.attrs.id === id);
    assert.is(m.attrs.from, jid, 'from must be stamped with the full JID');
  }
  assert.not.ok(c.all.some((e) => e.name === 'stream:error'));
}));

test("'from' is compared after JID preparation (ALICE@LOCALHOST is alice@localhost)", () => withSession(async (c, jid) => {
  c.send(`<message from='ALICE@LocalHost' to='${jid}' type='chat' id='own3'><body>3</body></message>`);
  const m = await c.next((e) => e.name === 'message' && e.attrs.id === 'own3');
  assert.is(m.attrs.from, jid);
  assert.not.ok(c.all.some((e) => e.name === 'stream:error'));
}));

test('a non-stanza element after binding: unsupported-stanza-type', () => withSession(async (c) => {
  c.send("<query xmlns='jabber:client'/>");
  await expectStreamError(c, 'unsupported-stanza-type');
}));

test('an element of another namespace after binding: unsupported-stanza-type', () => withSession(async (c) => {
  c.send("<foo xmlns='urn:example:unknown'/>");
  await expectStreamError(c, 'unsupported-stanza-type');
}));

test('an IQ without id: bad-request', () => withSession(async (c) => {
  c.send("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
  const err = await c.next((e) => e.name === 'iq');
  assert.is(err.attrs.type, 'error');
  assert.is(stanzaErrorCondition(err), 'bad-request', err.toString());
}));

test('an IQ get with two children: bad-request', () => withSession(async (c) => {
  c.send("<iq type='get' id='two' to='localhost'><ping xmlns='urn:xmpp:ping'/><query xmlns='jabber:iq:version'/></iq>");
  const err = await c.next((e) => e.name === 'iq' && e.attrs.id === 'two');
  assert.is(err.attrs.type, 'error');
  assert.is(stanzaErrorCondition(err), 'bad-request', err.toString());
}));

test('an IQ set with no child: bad-request', () => withSession(async (c) => {
  c.send("<iq type='set' id='none' to='localhost'/>");
  const err = await c.next((e) => e.name === 'iq' && e.attrs.id === 'none');
  assert.is(err.attrs.type, 'error');
  assert.is(stanzaErrorCondition(err), 'bad-request', err.toString());
}));

test('an IQ with an unknown type: bad-request', () => withSession(async (c) => {
  c.send("<iq type='fetch' id='ty' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
  const err = await c.next((e) => e.name === 'iq' && e.attrs.id === 'ty');
  assert.is(err.attrs.type, 'error');
  assert.is(stanzaErrorCondition(err), 'bad-request', err.toString());
}));

for (const bad of ['bad@@localhost', '@localhost', 'alice@localhost/', 'a b@localhost']) {
  test(`a message to the invalid JID '${bad}': jid-malformed`, () => withSession(async (c) => {
    c.send(`<message to='${bad}' type='chat' id='jm'><body>x</body></message>`);
    const err = await c.next((e) => e.name === 'message' && e.attrs.id === 'jm', 3000, 'the jid-malformed error');
    assert.is(err.attrs.type, 'error');
    assert.is(stanzaErrorCondition(err), 'jid-malformed', err.toString());
    assert.not.ok(c.all.some((e) => e.name === 'stream:error'), 'an addressing error is a stanza error, not a stream error');
  }));
}

test('an IQ to the invalid JID: jid-malformed', () => withSession(async (c) => {
  c.send("<iq type='get' to='bad@@localhost' id='jmi'><ping xmlns='urn:xmpp:ping'/></iq>");
  const err = await c.next((e) => e.name === 'iq' && e.attrs.id === 'jmi', 3000, 'the jid-malformed error');
  assert.is(err.attrs.type, 'error');
  assert.is(stanzaErrorCondition(err), 'jid-malformed', err.toString());
}));

test('a stanza to another domain: remote-server-not-found', () => withSession(async (c, jid) => {
  c.send("<message to='bob@example.org' type='chat' id='rm'><body>far away</body></message>");
  const m = await c.next((e) => e.name === 'message' && e.attrs.id === 'rm');
  assert.is(m.attrs.type, 'error');
  assert.is(stanzaErrorCondition(m), 'remote-server-not-found', m.toString());
  assert.is(m.attrs.from, 'bob@example.org');
  assert.is(m.attrs.to, jid);
  c.send("<iq type='get' to='example.org' id='ri'><ping xmlns='urn:xmpp:ping'/></iq>");
  const iq = await c.next((e) => e.name === 'iq' && e.attrs.id === 'ri');
  assert.is(iq.attrs.type, 'error');
  assert.is(stanzaErrorCondition(iq), 'remote-server-not-found', iq.toString());
}));

test('whitespace keepalives are harmless; closing the stream closes both sides', () => withSession(async (c, jid) => {
  c.send('   \n  \t ');
  c.send(`<message to='${jid}' type='chat' id='ka'><body>still here</body></message>`);
  await c.next((e) => e.name === 'message' && e.attrs.id === 'ka');
  c.send('</stream:stream>');
  await c.waitEnded();
  await c.waitClosed(3000);
  assert.ok(c.ended, 'the server did not send its closing tag');
  assert.not.ok(c.all.some((e) => e.name === 'stream:error'));
}));

test.run();
