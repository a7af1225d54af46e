// Small server IQs against the real server: XEP-0199 ping, XEP-0092 version,
// XEP-0202 time, and the RFC 6120 §8.3.3.19 answer to everything else.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { startServer, trustServerCert, ROOT, type TestServer } from '../helpers/imnode.ts';
import { connect, xml, type TestClient, type XmlEl, expectIqError } from '../helpers/xmppjs.ts';

// xmpp.js's iqCaller attaches its handler to an IQ's promise only after the
// socket write callback; an error answer that beats it is an "unhandled"
// rejection for a moment, and the caller still gets it. Only that is tolerated.
process.on('unhandledRejection', (e) => { if ((e as Error | undefined)?.name !== 'StanzaError') throw e; });

let server: TestServer;
let alice: TestClient;

test.before(async () => {
  server = await startServer({ users: { alice: 'pw-alice' } });
  trustServerCert(server);
  alice = await connect(server, { username: 'alice', password: 'pw-alice', resource: 'a1' });
});

test.after(async () => {
  await alice?.stop();
  await server?.stop();
});


test('XEP-0199 ping of the server: an empty result', async () => {
  const r = await alice.iq(xml('iq', { type: 'get', to: server.domain }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
  assert.is(r.attrs.type, 'result');
  assert.is(r.attrs.from, server.domain);
  assert.is(r.children.filter((c) => typeof c !== 'string').length, 0, r.toString());
});

test('XEP-0092 version: imnode, the package version, no os by default', async () => {
  const pkg = JSON.parse(readFileSync(`${ROOT}/package.json`, 'utf8')) as { version: string };
  const r = await alice.iq(xml('iq', { type: 'get', to: server.domain }, xml('query', { xmlns: 'jabber:iq:version' })));
  const q = r.getChild('query', 'jabber:iq:version')!;
  assert.ok(q, r.toString());
  assert.is(q.getChildText('name'), 'imnode');
  assert.is(q.getChildText('version'), pkg.version);
  assert.is(q.getChild('os'), undefined, r.toString());
});

test('XEP-0092 version with --no-hide-os-version: the os is named', async () => {
  // Another domain: two self-signed certificates with the same subject confuse verification.
  const s2 = await startServer({ domain: 'version.test', users: { carol: 'pw-carol' }, args: ['--no-hide-os-version'] });
  let c: TestClient | undefined;
  try {
    trustServerCert(s2);
    c = await connect(s2, { username: 'carol', password: 'pw-carol' });
    const r = await c.iq(xml('iq', { type: 'get', to: s2.domain }, xml('query', { xmlns: 'jabber:iq:version' })));
    const os = r.getChild('query', 'jabber:iq:version')!.getChildText('os');
    assert.ok(os && os.length > 0, r.toString());
  } finally {
    await c?.stop();
    await s2.stop();
  }
});

test('XEP-0202 time: tzo and a UTC time with milliseconds close to ours', async () => {
  const before = Date.now();
  const r = await alice.iq(xml('iq', { type: 'get', to: server.domain }, xml('time', { xmlns: 'urn:xmpp:time' })));
  const after = Date.now();
  const t = r.getChild('time', 'urn:xmpp:time')!;
  assert.ok(t, r.toString());
  assert.match(t.getChildText('tzo')!, /^[+-]\d\d:\d\d$/);
  const utc = t.getChildText('utc')!;
  assert.match(utc, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  const ms = Date.parse(utc);
  assert.ok(ms >= before - 1000 && ms <= after + 1000, `${utc} is not now`);
});

test('an IQ in an unknown namespace to the server: service-unavailable', async () => {
  const err = await expectIqError(alice, xml('iq', { type: 'get', to: server.domain }, xml('query', { xmlns: 'urn:example:nothing' })));
  assert.is(err.condition, 'service-unavailable');
  assert.is(err.type, 'cancel');
  const err2 = await expectIqError(alice, xml('iq', { type: 'set', to: server.domain }, xml('query', { xmlns: 'urn:example:nothing' })));
  assert.is(err2.condition, 'service-unavailable');
});

test('an IQ in an unknown namespace to an account: service-unavailable', async () => {
  const err = await expectIqError(alice, xml('iq', { type: 'get' }, xml('query', { xmlns: 'urn:example:nothing' })));
  assert.is(err.condition, 'service-unavailable');
});

test('an IQ to the full JID of an offline resource: service-unavailable', async () => {
  const err = await expectIqError(alice, xml('iq', { type: 'get', to: `alice@${server.domain}/not-here` }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
  assert.is(err.condition, 'service-unavailable');
});

test.run();
