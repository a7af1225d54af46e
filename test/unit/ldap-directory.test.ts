// LdapDirectory in this process against a real slapd (test/helpers/slapd.ts):
// the UserDirectory contract as a read-only directory, the cache rules (TTL,
// negative entries, stale entries while the server is down) with a clock the
// test moves, shared lookups, the bounded connection pool, groups.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ReadOnlyDirectoryError } from '../../src/store/directory.ts';
import { LdapUnavailableError, type LdapDirectory } from '../../src/store/ldap/directory.ts';
import type { LdapConfig } from '../../src/store/ldap/options.ts';
import { freePort, PEOPLE_DN, SERVICE_DN, SERVICE_PASSWORD, type Slapd } from '../helpers/slapd.ts';
import { LdapUnit } from '../helpers/ldap-unit.ts';

const MANY = Array.from({ length: 30 }, (_, i) => `user${i}`);
let unit: LdapUnit;
let slapd: Slapd;
let clock = Date.now();
const now = (): number => clock;

test.before(async () => {
  unit = await LdapUnit.start({
    users: [
      { uid: 'alice', password: 'alice-pw', cn: 'Alice', mail: 'alice@example.test' },
      { uid: 'bob', password: 'bob-pw' },
      ...MANY.map((uid) => ({ uid, password: `${uid}-pw` })),
    ],
    groups: [{ cn: 'staff', members: ['alice', 'bob'] }, { cn: 'admins', members: ['alice'] }],
  }, 'imnode-ldap-unit-');
  slapd = unit.slapd;
});

test.after(async () => {
  await unit?.cleanup();
});

function config(...args: string[]): Promise<LdapConfig> {
  return unit.config([...slapd.imnodeArgs(), '--ldap-timeout', '1s', '--ldap-retry-max', '200ms', ...args]);
}

async function directory(...args: string[]): Promise<LdapDirectory> {
  const d = unit.open(await config(...args), now);
  await d.flushCache();
  return d;
}

test('a read-only UserDirectory: exists, verifyPassword, getCredentials, list; writes refused', async () => {
  const d = await directory();
  assert.is(d.kind, 'ldap');
  assert.is(d.scram, false);
  assert.is(d.writable, false);
  assert.ok(await d.exists('alice'));
  assert.not.ok(await d.exists('nobody'));
  assert.ok(await d.verifyPassword('alice', 'alice-pw'));
  assert.not.ok(await d.verifyPassword('alice', 'bob-pw'));
  assert.not.ok(await d.verifyPassword('alice', ''), 'an empty password is never an (unauthenticated) bind');
  assert.not.ok(await d.verifyPassword('nobody', 'x'));
  assert.is(await d.getCredentials('alice'), null);
  assert.equal(await d.list(), ['alice', 'bob', ...MANY].sort());
  for (const p of [d.create('zoe', 'pw'), d.setPassword('alice', 'pw'), d.delete('alice')]) {
    try {
      await p;
      assert.unreachable('a write succeeded');
    } catch (e) {
      assert.instance(e, ReadOnlyDirectoryError);
    }
  }
  assert.equal(await d.profile('alice'), { name: 'Alice', email: 'alice@example.test' });
  assert.is(await d.profile('nobody'), null);
});

test('service account: password from --ldap-bind-password-file; a wrong one makes the directory unusable, and says why', async () => {
  const file = join(unit.dir, 'service.pw');
  await writeFile(file, `${SERVICE_PASSWORD}\nignored second line\n`);
  const base = ['--ldap-url', slapd.url, '--ldap-base-dn', PEOPLE_DN, '--ldap-bind-dn', SERVICE_DN, '--ldap-timeout', '1s'];
  const d = await unit.directory([...base, '--ldap-bind-password-file', file], now);
  assert.ok(await d.exists('bob'));
  const w = await unit.directory([...base, '--ldap-bind-password', 'not-the-password'], now);
  try {
    await w.exists('bob');
    assert.unreachable('searched with a wrong service password');
  } catch (e) {
    assert.instance(e, LdapUnavailableError);
    assert.match((e as Error).message, /InvalidCredentials/);
  }
});

test('cache: fresh entries need no search; after the TTL one search; negative entries have their own TTL', async () => {
  const d = await directory('--ldap-cache-ttl', '60s', '--ldap-negative-cache-ttl', '5s');
  const searches = () => d.stats().searches;
  await d.exists('alice');
  await d.exists('nobody');
  const s0 = searches();
  await d.exists('alice');
  await d.exists('nobody');
  assert.is(searches(), s0, 'both answered from the cache');
  clock += 6000;
  await d.exists('alice');
  assert.is(searches(), s0, 'alice still fresh after 6 s');
  assert.not.ok(await d.exists('nobody'));
  assert.is(searches(), s0 + 1, 'the negative entry expired after 5 s');
  clock += 60_000;
  await d.exists('alice');
  assert.is(searches(), s0 + 2, 'alice expired after 60 s');
});

test('sweep: expired "no such user" entries are deleted, users kept', async () => {
  const d = await directory('--ldap-negative-cache-ttl', '5s');
  for (let i = 0; i < 20; i++) assert.not.ok(await d.exists(`ghost${i}`));
  assert.ok(await d.exists('alice'));
  assert.is(await d.sweep(), 0, 'nothing expired yet');
  clock += 6000;
  assert.is(await d.sweep(), 20);
  assert.equal(await d.cache.count(), { users: 1, verifiers: 0 });
});

test('concurrent lookups of one user share one search', async () => {
  const d = await directory();
  const s0 = d.stats().searches;
  const r = await Promise.all(Array.from({ length: 20 }, () => d.exists('bob')));
  assert.ok(r.every(Boolean));
  assert.is(d.stats().searches - s0, 1);
});

test('bounded pool: one connection serves 30 concurrent logins of different users', async () => {
  const d = await directory('--ldap-pool-size', '1', '--ldap-timeout', '5s');
  const r = await Promise.all(MANY.map((u) => d.verifyPassword(u, `${u}-pw`)));
  assert.ok(r.every(Boolean), JSON.stringify(r));
  assert.is(d.stats().binds, MANY.length);
  assert.ok(d.stats().connections <= 2, `one search and one bind connection at most: ${d.stats().connections}`);
});

test('groups (--ldap-shared-roster looks them up with the user)', async () => {
  const d = await directory('--ldap-shared-roster');
  assert.equal(await d.groups('alice'), ['admins', 'staff']);
  assert.equal(await d.groups('bob'), ['staff']);
  assert.equal(await d.groups('nobody'), []);
  assert.equal(await d.sharedGroups('alice'), [{ name: 'admins', members: ['alice'] }, { name: 'staff', members: ['alice', 'bob'] }]);
});

test('start with the directory unreachable: start() returns, lookups fail at once, no hang', async () => {
  const c = await config('--ldap-connect-timeout', '500ms');
  const port = await freePort();
  const d = unit.open({ ...c, url: `ldap://127.0.0.1:${port}` }, now);
  const t0 = Date.now();
  await d.start();
  try {
    await d.exists('someone-new');
    assert.unreachable('a lookup worked with no server');
  } catch (e) {
    assert.instance(e, LdapUnavailableError);
  }
  assert.ok(Date.now() - t0 < 1500, `took ${Date.now() - t0} ms`);
  assert.is(d.stats().up, false);
});

test('directory down: stale entries still answer, unknown users and binds fail with LdapUnavailableError, quickly', async () => {
  const d = await directory('--ldap-cache-ttl', '1s');
  assert.ok(await d.exists('alice'));
  clock += 5000;
  await slapd.stop();
  try {
    assert.ok(await d.exists('alice'), 'the expired entry is used while the directory is down');
    assert.ok(d.stats().staleHits >= 1);
    for (const p of [d.exists('user7'), d.verifyPassword('alice', 'alice-pw')]) {
      const t0 = Date.now();
      try {
        await p;
        assert.unreachable('expected LdapUnavailableError');
      } catch (e) {
        assert.instance(e, LdapUnavailableError);
      }
      assert.ok(Date.now() - t0 < 1000, 'failed within the timeout');
    }
  } finally {
    await slapd.start();
  }
  const t0 = Date.now();
  while (!(await d.verifyPassword('alice', 'alice-pw').catch(() => false))) {
    if (Date.now() - t0 > 10_000) assert.unreachable('not reconnected within 10 s');
    await new Promise((r) => setTimeout(r, 100));
  }
});

test.run();
