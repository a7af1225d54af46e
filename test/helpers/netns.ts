// Network namespaces for multi-node tests: one "host" per node on a private bridge,
// addresses in 10.77.0.0/16, a multicast route so mDNS works, link down/up for
// partitions. Everything a lab creates carries a suffix made of this process's PID
// and a counter, so parallel test runs never collide, and is removed by cleanup(),
// which also runs from a process 'exit' hook if a test forgets or crashes.
// Needs root and iproute2; createLab() throws loudly when either is missing.
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';

export interface NetnsHost {
  /** Namespace name (for `ip netns exec`). */
  ns: string;
  /** The host's address on the lab subnet (no prefix length). */
  ip: string;
  /** Host-side end of the veth pair, on the bridge: set down to cut this host off. */
  veth: string;
}

export interface Lab {
  readonly id: string;
  readonly bridge: string;
  readonly hosts: NetnsHost[];
  /**
   * With createLab(n, { hostAddress: true }): this process's own address on the
   * bridge (10.77.<k>.254, routed as a /24 in the root namespace only), so tests
   * can open connections to the hosts directly. null otherwise.
   */
  readonly hostIp: string | null;
  /** Starts a process inside a host's namespace; it is killed (by PID) at cleanup. */
  spawn(host: NetnsHost, cmd: string, args: string[], opts?: SpawnOptions): ChildProcess;
  /** Runs a command in a namespace and returns its output (throws on a non-zero exit). */
  exec(host: NetnsHost, cmd: string, args: string[]): string;
  /** Cuts the host off the bridge (a partition) or reconnects it. */
  linkDown(host: NetnsHost): void;
  linkUp(host: NetnsHost): void;
  /** Kills the processes started here, deletes the namespaces and the bridge. Idempotent. */
  cleanup(): void;
}

const IP = '/usr/sbin/ip';
let counter = 0;
const live = new Set<{ cleanup(): void }>();
let hooked = false;

function ipBin(): string {
  for (const p of [IP, '/sbin/ip', '/usr/bin/ip', '/bin/ip']) {
    const r = spawnSync(p, ['-V'], { encoding: 'utf8' });
    if (r.status === 0) return p;
  }
  throw new Error('netns test harness: the `ip` command (iproute2) is missing; install iproute2 to run the multi-node tests');
}

/** Throws unless the process runs as root with iproute2 available. */
export function requireRootAndIp(): string {
  const id = spawnSync('id', ['-u'], { encoding: 'utf8' });
  const uid = id.status === 0 ? id.stdout.trim() : String(process.getuid?.());
  if (uid !== '0') {
    throw new Error(`netns test harness: these tests create network namespaces and must run as root (id -u is ${uid})`);
  }
  return ipBin();
}

/** Runs `ip` with args; throws with its error output unless allowFail. */
export function run(ip: string, args: string[], allowFail = false): string {
  const r = spawnSync(ip, args, { encoding: 'utf8' });
  if (r.status !== 0 && !allowFail) {
    throw new Error(`ip ${args.join(' ')} failed (${r.status}): ${(r.stderr || r.stdout || '').trim()}`);
  }
  return r.stdout ?? '';
}

/** Cleans `x` up if the process exits or is ended by a signal before `releaseAtExit(x)` (its own cleanup). */
export function cleanupAtExit(x: { cleanup(): void }): void {
  hookExit();
  live.add(x);
}

export function releaseAtExit(x: { cleanup(): void }): void {
  live.delete(x);
}

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const lab of [...live]) lab.cleanup();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      for (const lab of [...live]) lab.cleanup();
      process.exit(128 + ({ SIGINT: 2, SIGTERM: 15, SIGHUP: 1 } as const)[sig]);
    });
  }
}

/**
 * Creates a bridge and n namespaces wired to it. Addresses are 10.77.<k>.<i+1>/16
 * with k derived from the PID, so that the logs of parallel runs are told apart.
 */
export interface LabOptions {
  /** Give the root namespace an address on the bridge (see Lab.hostIp). */
  hostAddress?: boolean;
}

export function createLab(n: number, opts: LabOptions = {}): Lab {
  if (opts.hostAddress && n > 253) throw new Error('netns test harness: at most 253 hosts with hostAddress');
  const ip = requireRootAndIp();
  hookExit();
  const id = `${process.pid.toString(36)}${(counter++).toString(36)}`;
  const bridge = `imbr${id}`.slice(0, 15);
  // PID-derived so logs of parallel runs are told apart; with hostAddress the
  // /24 is routed in the root namespace, so the first free one from there on.
  let third = (process.pid % 250) + 1;
  if (opts.hostAddress) {
    const used = run(ip, ['-o', '-4', 'addr', 'show'], true) + run(ip, ['-4', 'route', 'show'], true);
    for (let k = 0; k < 250 && used.includes(`10.77.${third}.`); k++) third = (third % 250) + 1;
  }
  const hosts: NetnsHost[] = [];
  const procs = new Set<ChildProcess>();
  const created = { bridge: false, ns: [] as string[], veth: [] as string[] };
  let cleaned = false;

  const lab: Lab = {
    id,
    bridge,
    hosts,
    hostIp: opts.hostAddress ? `10.77.${third}.254` : null,
    spawn(host, cmd, args, opts = {}) {
      const p = spawn(ip, ['netns', 'exec', host.ns, cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
      procs.add(p);
      p.on('exit', () => procs.delete(p));
      return p;
    },
    exec(host, cmd, args) {
      const r = spawnSync(ip, ['netns', 'exec', host.ns, cmd, ...args], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} in ${host.ns} failed (${r.status}): ${(r.stderr || '').trim()}`);
      return r.stdout;
    },
    linkDown(host) {
      run(ip, ['link', 'set', 'dev', host.veth, 'down']);
    },
    linkUp(host) {
      run(ip, ['link', 'set', 'dev', host.veth, 'up']);
    },
    cleanup() {
      if (cleaned) return;
      cleaned = true;
      live.delete(lab);
      // `ip netns exec` execs the command, so these PIDs are the processes themselves.
      for (const p of procs) {
        if (p.pid !== undefined && p.exitCode === null && p.signalCode === null) {
          try {
            process.kill(p.pid, 'SIGKILL');
          } catch { /* already gone */ }
        }
      }
      procs.clear();
      for (const ns of created.ns) run(ip, ['netns', 'del', ns], true);
      // Deleting a namespace deletes its veth end, and with it the pair; this catches half-made pairs.
      for (const v of created.veth) run(ip, ['link', 'del', v], true);
      if (created.bridge) run(ip, ['link', 'del', bridge], true);
    },
  };
  live.add(lab);

  try {
    run(ip, ['link', 'add', 'name', bridge, 'type', 'bridge']);
    created.bridge = true;
    // Without snooping the bridge floods multicast to every port, which is what mDNS needs
    // (there is no querier on this bridge to keep snooping tables alive).
    run(ip, ['link', 'set', 'dev', bridge, 'type', 'bridge', 'mcast_snooping', '0']);
    run(ip, ['link', 'set', 'dev', bridge, 'up']);
    if (lab.hostIp) {
      // Two bridges routing the same /24 in the root namespace would steal each other's traffic.
      const taken = run(ip, ['-o', '-4', 'addr', 'show'], true).split('\n').find((l) => l.includes(` 10.77.${third}.`));
      if (taken) throw new Error(`netns test harness: 10.77.${third}.0/24 is already in use in the root namespace (${taken.trim()}); is another lab with hostAddress running?`);
      // The address goes away with the bridge at cleanup.
      run(ip, ['addr', 'add', `${lab.hostIp}/24`, 'dev', bridge]);
    }
    for (let i = 0; i < n; i++) {
      const ns = `imnode-${id}-${i}`;
      const veth = `imv${id}-${i}`.slice(0, 15);
      const peer = `imp${id}-${i}`.slice(0, 15);
      const addr = `10.77.${third}.${i + 1}`;
      run(ip, ['netns', 'add', ns]);
      created.ns.push(ns);
      run(ip, ['link', 'add', veth, 'type', 'veth', 'peer', 'name', peer]);
      created.veth.push(veth);
      run(ip, ['link', 'set', 'dev', peer, 'netns', ns]);
      run(ip, ['-n', ns, 'link', 'set', 'dev', peer, 'name', 'eth0']);
      run(ip, ['-n', ns, 'addr', 'add', `${addr}/16`, 'dev', 'eth0']);
      run(ip, ['-n', ns, 'link', 'set', 'dev', 'lo', 'up']);
      run(ip, ['-n', ns, 'link', 'set', 'dev', 'eth0', 'up']);
      run(ip, ['-n', ns, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0']);
      run(ip, ['link', 'set', 'dev', veth, 'master', bridge]);
      run(ip, ['link', 'set', 'dev', veth, 'up']);
      hosts.push({ ns, ip: addr, veth });
    }
  } catch (e) {
    lab.cleanup();
    throw e;
  }
  return lab;
}

/** Names of namespaces and links this process created and still holds (for leak checks). */
export function leftovers(id: string): { ns: string[]; links: string[] } {
  const ip = ipBin();
  const ns = run(ip, ['netns', 'list'], true).split('\n').map((l) => l.split(' ')[0]).filter((n) => n.includes(`-${id}-`));
  const links = run(ip, ['-o', 'link', 'show'], true).split('\n')
    .map((l) => l.split(':')[1]?.trim().split('@')[0] ?? '')
    .filter((n) => n === `imbr${id}`.slice(0, 15) || n.startsWith(`imv${id}-`) || n.startsWith(`imp${id}-`));
  return { ns, links };
}
