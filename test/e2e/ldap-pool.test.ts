// Two pool nodes sharing one LDAP directory (DESIGN.md: "In a pool every node
// points at the same directory; the pool replicates no accounts then, only
// rosters and the other per-user data"). Real imnode processes in network
// namespaces (test/helpers/pool-lab.ts), a real slapd listening on the lab's
// host address, reached by both nodes. Covers: a user of the directory logs in
// on either node; a message crosses the nodes; the roster an LDAP user edits on
// one node is the one the other node serves; the accounts keyspace is not
// replicated; each node answers from its own cache. Needs root (namespaces);
// fails loudly otherwise.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PoolLab, waitUntil, type LabNode } from '../helpers/pool-lab.ts';
import { trustServerCert } from '../helpers/imnode.ts';
import { connect, xml, type TestClient } from '../helpers/xmppjs.ts';
import { startSlapd, type Slapd } from '../helpers/slapd.ts';

const DOMAIN = 'pool.test';
const USERS = { alice: 'alice-pw', bob: 'bob-pw' };
const ROSTER = 'jabber:iq:roster';

let pool: PoolLab | undefined;
let slapd: Slapd | undefined;
let n1: LabNode, n2: LabNode;
const clients: TestClient[] = [];

async function login(node: LabNode, user: keyof typeof USERS, resource: string): Promise<TestClient> {
  const c = await connect(node.server, { username: user, password: USERS[user], resource, mechanism: 'PLAIN' });
  clients.push(c);
  return c;
}

async function rosterOf(c: TestClient): Promise<string[]> {
  const r = await c.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: ROSTER })));
  return (r.getChild('query', ROSTER)?.getChildren('item') ?? []).map((i) => i.attrs.jid).sort();
}

test.before(async () => {
  pool = await PoolLab.start({ nodes: [{ start: false }, { start: false }], domain: DOMAIN });
  [n1, n2] = pool.nodes;
  // On the lab's own address: reachable from both namespaces, and from this process.
  slapd = await startSlapd({ host: pool.lab.hostIp!, users: Object.entries(USERS).map(([uid, password]) => ({ uid, password, cn: uid.toUpperCase() })) });
  for (const n of pool.nodes) n.args.push(...slapd.imnodeArgs(), '--ldap-timeout', '3s');
  await Promise.all(pool.nodes.map((n) => n.start()));
  trustServerCert(n1.server);
});

test.after(async () => {
  for (const c of clients.splice(0)) await c.stop().catch(() => undefined);
  await pool?.cleanup();
  await slapd?.cleanup();
  const left = pool?.leftovers();
  if (left && (left.ns.length || left.links.length)) throw new Error(`the lab left ${JSON.stringify(left)}`);
});

test('two nodes on one directory form a pool; an LDAP user logs in on either', async () => {
  await pool!.waitMembers([n1, n2], ['node1', 'node2'], 15_000);
  const a1 = await login(n1, 'alice', 'one');
  const a2 = await login(n2, 'alice', 'two');
  assert.is(a1.jid, `alice@${DOMAIN}/one`);
  assert.is(a2.jid, `alice@${DOMAIN}/two`);
  await a2.stop();
});

test('a message from a user on node1 reaches a user on node2', async () => {
  const alice = clients[0];
  const bob = await login(n2, 'bob', 'desk');
  await bob.send(xml('presence'));
  const body = 'across the pool, users from LDAP';
  // Sent until it is delivered: routes of the new session may take a moment to reach node1.
  await waitUntil(async () => {
    await alice.send(xml('message', { to: bob.jid, type: 'chat' }, xml('body', {}, body)));
    return bob.waitFor((s) => s.name === 'message' && s.getChildText('body') === body, 1000).then(() => true, () => false);
  }, 10_000, 'the message on node2');
});

test('rosters are replicated, accounts are not', async () => {
  const alice = clients[0];
  await alice.iq(xml('iq', { type: 'set' }, xml('query', { xmlns: ROSTER }, xml('item', { jid: `bob@${DOMAIN}`, name: 'Bob' }))));
  const other = await login(n2, 'alice', 'three');
  await waitUntil(async () => (await rosterOf(other)).includes(`bob@${DOMAIN}`), 10_000, "alice's roster on node2");
  for (const n of [n1, n2]) {
    const status = await n.adminStatus();
    assert.ok(status, `${n.name} has no admin channel`);
    const digest = (status.userData as { digest?: Record<string, string> } | undefined)?.digest ?? {};
    assert.ok('roster' in digest, `${n.name}: the roster keyspace is replicated (${Object.keys(digest)})`);
    assert.not.ok('accounts' in digest, `${n.name}: no accounts keyspace is replicated with LDAP`);
    const ldap = status.ldap as { searches: number; binds: number };
    assert.ok(ldap.searches >= 1 && ldap.binds >= 1, `${n.name} asked the directory itself: ${JSON.stringify(ldap)}`);
  }
});

test('vCard from the directory on both nodes', async () => {
  const alice = clients[0];
  const r = await alice.iq(xml('iq', { type: 'get', to: `bob@${DOMAIN}` }, xml('vCard', { xmlns: 'vcard-temp' })));
  assert.is(r.getChild('vCard', 'vcard-temp')?.getChildText('FN'), 'BOB');
  const onN2 = clients.find((c) => c.jid.endsWith('/three'))!;
  const r2 = await onN2.iq(xml('iq', { type: 'get', to: `bob@${DOMAIN}` }, xml('vCard', { xmlns: 'vcard-temp' })));
  assert.is(r2.getChild('vCard', 'vcard-temp')?.getChildText('FN'), 'BOB');
});

test.run();
