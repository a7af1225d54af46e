// Shared roster groups from LDAP groups (--ldap-shared-roster), against a real
// slapd: the members of a groupOfNames see each other in their rosters, in a
// roster group named after it, subscribed both ways (RFC 6121 §2.1.2.5), so
// presence flows between them with no subscription handshake; members of no
// common group do not.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { prepareTemplate, startServer, type TestServer } from '../helpers/imnode.ts';
import { trustOnly } from '../helpers/raw.ts';
import { connect, xml, type TestClient } from '../helpers/xmppjs.ts';
import { startSlapd, type Slapd } from '../helpers/slapd.ts';

const ROSTER = 'jabber:iq:roster';
const USERS = { alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw' };
let slapd: Slapd;
let server: TestServer;
const clients: TestClient[] = [];

test.before(async () => {
  slapd = await startSlapd({
    users: Object.entries(USERS).map(([uid, password]) => ({ uid, password })),
    groups: [{ cn: 'staff', members: ['alice', 'bob'] }, { cn: 'ops', members: ['bob', 'carol'] }],
  });
  server = await startServer({ template: await prepareTemplate({}), args: [...slapd.imnodeArgs(), '--ldap-shared-roster'] });
  trustOnly(server);
});

test.after(async () => {
  for (const c of clients) await c.stop();
  await server?.stop();
  await slapd?.cleanup();
});

async function login(user: keyof typeof USERS): Promise<TestClient> {
  const c = await connect(server, { username: user, password: USERS[user], resource: 'r', mechanism: 'PLAIN' });
  clients.push(c);
  return c;
}

async function roster(c: TestClient): Promise<Record<string, string>> {
  const r = await c.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: ROSTER })));
  const out: Record<string, string> = {};
  for (const i of r.getChild('query', ROSTER)?.getChildren('item') ?? []) {
    out[i.attrs.jid] = `${i.attrs.subscription}:${i.getChildren('group').map((g) => g.getText()).sort().join(',')}`;
  }
  return out;
}

test('the members of a directory group are in each other\'s rosters, subscribed both ways', async () => {
  const alice = await login('alice');
  assert.equal(await roster(alice), { 'bob@localhost': 'both:staff' });
  await alice.send(xml('presence'));
  const bob = await login('bob');
  assert.equal(await roster(bob), { 'alice@localhost': 'both:staff', 'carol@localhost': 'both:ops' });
  await bob.send(xml('presence'));
  // Presence flows with no subscription handshake.
  await alice.waitFor((s) => s.name === 'presence' && s.attrs.from === bob.jid && s.attrs.type === undefined, 5000, "bob's presence at alice");
  await bob.waitFor((s) => s.name === 'presence' && s.attrs.from === alice.jid && s.attrs.type === undefined, 5000, "alice's presence at bob (probe)");
  const carol = await login('carol');
  assert.equal(await roster(carol), { 'bob@localhost': 'both:ops' }, 'carol shares ops with bob only');
});

test('a removed shared contact comes back at the next login; own items are kept', async () => {
  const alice = clients[0];
  await alice.iq(xml('iq', { type: 'set' }, xml('query', { xmlns: ROSTER }, xml('item', { jid: 'bob@localhost', subscription: 'remove' }))));
  await alice.iq(xml('iq', { type: 'set' }, xml('query', { xmlns: ROSTER }, xml('item', { jid: 'friend@example.net', name: 'F' }))));
  const again = await login('alice');
  const r = await roster(again);
  assert.is(r['bob@localhost'], 'both:staff');
  assert.is(r['friend@example.net'], 'none:');
});

test.run();
