// XEP-0054 vcard-temp against the real server, driven by xmpp.js.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rmSync } from 'node:fs';
import { startServer, trustServerCert, tempDir, type TestServer } from '../helpers/imnode.ts';
import { connect, xml, type TestClient, type XmlEl, expectIqError } from '../helpers/xmppjs.ts';

// xmpp.js's iqCaller attaches its handler to an IQ's promise only after the
// socket write callback; an error answer that beats it is an "unhandled"
// rejection for a moment, and the caller still gets it. Only that is tolerated.
process.on('unhandledRejection', (e) => { if ((e as Error | undefined)?.name !== 'StanzaError') throw e; });

const VCARD = 'vcard-temp';
const dataDir = tempDir();
let server: TestServer;
let alice: TestClient;
let bob: TestClient;

async function start(users?: Record<string, string>): Promise<void> {
  server = await startServer({ dataDir, users, args: ['--max-vcard-size', '4096'] });
  trustServerCert(server);
  alice = await connect(server, { username: 'alice', password: 'pw-alice', resource: 'a1' });
  bob = await connect(server, { username: 'bob', password: 'pw-bob', resource: 'b1' });
}

async function stop(): Promise<void> {
  await alice?.stop();
  await bob?.stop();
  await server?.stop();
}

test.before(() => start({ alice: 'pw-alice', bob: 'pw-bob', carol: 'pw-carol' }));
test.after(async () => {
  await stop();
  rmSync(dataDir, { recursive: true, force: true });
});


// Base64 with line breaks, as clients write it: must come back unchanged.
const PHOTO = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk\n+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==';

function aliceCard(fn: string): XmlEl {
  return xml('vCard', { xmlns: VCARD },
    xml('FN', {}, fn),
    xml('NICKNAME', {}, 'al & <ice>'),
    xml('PHOTO', {}, xml('TYPE', {}, 'image/png'), xml('BINVAL', {}, PHOTO)));
}

test('own vCard before any was set: an empty vCard', async () => {
  const r = await alice.iq(xml('iq', { type: 'get' }, xml('vCard', { xmlns: VCARD })));
  assert.is(r.attrs.type, 'result');
  const v = r.getChild('vCard', VCARD)!;
  assert.ok(v, r.toString());
  assert.is(v.children.length, 0, r.toString());
});

test('set the own vCard, then read it back with and without a to', async () => {
  const set = await alice.iq(xml('iq', { type: 'set' }, aliceCard('Alice Liddell')));
  assert.is(set.attrs.type, 'result');
  for (const attrs of [{ type: 'get' }, { type: 'get', to: `alice@${server.domain}` }]) {
    const r = await alice.iq(xml('iq', attrs, xml('vCard', { xmlns: VCARD })));
    const v = r.getChild('vCard', VCARD)!;
    assert.is(v.getChildText('FN'), 'Alice Liddell');
    assert.is(v.getChildText('NICKNAME'), 'al & <ice>');
    assert.is(v.getChild('PHOTO')!.getChildText('BINVAL'), PHOTO);
  }
});

test("another user's vCard is answered by the server from the bare JID", async () => {
  const r = await bob.iq(xml('iq', { type: 'get', to: `alice@${server.domain}` }, xml('vCard', { xmlns: VCARD })));
  assert.is(r.attrs.from, `alice@${server.domain}`);
  const v = r.getChild('vCard', VCARD)!;
  assert.is(v.getChildText('FN'), 'Alice Liddell');
  assert.is(v.getChild('PHOTO')!.getChildText('BINVAL'), PHOTO);
  await new Promise((res) => setTimeout(res, 100));
  assert.not.ok(alice.received.some((s) => s.name === 'iq' && s.attrs.type === 'get'), 'the request reached alice');
});

test('no vCard and no account give the same error: service-unavailable', async () => {
  const a = await expectIqError(bob, xml('iq', { type: 'get', to: `carol@${server.domain}` }, xml('vCard', { xmlns: VCARD })));
  const b = await expectIqError(bob, xml('iq', { type: 'get', to: `nobody@${server.domain}` }, xml('vCard', { xmlns: VCARD })));
  assert.is(a.condition, 'service-unavailable');
  assert.is(b.condition, 'service-unavailable');
});

test("setting someone else's vCard is forbidden and changes nothing", async () => {
  const err = await expectIqError(bob, xml('iq', { type: 'set', to: `alice@${server.domain}` }, aliceCard('Mallory')));
  assert.is(err.condition, 'forbidden');
  const r = await bob.iq(xml('iq', { type: 'get', to: `alice@${server.domain}` }, xml('vCard', { xmlns: VCARD })));
  assert.is(r.getChild('vCard', VCARD)!.getChildText('FN'), 'Alice Liddell');
});

test('a vCard over --max-vcard-size is refused and the old one kept', async () => {
  const big = xml('vCard', { xmlns: VCARD }, xml('FN', {}, 'Big'), xml('DESC', {}, 'x'.repeat(5000)));
  const err = await expectIqError(alice, xml('iq', { type: 'set' }, big));
  assert.is(err.condition, 'not-acceptable');
  const r = await alice.iq(xml('iq', { type: 'get' }, xml('vCard', { xmlns: VCARD })));
  assert.is(r.getChild('vCard', VCARD)!.getChildText('FN'), 'Alice Liddell');
  // Just under the limit is fine.
  const ok = await alice.iq(xml('iq', { type: 'set' }, xml('vCard', { xmlns: VCARD }, xml('FN', {}, 'Alice'), xml('DESC', {}, 'y'.repeat(3500)))));
  assert.is(ok.attrs.type, 'result');
});

test('the vCard survives a restart', async () => {
  await alice.iq(xml('iq', { type: 'set' }, aliceCard('Alice Persisted')));
  await stop();
  await start();
  const r = await bob.iq(xml('iq', { type: 'get', to: `alice@${server.domain}` }, xml('vCard', { xmlns: VCARD })));
  const v = r.getChild('vCard', VCARD)!;
  assert.is(v.getChildText('FN'), 'Alice Persisted');
  assert.is(v.getChild('PHOTO')!.getChildText('BINVAL'), PHOTO);
});

test.run();
