// User data in a pool without LDAP (issue 3): accounts, rosters, vCards,
// blocklists and offline messages written on one node are seen on the others.
// Three nodes on the in-process test pool (src/pool/memory-pool.ts), each with
// its own LevelDB, built with createUserData (src/store/user-data.ts) exactly
// as a node of the pool builds them; the stores on top are the real ones.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../../src/store/db.ts';
import { MemoryHub, MemoryPool } from '../../src/pool/memory-pool.ts';
import { createUserData, type UserData } from '../../src/store/user-data.ts';
import { EmbeddedDirectory, UserExistsError } from '../../src/store/directory.ts';
import { RosterStore } from '../../src/store/roster.ts';
import { VCardStore } from '../../src/store/vcard.ts';
import { BlocklistStore } from '../../src/store/blocking.ts';
import { OfflineStore, type StoredMessage } from '../../src/store/offline.ts';
import { BlocklistCache } from '../../src/modules/blocking.ts';
import type { Logger } from '../../src/admin/log.ts';

const quiet: Logger = { error() {}, warn() {}, info() {}, debug() {}, child: () => quiet };
const SETTLE_MS = 60;

interface Node {
  id: string;
  dir: string;
  store: Store;
  pool: MemoryPool;
  ud: UserData;
  rosters: RosterStore;
  vcards: VCardStore;
  blocks: BlocklistCache;
  offline: OfflineStore;
}

let hub: MemoryHub;
let nodes: Node[] = [];
const figures: string[] = [];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Until every write made so far has been flushed, gossiped and applied everywhere. */
async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    await sleep(15);
    await hub.idle();
  }
}

async function node(id: string, opts: { dir?: string; before?: (store: Store) => Promise<void> } = {}): Promise<Node> {
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), `imnode-ud-${id}-`)));
  const store = await Store.open(dir);
  if (opts.before) await opts.before(store);
  const pool = new MemoryPool(hub, id);
  await pool.start();
  const ud = await createUserData({ store, pool, log: quiet, iterations: 32, settleMs: SETTLE_MS, tuning: { digestIntervalMs: 0 } });
  const n: Node = {
    id, dir, store, pool, ud,
    rosters: new RosterStore(ud.kv),
    vcards: new VCardStore(ud.kv),
    blocks: new BlocklistCache(new BlocklistStore(ud.kv)),
    offline: new OfflineStore(ud.kv, { leaseMs: 2000 }),
  };
  nodes.push(n);
  return n;
}

async function shutdown(n: Node, removeDir = true): Promise<void> {
  nodes = nodes.filter((x) => x !== n);
  n.blocks.close();
  await n.ud.stop();
  await n.pool.stop();
  await n.store.close();
  if (removeDir) await rm(n.dir, { recursive: true, force: true });
}

async function three(): Promise<[Node, Node, Node]> {
  const a = await node('a');
  const b = await node('b');
  const c = await node('c');
  await settle();
  return [a, b, c];
}

test.before.each(() => {
  hub = new MemoryHub();
});

test.after.each(async () => {
  for (const n of [...nodes]) await shutdown(n);
});

test('an account created on A verifies on B and C; a password change and a removal follow', async () => {
  const [a, b, c] = await three();
  const g0 = hub.stats.gossipBytes;
  await a.ud.directory.create('alice', 'secret');
  await settle();
  figures.push(`account creation: ${hub.stats.gossipBytes - g0} bytes of gossip to 2 peers`);
  for (const n of [b, c]) {
    assert.ok(await n.ud.directory.exists('alice'), `alice exists on ${n.id}`);
    assert.ok(await n.ud.directory.verifyPassword('alice', 'secret'));
    assert.not.ok(await n.ud.directory.verifyPassword('alice', 'wrong'));
    assert.ok((await n.ud.directory.getCredentials('alice'))?.['SHA-256']);
    assert.equal(await n.ud.directory.list(), ['alice']);
  }
  await b.ud.directory.setPassword('alice', 'new');
  await settle();
  assert.ok(await c.ud.directory.verifyPassword('alice', 'new'));
  assert.not.ok(await a.ud.directory.verifyPassword('alice', 'secret'));
  await c.ud.directory.delete('alice');
  await settle();
  assert.not.ok(await a.ud.directory.exists('alice'));
  try {
    await a.ud.directory.create('alice', 'again');
  } catch {
    assert.unreachable('a removed name can be registered again');
  }
});

test('one name registered on two nodes at once: exactly one succeeds, and it is the one every node keeps', async () => {
  const [a, b, c] = await three();
  const results = await Promise.allSettled([a.ud.directory.create('zoe', 'from-a'), b.ud.directory.create('zoe', 'from-b')]);
  const ok = results.filter((r) => r.status === 'fulfilled');
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  assert.is(ok.length, 1, 'one registration succeeds');
  assert.is(failed.length, 1);
  assert.instance(failed[0].reason, UserExistsError);
  const winner = results[0].status === 'fulfilled' ? 'from-a' : 'from-b';
  await settle();
  for (const n of [a, b, c]) assert.ok(await n.ud.directory.verifyPassword('zoe', winner), `${n.id} keeps the winner's password`);
});

test('a roster change on A is seen on B, whose cached roster is dropped; and the other way', async () => {
  const [a, b] = await three();
  const before = await b.rosters.get('alice');
  assert.is(before.size, 0);
  assert.is(await b.rosters.get('alice'), before, 'cached');
  const g0 = hub.stats.gossipBytes;
  const r1 = await a.rosters.update('alice', (tx) => tx.put({ jid: 'bob@x', name: 'Bob', subscription: 'both', groups: ['Friends'] }));
  await settle();
  figures.push(`roster change (one item + version): ${(hub.stats.gossipBytes - g0) / 2} bytes of gossip per peer`);
  const onB = await b.rosters.get('alice');
  assert.is.not(onB, before, 'the cache was invalidated');
  assert.equal(onB.get('bob@x'), { jid: 'bob@x', name: 'Bob', subscription: 'both', groups: ['Friends'] });
  assert.is(onB.version, r1.roster.version, 'same roster version on both nodes');
  assert.equal(onB.changesSince('0'), null);

  const r2 = await b.rosters.update('alice', (tx) => {
    tx.remove('bob@x');
    tx.put({ jid: 'carol@x', subscription: 'to', groups: [] });
    tx.setPending({ jid: 'dave@x', stanza: '<presence type="subscribe"/>', time: 1 });
  });
  await settle();
  const onA = await a.rosters.get('alice');
  assert.equal(onA.items().map((i) => i.jid), ['carol@x']);
  assert.is(onA.pending('dave@x')?.time, 1);
  assert.is(onA.version, r2.roster.version);
  assert.equal(onA.changesSince(r1.roster.version)!.map((ch) => [ch.jid, ch.item === null]), [['bob@x', true], ['carol@x', false]]);
  await a.rosters.clear('alice');
  await settle();
  assert.is((await b.rosters.get('alice')).size, 0);
});

test('concurrent roster changes of one user on two nodes: both items survive, the version never goes back', async () => {
  const [a, b, c] = await three();
  await Promise.all([
    a.rosters.update('alice', (tx) => tx.put({ jid: 'x@x', subscription: 'none', groups: [] })),
    b.rosters.update('alice', (tx) => tx.put({ jid: 'y@x', subscription: 'none', groups: [] })),
  ]);
  await settle();
  for (const n of [a, b, c]) {
    const r = await n.rosters.get('alice');
    assert.equal(r.items().map((i) => i.jid).sort(), ['x@x', 'y@x'], `both items on ${n.id}`);
  }
  const r = await c.rosters.update('alice', (tx) => tx.put({ jid: 'z@x', subscription: 'none', groups: [] }));
  const n = Number(r.roster.version.split('-')[1]);
  assert.ok(n >= 2, `version ${r.roster.version} is past both concurrent changes`);
});

test('a vCard set on A is read on B; removed on B, it is gone on A', async () => {
  const [a, b] = await three();
  const xml = `<vCard xmlns="vcard-temp"><FN>Alice</FN><PHOTO><BINVAL>${'A'.repeat(10_000)}</BINVAL></PHOTO></vCard>`;
  const g0 = hub.stats.gossipBytes;
  await a.vcards.set('alice', xml);
  await settle();
  figures.push(`vCard of ${xml.length} bytes: ${(hub.stats.gossipBytes - g0) / 2} bytes of gossip per peer`);
  assert.is(await b.vcards.get('alice'), xml);
  await b.vcards.delete('alice');
  await settle();
  assert.is(await a.vcards.get('alice'), undefined);
});

test('a block on A reaches the cached blocklist on B; an unblock on B reaches A', async () => {
  const [a, b] = await three();
  assert.equal([...(await b.blocks.get('alice'))], []);
  assert.ok(b.blocks.peek('alice'), 'B has the list in memory');
  assert.equal(await a.blocks.block('alice', ['romeo@x', 'spam.example']), ['romeo@x', 'spam.example']);
  await settle();
  assert.is(b.blocks.peek('alice'), undefined, 'the remote change dropped the cached list');
  assert.equal([...(await b.blocks.get('alice'))].sort(), ['romeo@x', 'spam.example']);
  await a.blocks.get('alice');
  assert.equal(await b.blocks.unblock('alice', ['romeo@x']), ['romeo@x']);
  await settle();
  assert.equal([...(await a.blocks.get('alice'))], ['spam.example']);
  assert.equal(await b.blocks.unblockAll('alice'), ['spam.example']);
  await settle();
  assert.equal([...(await a.blocks.get('alice'))], []);
});

/** A deliver callback that takes everything and records it. */
function taker(into: string[]): (msgs: StoredMessage[]) => string[] {
  return (msgs) => {
    into.push(...msgs.map((m) => m.xml));
    return msgs.map((m) => m.key);
  };
}

test('an offline message stored on A is drained on B exactly once, and not again on A or C', async () => {
  const [a, b, c] = await three();
  const g0 = hub.stats.gossipBytes;
  assert.ok(await a.offline.push('bob', '<message><body>1</body></message>', 100));
  assert.ok(await a.offline.push('bob', '<message><body>2</body></message>', 100));
  await settle();
  figures.push(`offline message store (2 small messages): ${(hub.stats.gossipBytes - g0) / 2} bytes of gossip per peer`);
  assert.is(await b.offline.count('bob'), 2);
  const got: string[] = [];
  assert.is(await b.offline.drain('bob', taker(got)), 2);
  assert.equal(got, ['<message><body>1</body></message>', '<message><body>2</body></message>']);
  await settle();
  for (const n of [a, b, c]) {
    assert.is(await n.offline.count('bob'), 0, `queue empty on ${n.id}`);
    const again: string[] = [];
    assert.is(await n.offline.drain('bob', taker(again)), 0);
    assert.equal(again, []);
  }
  // No claim is left behind either.
  assert.equal(await a.ud.kv.kv('offline').keys('bob/'), []);
});

test('two nodes draining one queue at the same instant hand each message out once', async () => {
  const [a, b] = await three();
  for (let i = 0; i < 10; i++) await (i % 2 ? a : b).offline.push('bob', `<m n="${i}"/>`, 100);
  await settle();
  const got: string[][] = [[], []];
  const counts = await Promise.all([a.offline.drain('bob', taker(got[0])), b.offline.drain('bob', taker(got[1]))]);
  assert.is(counts[0] + counts[1], 10);
  assert.is(got[0].length + got[1].length, 10, 'each message delivered once');
  assert.ok(got[0].length === 0 || got[1].length === 0, 'one node delivered the whole queue');
  assert.equal([...got[0], ...got[1]], Array.from({ length: 10 }, (_, i) => `<m n="${i}"/>`), 'in order');
  await settle();
  assert.is(await a.offline.count('bob'), 0);
  assert.is(await b.offline.count('bob'), 0);
});

test('when the winning drain hands nothing over (its resource went), the other node delivers', async () => {
  const [a, b] = await three();
  await a.offline.push('bob', '<m n="0"/>', 100);
  await a.offline.push('bob', '<m n="1"/>', 100);
  await settle();
  const got: string[] = [];
  let offered = 0;
  const gone = (msgs: StoredMessage[]): string[] => {
    offered += msgs.length;
    return [];
  };
  const counts = await Promise.all([a.offline.drain('bob', gone), b.offline.drain('bob', taker(got))]);
  // Whoever won the claim: the messages reach B's resource, once.
  assert.equal(got, ['<m n="0"/>', '<m n="1"/>']);
  assert.is(counts[1], 2);
  assert.is(counts[0], 0);
  assert.ok(offered <= 2);
  await settle();
  assert.is(await a.offline.count('bob'), 0);
});

test('concurrent offline stores on A and B for one user are all kept, in time order', async () => {
  const [a, b, c] = await three();
  await Promise.all([a.offline.push('bob', '<from-a/>', 100), b.offline.push('bob', '<from-b/>', 100)]);
  await settle();
  const keys = (await c.offline.list('bob')).map((m) => m.key);
  assert.is(keys.length, 2, 'nothing overwritten');
  assert.ok(keys.every((k) => /^bob\/[0-9a-f]{16}\/[abc]$/.test(k)), keys.join(' '));
  assert.equal(new Set(keys.map((k) => k.split('/')[2])), new Set(['a', 'b']));
  for (const [n, xml] of [[a, '<a1/>'], [b, '<b1/>'], [a, '<a2/>'], [c, '<c1/>'], [b, '<b2/>']] as const) {
    await n.offline.push('bob', xml, 100);
    await sleep(3);
  }
  await settle();
  for (const n of [a, b, c]) {
    const xmls = (await n.offline.list('bob')).map((m) => m.xml);
    assert.equal(xmls.slice(2), ['<a1/>', '<b1/>', '<a2/>', '<c1/>', '<b2/>'], `time order on ${n.id}`);
  }
  const got: string[] = [];
  assert.is(await c.offline.drain('bob', taker(got)), 7);
});

test('a message another node stored is announced, so a resource already online here gets it', async () => {
  const [a, b] = await three();
  const seen: string[] = [];
  const off = b.offline.onRemoteMessage((user) => seen.push(user));
  await a.offline.push('bob', '<late/>', 100);
  await settle();
  assert.equal(seen, ['bob']);
  await b.offline.drain('bob', taker([]));
  await settle();
  assert.equal(seen, ['bob'], 'deliveries elsewhere are not announced');
  off();
});

test('a node that joins later gets the user data by anti-entropy; a restarted node keeps it', async () => {
  const [a, b] = await three();
  await a.ud.directory.create('alice', 'pw');
  await a.rosters.update('alice', (tx) => tx.put({ jid: 'bob@x', subscription: 'both', groups: [] }));
  await b.offline.push('alice', '<m/>', 10);
  await b.vcards.set('alice', '<vCard xmlns="vcard-temp"/>');
  await settle();
  const d = await node('d');
  await settle();
  assert.ok(await d.ud.directory.verifyPassword('alice', 'pw'));
  assert.equal((await d.rosters.get('alice')).items().map((i) => i.jid), ['bob@x']);
  assert.is(await d.offline.count('alice'), 1);
  assert.is(await d.vcards.get('alice'), '<vCard xmlns="vcard-temp"/>');
  assert.equal(d.ud.digest(), a.ud.digest(), 'same user data digest');

  const dir = d.dir;
  await shutdown(d, false);
  const d2 = await node('d', { dir });
  assert.ok(await d2.ud.directory.verifyPassword('alice', 'pw'), 'read back from its own LevelDB');
  assert.is(await d2.offline.count('alice'), 1);
});

test('data a node kept alone (plain keyspaces) joins the pool when it starts in one', async () => {
  const [a] = await three();
  const e = await node('e', {
    async before(store) {
      const alone = new EmbeddedDirectory(store, { iterations: 32 });
      await alone.create('old', 'pw');
      await new RosterStore(store).update('old', (tx) => tx.put({ jid: 'friend@x', subscription: 'both', groups: [] }));
      await new OfflineStore(store).push('old', '<kept/>', 10);
    },
  });
  await settle();
  assert.ok(await a.ud.directory.verifyPassword('old', 'pw'));
  assert.equal((await a.rosters.get('old')).items().map((i) => i.jid), ['friend@x']);
  assert.equal((await a.offline.list('old')).map((m) => m.xml), ['<kept/>']);
  assert.equal(await e.store.keyspace('accounts').keys(), [], 'moved out of the plain keyspace');
  assert.equal(await e.store.keyspace('roster').keys(), []);
});

test('a single node (no pool) keeps plain LevelDB keyspaces', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'imnode-ud-single-'));
  const store = await Store.open(dir);
  try {
    const ud = await createUserData({ store, log: quiet, iterations: 32 });
    assert.is(ud.kv.settleMs, 0);
    assert.is(ud.digest(), null);
    await ud.directory.create('solo', 'pw');
    assert.ok(await store.keyspace('accounts').get('solo'));
    assert.equal(await store.keyspace('rs.accounts').keys(), []);
    await ud.stop();
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test.after(() => {
  if (figures.length) console.log('\n' + figures.map((f) => '  ' + f).join('\n'));
});

test.run();
