// The imnode command as an operator runs it: a real process, a real data dir.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import '../../src/admin/core-options.ts';
import { allOptions } from '../../src/admin/options.ts';
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
  assert.equal(lines(r.stderr), ['imnode: --c2s-port: 70000 is not a port (1-65535)']);
});

test('pool flags are refused while the pool does not exist', () => {
  const r = imnode(['--autodiscover']);
  assert.is(r.status, 2);
  assert.equal(lines(r.stderr), ['imnode: --autodiscover: the server pool is not implemented yet in this version']);
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

test.run();
