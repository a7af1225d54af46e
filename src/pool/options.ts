// The options of the server pool as the pool wants them declared, and their
// translation into Libp2pPoolOptions.
//
// NOT registered on import: src/admin/core-options.ts still declares seven of these
// names (autodiscover, pool-password, pool-port, peer, relay, relay-only, server-id)
// with `notImplemented`, and declaring a name twice throws. Whoever wires the pool
// into the server removes those seven from core-options.ts and calls
// declarePoolOptions() instead.
import { readFile, stat } from 'node:fs/promises';
import { ConfigError, declareOptions, getBool, getList, getNumber, getOptionalString, getString, type Config, type OptionSpec } from '../admin/options.ts';
import type { Logger } from '../admin/log.ts';
import { DEFAULT_POOL_PORT, type Libp2pPoolOptions } from './libp2p-pool.ts';

const GROUP = 'Pool';
const RELAY_NOT_YET = 'relays are not implemented yet in this version';

export const POOL_OPTIONS: OptionSpec[] = [
  { name: 'autodiscover', type: 'bool', default: false, group: GROUP,
    description: 'Find the other nodes of the pool on the local subnet with mDNS and join them. Nodes must share --domain and the pool password.' },
  { name: 'pool-password', type: 'string', secret: true, group: GROUP, placeholder: 'SECRET',
    description: 'Secret shared by all nodes of the pool: it keys the encryption of every pool connection, so a node without it can neither join nor read pool traffic. Without it (and without --pool-password-file) the key derives from --domain alone and anyone on the network can join: fine on a trusted LAN only.' },
  { name: 'pool-password-file', type: 'path', group: GROUP, placeholder: 'FILE',
    description: 'Read the pool password from the first line of FILE (keeps it out of the process list and the environment).' },
  { name: 'server-id', type: 'string', group: GROUP, placeholder: 'ID',
    description: 'Unique id of this node in the pool (letters, digits, ".", "_", "-"; default: the host name). A second node with an id already in the pool is refused.' },
  { name: 'pool-port', type: 'port', default: DEFAULT_POOL_PORT, group: GROUP,
    description: 'TCP port for pool traffic between nodes (all addresses). Ignored when --pool-listen is given.' },
  { name: 'pool-listen', type: 'list', group: GROUP, placeholder: 'MULTIADDR',
    description: 'Listen address(es) for pool traffic as multiaddrs, e.g. /ip4/10.0.0.5/tcp/7400. Default: /ip4/0.0.0.0/tcp/<pool-port>.' },
  { name: 'peer', type: 'list', group: GROUP, placeholder: 'MULTIADDR',
    description: 'Address of another node of the pool (static peer list, the classic "coserver" list), e.g. /ip4/10.0.0.6/tcp/7400; dialled until it answers. Needed where multicast (mDNS) does not pass.' },
  { name: 'failure-timeout', type: 'duration', default: '3s', min: 500, max: 120_000, group: GROUP,
    description: 'A node that stops answering is declared failed by the others within this time (a killed process much sooner, from its closed connections), and its sessions are purged.' },
  { name: 'relay', type: 'list', group: GROUP, notImplemented: RELAY_NOT_YET, placeholder: 'MULTIADDR',
    description: 'Address of a relay node, to reach nodes in other subnets.' },
  { name: 'relay-only', type: 'bool', default: false, group: GROUP, notImplemented: RELAY_NOT_YET,
    description: 'Run as a relay for the pool only, without client listeners.' },
];

export function declarePoolOptions(): void {
  declareOptions(POOL_OPTIONS);
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

/** Libp2pPoolOptions from a loaded configuration (declarePoolOptions() must have run). */
export async function poolOptionsFromConfig(config: Config, log: Logger): Promise<Libp2pPoolOptions> {
  return {
    dataDir: getString(config, 'data-dir'),
    domain: getString(config, 'domain'),
    password: await poolPassword(config, log),
    serverId: getOptionalString(config, 'server-id'),
    listen: getList(config, 'pool-listen'),
    port: getNumber(config, 'pool-port'),
    autodiscover: getBool(config, 'autodiscover'),
    peers: getList(config, 'peer'),
    failureTimeoutMs: getNumber(config, 'failure-timeout'),
    log,
  };
}
