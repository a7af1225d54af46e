// src/admin/cli/admin-access.ts, what `imnode user` and `imnode cache` share: user
// names (RFC 7622 §3.3 localparts or bare JIDs of our domain), the configured
// domain, no running node on a fresh data dir, and the data dir's database opened
// directly, with the LevelDB lock of another holder reported as the caller says.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configuredDomain, nodeFailure, openDataStore, runningNode, userName } from '../../src/admin/cli/admin-access.ts';
import { Failure, UsageError } from '../../src/admin/cli/errors.ts';
import { AdminRequestError, AdminUnavailableError } from '../../src/admin/admin-server.ts';
import { ConfigError, loadConfig } from '../../src/admin/options.ts';
import '../../src/admin/core-options.ts';
import '../../src/modules/index.ts';

const throwsAs = (fn: () => unknown, cls: new (...a: never[]) => Error, re: RegExp): void => {
  try {
    fn();
  } catch (e) {
    assert.instance(e, cls, String(e));
    assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable(`no ${cls.name}`);
};

test('userName: a localpart or a bare JID of the domain, prepared; full JIDs, other domains and bad localparts refused', () => {
  assert.is(userName('Alice', 'example.test'), 'alice');
  assert.is(userName('bob@EXAMPLE.test', 'example.test'), 'bob');
  throwsAs(() => userName('bob@example.test/r', 'example.test'), UsageError, /full JID/);
  throwsAs(() => userName('bob@other.test', 'example.test'), UsageError, /not in the domain example\.test/);
  throwsAs(() => userName('bo"b', 'example.test'), UsageError, /not a valid user name/);
});

test('configuredDomain: prepared; a bad --domain is a ConfigError naming the option', async () => {
  assert.is(configuredDomain((await loadConfig(['--domain', 'Example.TEST'], {})).config), 'example.test');
  const { config } = await loadConfig(['--domain', 'exa mple'], {});
  throwsAs(() => configuredDomain(config), ConfigError, /--domain: 'exa mple' is not a valid domain name/);
});

test('nodeFailure: admin errors become Failures with the node named, others pass through', () => {
  const refused = nodeFailure(new AdminRequestError(404, 'item-not-found', 'no such user'));
  assert.instance(refused, Failure);
  assert.is((refused as Error).message, 'the running node refused: no such user');
  const gone = nodeFailure(new AdminUnavailableError('/x/admin.sock', 'stale'));
  assert.instance(gone, Failure);
  assert.match((gone as Error).message, /^the running node stopped answering \(nothing answers on \/x\/admin\.sock/);
  const other = new TypeError('x');
  assert.is(nodeFailure(other), other);
});

test('a fresh data dir: no running node; the database opens; held by another, the caller\'s words', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'imnode-access-'));
  try {
    assert.is(await runningNode(dir), null);
    const store = await openDataStore(join(dir, 'data'), 'in use');
    try {
      await openDataStore(join(dir, 'data'), 'in use by something else; stop it first');
      assert.unreachable('opened a locked database');
    } catch (e) {
      assert.instance(e, Failure);
      assert.is((e as Error).message, `the data dir ${join(dir, 'data')} is in use by something else; stop it first`);
    } finally {
      await store.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test.run();
