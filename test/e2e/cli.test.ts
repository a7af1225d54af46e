// The imnode command as an operator runs it: a real process, a real data dir.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import '../../src/admin/core-options.ts';
import { allOptions } from '../../src/admin/options.ts';
import { startAdminServer } from '../../src/admin/admin-server.ts';
import { startServer, trustServerCert } from '../helpers/imnode.ts';
import { connect, connectFails } from '../helpers/xmppjs.ts';
import type { Logger } from '../../src/admin/log.ts';
import { Store } from '../../src/store/db.ts';
import { EmbeddedDirectory } from '../../src/store/directory.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const NODE = join(root, 'node_modules/.bin/node');
const BIN = join(root, 'bin/imnode');

let dir: string;
let dataDir: string;
test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'imnode-cli-'));
  dataDir = join(dir, 'data');
});
test.after(async () => { await rm(dir, { recursive: true, force: true }); });

// IMNODE_* variables of the surrounding shell must not leak into the runs.
const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('IMNODE_')));

function imnode(args: string[], input?: string): SpawnSyncReturns<string> {
  return spawnSync(NODE, [BIN, ...args], { encoding: 'utf8', input: input ?? '', env: cleanEnv, cwd: dir, timeout: 30_000 });
}

function user(...args: string[]): SpawnSyncReturns<string> {
  return imnode(['user', ...args, '--data-dir', dataDir]);
}

function lines(s: string): string[] {
  return s.split('\n').filter(Boolean);
}

async function checkPassword(name: string, password: string): Promise<boolean> {
  const store = await Store.open(join(dataDir, 'db'));
  try {
    return await new EmbeddedDirectory(store).verifyPassword(name, password);
  } finally {
    await store.close();
  }
}

test('an unknown flag: exit 2 and one line on stderr', () => {
  const r = imnode(['--port-typo', '5222']);
  assert.is(r.status, 2);
  assert.is(lines(r.stderr).length, 1, r.stderr);
  assert.match(r.stderr, /--port-typo: unknown option/);
  assert.is(r.stdout, '');
});

test('an out-of-range port: exit 2', () => {
  const r = imnode(['--c2s-port', '70000']);
  assert.is(r.status, 2);
  assert.equal(lines(r.stderr), ['imnode: --c2s-port: 70000 is not a port (0-65535)']);
});

test('--version prints the package version', async () => {
  const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { version: string };
  const r = imnode(['--version']);
  assert.is(r.status, 0);
  assert.is(r.stdout, `imnode ${pkg.version}\n`);
});

test('the sh launcher runs the same program', () => {
  const r = spawnSync(BIN, ['--version'], { encoding: 'utf8', env: cleanEnv });
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /^imnode \d+\.\d+\.\d+\n$/);
});

test('--help lists every option', () => {
  const r = imnode(['--help']);
  assert.is(r.status, 0);
  assert.match(r.stdout, /imnode user add <name>/);
  for (const spec of allOptions()) assert.ok(r.stdout.includes(`--${spec.name}`), `--help lists --${spec.name}`);
});

test('unknown commands: exit 2', () => {
  assert.is(imnode(['frobnicate']).status, 2);
  assert.is(user('frob').status, 2);
  assert.is(user('add').status, 2);
  assert.is(user('list', 'extra').status, 2);
});

test('user add with --password-file, then user list', async () => {
  const pw = join(dir, 'pw');
  await writeFile(pw, 'correct horse\nsecond line ignored\n');
  const r = user('add', 'alice', '--password-file', pw);
  assert.is(r.status, 0, r.stderr);
  assert.not.match(r.stderr + r.stdout, /correct horse/);
  const list = user('list');
  assert.is(list.status, 0, list.stderr);
  assert.equal(lines(list.stdout), ['alice']);
  assert.ok(await checkPassword('alice', 'correct horse'));
});

test('adding an existing user: exit 1', () => {
  const r = user('add', 'alice@imnode.local', '--password-file', join(dir, 'pw'));
  assert.is(r.status, 1);
  assert.match(r.stderr, /already exists/);
});

test('with an LDAP directory, user add/passwd/del are refused: the accounts live there', async () => {
  for (const action of ['add', 'passwd', 'del']) {
    const r = user(action, 'carol', '--password-file', join(dir, 'pw'), '--ldap-url', 'ldap://127.0.0.1:1', '--ldap-base-dn', 'dc=example,dc=org');
    assert.is(r.status, 1, `user ${action}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`user ${action}: the accounts are in the LDAP directory`));
  }
  // Nothing was created in the embedded directory.
  const store = await Store.open(join(dataDir, 'db'));
  try {
    assert.is(await new EmbeddedDirectory(store).exists('carol'), false);
  } finally {
    await store.close();
  }
});

test('password from a stdin pipe; names are prepared', async () => {
  const r = imnode(['user', 'add', 'Bob@imnode.local', '--data-dir', dataDir], 'pipe secret\n');
  assert.is(r.status, 0, r.stderr);
  assert.equal(lines(user('list').stdout), ['alice', 'bob']);
  assert.ok(await checkPassword('bob', 'pipe secret'));
  assert.not.ok(await checkPassword('bob', 'pipe secret\n'));
});

test('bad names and empty passwords: exit 2', () => {
  assert.is(user('add', 'carol@elsewhere.example').status, 2);
  assert.is(user('add', 'carol@imnode.local/phone').status, 2);
  assert.is(user('add', 'not valid').status, 2);
  const r = imnode(['user', 'add', 'carol', '--data-dir', dataDir], '\n');
  assert.is(r.status, 2);
  assert.match(r.stderr, /no password/);
  assert.is(imnode(['user', 'add', 'carol', '--data-dir', dataDir, '--password-file', join(dir, 'missing')]).status, 2);
  assert.equal(lines(user('list').stdout), ['alice', 'bob']);
});

test('user passwd', async () => {
  const r = imnode(['user', 'passwd', 'alice', '--data-dir', dataDir], 'battery staple\n');
  assert.is(r.status, 0, r.stderr);
  assert.ok(await checkPassword('alice', 'battery staple'));
  assert.not.ok(await checkPassword('alice', 'correct horse'));
  const unknown = imnode(['user', 'passwd', 'nobody', '--data-dir', dataDir], 'x\n');
  assert.is(unknown.status, 1);
  assert.match(unknown.stderr, /no such user/);
});

test('user del', () => {
  assert.is(user('del', 'alice').status, 0);
  assert.equal(lines(user('list').stdout), ['bob']);
  const again = user('del', 'alice');
  assert.is(again.status, 1);
  assert.match(again.stderr, /no such user/);
});

test('the data dir comes from the environment too', () => {
  const r = spawnSync(NODE, [BIN, 'user', 'list'], { encoding: 'utf8', env: { ...cleanEnv, IMNODE_DATA_DIR: dataDir }, cwd: dir });
  assert.is(r.status, 0, r.stderr);
  assert.equal(lines(r.stdout), ['bob']);
});

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

test('the server starts, and stops cleanly on SIGTERM', async () => {
  const port = await freePort();
  const child = spawn(NODE, [BIN, '--data-dir', join(dir, 'server'), '--bind', '127.0.0.1', '--c2s-port', String(port), '--c2s-tls-port', '0'],
    { env: cleanEnv, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no 'ready' line:\n${stderr}`)), 20_000);
    child.stderr.on('data', (d: string) => {
      stderr += d;
      if (/ready/.test(stderr)) { clearTimeout(timer); resolve(); }
    });
    void exited.then((code) => { clearTimeout(timer); reject(new Error(`exited ${code}:\n${stderr}`)); });
  });
  for (const line of lines(stderr)) assert.match(line, /^\d{4}-\d\d-\d\dT[\d:.]+Z (ERROR|WARN |INFO |DEBUG) imnode(:[\w:-]+)? /);
  child.kill('SIGTERM');
  assert.is(await exited, 0, stderr);
  assert.match(stderr, /SIGTERM/);
});

test('user import: many accounts from a file or stdin, all or nothing', async () => {
  const importDir = join(dir, 'import');
  const run = (args: string[], input?: string) => imnode(['user', ...args, '--data-dir', importDir], input);
  const file = join(dir, 'accounts.txt');
  await writeFile(file, '# bench users\r\nann:first pass\r\n\nBen  two:parts \n#ghost:x\ncid@imnode.local:x\n');
  const ok = run(['import', file]);
  assert.is(ok.status, 0, ok.stderr);
  assert.match(ok.stderr, /imported 3 accounts/);
  assert.equal(lines(run(['list']).stdout), ['ann', 'ben', 'cid']);
  const store = await Store.open(join(importDir, 'db'));
  try {
    const d = new EmbeddedDirectory(store);
    assert.ok(await d.verifyPassword('ann', 'first pass'), 'CR stripped, spaces kept');
    assert.ok(await d.verifyPassword('ben', 'two:parts '), 'a space separates too; the password keeps its colon');
    assert.ok(await d.verifyPassword('cid', 'x'));
  } finally {
    await store.close();
  }

  // A duplicate line: the message names both lines, and nothing of the file is created.
  const dup = run(['import', '-'], 'dan:pw\neve:pw\ndan:other\n');
  assert.is(dup.status, 1);
  assert.match(dup.stderr, /line 3: duplicate user dan@imnode\.local \(already on line 1\)/);
  const bad = run(['import', '-'], 'dan:pw\nno-password\n');
  assert.is(bad.status, 1);
  assert.match(bad.stderr, /line 2: expected "name:password"/);
  const exists = run(['import'], 'dan:pw\n# comment\nben:again\n');
  assert.is(exists.status, 1);
  assert.match(exists.stderr, /line 3: user ben@imnode\.local already exists/);
  assert.equal(lines(run(['list']).stdout), ['ann', 'ben', 'cid']);

  const piped = run(['import'], 'dan:pw\neve pw\n');
  assert.is(piped.status, 0, piped.stderr);
  assert.match(piped.stderr, /imported 2 accounts/);
  assert.equal(lines(run(['list']).stdout), ['ann', 'ben', 'cid', 'dan', 'eve']);
});

test('bad pool values: exit 2 and one line naming the option, before anything starts', () => {
  const cases: [string[], RegExp][] = [
    [['--peer', '10.0.0.2:7400'], /^imnode: --peer 10\.0\.0\.2:7400: not a multiaddr/],
    [['--pool-listen', '/ip4/10.0.0.1'], /^imnode: --pool-listen \/ip4\/10\.0\.0\.1: needs a TCP port/],
    [['--server-id', 'node one'], /^imnode: --server-id: 'node one' is not valid/],
    [['--pool-password', 'x', '--pool-password-file', join(dir, 'pw')], /^imnode: --pool-password and --pool-password-file: give one of them, not both\n$/],
  ];
  for (const [args, re] of cases) {
    const r = imnode([...args, '--data-dir', join(dir, 'never')]);
    assert.is(r.status, 2, args.join(' '));
    assert.is(lines(r.stderr).length, 1, r.stderr);
    assert.match(r.stderr, re);
  }
  assert.not.ok(existsSync(join(dir, 'never')), 'nothing was created');
});

test('coserver add, list, delete: the peer list of the data dir\'s config file', async () => {
  const cdir = join(dir, 'cos');
  const cos = (...args: string[]) => imnode(['coserver', ...args, '--data-dir', cdir]);
  const file = join(cdir, 'imnode.json');
  assert.equal(lines(cos('list').stdout), [], 'no file: an empty list');
  const add = cos('add', '/ip4/10.0.0.6/tcp/7400');
  assert.is(add.status, 0, add.stderr);
  assert.match(add.stderr, /added \/ip4\/10\.0\.0\.6\/tcp\/7400 to .*imnode\.json/);
  assert.is(cos('add', '/dns4/n3.example.org/tcp/7400/').status, 0);
  assert.equal(lines(cos('list').stdout), ['/ip4/10.0.0.6/tcp/7400', '/dns4/n3.example.org/tcp/7400'], 'kept in canonical form');
  assert.equal(JSON.parse(cos('list', '--json').stdout), ['/ip4/10.0.0.6/tcp/7400', '/dns4/n3.example.org/tcp/7400']);
  assert.is(await readFile(file, 'utf8'), '{\n  "peer": [\n    "/ip4/10.0.0.6/tcp/7400",\n    "/dns4/n3.example.org/tcp/7400"\n  ]\n}\n');
  assert.is((await stat(file)).mode & 0o777, 0o600, 'a new config file is private: it may hold the pool password');

  const dup = cos('add', '/ip4/10.0.0.6/tcp/7400/');
  assert.is(dup.status, 1);
  assert.match(dup.stderr, /already in the coserver list/);
  const bad = cos('add', '/ip4/10.0.0.300/tcp/7400');
  assert.is(bad.status, 2);
  assert.is(lines(bad.stderr).length, 1);
  assert.match(bad.stderr, /^imnode: coserver add \/ip4\/10\.0\.0\.300\/tcp\/7400: not a multiaddr/);
  assert.is(cos('add', 'n3.example.org:7400').status, 2);
  assert.is(cos('add').status, 2);
  assert.is(cos('frob').status, 2);

  const del = cos('delete', '/ip4/10.0.0.6/tcp/7400');
  assert.is(del.status, 0, del.stderr);
  assert.equal(lines(cos('list').stdout), ['/dns4/n3.example.org/tcp/7400']);
  const missing = cos('delete', '/ip4/10.0.0.6/tcp/7400');
  assert.is(missing.status, 1);
  assert.match(missing.stderr, /not in the coserver list/);
  assert.is(cos('delete', '/dns4/n3.example.org/tcp/7400').status, 0);
  assert.equal(JSON.parse(await readFile(file, 'utf8')), {}, 'the key goes with its last entry');
});

test('coserver with --config: other keys and the file mode are kept', async () => {
  const conf = join(dir, 'node.json');
  await writeFile(conf, JSON.stringify({ domain: 'example.org', 'c2s-port': 5299, peer: '/ip4/10.0.0.2/tcp/7400' }), { mode: 0o640 });
  const r = imnode(['coserver', 'add', '/ip4/10.0.0.3/tcp/7400', '--config', conf]);
  assert.is(r.status, 0, r.stderr);
  assert.equal(JSON.parse(await readFile(conf, 'utf8')), { domain: 'example.org', 'c2s-port': 5299, peer: ['/ip4/10.0.0.2/tcp/7400', '/ip4/10.0.0.3/tcp/7400'] });
  assert.is((await stat(conf)).mode & 0o777, 0o640);
  assert.equal(lines(imnode(['coserver', 'list', '--config', conf]).stdout), ['/ip4/10.0.0.2/tcp/7400', '/ip4/10.0.0.3/tcp/7400']);
});

test('the node reads the data dir\'s config file at start, and checks its peers', async () => {
  const ndir = join(dir, 'reads');
  assert.is(imnode(['coserver', 'add', '/ip4/10.0.0.6/tcp/7400', '--data-dir', ndir]).status, 0);
  // A hand-edited entry that is not an address: the coserver list can still drop it,
  // and the server refuses to start with it.
  const file = join(ndir, 'imnode.json');
  await writeFile(file, JSON.stringify({ peer: ['/ip4/10.0.0.6/tcp/7400', 'garbage'] }));
  const r = imnode(['--data-dir', ndir, '--c2s-port', '0', '--c2s-tls-port', '0']);
  assert.is(r.status, 2, r.stderr);
  assert.equal(lines(r.stderr), ['imnode: --peer garbage: not a multiaddr (String multiaddr must start with "/"); e.g. /ip4/10.0.0.6/tcp/7400']);
  assert.is(imnode(['coserver', 'delete', 'garbage', '--data-dir', ndir]).status, 0);
  assert.equal(lines(imnode(['coserver', 'list', '--data-dir', ndir]).stdout), ['/ip4/10.0.0.6/tcp/7400']);
  // Other options come from the file too (flags still win).
  await writeFile(file, JSON.stringify({ domain: 'from-file.example' }));
  const add = imnode(['user', 'add', 'zed@from-file.example', '--data-dir', ndir], 'pw\n');
  assert.is(add.status, 0, add.stderr);
  assert.match(add.stderr, /created zed@from-file\.example/);
});

test('pool status with no node running: exit 1 and one clear line', () => {
  const r = imnode(['pool', 'status', '--data-dir', join(dir, 'nobody')]);
  assert.is(r.status, 1);
  assert.equal(lines(r.stderr), [`imnode: no imnode is running with the data dir ${join(dir, 'nobody')} (no admin socket at ${join(dir, 'nobody', 'admin.sock')})`]);
  assert.is(r.stdout, '');
  assert.is(imnode(['pool']).status, 2);
  assert.is(imnode(['pool', 'status', 'extra']).status, 2);
});

/** Like imnode(), without blocking this process (which may be serving the admin socket). */
function imnodeAsync(args: string[], input = ''): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(NODE, [BIN, ...args], { env: cleanEnv, cwd: dir, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.on('error', reject);
    p.on('close', (status) => resolve({ status, stdout, stderr }));
    p.stdin.end(input);
  });
}

const silent: Logger = { error() {}, warn() {}, info() {}, debug() {}, child: () => silent };

test('pool status: the members the node reports, as a table or JSON', async () => {
  const pdir = join(dir, 'status');
  const now = Date.now();
  const status = {
    serverId: 'n1', peerId: '12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf', domain: 'example.org', uptime: 7500, sessions: 4, ports: { c2s: 5222 },
    members: [
      { serverId: 'n1', peerId: '12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf', addresses: ['/ip4/10.0.0.5/tcp/7400'], state: 'alive', sessions: 4, startedAt: now - 7_500_000, lastSeen: now },
      { serverId: 'n2', peerId: '12D3KooWSq3yBFPGf3xF5P3dSuQ4fQ1Zp9HRaN1Dx7Ytmp5v9zVb', addresses: ['/ip4/10.0.0.6/tcp/7400', '/ip6/fd00::6/tcp/7400'], state: 'failed', sessions: 0, startedAt: now - 97_000_000, lastSeen: now },
    ],
  };
  await mkdir(pdir, { recursive: true });
  const admin = await startAdminServer({ dataDir: pdir, log: silent, status: () => status });
  try {
    const r = await imnodeAsync(['pool', 'status', '--data-dir', pdir]);
    assert.is(r.status, 0, r.stderr);
    const out = lines(r.stdout);
    assert.is(out[0], 'domain example.org, this node n1, up 2h 05m, 4 sessions');
    assert.match(out[1], /^SERVER ID +PEER ID +ADDRESSES +STATE +SESSIONS +UPTIME$/);
    assert.match(out[2], /^n1 \* +12D3KooWGzxz\S+ +\/ip4\/10\.0\.0\.5\/tcp\/7400 +alive +4 +2h 0[45]m$/);
    assert.match(out[3], /^n2 +12D3KooWSq3y\S+ +\/ip4\/10\.0\.0\.6\/tcp\/7400,\/ip6\/fd00::6\/tcp\/7400 +failed +0 +-$/);
    assert.is(out.length, 4);
    const json = await imnodeAsync(['pool', 'status', '--json', '--data-dir', pdir]);
    assert.is(json.status, 0, json.stderr);
    assert.equal(JSON.parse(json.stdout), status);
  } finally {
    await admin.stop();
  }
  const after = imnode(['pool', 'status', '--data-dir', pdir]);
  assert.is(after.status, 1, 'stopped: nobody answers');
  assert.match(after.stderr, /^imnode: no imnode is running with the data dir /);
});

test('user commands go through the admin socket while the database is held by a node', async () => {
  const udir = join(dir, 'held');
  await mkdir(udir, { recursive: true, mode: 0o700 });
  // What a running node does: hold the database (LevelDB lock) and serve accounts over the socket.
  const store = await Store.open(join(udir, 'db'));
  const directory = new EmbeddedDirectory(store);
  const admin = await startAdminServer({
    dataDir: udir, log: silent, status: () => ({ domain: 'imnode.local' }),
    users: {
      add: (n, p) => directory.create(n, p),
      passwd: (n, p) => directory.setPassword(n, p),
      del: (n) => directory.delete(n),
      list: () => directory.list(),
      exists: (n) => directory.exists(n),
    },
  });
  try {
    const add = await imnodeAsync(['user', 'add', 'Dora@imnode.local', '--data-dir', udir], 'held pw\n');
    assert.is(add.status, 0, add.stderr);
    assert.match(add.stderr, /created dora@imnode\.local/);
    assert.ok(await directory.verifyPassword('dora', 'held pw'));
    const dup = await imnodeAsync(['user', 'add', 'dora', '--data-dir', udir], 'x\n');
    assert.is(dup.status, 1);
    assert.match(dup.stderr, /already exists/);
    assert.equal(lines((await imnodeAsync(['user', 'list', '--data-dir', udir])).stdout), ['dora']);
    assert.is((await imnodeAsync(['user', 'passwd', 'dora', '--data-dir', udir], 'new pw\n')).status, 0);
    assert.ok(await directory.verifyPassword('dora', 'new pw'));
    const unknown = await imnodeAsync(['user', 'passwd', 'nobody', '--data-dir', udir], 'x\n');
    assert.is(unknown.status, 1);
    assert.match(unknown.stderr, /no such user/);
    assert.is((await imnodeAsync(['user', 'del', 'dora', '--data-dir', udir])).status, 0);
    assert.equal(await directory.list(), []);
  } finally {
    await admin.stop();
    await store.close();
  }
  // No node: the data dir directly again.
  assert.is(imnode(['user', 'add', 'eve', '--data-dir', udir], 'pw\n').status, 0);
  assert.equal(lines(imnode(['user', 'list', '--data-dir', udir]).stdout), ['eve']);
});

test('user add, passwd, del on a running server: through its admin socket, effective at once', async () => {
  const rdir = join(dir, 'running');
  const server = await startServer({ dataDir: rdir });
  trustServerCert(server);
  const run = (args: string[], input?: string) => imnodeAsync(['user', ...args, '--data-dir', rdir, '--domain', 'localhost'], input);
  try {
    const add = await run(['add', 'frank'], 'running pw\n');
    assert.is(add.status, 0, add.stderr + server.output());
    assert.match(add.stderr, /created frank@localhost/);
    const c = await connect(server, { username: 'frank', password: 'running pw' });
    await c.stop();
    assert.equal(lines((await run(['list'])).stdout), ['frank']);
    const dup = await run(['add', 'frank'], 'x\n');
    assert.is(dup.status, 1);
    assert.match(dup.stderr, /already exists/);

    assert.is((await run(['passwd', 'frank'], 'changed pw\n')).status, 0);
    await connectFails(server, { username: 'frank', password: 'running pw' });
    const c2 = await connect(server, { username: 'frank', password: 'changed pw' });
    await c2.stop();

    assert.is((await run(['add', 'gina'], 'gone soon\n')).status, 0);
    assert.is((await run(['del', 'gina'])).status, 0);
    assert.equal(lines((await run(['list'])).stdout), ['frank']);
    assert.match(server.output(), /admin channel: created user frank/);
    assert.not.match(server.output(), /running pw|changed pw/, 'no password in the log');
  } finally {
    assert.is(await server.stop(), 0, server.output());
  }
  assert.not.ok(existsSync(join(rdir, 'admin.sock')), 'the socket is removed on stop');
  // Stopped: the same commands open the data dir directly.
  const store = await Store.open(join(rdir, 'db'));
  try {
    const d = new EmbeddedDirectory(store);
    assert.ok(await d.verifyPassword('frank', 'changed pw'));
    assert.not.ok(await d.exists('gina'));
  } finally {
    await store.close();
  }
});

test('pool status from a running pool node', async () => {
  const pdir = join(dir, 'pool-node');
  const server = await startServer({ dataDir: pdir, args: ['--pool-listen', '/ip4/127.0.0.1/tcp/0', '--server-id', 'cli-n1'] });
  try {
    const st = await imnodeAsync(['pool', 'status', '--data-dir', pdir]);
    assert.is(st.status, 0, st.stderr);
    const out = lines(st.stdout);
    assert.match(out[0], /^domain localhost, this node cli-n1, up \d+s, 0 sessions$/);
    assert.match(out[1], /^SERVER ID +PEER ID +ADDRESSES +STATE +SESSIONS +UPTIME$/);
    assert.match(out[2], /^cli-n1 \* +12D3KooW\S+ +\/ip4\/127\.0\.0\.1\/tcp\/\d+ +alive +0 +\d+s$/);
    assert.is(out.length, 3);
    const json = JSON.parse((await imnodeAsync(['pool', 'status', '--json', '--data-dir', pdir])).stdout) as { serverId: string; members: { serverId: string; state: string }[] };
    assert.is(json.serverId, 'cli-n1');
    assert.equal(json.members.map((m) => [m.serverId, m.state]), [['cli-n1', 'alive']]);
  } finally {
    assert.is(await server.stop(), 0, server.output());
  }
  const after = imnode(['pool', 'status', '--data-dir', pdir]);
  assert.is(after.status, 1);
  assert.match(after.stderr, /no imnode is running with the data dir/);
});

test.run();
