// The options of the core (server, TLS, storage, logging, the imnode command) and
// of the server pool, which is declared already so that its flags are refused with
// a clear message instead of being taken for typos or silently ignored.
// Importing this module declares them; feature modules declare their own.
import { join } from 'node:path';
import { declareOptions } from './options.ts';

const POOL_NOT_YET = 'the server pool is not implemented yet in this version';
const POOL_GROUP = 'Pool (not yet implemented)';

declareOptions([
  // General: the command itself.
  { name: 'config', type: 'path', file: false, group: 'General', placeholder: 'FILE',
    description: 'JSON config file: an object whose keys are option names, e.g. {"domain": "example.org", "c2s-port": 5222}. Flags and environment variables override it.' },
  { name: 'help', type: 'bool', env: false, file: false, group: 'General', description: 'Print usage and the option list, then exit.' },
  { name: 'version', type: 'bool', env: false, file: false, group: 'General', description: 'Print the version, then exit.' },
  { name: 'password-file', type: 'path', file: false, group: 'General', placeholder: 'FILE',
    description: 'For `imnode user add|passwd`: read the password from the first line of FILE instead of stdin or a prompt.' },

  // Server
  { name: 'domain', type: 'string', default: 'imnode.local', group: 'Server', placeholder: 'DOMAIN',
    description: 'The XMPP domain served. Must be the same on every node of a pool: zero-config nodes on one LAN form one pool serving one domain.' },
  { name: 'bind', type: 'string', default: '::', group: 'Server', placeholder: 'ADDRESS',
    description: 'Address the client listeners bind to. The default "::" accepts IPv4 and IPv6 (dual stack); use 0.0.0.0 on hosts without IPv6.' },
  { name: 'c2s-port', type: 'port', default: 5222, min: 0, group: 'Server',
    description: 'Client-to-server port (RFC 6120, STARTTLS). 0 picks a free port (the "ready" log line names it).' },
  { name: 'c2s-tls-port', type: 'port', default: 5223, min: 0, group: 'Server',
    description: 'Client-to-server port with direct TLS (XEP-0368). 0 picks a free port.' },
  { name: 'direct-tls', type: 'bool', default: true, group: 'Server',
    description: 'Listen on --c2s-tls-port for direct TLS (XEP-0368); --no-direct-tls turns that listener off.' },
  { name: 'require-tls', type: 'enum', values: ['always', 'not-loopback', 'never'], default: 'not-loopback', group: 'Server',
    description: 'When STARTTLS is required before authentication: always, on every connection but loopback ones (default), or never (PLAIN is still only offered over TLS).' },
  { name: 'allow-registration', type: 'bool', default: false, group: 'Server',
    description: 'Let clients create accounts themselves (XEP-0077 in-band registration).' },
  { name: 'max-stanza-size', type: 'int', default: 262144, min: 1024, max: 64 * 1024 * 1024, group: 'Server', placeholder: 'BYTES',
    description: 'Largest stanza accepted from a client, in bytes; a larger one closes the stream with policy-violation.' },
  { name: 'sm-resume-timeout', type: 'duration', default: '300s', min: 0, group: 'Server',
    description: 'How long a dropped session can be resumed (XEP-0198 stream management).' },
  { name: 'auth-fail-delay', type: 'duration', default: '1s', min: 0, max: 60_000, group: 'Server',
    description: 'Delay before answering a failed authentication, to slow down password guessing.' },
  { name: 'log-level', type: 'enum', values: ['error', 'warn', 'info', 'debug'], default: 'info', group: 'Server',
    description: 'Least severe log level written to stderr.' },

  // TLS
  { name: 'cert', type: 'path', group: 'TLS', placeholder: 'FILE',
    description: 'PEM certificate (chain) for the domain. Without --cert and --key, a self-signed certificate is generated in the tls folder of --data-dir.' },
  { name: 'key', type: 'path', group: 'TLS', placeholder: 'FILE',
    description: 'PEM private key matching --cert.' },

  // Storage
  { name: 'data-dir', type: 'path', default: './imnode-data', group: 'Storage', placeholder: 'DIR',
    description: 'Directory for the database and the generated TLS certificate.' },

  // Pool
  { name: 'autodiscover', type: 'bool', default: false, group: POOL_GROUP, notImplemented: POOL_NOT_YET,
    description: 'Find the other nodes of the pool on the local subnet with mDNS.' },
  { name: 'pool-password', type: 'string', secret: true, group: POOL_GROUP, notImplemented: POOL_NOT_YET, placeholder: 'SECRET',
    description: 'Secret shared by all nodes of the pool; a node without it can neither join nor read pool traffic.' },
  { name: 'pool-port', type: 'port', group: POOL_GROUP, notImplemented: POOL_NOT_YET,
    description: 'Port for pool traffic between nodes.' },
  { name: 'peer', type: 'list', group: POOL_GROUP, notImplemented: POOL_NOT_YET, placeholder: 'ADDR',
    description: 'Address of another node of the pool (static peer list).' },
  { name: 'relay', type: 'list', group: POOL_GROUP, notImplemented: POOL_NOT_YET, placeholder: 'ADDR',
    description: 'Address of a relay node, to reach nodes in other subnets.' },
  { name: 'relay-only', type: 'bool', default: false, group: POOL_GROUP, notImplemented: POOL_NOT_YET,
    description: 'Run as a relay for the pool only, without client listeners.' },
  { name: 'server-id', type: 'string', group: POOL_GROUP, notImplemented: POOL_NOT_YET, placeholder: 'ID',
    description: 'Unique id of this node in the pool (default: derived from its persisted peer key).' },
]);

/** Where the LevelDB database lives inside --data-dir; the server and `imnode user` must agree. */
export function databaseDir(dataDir: string): string {
  return join(dataDir, 'db');
}
