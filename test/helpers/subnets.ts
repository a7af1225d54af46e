// Several subnets for pool tests across routers (issue 5): each subnet is a bridge
// with one network namespace per host (like test/helpers/netns.ts), and a router
// namespace joins the subnets with IP forwarding. Multicast is not routed, so mDNS
// stays inside each subnet, as behind a real router.
//
// A subnet can sit behind a NAT, a real one in the kernel (nftables in the router
// namespace, Debian package nftables): its hosts have a default route via the
// router like any other, the router masquerades what leaves the subnet (the
// outside sees the router's own address on the outgoing side), and a forward
// filter lets out only new TCP connections to the listed destinations (an egress
// filter, as in a corporate NAT: B reaches the relay and nothing else; the others
// are rejected, or dropped with `refuse: 'drop'`) and lets in no new connection at
// all (dropped: no inbound route in effect), only the replies of connections the
// subnet opened. The refusals are counted (natDrops) so that a test can tell the
// filter refused a connection from a port where nothing listened.
//
// Addresses: 10.77.<X>.0/24 per subnet, the router at .254, the root namespace at
// .253 (so that tests reach every host, NAT or not, from the root namespace, on
// the bridge, not through the router), hosts from .1. X is picked free of any
// 10.77 address of the root namespace. Everything carries a PID-derived suffix and
// is removed by cleanup() (also on exit or a signal): processes by PID, then
// namespaces (the router's nft state goes with its namespace), veths and bridges
// by name.
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cleanupAtExit, releaseAtExit, requireRootAndIp, run, type NetnsHost } from './netns.ts';
import { BIN, NODE, ROOT, prepareTemplate, type TestServer } from './imnode.ts';
import { startRelay, waitUntil, type Relay } from './pool-lab.ts';
import { NodeProcess, nodeEnv, serverView } from './node-process.ts';

export interface SubnetSpec {
  name: string;
  hosts: number;
  /**
   * Behind a masquerading NAT with no inbound route; `egress` lists the only
   * destinations (address or host of another subnet, TCP port) its hosts may open
   * connections to. `refuse`: what the router does with the others, 'reject'
   * (ICMP administratively prohibited, the default: the host learns at once) or
   * 'drop' (silence: the host's connect waits for its timeout).
   */
  nat?: { egress: Array<{ to: string | { subnet: string; host: number }; port: number }>; refuse?: 'reject' | 'drop' };
}

export interface Subnet {
  readonly name: string;
  readonly bridge: string;
  /** e.g. '10.77.131' */
  readonly prefix: string;
  /** The router's address on this subnet. */
  readonly gateway: string;
  /** The root namespace's address on this subnet. */
  readonly hostIp: string;
  readonly hosts: NetnsHost[];
  readonly nat: boolean;
}

export interface Subnets {
  readonly id: string;
  readonly routerNs: string;
  readonly subnets: Subnet[];
  subnet(name: string): Subnet;
  spawn(ns: string, cmd: string, args: string[], opts?: SpawnOptions): ChildProcess;
  exec(ns: string, cmd: string, args: string[]): string;
  /** Connections the NAT of subnet `name` refused so far: new ones from outside, and new ones from inside to unlisted destinations. */
  natDrops(name: string): { inbound: number; egress: number };
  cleanup(): void;
}

let counter = 0;

/** Third octets not used by any 10.77 address or route of the root namespace, starting at a PID-derived one. */
function freeOctets(ip: string, n: number): number[] {
  const used = run(ip, ['-o', '-4', 'addr', 'show'], true) + run(ip, ['-4', 'route', 'show'], true);
  const out: number[] = [];
  const start = 2 + ((process.pid * 7) % 240);
  for (let k = 0; k < 250 && out.length < n; k++) {
    const x = 2 + ((start - 2 + k) % 248);
    if (!used.includes(`10.77.${x}.`)) out.push(x);
  }
  if (out.length < n) throw new Error('subnets test harness: no free 10.77.X.0/24 left in the root namespace');
  return out;
}

const NFT_PATHS = ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft'];

function nftBin(): string {
  for (const p of NFT_PATHS) {
    const r = spawnSync(p, ['--version'], { encoding: 'utf8' });
    if (r.status === 0) return p;
  }
  throw new Error('subnets test harness: a NAT subnet needs nft (the Debian package nftables; .ci/run installs it), found none at ' + NFT_PATHS.join(', '));
}

/** Rule-set names of a NAT subnet's counters (nft object names: letters, digits, underscores). */
const counterName = (subnet: string, what: 'inbound' | 'egress'): string => `${what}_${subnet.replace(/[^A-Za-z0-9]/g, '_')}`;

/**
 * The router's nft rule set: masquerade and forward filter for each NAT subnet
 * (`leg`: the router's interface on it; `egress` null for a routed subnet), plain
 * routing between the others.
 */
function natRuleset(subnets: Array<{ name: string; prefix: string; leg: string; egress: Array<{ to: string; port: number }> | null; refuse: 'reject' | 'drop' }>): string {
  const nat = subnets.filter((s) => s.egress);
  const legs = (list: typeof subnets): string => `{ ${list.map((s) => `"${s.leg}"`).join(', ')} }`;
  const lines: string[] = ['table ip imnode_nat {', '  chain post {', '    type nat hook postrouting priority srcnat; policy accept;'];
  for (const s of nat) {
    const outside = subnets.filter((o) => o !== s);
    if (outside.length) lines.push(`    ip saddr ${s.prefix}.0/24 oifname ${legs(outside)} masquerade`);
  }
  lines.push('  }', '}', 'table inet imnode_filter {');
  for (const s of nat) lines.push(`  counter ${counterName(s.name, 'inbound')} {}`, `  counter ${counterName(s.name, 'egress')} {}`);
  lines.push('  chain forward {', '    type filter hook forward priority filter; policy drop;',
    // Multicast routing is off anyway; this says it where the rules are read.
    '    ip daddr 224.0.0.0/4 drop',
    '    ct state established,related accept');
  for (const s of nat) {
    for (const e of s.egress!) lines.push(`    iifname "${s.leg}" ct state new ip daddr ${e.to} tcp dport ${e.port} accept`);
    lines.push(`    iifname "${s.leg}" counter name ${counterName(s.name, 'egress')} ${s.refuse === 'drop' ? 'drop' : 'reject with icmpx admin-prohibited'}`);
    lines.push(`    oifname "${s.leg}" counter name ${counterName(s.name, 'inbound')} drop`);
  }
  // Between subnets without a NAT the router just routes (the policy drop is for the NAT subnets).
  lines.push('    accept', '  }', '}');
  return lines.join('\n') + '\n';
}

export function createSubnets(specs: SubnetSpec[]): Subnets {
  const ip = requireRootAndIp();
  const id = `${process.pid.toString(36)}${(counter++).toString(36)}`;
  const routerNs = `imnode-${id}-r`;
  const octets = freeOctets(ip, specs.length);
  const procs = new Set<ChildProcess>();
  const created = { ns: [] as string[], links: [] as string[] };
  const subnets: Subnet[] = [];
  let cleaned = false;

  const self: Subnets = {
    id, routerNs, subnets,
    subnet(name) {
      const s = subnets.find((x) => x.name === name);
      if (!s) throw new Error(`no subnet ${name}`);
      return s;
    },
    spawn(ns, cmd, args, opts = {}) {
      const p = spawn(ip, ['netns', 'exec', ns, cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
      procs.add(p);
      p.on('exit', () => procs.delete(p));
      return p;
    },
    exec(ns, cmd, args) {
      const r = spawnSync(ip, ['netns', 'exec', ns, cmd, ...args], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} in ${ns} failed (${r.status}): ${(r.stderr || '').trim()}`);
      return r.stdout;
    },
    natDrops(name) {
      if (!self.subnet(name).nat) throw new Error(`subnet ${name} is not behind a NAT`);
      const out = JSON.parse(self.exec(routerNs, nftBin(), ['-j', 'list', 'counters', 'table', 'inet', 'imnode_filter'])) as
        { nftables: Array<{ counter?: { name: string; packets: number } }> };
      const packets = (what: 'inbound' | 'egress'): number => {
        const c = out.nftables.find((x) => x.counter?.name === counterName(name, what))?.counter;
        if (!c) throw new Error(`no nft counter ${counterName(name, what)} in ${routerNs}`);
        return c.packets;
      };
      return { inbound: packets('inbound'), egress: packets('egress') };
    },
    cleanup() {
      if (cleaned) return;
      cleaned = true;
      releaseAtExit(self);
      for (const p of procs) {
        if (p.pid !== undefined && p.exitCode === null && p.signalCode === null) {
          try {
            process.kill(p.pid, 'SIGKILL');
          } catch { /* gone */ }
        }
      }
      procs.clear();
      for (const ns of created.ns) run(ip, ['netns', 'del', ns], true);
      for (const l of created.links) run(ip, ['link', 'del', l], true);
    },
  };
  cleanupAtExit(self);

  // Before anything is made: without nft there is no NAT to test.
  const nft = specs.some((s) => s.nat) ? nftBin() : null;
  try {
    run(ip, ['netns', 'add', routerNs]);
    created.ns.push(routerNs);
    run(ip, ['-n', routerNs, 'link', 'set', 'dev', 'lo', 'up']);
    // Per-namespace switch; the root namespace's own setting is left alone.
    run(ip, ['netns', 'exec', routerNs, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
    specs.forEach((spec, si) => {
      const prefix = `10.77.${octets[si]}`;
      const bridge = `imsb${id}${si}`.slice(0, 15);
      run(ip, ['link', 'add', 'name', bridge, 'type', 'bridge']);
      created.links.push(bridge);
      run(ip, ['link', 'set', 'dev', bridge, 'type', 'bridge', 'mcast_snooping', '0']);
      run(ip, ['link', 'set', 'dev', bridge, 'up']);
      run(ip, ['addr', 'add', `${prefix}.253/24`, 'dev', bridge]);
      // The router's leg on this subnet.
      const rv = `imsr${id}${si}`.slice(0, 15);
      run(ip, ['link', 'add', rv, 'type', 'veth', 'peer', 'name', `${rv}p`.slice(0, 15)]);
      created.links.push(rv);
      run(ip, ['link', 'set', 'dev', `${rv}p`.slice(0, 15), 'netns', routerNs]);
      run(ip, ['-n', routerNs, 'link', 'set', 'dev', `${rv}p`.slice(0, 15), 'name', `eth${si}`]);
      run(ip, ['-n', routerNs, 'addr', 'add', `${prefix}.254/24`, 'dev', `eth${si}`]);
      run(ip, ['-n', routerNs, 'link', 'set', 'dev', `eth${si}`, 'up']);
      run(ip, ['link', 'set', 'dev', rv, 'master', bridge]);
      run(ip, ['link', 'set', 'dev', rv, 'up']);
      const hosts: NetnsHost[] = [];
      for (let i = 0; i < spec.hosts; i++) {
        const ns = `imnode-${id}-${si}-${i}`;
        const veth = `imsv${id}${si}-${i}`.slice(0, 15);
        const addr = `${prefix}.${i + 1}`;
        run(ip, ['netns', 'add', ns]);
        created.ns.push(ns);
        run(ip, ['link', 'add', veth, 'type', 'veth', 'peer', 'name', `${veth}p`.slice(0, 15)]);
        created.links.push(veth);
        run(ip, ['link', 'set', 'dev', `${veth}p`.slice(0, 15), 'netns', ns]);
        run(ip, ['-n', ns, 'link', 'set', 'dev', `${veth}p`.slice(0, 15), 'name', 'eth0']);
        run(ip, ['-n', ns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0']);
        run(ip, ['-n', ns, 'link', 'set', 'dev', 'lo', 'up']);
        run(ip, ['-n', ns, 'link', 'set', 'dev', 'eth0', 'up']);
        run(ip, ['-n', ns, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0']);
        // Behind the NAT too: what keeps B in is the router's filter, as in a real network.
        run(ip, ['-n', ns, 'route', 'add', 'default', 'via', `${prefix}.254`]);
        run(ip, ['link', 'set', 'dev', veth, 'master', bridge]);
        run(ip, ['link', 'set', 'dev', veth, 'up']);
        hosts.push({ ns, ip: addr, veth });
      }
      subnets.push({ name: spec.name, bridge, prefix, gateway: `${prefix}.254`, hostIp: `${prefix}.253`, hosts, nat: !!spec.nat });
    });
    if (nft) {
      const rules = natRuleset(specs.map((spec, si) => ({
        name: spec.name, prefix: subnets[si].prefix, leg: `eth${si}`,
        egress: spec.nat ? spec.nat.egress.map((e) => ({
          port: e.port, to: typeof e.to === 'string' ? e.to : self.subnet(e.to.subnet).hosts[e.to.host].ip,
        })) : null,
        refuse: spec.nat?.refuse ?? 'reject',
      })));
      const r = spawnSync(ip, ['netns', 'exec', routerNs, nft, '-f', '-'], { input: rules, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`subnets test harness: nft refused the NAT rules in ${routerNs} (${r.status}): ${(r.stderr || '').trim()}\n${rules}`);
    }
  } catch (e) {
    self.cleanup();
    throw e;
  }
  return self;
}

/** Namespaces and links of the subnets `id` still present (none after cleanup). */
export function leftovers(id: string): { ns: string[]; links: string[] } {
  const ip = requireRootAndIp();
  const ns = run(ip, ['netns', 'list'], true).split('\n').map((l) => l.split(' ')[0]).filter((n) => n.startsWith(`imnode-${id}-`));
  const links = run(ip, ['-o', 'link', 'show'], true).split('\n')
    .map((l) => l.split(':')[1]?.trim().split('@')[0] ?? '')
    .filter((n) => ['imsb', 'imsr', 'imsv'].some((p) => n.startsWith(`${p}${id}`)));
  return { ns, links };
}

// ---- imnode processes in the subnets -------------------------------------------------

export const C2S_PORT = 5222;

/** One imnode process (a relay or a full node) on a host of the subnets, ended by PID at cleanup. */
export class SubnetNode extends NodeProcess {
  readonly serverId: string;
  readonly host: NetnsHost;
  readonly subnet: Subnet;
  readonly args: string[];
  readonly relayOnly: boolean;
  /** A TestServer view for test/helpers/xmppjs.ts (loopback forwarder to the node's c2s port); null for a relay. */
  server: TestServer | null = null;
  readonly #nets: Subnets;
  #forward: Relay | null = null;

  constructor(nets: Subnets, subnet: Subnet, host: NetnsHost, serverId: string, dataDir: string, args: string[], relayOnly: boolean) {
    super(serverId, dataDir);
    this.#nets = nets;
    this.subnet = subnet;
    this.host = host;
    this.serverId = serverId;
    this.args = args;
    this.relayOnly = relayOnly;
  }

  async start(timeoutMs = 30_000): Promise<void> {
    const argv = [BIN, '--data-dir', this.dataDir, '--server-id', this.serverId, '--log-level', 'debug', ...this.args];
    await this.run(() => this.#nets.spawn(this.host.ns, NODE, argv, { cwd: ROOT, env: nodeEnv(), stdio: ['ignore', 'pipe', 'pipe'] }), /ready: /, timeoutMs);
    if (!this.relayOnly && !this.#forward) {
      const fwd = await startRelay(() => ({ host: this.host.ip, port: C2S_PORT, localAddress: this.subnet.hostIp }));
      this.#forward = fwd;
      const domain = /--domain\s(\S+)/.exec(this.args.join(' '))?.[1] ?? 'localhost';
      this.server = serverView(this, domain, fwd.port, 0, async () => { await this.stop(); return null; });
    }
  }

  /** GET /status on the admin socket; null when the node does not answer. */
  async status(): Promise<Record<string, unknown> | null> {
    return this.alive ? this.adminStatus() : null;
  }

  /** Server ids this node sees alive, itself included, sorted. */
  async alive_(): Promise<string[]> {
    const s = await this.status();
    const members = Array.isArray(s?.members) ? s.members as Array<{ serverId: string; state: string }> : [];
    return members.filter((m) => m.state === 'alive').map((m) => m.serverId).sort();
  }

  /** Own peer id (from the status). */
  async peerId(): Promise<string> {
    const s = await this.status();
    if (typeof s?.peerId !== 'string') throw new Error(`${this.serverId}: no peer id in its status`);
    return s.peerId;
  }

  async closeForward(): Promise<void> {
    await this.#forward?.close();
    this.#forward = null;
  }
}

/** Data dirs with accounts and one shared certificate (for full nodes), or empty (relays); removed at cleanup. */
export class NodeDirs {
  readonly #dirs: string[] = [];
  async make(users: Record<string, string> | null, domain: string): Promise<string> {
    // Short: the admin socket path must fit in a unix socket address.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'imsn-'));
    this.#dirs.push(dir);
    if (users) cpSync(await prepareTemplate(users, domain), dir, { recursive: true });
    return dir;
  }
  cleanup(): void {
    for (const d of this.#dirs) rmSync(d, { recursive: true, force: true });
  }
}

/** What a TCP connect from a namespace to host:port gives: 'connected', 'timeout' (silently dropped), or the error code (ECONNREFUSED, ...). */
export function probeTcp(nets: Subnets, ns: string, host: string, port: number, timeoutMs = 3000): Promise<string> {
  const script = `const s = require('node:net').connect({ host: ${JSON.stringify(host)}, port: ${port} });
const done = (r) => { process.stdout.write(r); s.destroy(); process.exit(0); };
s.on('connect', () => done('connected'));
s.on('error', (e) => done(e.code || e.message));
setTimeout(() => done('timeout'), ${timeoutMs});`;
  const p = nets.spawn(ns, NODE, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    // The probe's own start-up is not part of the timeout; the kill is a backstop.
    const t = setTimeout(() => {
      try {
        if (p.pid) process.kill(p.pid, 'SIGKILL');
      } catch { /* gone */ }
    }, timeoutMs + 20_000);
    p.on('exit', (code) => {
      clearTimeout(t);
      if (out) resolve(out.trim());
      else reject(new Error(`TCP probe ${ns} -> ${host}:${port} gave nothing (exit ${code}): ${err.trim()}`));
    });
  });
}

/** Polls fn until truthy (every 150 ms: the status it mostly polls costs a node some work); throws with `what` and fn's last value after timeoutMs. */
export function until<T>(fn: () => T | Promise<T>, timeoutMs: number, what: string, everyMs = 150): Promise<NonNullable<T>> {
  return waitUntil(fn, timeoutMs, what, everyMs);
}
