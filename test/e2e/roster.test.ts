// RFC 6121 §2 roster management against the real server, driven by xmpp.js:
// get, set, pushes to interested resources, delete, the §2.3.3 error cases and
// roster versioning (§2.6).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { startServer, trustServerCert, type TestServer } from '../helpers/imnode.ts';
import { connect, xml, type TestClient, type XmlEl } from '../helpers/xmppjs.ts';

const ROSTER = 'jabber:iq:roster';
const MAX_ITEMS = 6;

let server: TestServer;
const clients: TestClient[] = [];
/** Roster pushes each client answered, in arrival order. */
const pushes = new Map<TestClient, XmlEl[]>();

const USERS: Record<string, string> = {};
for (const u of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'gina']) USERS[u] = `pw-${u}`;

test.before(async () => {
  server = await startServer({ users: USERS, args: ['--max-roster-items', String(MAX_ITEMS)] });
  trustServerCert(server);
});

test.after.each(async () => {
  for (const c of clients.splice(0)) await c.stop();
});

test.after(async () => {
  await server?.stop();
});

async function login(user: string, resource: string): Promise<TestClient> {
  const c = await connect(server, { username: user, password: USERS[user], resource });
  clients.push(c);
  // Answer roster pushes as §2.1.6 asks clients to.
  const seen: XmlEl[] = [];
  pushes.set(c, seen);
  c.xmpp.iqCallee.set(ROSTER, 'query', (ctx: { stanza: XmlEl }) => {
    seen.push(ctx.stanza);
    return {};
  });
  return c;
}

const bare = (user: string) => `${user}@${server.domain}`;

function rosterGet(c: TestClient, ver?: string): Promise<XmlEl> {
  return c.iq(xml('iq', { type: 'get' }, xml('query', ver === undefined ? { xmlns: ROSTER } : { xmlns: ROSTER, ver })));
}

function rosterSet(c: TestClient, attrs: Record<string, string>, groups: string[] = []): Promise<XmlEl> {
  return c.iq(xml('iq', { type: 'set' }, xml('query', { xmlns: ROSTER }, xml('item', attrs, ...groups.map((g) => xml('group', {}, g))))));
}

async function iqError(p: Promise<XmlEl>): Promise<string> {
  try {
    const r = await p;
    throw new Error('expected an error, got ' + r.toString());
  } catch (e) {
    const err = e as { condition?: string };
    if (!err.condition) throw e;
    return err.condition;
  }
}

function items(result: XmlEl): XmlEl[] {
  return result.getChild('query', ROSTER)?.getChildren('item') ?? [];
}

function pushFor(jid: string) {
  return (s: XmlEl) => s.name === 'iq' && s.attrs.type === 'set' && s.getChild('query', ROSTER)?.getChild('item')?.attrs.jid === jid;
}

function pushedItem(push: XmlEl): XmlEl {
  return push.getChild('query', ROSTER)!.getChild('item')!;
}

test('roster get on an empty roster: an empty query; with ver="" a version too', async () => {
  const a = await login('alice', 'r1');
  const r = await rosterGet(a);
  assert.ok(r.getChild('query', ROSTER), r.toString());
  assert.is(items(r).length, 0);
  assert.is(r.getChild('query', ROSTER)!.attrs.ver, undefined);
  const v = await rosterGet(a, '');
  assert.ok(v.getChild('query', ROSTER)!.attrs.ver, 'ver in the result: ' + v.toString());
});

test('roster set: result, then a push to every interested resource; not to the others', async () => {
  const a1 = await login('bob', 'one');
  const a2 = await login('bob', 'two');
  const a3 = await login('bob', 'three');
  await rosterGet(a1);
  await rosterGet(a2);
  const r = await rosterSet(a1, { jid: bare('carol'), name: 'Carol' }, ['Friends', 'Work']);
  assert.is(r.attrs.type, 'result');
  for (const c of [a1, a2]) {
    const push = await c.waitFor(pushFor(bare('carol')), 5000, 'roster push');
    assert.not.ok(push.attrs.from && push.attrs.from !== bare('bob'), 'a push comes from the account or from nobody');
    const item = pushedItem(push);
    assert.is(item.attrs.name, 'Carol');
    assert.is(item.attrs.subscription, 'none');
    assert.is(item.attrs.ask, undefined);
    assert.equal(item.getChildren('group').map((g) => g.getText()), ['Friends', 'Work']);
    assert.ok(push.getChild('query', ROSTER)!.attrs.ver, 'a push carries the new version');
  }
  // Update: only name and groups change; the item keeps its place.
  await rosterSet(a2, { jid: bare('carol'), name: 'C.' }, ['Work']);
  const upd = pushedItem(await a1.waitFor(pushFor(bare('carol')), 5000, 'update push'));
  assert.is(upd.attrs.name, 'C.');
  assert.equal(upd.getChildren('group').map((g) => g.getText()), ['Work']);
  // The resource that never asked for the roster is not interested (§2.1.6).
  await new Promise((r) => setTimeout(r, 300));
  assert.not.ok(a3.received.some(pushFor(bare('carol'))), 'no push to a resource that never got the roster');
  const all = items(await rosterGet(a3));
  assert.is(all.length, 1);
  assert.is(all[0].attrs.jid, bare('carol'));
  assert.is(all[0].attrs.name, 'C.');
});

test('roster set: subscription, ask and approved from the client are ignored; remote JIDs are stored', async () => {
  const c = await login('carol', 'r');
  await rosterGet(c);
  await rosterSet(c, { jid: bare('dave'), subscription: 'both', ask: 'subscribe', approved: 'true' });
  const item = pushedItem(await c.waitFor(pushFor(bare('dave'))));
  assert.is(item.attrs.subscription, 'none');
  assert.is(item.attrs.ask, undefined);
  assert.is(item.attrs.approved, undefined);
  await rosterSet(c, { jid: 'someone@remote.example', name: 'Far away' });
  // The user's own bare JID may be on the roster (nothing in §2 forbids it).
  await rosterSet(c, { jid: bare('carol'), name: 'Me' });
  const list = items(await rosterGet(c));
  assert.ok(list.some((i) => i.attrs.jid === bare('carol')), 'own JID stored');
  const remote = list.find((i) => i.attrs.jid === 'someone@remote.example');
  assert.ok(remote, 'the remote contact is in the roster');
  assert.is(remote!.attrs.name, 'Far away');
});

test('roster delete: result, a subscription="remove" push; an unknown item is item-not-found', async () => {
  const c = await login('dave', 'r');
  const other = await login('dave', 'r2');
  await rosterGet(c);
  await rosterGet(other);
  await rosterSet(c, { jid: bare('erin') });
  await other.waitFor(pushFor(bare('erin')));
  const r = await rosterSet(c, { jid: bare('erin'), subscription: 'remove' });
  assert.is(r.attrs.type, 'result');
  for (const x of [c, other]) {
    const push = await x.waitFor((s) => pushFor(bare('erin'))(s) && pushedItem(s).attrs.subscription === 'remove', 5000, 'remove push');
    assert.ok(push);
  }
  assert.is(items(await rosterGet(c)).length, 0);
  assert.is(await iqError(rosterSet(c, { jid: bare('erin'), subscription: 'remove' })), 'item-not-found');
});

test('§2.3.3 errors: several items, duplicate groups, empty group, long name, bad JID, another user\'s roster', async () => {
  const c = await login('erin', 'r');
  const q = (...children: XmlEl[]) => c.iq(xml('iq', { type: 'set' }, xml('query', { xmlns: ROSTER }, ...children)));
  assert.is(await iqError(q(xml('item', { jid: bare('a1') }), xml('item', { jid: bare('a2') }))), 'bad-request');
  assert.is(await iqError(q(xml('item', { jid: bare('a1') }, xml('group', {}, 'G'), xml('group', {}, 'G')))), 'bad-request');
  assert.is(await iqError(q(xml('item', { jid: bare('a1') }, xml('group', {})))), 'not-acceptable');
  assert.is(await iqError(q(xml('item', { jid: bare('a1'), name: 'n'.repeat(2000) }))), 'not-acceptable');
  assert.is(await iqError(q(xml('item', { jid: bare('a1') }, xml('group', {}, 'g'.repeat(2000))))), 'not-acceptable');
  assert.is(await iqError(q(xml('item', { jid: 'not a@valid@jid' }))), 'jid-malformed');
  const foreign = (type: string) => c.iq(xml('iq', { type, to: bare('alice') }, xml('query', { xmlns: ROSTER }, type === 'set' ? xml('item', { jid: bare('erin') }) : null)));
  assert.is(await iqError(foreign('set')), 'forbidden');
  assert.is(await iqError(foreign('get')), 'forbidden');
  assert.is(items(await rosterGet(c)).length, 0, 'nothing was stored');
  // Addressed explicitly to the own bare JID is fine.
  const own = await c.iq(xml('iq', { type: 'get', to: bare('erin') }, xml('query', { xmlns: ROSTER })));
  assert.ok(own.getChild('query', ROSTER));
});

test('the roster size limit: not-allowed beyond max-roster-items; updates still work', async () => {
  const c = await login('frank', 'r');
  for (let i = 0; i < MAX_ITEMS; i++) await rosterSet(c, { jid: `c${i}@${server.domain}` });
  assert.is(await iqError(rosterSet(c, { jid: `one-too-many@${server.domain}` })), 'not-allowed');
  await rosterSet(c, { jid: `c0@${server.domain}`, name: 'renamed' });
  const list = items(await rosterGet(c));
  assert.is(list.length, MAX_ITEMS);
  assert.is(list.find((i) => i.attrs.jid === `c0@${server.domain}`)!.attrs.name, 'renamed');
});

test('versioning: the current ver gets an empty result; an old ver gets the missed changes as pushes', async () => {
  let c = await login('gina', 'r');
  await rosterSet(c, { jid: bare('alice') });
  await rosterSet(c, { jid: bare('bob') });
  const full = await rosterGet(c, '');
  const v1 = full.getChild('query', ROSTER)!.attrs.ver;
  assert.ok(v1);
  assert.is(items(full).length, 2);

  const same = await rosterGet(c, v1);
  assert.is(same.attrs.type, 'result');
  assert.is(same.getChild('query', ROSTER), undefined, 'unchanged roster: empty result ' + same.toString());

  // Changes made while the caching client is away.
  await rosterSet(c, { jid: bare('carol'), name: 'New' });
  await rosterSet(c, { jid: bare('alice'), subscription: 'remove' });
  await rosterSet(c, { jid: bare('bob'), name: 'Bobby' });
  const current = (await rosterGet(c, '')).getChild('query', ROSTER)!.attrs.ver;
  await c.stop();

  c = await login('gina', 'back');
  const res = await rosterGet(c, v1);
  assert.is(res.getChild('query', ROSTER), undefined, 'the changes come as pushes, not in the result');
  const carol = await c.waitFor(pushFor(bare('carol')), 5000, 'push of the added item');
  const alice = await c.waitFor(pushFor(bare('alice')), 5000, 'push of the removed item');
  const bob = await c.waitFor(pushFor(bare('bob')), 5000, 'push of the changed item');
  assert.is(pushedItem(carol).attrs.name, 'New');
  assert.is(pushedItem(alice).attrs.subscription, 'remove');
  assert.is(pushedItem(bob).attrs.name, 'Bobby');
  const vers = [carol, alice, bob].map((p) => p.getChild('query', ROSTER)!.attrs.ver);
  assert.is(vers[2], current, 'the last push brings the client to the current version');
  assert.is(new Set(vers).size, 3);
  // In version order, each answered by the client.
  assert.equal(pushes.get(c)!.map((p) => pushedItem(p).attrs.jid), [bare('carol'), bare('alice'), bare('bob')]);

  // A version the server cannot place gets the whole roster.
  const foreign = await rosterGet(c, 'not-a-version-of-ours');
  assert.is(foreign.getChild('query', ROSTER)!.attrs.ver, current);
  assert.equal(items(foreign).map((i) => i.attrs.jid).sort(), [bare('bob'), bare('carol')]);
});

/** Reads from a raw socket until `until` shows up. */
function readUntil(sock: net.Socket, until: RegExp, buf: { s: string }): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('timed out; got ' + buf.s)), 5000);
    const check = () => {
      const m = until.exec(buf.s);
      if (!m) return;
      clearTimeout(timer);
      sock.off('data', onData);
      const out = buf.s.slice(0, m.index + m[0].length);
      buf.s = buf.s.slice(m.index + m[0].length);
      resolve(out);
    };
    const onData = (d: Buffer) => {
      buf.s += d.toString();
      check();
    };
    sock.on('data', onData);
    check();
  });
}

test('stream features after authentication: roster versioning and pre-approval', async () => {
  const plain = net.connect(server.port, '127.0.0.1');
  let sock: net.Socket = plain;
  let buf = { s: '' };
  try {
    const header = `<?xml version='1.0'?><stream:stream to='${server.domain}' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`;
    sock.write(header);
    const before = await readUntil(sock, /<\/stream:features>/, buf);
    assert.not.match(before, 'urn:xmpp:features:rosterver', 'not offered before authentication');
    sock.write(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`);
    await readUntil(sock, /<proceed[^>]*\/>/, buf);
    sock = tls.connect({ socket: plain, servername: 'localhost', ca: server.certPem() });
    await new Promise((r) => sock.once('secureConnect', r));
    buf = { s: '' };
    sock.write(header);
    await readUntil(sock, /<\/stream:features>/, buf);
    sock.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from('\0alice\0pw-alice').toString('base64')}</auth>`);
    await readUntil(sock, /<success[^>]*(\/>|<\/success>)/, buf);
    sock.write(header);
    const after = await readUntil(sock, /<\/stream:features>/, buf);
    assert.match(after, /<ver xmlns=["']urn:xmpp:features:rosterver["']/);
    assert.match(after, /<sub xmlns=["']urn:xmpp:features:pre-approval["']/);
  } finally {
    sock.destroy();
    plain.destroy();
  }
});

test('the server logged no errors on the way', () => {
  const errors = server.output().split('\n').filter((l) => / ERROR /.test(l));
  assert.equal(errors, []);
});

test.run();
