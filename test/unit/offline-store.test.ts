import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../../src/store/db.ts';
import { OfflineStore } from '../../src/store/offline.ts';

let dir: string;
let store: Store;
let q: OfflineStore;

test.before.each(async () => {
  dir = await mkdtemp(join(tmpdir(), 'imnode-offline-'));
  store = await Store.open(dir);
  q = new OfflineStore(store);
});

test.after.each(async () => {
  await store.close();
  await rm(dir, { recursive: true, force: true });
});

test('push keeps arrival order beyond ten messages (keys sort numerically)', async () => {
  for (let i = 0; i < 25; i++) assert.ok(await q.push('bob', `<m n="${i}"/>`, 1000));
  const list = await q.list('bob');
  assert.is(list.length, 25);
  assert.equal(list.map((m) => m.xml), Array.from({ length: 25 }, (_, i) => `<m n="${i}"/>`));
  assert.is(await q.count('bob'), 25);
});

test('concurrent pushes for one user are all kept, none overwritten', async () => {
  const results = await Promise.all(Array.from({ length: 50 }, (_, i) => q.push('bob', `<m n="${i}"/>`, 1000)));
  assert.ok(results.every(Boolean));
  const list = await q.list('bob');
  assert.is(list.length, 50);
  assert.is(new Set(list.map((m) => m.key)).size, 50);
  assert.equal(list.map((m) => m.xml), Array.from({ length: 50 }, (_, i) => `<m n="${i}"/>`));
});

test('queues of users whose names share a prefix stay apart', async () => {
  await q.push('a', '<a/>', 10);
  await q.push('a!b', '<ab/>', 10);
  await q.push('ab', '<ab2/>', 10);
  assert.equal((await q.list('a')).map((m) => m.xml), ['<a/>']);
  assert.equal((await q.list('a!b')).map((m) => m.xml), ['<ab/>']);
  assert.is(await q.count('a'), 1);
});

test('the limit refuses the message beyond it', async () => {
  assert.ok(await q.push('bob', '<1/>', 2));
  assert.ok(await q.push('bob', '<2/>', 2));
  assert.not.ok(await q.push('bob', '<3/>', 2));
  assert.is(await q.count('bob'), 2);
});

test('drain deletes only what was handed over, and keeps order for the rest', async () => {
  for (let i = 0; i < 4; i++) await q.push('bob', `<m n="${i}"/>`, 10);
  const removed = await q.drain('bob', (msgs) => msgs.slice(0, 2).map((m) => m.key));
  assert.is(removed, 2);
  assert.equal((await q.list('bob')).map((m) => m.xml), ['<m n="2"/>', '<m n="3"/>']);
  assert.is(await q.count('bob'), 2);
  await q.push('bob', '<m n="4"/>', 10);
  assert.equal((await q.list('bob')).map((m) => m.xml), ['<m n="2"/>', '<m n="3"/>', '<m n="4"/>']);
  assert.is(await q.drain('bob', (msgs) => msgs.map((m) => m.key)), 3);
  assert.is(await q.count('bob'), 0);
  assert.equal(await q.list('bob'), []);
});

test('two concurrent drains hand each message out once', async () => {
  for (let i = 0; i < 5; i++) await q.push('bob', `<m n="${i}"/>`, 10);
  const got: string[][] = [[], []];
  await Promise.all([0, 1].map((i) => q.drain('bob', async (msgs) => {
    await new Promise((r) => setTimeout(r, 10));
    got[i].push(...msgs.map((m) => m.xml));
    return msgs.map((m) => m.key);
  })));
  assert.is(got[0].length + got[1].length, 5);
});

test('a failing delivery deletes nothing', async () => {
  await q.push('bob', '<m/>', 10);
  try {
    await q.drain('bob', () => { throw new Error('boom'); });
    assert.unreachable('drain should reject');
  } catch (e) {
    assert.is((e as Error).message, 'boom');
  }
  assert.is((await q.list('bob')).length, 1);
  // The lock is released after a failure.
  assert.ok(await q.push('bob', '<m2/>', 10));
});

test('the queue survives reopening the database', async () => {
  await q.push('bob', '<m n="0"/>', 10);
  await q.push('bob', '<m n="1"/>', 10);
  await store.close();
  store = await Store.open(dir);
  q = new OfflineStore(store);
  assert.equal((await q.list('bob')).map((m) => m.xml), ['<m n="0"/>', '<m n="1"/>']);
  await q.push('bob', '<m n="2"/>', 10);
  assert.equal((await q.list('bob')).map((m) => m.xml), ['<m n="0"/>', '<m n="1"/>', '<m n="2"/>']);
});

test('clear removes the queue', async () => {
  await q.push('bob', '<m/>', 10);
  await q.push('bob', '<m/>', 10);
  assert.is(await q.clear('bob'), 2);
  assert.is(await q.count('bob'), 0);
});

test.run();
