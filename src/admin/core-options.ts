// The options of the core (server, TLS, storage, logging, the imnode command) and
// of the server pool (their declarations live in src/pool/options.ts, next to the
// code that uses them). Importing this module declares them; feature modules
// declare their own.
import { join } from 'node:path';
import { declareOptions } from './options.ts';
import { POOL_OPTIONS } from '../pool/options.ts';
import { DNS_SD_OPTIONS } from '../c2s/dns-sd.ts';

declareOptions([
  // General: the command itself.
  { name: 'config', type: 'path', file: false, group: 'General', placeholder: 'FILE',
    description: 'JSON config file: an object whose keys are option names, e.g. {"domain": "example.org", "c2s-port": 5222}. Flags and environment variables override it. Without --config, <data-dir>/imnode.json is read if it exists (`imnode coserver` keeps the peer list there).' },
  { name: 'help', type: 'bool', env: false, file: false, group: 'General', description: 'Print usage and the option list, then exit.' },
  { name: 'version', type: 'bool', env: false, file: false, group: 'General', description: 'Print the version, then exit.' },
  { name: 'password-file', type: 'path', file: false, group: 'General', placeholder: 'FILE',
    description: 'For `imnode user add|passwd`: read the password from the first line of FILE instead of stdin or a prompt.' },
  { name: 'json', type: 'bool', env: false, file: false, group: 'General',
    description: 'For `imnode pool status` and `imnode coserver list`: print JSON instead of text.' },

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
    description: 'Directory for the database, the generated TLS certificate, the pool peer key, the admin socket (admin.sock) and the default config file (imnode.json).' },

  // Pool: declared where the pool lives (relays still refused there).
  ...POOL_OPTIONS,
  ...DNS_SD_OPTIONS,
]);

/** Where the LevelDB database lives inside --data-dir; the server and `imnode user` must agree. */
export function databaseDir(dataDir: string): string {
  return join(dataDir, 'db');
}

/**
 * The config file read when neither --config nor IMNODE_CONFIG names one, if it
 * exists; `imnode coserver` writes the static peer list there.
 */
export function defaultConfigFile(dataDir: string): string {
  return join(dataDir, 'imnode.json');
}
