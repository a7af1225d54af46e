import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../../src/store/db.ts';
import { EmbeddedDirectory, UnknownUserError, UserExistsError, type AccountRecord } from '../../src/store/directory.ts';

let dir: string;
let store: Store;
let users: EmbeddedDirectory;

test.before.each(async () => {
  dir = await mkdtemp(join(tmpdir(), 'imnode-directory-'));
  store = await Store.open(dir);
  users = new EmbeddedDirectory(store, { iterations: 32 });
});

test.after.each(async () => {
  await store.close();
  await rm(dir, { recursive: true, force: true });
});

async function rejectsWith(p: Promise<unknown>, cls: new (...a: never[]) => Error): Promise<void> {
  try {
    await p;
  } catch (err) {
    assert.instance(err, cls);
    return;
  }
  assert.unreachable(`expected ${cls.name}`);
}

test('kind', () => {
  assert.is(users.kind, 'embedded');
});

test('create, exists, verifyPassword, getCredentials', async () => {
  assert.not.ok(await users.exists('alice'));
  assert.is(await users.getCredentials('alice'), null);
  assert.not.ok(await users.verifyPassword('alice', 'wonderland'));
  await users.create('alice', 'wonderland');
  assert.ok(await users.exists('alice'));
  assert.not.ok(await users.exists('bob'));
  assert.ok(await users.verifyPassword('alice', 'wonderland'));
  assert.not.ok(await users.verifyPassword('alice', 'Wonderland'));
  assert.not.ok(await users.verifyPassword('bob', 'wonderland'));
  const creds = await users.getCredentials('alice');
  assert.ok(creds);
  assert.is(creds!['SHA-1'].iterations, 32);
  assert.is(creds!['SHA-256'].iterations, 32);
});

test('default iteration count is 4096', async () => {
  const d = new EmbeddedDirectory(store);
  await d.create('carol', 'pw');
  assert.is((await d.getCredentials('carol'))!['SHA-256'].iterations, 4096);
});

test('record layout: accounts keyspace, created timestamp', async () => {
  const before = Date.now();
  await users.create('alice', 'wonderland');
  const rec = await store.keyspace<AccountRecord>('accounts').get('alice');
  assert.ok(rec);
  assert.ok(rec!.created >= before && rec!.created <= Date.now());
  assert.equal(Object.keys(rec!.creds).sort(), ['SHA-1', 'SHA-256']);
});

test('the stored data contains no password', async () => {
  const password = 'a very recognisable password 12345';
  await users.create('alice', password);
  await users.setPassword('alice', password + ' changed');
  const needles = [password, Buffer.from(password).toString('base64'), Buffer.from(password).toString('hex')];
  for await (const [k, v] of store.db.iterator()) {
    const raw = k + JSON.stringify(v);
    for (const n of needles) assert.not.ok(raw.includes(n.slice(0, 20)), `found password in ${k}`);
  }
  const rec = await store.keyspace<AccountRecord>('accounts').get('alice');
  assert.not.ok(JSON.stringify(rec).includes('changed'));
});

test('duplicate create throws UserExistsError and keeps the first password', async () => {
  await users.create('alice', 'first');
  await rejectsWith(users.create('alice', 'second'), UserExistsError);
  assert.ok(await users.verifyPassword('alice', 'first'));
  assert.not.ok(await users.verifyPassword('alice', 'second'));
});

test('concurrent create of the same name: exactly one wins', async () => {
  const passwords = ['p0', 'p1', 'p2', 'p3', 'p4', 'p5'];
  const results = await Promise.allSettled(passwords.map((p) => users.create('alice', p)));
  const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
  assert.is(won.length, 1);
  for (const r of results) {
    if (r.status === 'rejected') assert.instance(r.reason, UserExistsError);
  }
  // The stored account is the winner's, not a mix or a later overwrite.
  for (const [i, p] of passwords.entries()) assert.is(await users.verifyPassword('alice', p), i === won[0], p);
});

test('concurrent create of different names all succeed', async () => {
  await Promise.all(['a', 'b', 'c', 'd'].map((u) => users.create(u, 'pw')));
  assert.equal(await users.list(), ['a', 'b', 'c', 'd']);
});

test('setPassword', async () => {
  await rejectsWith(users.setPassword('alice', 'x'), UnknownUserError);
  assert.not.ok(await users.exists('alice'), 'setPassword does not create');
  await users.create('alice', 'old');
  const created = (await store.keyspace<AccountRecord>('accounts').get('alice'))!.created;
  await users.setPassword('alice', 'new');
  assert.ok(await users.verifyPassword('alice', 'new'));
  assert.not.ok(await users.verifyPassword('alice', 'old'));
  assert.is((await store.keyspace<AccountRecord>('accounts').get('alice'))!.created, created);
});

test('delete', async () => {
  await rejectsWith(users.delete('alice'), UnknownUserError);
  await users.create('alice', 'pw');
  await users.delete('alice');
  assert.not.ok(await users.exists('alice'));
  assert.not.ok(await users.verifyPassword('alice', 'pw'));
  await rejectsWith(users.delete('alice'), UnknownUserError);
  // The name is free again.
  await users.create('alice', 'pw2');
  assert.ok(await users.verifyPassword('alice', 'pw2'));
});

test('list returns the usernames in order and only accounts', async () => {
  assert.equal(await users.list(), []);
  await store.keyspace('other').put('zed', { x: 1 });
  await users.create('bob', 'pw');
  await users.create('alice', 'pw');
  await users.create('al!ce', 'pw');
  assert.equal(await users.list(), ['al!ce', 'alice', 'bob']);
  await users.delete('bob');
  assert.equal(await users.list(), ['al!ce', 'alice']);
});

test('a password that OpaqueString refuses is rejected and nothing is stored', async () => {
  let threw = false;
  try {
    await users.create('alice', 'bad\u0007password');
  } catch {
    threw = true;
  }
  assert.ok(threw);
  assert.not.ok(await users.exists('alice'));
});

test('survives a reopen', async () => {
  await users.create('alice', 'wonderland');
  await store.close();
  store = await Store.open(dir);
  users = new EmbeddedDirectory(store, { iterations: 32 });
  assert.ok(await users.verifyPassword('alice', 'wonderland'));
});

test('a failed mutation does not block the next one on that name', async () => {
  await rejectsWith(users.delete('alice'), UnknownUserError);
  await users.create('alice', 'pw');
  await rejectsWith(users.create('alice', 'pw'), UserExistsError);
  await users.setPassword('alice', 'pw2');
  assert.ok(await users.verifyPassword('alice', 'pw2'));
});

test.run();
