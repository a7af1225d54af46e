// The admin channel over its unix socket, with fake providers: the routes, the
// socket's mode and life cycle (stale file replaced, live one refused, removed on
// stop), and the client's error mapping.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { lstat, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AdminClient, AdminRequestError, AdminSocketInUseError, AdminUnavailableError, adminSocketPath, startAdminServer,
  type AdminServer, type AdminUsers,
} from '../../src/admin/admin-server.ts';
import type { Logger } from '../../src/admin/log.ts';
import { UnknownUserError, UserExistsError } from '../../src/store/directory.ts';

const logged: string[] = [];
function fakeLog(): Logger {
  const put = (level: string) => (...a: unknown[]) => { logged.push(`${level} ${a.map(String).join(' ')}`); };
  const l: Logger = { error: put('error'), warn: put('warn'), info: put('info'), debug: put('debug'), child: () => l };
  return l;
}

/** An in-memory account provider that records what it was asked. */
function fakeUsers(): AdminUsers & { accounts: Map<string, string> } {
  const accounts = new Map<string, string>();
  return {
    accounts,
    async add(name, password) {
      if (accounts.has(name)) throw new UserExistsError(name);
      accounts.set(name, password);
    },
    async passwd(name, password) {
      if (!accounts.has(name)) throw new UnknownUserError(name);
      accounts.set(name, password);
    },
    async del(name) {
      if (!accounts.delete(name)) throw new UnknownUserError(name);
    },
    async list() {
      return [...accounts.keys()];
    },
  };
}

let dir: string;
test.before.each(async () => {
  dir = await mkdtemp(join(tmpdir(), 'imnode-admin-'));
  logged.length = 0;
});
test.after.each(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** uvu 0.5 has no assert.rejects. */
async function rejects(fn: () => Promise<unknown>, check: RegExp | ((e: unknown) => boolean)): Promise<void> {
  try {
    await fn();
  } catch (e) {
    if (check instanceof RegExp) assert.match(String((e as Error).message), check);
    else assert.ok(check(e), `unexpected error: ${String(e)}`);
    return;
  }
  assert.unreachable('expected a rejection');
}

interface Reply { status: number; type: string | undefined; text: string; json: unknown }

/** A raw HTTP request over the socket, independent of AdminClient. */
function call(method: string, path: string, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: adminSocketPath(dir), method, path }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        let json: unknown;
        try { json = JSON.parse(text); } catch { /* not JSON */ }
        resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], text, json });
      });
    });
    req.on('error', reject);
    if (body !== undefined) req.setHeader('content-type', 'application/json');
    req.end(body);
  });
}

async function start(over: Partial<Parameters<typeof startAdminServer>[0]> = {}): Promise<AdminServer> {
  return startAdminServer({
    dataDir: dir, log: fakeLog(),
    status: () => ({ serverId: 'n1', domain: 'example.org', uptime: 12, sessions: 3, ports: { c2s: 5222 }, members: [] }),
    ...over,
  });
}

test('the socket: in the data dir, a socket, mode 0600; stop removes it', async () => {
  const admin = await start();
  assert.is(admin.path, join(dir, 'admin.sock'));
  const st = await lstat(admin.path);
  assert.ok(st.isSocket());
  assert.is(st.mode & 0o777, 0o600);
  await admin.stop();
  await rejects(() => lstat(admin.path), /ENOENT/);
  // stop twice is harmless
  await admin.stop();
});

test('GET /health and GET /status', async () => {
  let calls = 0;
  const admin = await start({
    status: async () => {
      calls++;
      return { serverId: 'n1', peerId: '12D3KooWfake', domain: 'example.org', uptime: 5, sessions: 2, ports: { c2s: 5222, pool: 7400 },
        members: [{ serverId: 'n1', peerId: '12D3KooWfake', addresses: ['/ip4/10.0.0.1/tcp/7400'], state: 'alive', sessions: 2, startedAt: 1, lastSeen: 2 }] };
    },
  });
  try {
    const h = await call('GET', '/health');
    assert.is(h.status, 200);
    assert.is(h.text, 'ok');
    const s = await call('GET', '/status');
    assert.is(s.status, 200);
    assert.match(s.type ?? '', /application\/json/);
    const body = s.json as { serverId: string; ports: Record<string, number>; members: { state: string }[] };
    assert.is(body.serverId, 'n1');
    assert.equal(body.ports, { c2s: 5222, pool: 7400 });
    assert.is(body.members[0].state, 'alive');
    assert.is(calls, 1, 'the provider is asked on each request');
    await call('GET', '/status');
    assert.is(calls, 2);
  } finally {
    await admin.stop();
  }
});

test('unknown paths 404, wrong methods 405, a failing provider 500 and the server carries on', async () => {
  let fail = true;
  const admin = await start({ status: () => { if (fail) throw new Error('boom'); return { domain: 'x' }; } });
  try {
    assert.is((await call('GET', '/nope')).status, 404);
    assert.is((await call('POST', '/health')).status, 405);
    assert.is((await call('DELETE', '/status')).status, 405);
    const r = await call('GET', '/status');
    assert.is(r.status, 500);
    assert.is((r.json as { code: string }).code, 'internal');
    assert.ok(logged.some((l) => l.startsWith('error') && l.includes('boom')), 'logged');
    fail = false;
    assert.is((await call('GET', '/status')).status, 200);
  } finally {
    await admin.stop();
  }
});

test('/users: create, list, exists, change password, delete, with errors as codes', async () => {
  const users = fakeUsers();
  const admin = await start({ users });
  try {
    const created = await call('POST', '/users', JSON.stringify({ name: 'Alice', password: 'pw one' }));
    assert.is(created.status, 201);
    assert.equal(created.json, { name: 'alice' }, 'the name is prepared (RFC 7622 localpart)');
    assert.is(users.accounts.get('alice'), 'pw one');
    const dup = await call('POST', '/users', JSON.stringify({ name: 'alice', password: 'x' }));
    assert.is(dup.status, 409);
    assert.is((dup.json as { code: string }).code, 'user-exists');
    await call('POST', '/users', JSON.stringify({ name: 'bob', password: 'x' }));
    assert.equal((await call('GET', '/users')).json, { users: ['alice', 'bob'] });
    assert.is((await call('GET', '/users/alice')).status, 200);
    assert.is((await call('GET', '/users/carol')).status, 404);

    assert.is((await call('PUT', '/users/alice/password', JSON.stringify({ password: 'pw two' }))).status, 204);
    assert.is(users.accounts.get('alice'), 'pw two');
    const unknown = await call('PUT', '/users/carol/password', JSON.stringify({ password: 'x' }));
    assert.is(unknown.status, 404);
    assert.is((unknown.json as { code: string }).code, 'unknown-user');

    assert.is((await call('DELETE', '/users/bob')).status, 204);
    assert.not.ok(users.accounts.has('bob'));
    assert.is((await call('DELETE', '/users/bob')).status, 404);

    assert.is((await call('POST', '/users', '{"name": ')).status, 400, 'bad JSON');
    assert.is((await call('POST', '/users', JSON.stringify({ name: 'a b', password: 'x' }))).status, 400, 'bad name');
    assert.is((await call('POST', '/users', JSON.stringify({ name: 'dan' }))).status, 400, 'no password');
    assert.is((await call('POST', '/users', 'x'.repeat(70_000))).status, 413);
    assert.not.ok(users.accounts.has('dan'));
    assert.not.ok(logged.some((l) => l.includes('pw one') || l.includes('pw two')), 'passwords never logged');
  } finally {
    await admin.stop();
  }
});

test('/users without an account provider: 501', async () => {
  const admin = await start();
  try {
    const r = await call('POST', '/users', JSON.stringify({ name: 'alice', password: 'x' }));
    assert.is(r.status, 501);
    assert.is((r.json as { code: string }).code, 'no-accounts');
  } finally {
    await admin.stop();
  }
});

test('AdminClient: the same operations, with the directory errors', async () => {
  const client = new AdminClient(dir);
  assert.is(await client.available(), false);
  try {
    await client.status();
    assert.unreachable();
  } catch (e) {
    assert.instance(e, AdminUnavailableError);
    assert.is((e as AdminUnavailableError).reason, 'no-socket');
  }
  const users = fakeUsers();
  const admin = await start({ users });
  try {
    assert.is(await client.available(), true);
    assert.is((await client.status()).serverId, 'n1');
    await client.addUser('alice', 'secret');
    await rejects(() => client.addUser('alice', 'again'), (e: unknown) => e instanceof UserExistsError);
    assert.ok(await client.userExists('alice'));
    assert.not.ok(await client.userExists('bob'));
    await client.setPassword('alice', 'new');
    assert.is(users.accounts.get('alice'), 'new');
    await rejects(() => client.setPassword('bob', 'x'), (e: unknown) => e instanceof UnknownUserError);
    assert.equal(await client.listUsers(), ['alice']);
    await client.deleteUser('alice');
    await rejects(() => client.deleteUser('alice'), (e: unknown) => e instanceof UnknownUserError);
    await rejects(() => client.request('GET', '/nope'), (e: unknown) => e instanceof AdminRequestError && e.status === 404);
  } finally {
    await admin.stop();
  }
  assert.is(await client.available(), false, 'nothing answers after stop');
});

/** A socket file left by a process killed with SIGKILL. */
async function staleSocket(path: string): Promise<void> {
  const child = spawn(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`listener exited ${code}`)));
  });
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await gone;
}

test('a stale socket from a killed process is replaced', async () => {
  const path = adminSocketPath(dir);
  await staleSocket(path);
  assert.ok((await lstat(path)).isSocket(), 'the killed process left its socket file');
  const client = new AdminClient(dir);
  try {
    await client.request('GET', '/health');
    assert.unreachable();
  } catch (e) {
    assert.instance(e, AdminUnavailableError);
    assert.is((e as AdminUnavailableError).reason, 'stale');
  }
  const admin = await start();
  try {
    assert.is((await call('GET', '/health')).status, 200);
    assert.is((await stat(path)).mode & 0o777, 0o600);
  } finally {
    await admin.stop();
  }
});

test('a live socket is not taken over; a file that is not a socket is left alone', async () => {
  const first = await start();
  try {
    await rejects(() => start(), (e: unknown) => e instanceof AdminSocketInUseError);
    assert.is((await call('GET', '/health')).status, 200, 'the first server still answers');
  } finally {
    await first.stop();
  }
  const path = adminSocketPath(dir);
  await writeFile(path, 'not a socket');
  await rejects(() => start(), /is not a socket/);
  assert.is(await readFile(path, 'utf8'), 'not a socket');
});

test('stop does not remove a socket that is not its own', async () => {
  const admin = await start();
  await rm(admin.path);
  await writeFile(admin.path, 'someone else');
  await admin.stop();
  assert.is(await readFile(admin.path, 'utf8'), 'someone else');
});

test('a data dir too deep for a unix socket path: a clear error', async () => {
  const deep = join(dir, 'x'.repeat(120));
  await rejects(() => startAdminServer({ dataDir: deep, log: fakeLog(), status: () => ({}) }), /longer than a unix socket allows/);
});

test.run();
