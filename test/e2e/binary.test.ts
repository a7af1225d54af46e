// The single executable (issue 7): builds dist/imnode with the same script as
// `npm run build` (and the Dockerfile), then runs it with an empty environment
// (`env -i`: no PATH, no HOME, no node, no node_modules in reach): --version,
// --help and `user add`/`user list`; three binaries in network namespaces form a
// pool with nothing but --autodiscover and two slixmpp users chat through it; the
// same binary as `--relay-only` joins two routed subnets (mDNS does not cross the
// router), and users on either side chat through the pool.
// The build failing is a test failure, never a skip.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createLab, leftovers, type Lab, type NetnsHost } from '../helpers/netns.ts';
import { createSubnets, type Subnets } from '../helpers/subnets.ts';
import { Slix } from '../helpers/slix.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const BINARY = path.join(ROOT, 'dist', 'imnode');
const ENV = '/usr/bin/env';
const DOMAIN = 'lan.local';
const VERSION = (await import('../../src/admin/version.ts')).VERSION;

const cleanups: Array<() => void | Promise<void>> = [];
function tmp(prefix: string): string {
  // Short: the admin socket path (<data-dir>/admin.sock) must fit a unix socket address.
  const d = mkdtempSync(path.join(os.tmpdir(), prefix));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Runs the binary under `env -i` (plus `extraEnv`), feeding `input` on stdin. */
function runBin(args: string[], opts: { input?: string; extraEnv?: string[]; timeoutMs?: number } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(ENV, ['-i', ...(opts.extraEnv ?? []), BINARY, ...args], { cwd: '/', stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`imnode ${args.join(' ')} did not exit within ${opts.timeoutMs ?? 20_000} ms:\n${stdout}${stderr}`)); }, opts.timeoutMs ?? 20_000);
    p.on('error', (e) => { clearTimeout(t); reject(e); });
    p.on('close', (code) => { clearTimeout(t); resolve({ code, stdout, stderr }); });
    p.stdin.end(opts.input ?? '');
  });
}

/** One binary running a server, in the root namespace or in a lab host. */
class BinServer {
  readonly name: string;
  readonly proc: ChildProcess;
  out = '';
  readonly exited: Promise<number | null>;
  #waiters: Array<() => void> = [];

  constructor(name: string, proc: ChildProcess) {
    this.name = name;
    this.proc = proc;
    const on = (d: Buffer): void => {
      this.out += d.toString();
      for (const w of this.#waiters.splice(0)) w();
    };
    proc.stdout!.on('data', on);
    proc.stderr!.on('data', on);
    this.exited = new Promise((r) => proc.on('exit', (code) => {
      for (const w of this.#waiters.splice(0)) w();
      r(code);
    }));
    cleanups.push(() => this.kill());
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async waitLog(re: RegExp, timeoutMs: number, what = String(re)): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.out);
      if (m) return m;
      if (!this.alive) throw new Error(`${this.name} exited (${this.proc.exitCode ?? this.proc.signalCode}) before ${what}:\n${this.out}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.name}: no ${what} within ${timeoutMs} ms:\n${this.out.split('\n').slice(-40).join('\n')}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 250));
        this.#waiters.push(() => { clearTimeout(t); r(); });
      });
    }
  }

  /** SIGTERM by PID and the exit code (SIGKILL after 15 s). */
  async stop(): Promise<number | null> {
    if (this.alive) this.proc.kill('SIGTERM');
    const t = setTimeout(() => { if (this.alive) this.proc.kill('SIGKILL'); }, 15_000);
    const code = await this.exited;
    clearTimeout(t);
    return code;
  }

  async kill(): Promise<void> {
    if (this.alive) this.proc.kill('SIGKILL');
    await this.exited;
  }
}

const READY = /ready: domain (\S+), c2s port (\d+)(?:, direct TLS port (\d+))?/;

test('npm run build makes dist/imnode, a self-contained executable', () => {
  // Exactly what `npm run build` runs (package.json), and what the Dockerfile runs.
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'build.ts')], { cwd: ROOT, encoding: 'utf8', timeout: 180_000 });
  if (r.status !== 0) throw new Error(`the build failed (exit ${r.status ?? r.signal}); the binary tests cannot run:\n${r.stdout}\n${r.stderr}\n${r.error ?? ''}`);
  assert.ok(existsSync(BINARY), 'dist/imnode exists');
  const st = statSync(BINARY);
  assert.ok((st.mode & 0o111) !== 0, 'executable');
  process.stdout.write(`  ${r.stdout.trim()}\n`);
  // A Node SEA is node itself plus the app: ~100 MB stripped; well over that means stripping broke.
  assert.ok(st.size < 140 * 1048576, `size ${st.size}`);
  const elf = spawnSync('file', ['-b', BINARY], { encoding: 'utf8' });
  if (elf.status === 0) assert.match(elf.stdout, /ELF 64-bit/);
});

test('--version, --help and bad usage under env -i (no PATH, no HOME)', async () => {
  const v = await runBin(['--version']);
  assert.is(v.code, 0, v.stderr);
  assert.is(v.stdout.trim(), `imnode ${VERSION}`);
  const h = await runBin(['--help']);
  assert.is(h.code, 0, h.stderr);
  assert.match(h.stdout, /imnode user add <name>/);
  assert.match(h.stdout, /--autodiscover/);
  assert.match(h.stdout, /--dns-sd/);
  const bad = await runBin(['--c2s-port', 'many']);
  assert.is(bad.code, 2, 'a bad flag value exits 2');
  assert.match(bad.stderr, /^imnode: --c2s-port: 'many' is not a port number/);
  const unknown = await runBin(['frobnicate']);
  assert.is(unknown.code, 2);
});

test('the native LevelDB addon is extracted once to the cache dir, and verified', async () => {
  const cache = tmp('imc-');
  const dir = tmp('imd-');
  const add = await runBin(['user', 'add', 'carol', '--data-dir', dir, '--domain', DOMAIN], { input: 'carol secret\n', extraEnv: [`XDG_CACHE_HOME=${cache}`] });
  assert.is(add.code, 0, add.stderr);
  const hashes = readdirSync(path.join(cache, 'imnode'));
  assert.is(hashes.length, 1, 'one directory per addon build');
  const file = path.join(cache, 'imnode', hashes[0], 'classic-level.node');
  assert.ok(statSync(file).size > 100_000, 'the addon was written');
  // A damaged copy is replaced, never loaded.
  rmSync(file);
  cpSync('/bin/true', file);
  const list = await runBin(['user', 'list', '--data-dir', dir, '--domain', DOMAIN], { extraEnv: [`XDG_CACHE_HOME=${cache}`] });
  assert.is(list.code, 0, list.stderr);
  assert.match(list.stdout, /carol/);
  assert.ok(statSync(file).size > 100_000, 'the damaged addon was rewritten');
  // A cache dir other users can write to is not trusted with code: the next place is used.
  const shared = tmp('imw-');
  mkdirSync(path.join(shared, 'imnode'));
  chmodSync(path.join(shared, 'imnode'), 0o777);
  const v = await runBin(['user', 'list', '--data-dir', dir, '--domain', DOMAIN], { extraEnv: [`XDG_CACHE_HOME=${shared}`] });
  assert.is(v.code, 0, v.stderr);
  assert.equal(readdirSync(path.join(shared, 'imnode')), [], 'nothing written to (or loaded from) the world-writable dir');
});

test('every subcommand under env -i', async () => {
  const dir = tmp('ims-');
  const at = ['--data-dir', dir, '--domain', DOMAIN];
  const ok = async (args: string[], input?: string): Promise<string> => {
    const r = await runBin([...args, ...at], { input });
    assert.is(r.code, 0, `imnode ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  await ok(['user', 'import', '-'], 'dave:dave pw\n# a comment\nerin erin pw\n');
  await ok(['user', 'passwd', 'dave'], 'dave new pw\n');
  await ok(['user', 'del', 'erin']);
  assert.equal((await ok(['user', 'list'])).trim().split('\n'), ['dave']);
  await ok(['coserver', 'add', '/ip4/10.0.0.6/tcp/7400']);
  assert.equal(JSON.parse(await ok(['coserver', 'list', '--json'])), ['/ip4/10.0.0.6/tcp/7400']);
  await ok(['coserver', 'delete', '/ip4/10.0.0.6/tcp/7400']);
  assert.equal(JSON.parse(await ok(['coserver', 'list', '--json'])), []);
  // No node runs on this data dir: one line, exit 1.
  const st = await runBin(['pool', 'status', ...at]);
  assert.is(st.code, 1);
  assert.is(st.stderr.trim().split('\n').length, 1, st.stderr);
  const dup = await runBin(['user', 'add', 'dave', ...at], { input: 'x\n' });
  assert.is(dup.code, 1, 'an existing user is a failure, exit 1');
});

let template = '';

test('user add and a single server under env -i', async () => {
  template = tmp('imt-');
  for (const [name, pw] of [['alice', 'alice pw'], ['bob', 'bob pw']]) {
    const r = await runBin(['user', 'add', name, '--data-dir', template, '--domain', DOMAIN], { input: `${pw}\n` });
    assert.is(r.code, 0, `user add ${name}: ${r.stderr}`);
  }
  const list = await runBin(['user', 'list', '--data-dir', template, '--domain', DOMAIN]);
  assert.is(list.code, 0, list.stderr);
  assert.equal(list.stdout.trim().split('\n').sort(), ['alice', 'bob']);
  // One start makes the self-signed certificate every pool node below shares.
  const s = new BinServer('single', spawn(ENV, ['-i', BINARY, '--data-dir', template, '--domain', DOMAIN, '--bind', '127.0.0.1',
    '--c2s-port', '0', '--c2s-tls-port', '0'], { cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] }));
  await s.waitLog(READY, 20_000, 'ready line');
  assert.match(s.out, /self-signed certificate/);
  await s.waitLog(/add a user: \S*imnode user add NAME --data-dir /, 5000, 'the add-a-user hint');
  assert.not.match(s.out, /DNS-SD/, 'no DNS-SD without --autodiscover');
  assert.is(await s.stop(), 0, `clean exit on SIGTERM:\n${s.out}`);
  assert.ok(existsSync(path.join(template, 'tls', 'cert.pem')));
});

test('three binaries form a pool with --autodiscover and two slixmpp users chat through it', async () => {
  assert.ok(template, 'needs the data dir of the previous test');
  const lab: Lab = createLab(3, { hostAddress: true });
  cleanups.push(() => lab.cleanup());
  const nodes: BinServer[] = [];
  const slixes: Slix[] = [];
  try {
    lab.hosts.forEach((host: NetnsHost, i: number) => {
      const dir = tmp('imp-');
      cpSync(template, dir, { recursive: true });
      // Zero-config but for the server id: every namespace shares this machine's host name, the default id.
      nodes.push(new BinServer(`node${i + 1}`, lab.spawn(host, ENV, ['-i', BINARY, '--autodiscover', '--data-dir', dir, '--domain', DOMAIN, '--server-id', `node${i + 1}`],
        { cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] })));
    });
    for (const n of nodes) {
      await n.waitLog(/add a user: /, 30_000, 'the start-up lines');
      const m = await n.waitLog(READY, 1000, 'ready line');
      assert.is(m[1], DOMAIN);
      assert.is(m[2], '5222', 'default client port');
      assert.is(m[3], '5223', 'default direct TLS port');
    }
    // What a fresh node says first: domain and ports, how clients find it and how to add a user.
    const first = nodes[0].out.split('\n').slice(0, 20).join('\n');
    assert.match(first, /clients: log in as NAME@lan\.local \(LAN clients find this node by DNS-SD\/mDNS as imnode-node1\.local\)/);
    assert.match(first, new RegExp(`add a user: ${BINARY.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} user add NAME --data-dir `));
    assert.match(first, /DNS-SD: announcing node1\._xmpp-client\._tcp\.local/);
    // Each node finds the two others by mDNS, with nothing configured.
    for (const n of nodes) {
      for (const other of nodes.filter((o) => o !== n)) await n.waitLog(new RegExp(`pool member ${other.name} \\(\\w+\\) joined`), 30_000, `${other.name} joining`);
    }
    await nodes[0].waitLog(/pool members found: (node2, node3|node3, node2)/, 10_000, 'the members summary');
    // The admin socket of a running binary answers another binary (both under env -i).
    const status = await runBin(['pool', 'status', '--json', '--data-dir', (/data in (\S+)/.exec(nodes[0].out) ?? [])[1] ?? '']);
    assert.is(status.code, 0, status.stderr);
    const members = (JSON.parse(status.stdout) as { members: { serverId: string; state: string }[] }).members;
    assert.equal(members.filter((m) => m.state === 'alive').map((m) => m.serverId).sort(), ['node1', 'node2', 'node3']);

    const cafile = path.join(template, 'tls', 'cert.pem');
    const connect = async (name: string, password: string, host: NetnsHost): Promise<Slix> => {
      const s = await Slix.start({ name });
      slixes.push(s);
      await s.connect({ jid: `${name}@${DOMAIN}/bin`, password, host: host.ip, port: 5222, cafile }, 20_000);
      return s;
    };
    const alice = await connect('alice', 'alice pw', lab.hosts[0]);
    const bob = await connect('bob', 'bob pw', lab.hosts[2]);
    // Routes replicate asynchronously: resend until bob's session is known on node1.
    let got = false;
    for (let i = 0; i < 20 && !got; i++) {
      await alice.command('message', { to: `bob@${DOMAIN}/bin`, body: `hello ${i}`, type: 'chat' });
      got = await bob.waitFor((e) => e.ev === 'message' && String(e.body).startsWith('hello'), 1000, 'hello').then(() => true, () => false);
    }
    assert.ok(got, `bob on node3 got alice's message from node1\n${nodes.map((n) => `--- ${n.name}\n${n.out.split('\n').slice(-15).join('\n')}`).join('\n')}`);
    await bob.command('message', { to: `alice@${DOMAIN}/bin`, body: 'hi alice', type: 'chat' });
    const back = await alice.waitFor((e) => e.ev === 'message' && e.body === 'hi alice', 10_000, 'the answer');
    assert.is(back.from, `bob@${DOMAIN}/bin`);
    for (const n of nodes) assert.is(await n.stop(), 0, `${n.name} exits cleanly:\n${n.out.split('\n').slice(-20).join('\n')}`);
  } finally {
    for (const s of slixes) await s.stop();
    for (const n of nodes) await n.kill();
    lab.cleanup();
  }
  const left = leftovers(lab.id);
  assert.equal(left, { ns: [], links: [] }, 'namespaces and links removed');
});

test('the same binary is the relay: --relay-only joins nodes of two subnets', async () => {
  assert.ok(template, 'needs the data dir of an earlier test');
  const nets: Subnets = createSubnets([{ name: 'A', hosts: 2 }, { name: 'B', hosts: 1 }]);
  cleanups.push(() => nets.cleanup());
  const A = nets.subnet('A'), B = nets.subnet('B');
  const password = ['PASSWORD', 'relay binary secret'];
  const relayAddr = `/ip4/${A.hosts[0].ip}/tcp/7400`;
  const procs: BinServer[] = [];
  const slixes: Slix[] = [];
  const bin = (name: string, ns: string, args: string[]): BinServer => {
    // The password through the environment: env -i passes only what is named.
    const s = new BinServer(name, nets.spawn(ns, ENV, ['-i', `IMNODE_POOL_PASSWORD=${password[1]}`, BINARY, '--domain', DOMAIN, '--server-id', name, ...args],
      { cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] }));
    procs.push(s);
    return s;
  };
  try {
    const relay = bin('relay', A.hosts[0].ns, ['--relay-only', '--data-dir', tmp('imr-'), '--pool-listen', relayAddr]);
    await relay.waitLog(/ready: relay relay \(\w+\)/, 30_000, 'the relay ready line');
    assert.not.match(relay.out, /c2s port/, 'a relay has no client listener');
    const node = (name: string, host: NetnsHost): BinServer => {
      const dir = tmp('imn-');
      cpSync(template, dir, { recursive: true });
      return bin(name, host.ns, ['--autodiscover', '--relay', relayAddr, '--data-dir', dir, '--bind', host.ip]);
    };
    const a1 = node('a1', A.hosts[1]);
    const b1 = node('b1', B.hosts[0]);
    for (const n of [a1, b1]) await n.waitLog(READY, 30_000, 'ready line');
    // b1 is in another subnet: only the relay can have told a1 about it.
    await a1.waitLog(/pool member b1 \(\w+\) joined/, 45_000, 'b1 joining');
    await b1.waitLog(/pool member a1 \(\w+\) joined/, 45_000, 'a1 joining');

    const cafile = path.join(template, 'tls', 'cert.pem');
    const login = async (name: string, pw: string, ip: string): Promise<Slix> => {
      const s = await Slix.start({ name });
      slixes.push(s);
      await s.connect({ jid: `${name}@${DOMAIN}/relay`, password: pw, host: ip, port: 5222, cafile }, 20_000);
      return s;
    };
    const alice = await login('alice', 'alice pw', A.hosts[1].ip);
    const bob = await login('bob', 'bob pw', B.hosts[0].ip);
    let got = false;
    for (let i = 0; i < 20 && !got; i++) {
      await alice.command('message', { to: `bob@${DOMAIN}/relay`, body: `across ${i}`, type: 'chat' });
      got = await bob.waitFor((e) => e.ev === 'message' && String(e.body).startsWith('across'), 1000, 'across').then(() => true, () => false);
    }
    assert.ok(got, `bob in subnet B got alice's message from subnet A\n${procs.map((n) => `--- ${n.name}\n${n.out.split('\n').slice(-15).join('\n')}`).join('\n')}`);
    await bob.command('message', { to: `alice@${DOMAIN}/relay`, body: 'back across', type: 'chat' });
    await alice.waitFor((e) => e.ev === 'message' && e.body === 'back across', 10_000, 'the answer');
    for (const n of procs) assert.is(await n.stop(), 0, `${n.name} exits cleanly`);
  } finally {
    for (const s of slixes) await s.stop();
    for (const n of procs) await n.kill();
    nets.cleanup();
  }
});

test.after(async () => {
  for (const c of cleanups.reverse()) await c();
});

test.run();
