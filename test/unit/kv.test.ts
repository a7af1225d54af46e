// The KV interface (src/store/kv.ts): one shared suite run against every
// implementation (STYLE.md: every implementation of an interface passes the
// same suite): plain LevelDB keyspaces, and replicated keyspaces on a pool of
// one (src/store/replicated-kv.ts).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../../src/store/db.ts';
import { LevelKVProvider, kvProvider, type KV, type KVProvider } from '../../src/store/kv.ts';
import { ReplicatedKVProvider } from '../../src/store/replicated-kv.ts';
import { MemoryHub, MemoryPool } from '../../src/pool/memory-pool.ts';

interface Impl {
  name: string;
  /** Opens a provider over the database in dir (the same dir again after reopen). */
  open(dir: string): Promise<{ kv: KVProvider; close(): Promise<void> }>;
}

const NAMES = ['t', 'u'];

const impls: Impl[] = [
  {
    name: 'LevelKV',
    async open(dir) {
      const store = await Store.open(dir);
      return { kv: new LevelKVProvider(store), close: () => store.close() };
    },
  },
  {
    name: 'ReplicatedKV',
    async open(dir) {
      const store = await Store.open(dir);
      const pool = new MemoryPool(new MemoryHub(), 'n1');
      await pool.start();
      const kv = await ReplicatedKVProvider.open({ store, pool, names: NAMES, tuning: { digestIntervalMs: 0 } });
      await kv.start();
      return {
        kv,
        async close() {
          await kv.stop();
          await pool.stop();
          await store.close();
        },
      };
    },
  },
];

interface Ctx {
  dir: string;
  open: { kv: KVProvider; close(): Promise<void> };
  t: KV<unknown>;
}

async function collect<T>(it: AsyncIterable<[string, T]>): Promise<[string, T][]> {
  const out: [string, T][] = [];
  for await (const e of it) out.push(e);
  return out;
}

async function rejects(p: () => Promise<unknown>, type: new (...a: never[]) => Error): Promise<void> {
  try {
    await p();
  } catch (e) {
    assert.instance(e, type);
    return;
  }
  assert.unreachable('expected a rejection');
}

for (const impl of impls) {
  const s = suite<Ctx>(`KV: ${impl.name}`, {} as Ctx);

  s.before.each(async (ctx) => {
    ctx.dir = await mkdtemp(join(tmpdir(), 'imnode-kv-'));
    ctx.open = await impl.open(ctx.dir);
    ctx.t = ctx.open.kv.kv<unknown>('t');
  });

  s.after.each(async (ctx) => {
    await ctx.open.close();
    await rm(ctx.dir, { recursive: true, force: true });
  });

  s('get, put and del of JSON values', async ({ t }) => {
    assert.is(await t.get('a'), undefined);
    await t.put('a', { x: 1, list: ['y'] });
    await t.put('b', 'text');
    await t.put('c', true);
    await t.put('d', 0);
    assert.equal(await t.get('a'), { x: 1, list: ['y'] });
    assert.is(await t.get('b'), 'text');
    assert.is(await t.get('c'), true);
    assert.is(await t.get('d'), 0);
    await t.put('b', 'again');
    assert.is(await t.get('b'), 'again');
    await t.del('b');
    assert.is(await t.get('b'), undefined);
    await t.del('never-there');
    assert.is(await t.get('never-there'), undefined);
  });

  s('values are copies, and JSON: undefined fields are dropped', async ({ t }) => {
    const v: { x: number; gone?: number; list: number[] } = { x: 1, gone: undefined, list: [1] };
    await t.put('a', v);
    v.x = 2;
    v.list.push(2);
    const got = (await t.get('a')) as { x: number; list: number[] };
    assert.equal(got, { x: 1, list: [1] });
    assert.not.ok('gone' in got);
    got.list.push(3);
    assert.equal(await t.get('a'), { x: 1, list: [1] });
    const [[, fromScan]] = await collect(t.entries('a'));
    (fromScan as { x: number }).x = 9;
    assert.equal(await t.get('a'), { x: 1, list: [1] });
  });

  s('entries and keys by prefix, in key order, users sharing a prefix kept apart', async ({ t }) => {
    for (const k of ['bob/2', 'alice/i/z', 'alice/meta', 'al/x', 'alice/i/a', 'alicex/i/a', 'bob/10', 'zed']) await t.put(k, k.length);
    assert.equal(await t.keys('alice/'), ['alice/i/a', 'alice/i/z', 'alice/meta']);
    assert.equal(await t.keys('alice/i/'), ['alice/i/a', 'alice/i/z']);
    assert.equal(await collect(t.entries('alice/i/')), [['alice/i/a', 9], ['alice/i/z', 9]]);
    assert.equal(await t.keys('bob/'), ['bob/10', 'bob/2']);
    assert.equal(await t.keys('al'), ['al/x', 'alice/i/a', 'alice/i/z', 'alice/meta', 'alicex/i/a']);
    assert.equal(await t.keys(), ['al/x', 'alice/i/a', 'alice/i/z', 'alice/meta', 'alicex/i/a', 'bob/10', 'bob/2', 'zed']);
    assert.equal(await t.keys('nobody/'), []);
    await t.del('alice/i/z');
    assert.equal(await t.keys('alice/'), ['alice/i/a', 'alice/meta']);
  });

  s('clear removes what is under the prefix and says how many', async ({ t }) => {
    for (const k of ['a/1', 'a/2', 'ab/1', 'b']) await t.put(k, 1);
    assert.is(await t.clear('a/'), 2);
    assert.equal(await t.keys(), ['ab/1', 'b']);
    assert.is(await t.clear('a/'), 0);
    assert.is(await t.clear(), 2);
    assert.equal(await t.keys(), []);
  });

  s('batch puts and deletes several keys', async ({ t }) => {
    await t.put('u/old', 1);
    await t.batch([
      { type: 'put', key: 'u/1', value: { n: 1 } },
      { type: 'put', key: 'u/2', value: 'two' },
      { type: 'del', key: 'u/old' },
      { type: 'del', key: 'u/missing' },
    ]);
    assert.equal(await collect(t.entries('u/')), [['u/1', { n: 1 }], ['u/2', 'two']]);
    await t.batch([]);
    await t.batch([{ type: 'del', key: 'u/1' }, { type: 'put', key: 'u/1', value: 'last op wins' }]);
    assert.is(await t.get('u/1'), 'last op wins');
  });

  s('misuse: empty keys and undefined values are refused', async ({ t }) => {
    await rejects(() => t.put('', 1), TypeError);
    await rejects(() => t.put('a', undefined), TypeError);
    await rejects(() => t.batch([{ type: 'put', key: 'a', value: undefined }]), TypeError);
    await rejects(() => t.batch([{ type: 'del', key: '' }]), TypeError);
    await rejects(() => t.get(''), TypeError);
    assert.is(await t.get('a'), undefined);
  });

  s('onChange reports local writes until unsubscribed', async ({ t }) => {
    const seen: string[] = [];
    const off = t.onChange((key, origin) => seen.push(`${origin}:${key}`));
    await t.put('a/1', 1);
    await t.batch([{ type: 'put', key: 'a/2', value: 2 }, { type: 'del', key: 'a/1' }]);
    await t.del('a/2');
    await t.put('b/1', 1);
    await t.clear('b/');
    off();
    await t.put('a/3', 3);
    assert.equal(seen, ['local:a/1', 'local:a/2', 'local:a/1', 'local:a/2', 'local:b/1', 'local:b/1']);
  });

  s('keyspaces are separate, and one name gives one object', async ({ open }) => {
    const t = open.kv.kv<number>('t');
    const u = open.kv.kv<number>('u');
    assert.is(open.kv.kv('t'), t);
    await t.put('k', 1);
    await u.put('k', 2);
    assert.is(await t.get('k'), 1);
    assert.is(await u.get('k'), 2);
    assert.is(await u.clear(), 1);
    assert.is(await t.get('k'), 1);
  });

  s('the provider has a node id and a clock whose stamps only grow', ({ open }) => {
    assert.type(open.kv.node, 'string');
    assert.ok(open.kv.node.length > 0);
    assert.ok(open.kv.settleMs >= 0);
    let prev = open.kv.clock.nowString();
    for (let i = 0; i < 1000; i++) {
      const next = open.kv.clock.nowString();
      assert.ok(next > prev);
      prev = next;
    }
  });

  s('what was written survives reopening the database', async (ctx) => {
    await ctx.t.put('alice/1', { v: 1 });
    await ctx.t.batch([{ type: 'put', key: 'alice/2', value: 'x' }, { type: 'put', key: 'bob/1', value: true }]);
    await ctx.t.del('alice/1');
    await ctx.open.close();
    ctx.open = await impl.open(ctx.dir);
    ctx.t = ctx.open.kv.kv('t');
    assert.equal(await collect(ctx.t.entries()), [['alice/2', 'x'], ['bob/1', true]]);
    assert.equal(await ctx.t.keys('alice/'), ['alice/2']);
  });

  s.run();
}

const misc = suite('kvProvider');
misc('a Store gives one LevelKVProvider per Store; a provider is passed through', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'imnode-kv-'));
  const store = await Store.open(dir);
  try {
    const p = kvProvider(store);
    assert.instance(p, LevelKVProvider);
    assert.is(kvProvider(store), p);
    assert.is(kvProvider(p), p);
    assert.is(p.settleMs, 0);
    // Plain keyspaces are the Store's own: what a KV writes, the Store reads.
    await p.kv<number>('accounts').put('alice', 1);
    assert.is(await store.keyspace<number>('accounts').get('alice'), 1);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});
misc.run();
