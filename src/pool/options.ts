// The options of the server pool, their checks, and their translation into
// Libp2pPoolOptions.
//
// Declared by src/admin/core-options.ts (it imports POOL_OPTIONS), so that every
// command, --help and the README know them. This module must stay cheap to import:
// it is loaded by every `imnode` invocation, and libp2p costs ~0.4 s to load. Hence
// type-only imports from libp2p-pool.ts, and multiaddr parsing loaded on demand.
import { readFile, stat } from 'node:fs/promises';
import {
  allOptions, ConfigError, declareOptions, getBool, getList, getNumber, getOptionalString, getString,
  type Config, type OptionSpec,
} from '../admin/options.ts';
import type { Logger } from '../admin/log.ts';
import type { Libp2pPoolOptions } from './libp2p-pool.ts';

const GROUP = 'Pool';

/** Equals DEFAULT_POOL_PORT of libp2p-pool.ts (test/unit/config.test.ts checks it); see there why 7400. */
export const POOL_PORT_DEFAULT = 7400;
/** The rule Libp2pPool applies to server ids, checked here before anything starts. */
const SERVER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export const POOL_OPTIONS: OptionSpec[] = [
  { name: 'autodiscover', type: 'bool', default: false, group: GROUP,
    description: 'Find the other nodes of the pool on the local subnet with mDNS and join them. Nodes must share --domain and the pool password.' },
  { name: 'pool-password', type: 'string', secret: true, group: GROUP, placeholder: 'SECRET',
    description: 'Secret shared by all nodes of the pool: it keys the encryption of every pool connection, so a node without it can neither join nor read pool traffic. Without it (and without --pool-password-file) the key derives from --domain alone and anyone on the network can join: fine on a trusted LAN only. Warning: a flag is visible to every local user in `ps`; prefer IMNODE_POOL_PASSWORD or --pool-password-file.' },
  { name: 'pool-password-file', type: 'path', group: GROUP, placeholder: 'FILE',
    description: 'Read the pool password from the first line of FILE (keeps it out of the process list and the environment). Not together with --pool-password.' },
  { name: 'server-id', type: 'string', group: GROUP, placeholder: 'ID',
    description: 'Unique id of this node in the pool (1-64 letters, digits, ".", "_", "-", starting with a letter or digit; default: the host name). A second node with an id already in the pool is refused.' },
  { name: 'pool-port', type: 'port', default: POOL_PORT_DEFAULT, min: 0, group: GROUP,
    description: 'TCP port for pool traffic between nodes (all addresses); 0 picks a free port. Ignored when --pool-listen is given.' },
  { name: 'pool-listen', type: 'list', group: GROUP, placeholder: 'MULTIADDR',
    description: 'Listen address(es) for pool traffic as multiaddrs, e.g. /ip4/10.0.0.5/tcp/7400. Default: /ip4/0.0.0.0/tcp/<pool-port>.' },
  { name: 'peer', type: 'list', group: GROUP, placeholder: 'MULTIADDR',
    description: 'Address of another node of the pool (static peer list, the classic "coserver" list, also kept by `imnode coserver`), e.g. /ip4/10.0.0.6/tcp/7400; dialled until it answers. Needed where multicast (mDNS) does not pass.' },
  { name: 'failure-timeout', type: 'duration', default: '3s', min: 500, max: 120_000, group: GROUP,
    description: 'A node that stops answering is declared failed by the others within this time (a killed process much sooner, from its closed connections), and its sessions are purged.' },
  { name: 'relay', type: 'list', group: GROUP, placeholder: 'MULTIADDR',
    description: 'Address of a relay node of the pool (`imnode --relay-only`), e.g. /ip4/192.0.2.7/tcp/7400 (the classic relay URI list). The node keeps a reservation on each relay and announces the relayed address, learns through the relays the members of other subnets, and connects to them directly where the network routes, through the relay where it does not (NAT). Dialled until it answers, and again after a relay restart. On a relay-only node: other relays to connect to.' },
  { name: 'relay-only', type: 'bool', default: false, group: GROUP,
    description: 'Run as a relay of the pool: a circuit relay v2 server for pool members only (the pool password applies) and a pool member that routes membership gossip, with no XMPP client listeners and no modules. Listens on --pool-listen or --pool-port; its peer key in --data-dir keeps its address stable. Pool connections through it have no data or time limit.' },
  { name: 'relay-max-reservations', type: 'int', default: 256, min: 1, max: 100_000, group: GROUP, placeholder: 'N',
    description: 'With --relay-only: how many pool members may hold a reservation at once (one per member that lists this relay).' },
];

/**
 * core-options.ts declares the pool options on import; this only declares those
 * still missing (a program that builds its own option set), so calling it twice,
 * or after core-options.ts, is harmless.
 */
export function declarePoolOptions(): void {
  const known = new Set(allOptions().map((o) => o.name));
  declareOptions(POOL_OPTIONS.filter((o) => !known.has(o.name)));
}

/** The pool password from --pool-password or --pool-password-file (at most one of them). */
export async function poolPassword(config: Config, log?: Logger): Promise<string | undefined> {
  const inline = getOptionalString(config, 'pool-password');
  const file = getOptionalString(config, 'pool-password-file');
  if (inline !== undefined && file !== undefined) {
    throw new ConfigError('--pool-password and --pool-password-file: give one of them, not both', 'pool-password-file');
  }
  if (file === undefined) return inline;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
    const st = await stat(file);
    if ((st.mode & 0o077) !== 0) log?.warn(`pool password file ${file} is readable by other users (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
  } catch (e) {
    throw new ConfigError(`--pool-password-file ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, 'pool-password-file');
  }
  const first = text.split(/\r?\n/)[0];
  if (!first) throw new ConfigError(`--pool-password-file ${file}: the first line is empty`, 'pool-password-file');
  return first;
}

const HOSTS = new Set(['ip4', 'ip6', 'dns', 'dns4', 'dns6']);
const LISTEN_HOSTS = new Set(['ip4', 'ip6']);

/**
 * Checks one pool address and returns its canonical form. `kind` says what it is
 * for: a peer to dial (a host name is fine, /dnsaddr too, /p2p/<id> optional) or a
 * local listen address (an IP and a TCP port). Only TCP is configured, so an address
 * without it could never be used: refused now rather than failing later at run time.
 * `label` starts the error message, e.g. '--peer' or 'coserver add'.
 */
export async function checkPoolAddress(value: string, kind: 'peer' | 'listen', label: string): Promise<string> {
  const option = kind === 'peer' ? 'peer' : 'pool-listen';
  const example = kind === 'peer' ? `/ip4/10.0.0.6/tcp/${POOL_PORT_DEFAULT}` : `/ip4/0.0.0.0/tcp/${POOL_PORT_DEFAULT}`;
  const bad = (why: string): never => {
    throw new ConfigError(`${label} ${value}: ${why}; e.g. ${example}`, option);
  };
  const { multiaddr } = await import('@multiformats/multiaddr');
  let components: { name: string; value?: string }[];
  let canonical: string;
  try {
    const ma = multiaddr(value.trim());
    components = ma.getComponents();
    canonical = ma.toString();
  } catch (e) {
    return bad(`not a multiaddr (${(e as Error).message.split('\n')[0]})`);
  }
  const names = components.map((c) => c.name);
  if (!names.length) return bad('not a multiaddr');
  const hosts = kind === 'listen' ? LISTEN_HOSTS : HOSTS;
  if (kind === 'peer' && names[0] === 'dnsaddr') {
    // Resolved to full addresses through DNS TXT records; nothing more to check here.
  } else {
    if (!hosts.has(names[0])) return bad(`must start with ${[...hosts].map((h) => '/' + h).join(', ')}${kind === 'peer' ? ' or /dnsaddr' : ''}`);
    if (names[1] !== 'tcp') return bad('needs a TCP port right after the host (pool traffic is TCP)');
  }
  const p2p = components.filter((c) => c.name === 'p2p');
  if (kind === 'listen' && p2p.length) return bad('a listen address cannot name a peer (/p2p)');
  if (p2p.length > 1) return bad('names more than one peer (/p2p)');
  if (p2p.length) {
    const { peerIdFromString } = await import('@libp2p/peer-id');
    try {
      peerIdFromString(p2p[0].value ?? '');
    } catch {
      return bad(`'${p2p[0].value ?? ''}' is not a peer id`);
    }
  }
  if (names.length > (p2p.length ? 3 : 2) && names[0] !== 'dnsaddr') return bad(`unexpected /${names.slice(2).filter((n) => n !== 'p2p').join('/')} (only host, TCP port and optionally /p2p/<peer id>)`);
  return canonical;
}

/** --server-id as Libp2pPool will accept it; undefined when not given (the host name is used). */
export function checkServerId(config: Config): string | undefined {
  const id = getOptionalString(config, 'server-id');
  if (id !== undefined && !SERVER_ID_RE.test(id)) {
    throw new ConfigError(`--server-id: '${id}' is not valid (1-64 letters, digits, '.', '_' or '-', starting with a letter or digit)`, 'server-id');
  }
  return id;
}

/**
 * Every pool option checked as the pool will use it, so that a bad value stops
 * `imnode` at once with one line (exit 2) instead of after the rest has started.
 * Reads --pool-password-file. Throws ConfigError.
 */
export async function checkPoolConfig(config: Config): Promise<void> {
  await checkedAddresses(config);
  checkServerId(config);
  await poolPassword(config);
}

async function checkedAddresses(config: Config): Promise<{ peers: string[]; listen: string[]; relays: string[] }> {
  const peers: string[] = [];
  for (const p of getList(config, 'peer')) peers.push(await checkPoolAddress(p, 'peer', '--peer'));
  const listen: string[] = [];
  for (const l of getList(config, 'pool-listen')) listen.push(await checkPoolAddress(l, 'listen', '--pool-listen'));
  const relays: string[] = [];
  for (const r of getList(config, 'relay')) {
    // A relay address is a peer address (the relay's own, not a /p2p-circuit one).
    const a = await checkPoolAddress(r, 'peer', '--relay').catch((e: unknown) => {
      throw e instanceof ConfigError ? new ConfigError(e.message.replace(/; e\.g\. .*$/, `; e.g. /ip4/10.0.0.7/tcp/${POOL_PORT_DEFAULT}`), 'relay') : e;
    });
    if (!relays.includes(a)) relays.push(a);
  }
  return { peers, listen, relays };
}

/** Libp2pPoolOptions from a loaded configuration; throws ConfigError for bad values. */
export async function poolOptionsFromConfig(config: Config, log: Logger): Promise<Libp2pPoolOptions> {
  const { peers, listen, relays } = await checkedAddresses(config);
  const relayOnly = getBool(config, 'relay-only');
  return {
    dataDir: getString(config, 'data-dir'),
    domain: getString(config, 'domain'),
    password: await poolPassword(config, log),
    serverId: checkServerId(config),
    listen,
    port: getNumber(config, 'pool-port'),
    autodiscover: getBool(config, 'autodiscover'),
    failureTimeoutMs: getNumber(config, 'failure-timeout'),
    log,
    // A relay reserves on no other relay (no relay of relays): it only connects to them.
    ...(relayOnly
      ? { peers: [...peers, ...relays.filter((r) => !peers.includes(r))], relayServer: { maxReservations: getNumber(config, 'relay-max-reservations') } }
      : { peers, relays }),
  };
}
