// The pool's transport and membership half, with real processes on a real network:
// each node is test/helpers/pool-node.ts in its own network namespace on a private
// bridge (test/helpers/netns.ts). Runs as root; fails loudly otherwise.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createLab, leftovers, type Lab, type NetnsHost } from '../helpers/netns.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const NODE_SCRIPT = path.join(ROOT, 'test/helpers/pool-node.ts');
const PORT = 7400;

interface Line { type: string; at: number; [k: string]: unknown }
interface Member { serverId: string; peerId: string; state: string; addresses: string[]; sessions: number; startedAt: number }

class PoolNode {
  readonly name: string;
  readonly host: NetnsHost;
  readonly dataDir: string;
  readonly proc: ChildProcess;
  readonly lines: Line[] = [];
  stderr = '';
  spawnedAt = Date.now();
  exited: Promise<number | null>;
  private waiters: (() => void)[] = [];

  constructor(lab: Lab, host: NetnsHost, name: string, args: string[], dataDir?: string) {
    this.name = name;
    this.host = host;
    this.dataDir = dataDir ?? mkdtempSync(path.join(tmpdir(), 'imnode-pool-'));
    this.proc = lab.spawn(host, process.execPath, [NODE_SCRIPT, '--data-dir', this.dataDir, ...args]);
    let buf = '';
    this.proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const text = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          this.lines.push(JSON.parse(text) as Line);
        } catch {
          this.stderr += `[stdout] ${text}\n`;
        }
      }
      this.wake();
    });
    this.proc.stderr!.on('data', (d: Buffer) => {
      this.stderr += d.toString();
      this.wake();
    });
    this.exited = new Promise((r) => this.proc.on('exit', (code) => {
      this.wake();
      r(code);
    }));
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Resolves with the first line from index `from` on that matches. */
  async waitFor(pred: (l: Line) => boolean, timeoutMs: number, what: string, from = 0): Promise<Line> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.slice(from).find(pred);
      if (hit) return hit;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.name}: no ${what} within ${timeoutMs} ms\n--- stderr tail:\n${this.stderr.split('\n').slice(-25).join('\n')}`);
      if (!this.alive) throw new Error(`${this.name}: exited while waiting for ${what}\n--- stderr:\n${this.stderr.split('\n').slice(-25).join('\n')}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  async waitStderr(re: RegExp, timeoutMs: number, what: string): Promise<void> {
    await this.waitFor(() => re.test(this.stderr), timeoutMs, what);
  }

  send(cmd: string): void {
    this.proc.stdin!.write(cmd + '\n');
  }

  async command(cmd: string, timeoutMs = 10_000): Promise<Line> {
    const from = this.lines.length;
    this.send(cmd);
    const name = cmd.split(' ')[0];
    return this.waitFor((l) => l.type === 'reply' && l.cmd === name, timeoutMs, `reply to ${name}`, from);
  }

  async status(): Promise<{ serverId: string; peerId: string; members: Member[] }> {
    const from = this.lines.length;
    this.send('status');
    const l = await this.waitFor((x) => x.type === 'status', 5000, 'status', from);
    return l as unknown as { serverId: string; peerId: string; members: Member[] };
  }

  async ready(): Promise<Line> {
    return this.waitFor((l) => l.type === 'ready', 30_000, 'ready');
  }

  get peerId(): string {
    const r = this.lines.find((l) => l.type === 'ready');
    if (!r) throw new Error(`${this.name} is not ready`);
    return r.peerId as string;
  }

  events(event: string, from = 0): Line[] {
    return this.lines.slice(from).filter((l) => l.type === 'event' && l.event === event);
  }

  kill(): void {
    if (this.alive && this.proc.pid) process.kill(this.proc.pid, 'SIGKILL');
  }

  async stop(): Promise<number | null> {
    if (!this.alive) return this.proc.exitCode;
    this.send('stop');
    const t = setTimeout(() => this.kill(), 10_000);
    const code = await this.exited;
    clearTimeout(t);
    return code;
  }
}

let lab: Lab;
const dataDirs: string[] = [];
const all: PoolNode[] = [];

function start(host: NetnsHost, name: string, args: string[], dataDir?: string): PoolNode {
  const n = new PoolNode(lab, host, name, ['--listen', `/ip4/0.0.0.0/tcp/${PORT}`, ...args], dataDir);
  if (!dataDir) dataDirs.push(n.dataDir);
  all.push(n);
  return n;
}

async function stopAll(nodes: PoolNode[]): Promise<void> {
  await Promise.all(nodes.map((n) => n.stop().catch(() => n.kill())));
}

/** Polls every node's status until each lists `expect` alive members (by server id). */
async function waitForView(nodes: PoolNode[], expect: string[], timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  const want = [...expect].sort().join(',');
  let last = '';
  while (Date.now() - t0 < timeoutMs) {
    const views = await Promise.all(nodes.map(async (n) => {
      const s = await n.status();
      return s.members.filter((m) => m.state === 'alive').map((m) => m.serverId).sort().join(',');
    }));
    last = views.join(' | ');
    if (views.every((v) => v === want)) return Date.now() - t0;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`view did not converge to [${want}] within ${timeoutMs} ms; last views: ${last}`);
}

function stateOf(s: { members: Member[] }, serverId: string): string | undefined {
  return s.members.find((m) => m.serverId === serverId)?.state;
}

// ---- the main pool: three nodes, autodiscover + password ------------------------------

const DOMAIN = 'pool.test';
const PASSWORD = 'correct horse battery staple';
let pool: PoolNode[] = [];

test.before(() => {
  lab = createLab(5);
});

test.after(async () => {
  try {
    await stopAll(all.filter((n) => n.alive));
  } finally {
    lab.cleanup();
    for (const d of dataDirs) rmSync(d, { recursive: true, force: true });
    const left = leftovers(lab.id);
    if (left.ns.length || left.links.length) throw new Error(`netns leftovers: ${JSON.stringify(left)}`);
  }
});

test('three nodes with only --autodiscover and a password form a pool within 5 s', async () => {
  const t0 = Date.now();
  pool = [0, 1, 2].map((i) => start(lab.hosts[i], `n${i}`, ['--domain', DOMAIN, '--password', PASSWORD, '--server-id', `n${i}`, '--autodiscover']));
  await Promise.all(pool.map((n) => n.ready()));
  const readyAt = Math.max(...pool.map((n) => n.lines.find((l) => l.type === 'ready')!.at));
  await waitForView(pool, ['n0', 'n1', 'n2'], 15_000);
  // The moment of the last 'joined' event, as the nodes saw it.
  const formedAt = Math.max(...pool.map((n) => Math.max(...n.events('joined').map((e) => e.at))));
  const formation = formedAt - readyAt;
  console.log(`  pool formed ${formation} ms after the last node was up (${formedAt - t0} ms after spawning the processes)`);
  assert.ok(formation <= 5000, `pool took ${formation} ms to form`);
  for (const n of pool) {
    const s = await n.status();
    assert.is(s.members.length, 3, `${n.name} sees ${s.members.length} members`);
    for (const m of s.members) {
      assert.is(m.state, 'alive');
      assert.ok(m.addresses.some((a) => a.includes('/ip4/10.77.')), `${n.name}: member ${m.serverId} announces ${m.addresses}`);
      assert.not.ok(m.addresses.some((a) => a.includes('/ip4/127.')), 'loopback not announced');
    }
  }
  assert.match(pool[0].stderr, /pool member n1 .* joined/);
});

test('group messaging reaches every subscribed member, not the sender', async () => {
  assert.is(pool.length, 3, 'needs the pool of the first test');
  for (const n of pool) assert.ok((await n.command('subscribe room')).ok);
  await new Promise((r) => setTimeout(r, 1500)); // subscriptions travel with gossipsub's own heartbeat
  const from = pool.map((n) => n.lines.length);
  assert.ok((await pool[0].command('publish room hello from n0')).ok);
  for (const n of [pool[1], pool[2]]) {
    const g = await n.waitFor((l) => l.type === 'gossip' && l.text === 'hello from n0', 5000, 'gossip', from[pool.indexOf(n)]);
    assert.is(g.fromServer, 'n0');
    assert.is(g.from, pool[0].peerId);
  }
  await new Promise((r) => setTimeout(r, 300));
  assert.is(pool[0].lines.slice(from[0]).filter((l) => l.type === 'gossip').length, 0, 'the sender does not get its own message');
});

test('point-to-point request and 1,000 ordered one-way messages between namespaces', async () => {
  assert.is(pool.length, 3, 'needs the pool of the first test');
  const r = await pool[0].command('request n1 echo ping over the pool');
  assert.ok(r.ok, String(r.error));
  assert.is(r.text, 'echo:ping over the pool');

  const from = pool[2].lines.length;
  const t0 = Date.now();
  const sent = await pool[0].command('sendmany n2 seq 1000', 30_000);
  assert.ok(sent.ok, String(sent.error));
  await pool[2].waitFor(() => pool[2].lines.slice(from).filter((l) => l.type === 'message').length >= 1000, 30_000, '1000 messages', from);
  const got = pool[2].lines.slice(from).filter((l) => l.type === 'message' && l.from === pool[0].peerId).map((l) => Number(l.text));
  console.log(`  1000 ordered messages n0 -> n2 in ${Date.now() - t0} ms`);
  assert.is(got.length, 1000);
  assert.equal(got, Array.from({ length: 1000 }, (_, i) => i), 'arrived in order, each once');

  // An unknown protocol is an error for the caller, not a hang.
  const bad = await pool[0].command('request n1 nosuchproto x');
  assert.is(bad.ok, false);
});

test('a node with a wrong password, or of another domain, never joins and reads no gossip', async () => {
  assert.is(pool.length, 3, 'needs the pool of the first test');
  const wrong = start(lab.hosts[3], 'wrong-password', ['--domain', DOMAIN, '--password', 'not the password', '--server-id', 'intruder1', '--autodiscover', '--log-level', 'debug']);
  const other = start(lab.hosts[4], 'other-domain', ['--domain', 'other.test', '--password', PASSWORD, '--server-id', 'intruder2', '--autodiscover', '--log-level', 'debug']);
  try {
    await Promise.all([wrong.ready(), other.ready()]);
    for (const x of [wrong, other]) assert.ok((await x.command('subscribe room')).ok);
    // They do find the pool (mDNS) and try it: the pool secret is what keeps them out.
    await wrong.waitStderr(/cannot connect to discovered peer/, 15_000, 'a refused connection attempt');
    await other.waitStderr(/cannot connect to discovered peer/, 15_000, 'a refused connection attempt');
    for (let i = 0; i < 5; i++) {
      await pool[1].command(`publish room secret ${i}`);
      await new Promise((r) => setTimeout(r, 400));
    }
    await new Promise((r) => setTimeout(r, 3000));
    for (const x of [wrong, other]) {
      const s = await x.status();
      assert.equal(s.members.map((m) => m.serverId), [x.name === 'wrong-password' ? 'intruder1' : 'intruder2'], `${x.name} sees only itself`);
      assert.is(x.lines.filter((l) => l.type === 'gossip' || l.type === 'event').length, 0, `${x.name} got no gossip and no member events`);
    }
    // The pool saw the secret messages (so there was traffic to read) and no stranger.
    assert.ok(pool[0].lines.some((l) => l.type === 'gossip' && l.text === 'secret 4'));
    for (const n of pool) {
      const s = await n.status();
      assert.equal(s.members.map((m) => m.serverId), ['n0', 'n1', 'n2']);
    }
  } finally {
    await stopAll([wrong, other]);
  }
});

test('a second node with the same server id is refused on both sides and never becomes a member', async () => {
  assert.is(pool.length, 3, 'needs the pool of the first test');
  const from = pool.map((n) => n.lines.length);
  const dup = start(lab.hosts[3], 'duplicate', ['--domain', DOMAIN, '--password', PASSWORD, '--server-id', 'n0', '--autodiscover']);
  try {
    await dup.ready();
    await dup.waitFor((l) => l.type === 'refused' && l.kind === 'refused-by-peer', 15_000, 'a refusal');
    await dup.waitStderr(/refused this node: server id 'n0' is already used by member/, 5000, 'the refusal log line');
    await pool[0].waitStderr(new RegExp(`refusing pool peer ${dup.peerId} .*it uses server id 'n0', the same as this node; it started after this node, so it is the duplicate`),
      5000, 'the refusal log line on the holder');
    await new Promise((r) => setTimeout(r, 3000));
    const ds = await dup.status();
    assert.equal(ds.members.map((m) => m.peerId), [dup.peerId], 'the duplicate sees only itself');
    assert.is(dup.events('joined').length, 0, 'the duplicate never saw anyone join');
    for (const [i, n] of pool.entries()) {
      const s = await n.status();
      assert.equal(s.members.map((m) => m.serverId), ['n0', 'n1', 'n2']);
      assert.not.ok(s.members.some((m) => m.peerId === dup.peerId), `${n.name} does not list the duplicate`);
      assert.not.ok(n.lines.slice(from[i]).some((l) => l.type === 'event' && l.peerId === dup.peerId), `${n.name} had no event about it`);
    }
  } finally {
    await stopAll([dup]);
  }
});

test('partition (veth down): suspected then failed on both sides; heal: alive again', async () => {
  assert.is(pool.length, 3, 'needs the pool of the first test');
  const from = pool.map((n) => n.lines.length);
  const cut = Date.now();
  lab.linkDown(pool[2].host);
  let healed = false;
  try {
    for (const n of [pool[0], pool[1]]) {
      const i = pool.indexOf(n);
      await n.waitFor((l) => l.type === 'event' && l.event === 'suspected' && l.serverId === 'n2', 10_000, 'n2 suspected', from[i]);
      const f = await n.waitFor((l) => l.type === 'event' && l.event === 'failed' && l.serverId === 'n2', 10_000, 'n2 failed', from[i]);
      console.log(`  ${n.name}: n2 failed ${f.at - cut} ms after the cut`);
    }
    for (const peer of ['n0', 'n1']) {
      await pool[2].waitFor((l) => l.type === 'event' && l.event === 'failed' && l.serverId === peer, 10_000, `${peer} failed`, from[2]);
    }
    assert.is(stateOf(await pool[0].status(), 'n1'), 'alive', 'the healthy pair stays together');
    const heal = Date.now();
    lab.linkUp(pool[2].host);
    healed = true;
    const ms = await waitForView(pool, ['n0', 'n1', 'n2'], 20_000);
    console.log(`  healed: all alive again ${Date.now() - heal} ms after the link came back (view poll ${ms} ms)`);
    for (const n of [pool[0], pool[1]]) {
      assert.ok(n.lines.slice(from[pool.indexOf(n)]).some((l) => l.type === 'event' && l.event === 'joined' && l.serverId === 'n2'));
    }
  } finally {
    if (!healed) lab.linkUp(pool[2].host);
  }
});

test('SIGKILL: the killed node is failed on the others within 3 s; a restart joins again; planned stop is "left"', async () => {
  assert.is(pool.length, 3, 'needs the pool of the first test');
  const victim = pool[2];
  const peerId = victim.peerId;
  let from = pool.map((n) => n.lines.length);
  const killedAt = Date.now();
  victim.kill();
  await victim.exited;
  for (const n of [pool[0], pool[1]]) {
    const f = await n.waitFor((l) => l.type === 'event' && l.event === 'failed' && l.serverId === 'n2', 6000, 'n2 failed', from[pool.indexOf(n)]);
    const ms = f.at - killedAt;
    console.log(`  ${n.name}: killed n2 failed after ${ms} ms`);
    assert.ok(ms <= 3000, `failure detected after ${ms} ms`);
    assert.is(stateOf(await n.status(), 'n2'), 'failed');
    assert.is(n.lines.slice(from[pool.indexOf(n)]).filter((l) => l.type === 'event' && l.event === 'left').length, 0, 'a kill is not a leave');
  }
  // Sending to a failed member fails fast instead of hanging.
  const r = await pool[0].command(`send ${peerId} seq x`);
  assert.is(r.ok, false);

  // Same data dir: same peer key, so the same peer comes back.
  from = pool.map((n) => n.lines.length);
  const again = start(victim.host, 'n2', ['--domain', DOMAIN, '--password', PASSWORD, '--server-id', 'n2', '--autodiscover'], victim.dataDir);
  pool[2] = again;
  await again.ready();
  assert.is(again.peerId, peerId, 'the persisted peer key gives the same peer id');
  for (const n of [pool[0], pool[1]]) {
    await n.waitFor((l) => l.type === 'event' && l.event === 'joined' && l.serverId === 'n2', 15_000, 'n2 joined again', from[pool.indexOf(n)]);
  }
  await waitForView(pool, ['n0', 'n1', 'n2'], 10_000);

  from = pool.map((n) => n.lines.length);
  assert.is(await again.stop(), 0);
  for (const n of [pool[0], pool[1]]) {
    await n.waitFor((l) => l.type === 'event' && l.event === 'left' && l.serverId === 'n2', 5000, 'n2 left', from[pool.indexOf(n)]);
    await new Promise((r) => setTimeout(r, 500));
    assert.is(n.events('failed', from[pool.indexOf(n)]).length, 0, 'a planned stop is not a failure');
    assert.is(stateOf(await n.status(), 'n2'), 'left');
  }
  await stopAll(pool);
});

test('a static --peer list works without mDNS, and members learn each other through it', async () => {
  const domain = 'static.test';
  const first = start(lab.hosts[0], 's0', ['--domain', domain, '--password', PASSWORD, '--server-id', 's0']);
  await first.ready();
  const seed = `/ip4/${lab.hosts[0].ip}/tcp/${PORT}`;
  // s1 and s2 know only s0; they must find each other through the pool.
  const rest = [1, 2].map((i) => start(lab.hosts[i], `s${i}`, ['--domain', domain, '--password', PASSWORD, '--server-id', `s${i}`, '--peer', seed]));
  const nodes = [first, ...rest];
  try {
    await Promise.all(rest.map((n) => n.ready()));
    const ms = await waitForView(nodes, ['s0', 's1', 's2'], 15_000);
    console.log(`  static pool formed ${ms} ms after the nodes were up`);
    const r = await rest[0].command('request s2 echo direct');
    assert.ok(r.ok, String(r.error));
    assert.is(r.text, 'echo:direct');
  } finally {
    await stopAll(nodes);
  }
});

test.run();
