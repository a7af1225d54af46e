// The options of the LDAP user directory, their checks, and their translation
// into LdapDirectoryOptions. Importing this module declares them (src/modules/
// vcard.ts imports it, so every command, --help and the README know them); it
// must stay cheap to import: ldapts is loaded only by directory.ts.
import { readFile } from 'node:fs/promises';
import {
  ConfigError, declareOptions, getBool, getNumber, getOptionalString, getString,
  type Config, type OptionSpec,
} from '../../admin/options.ts';
import { checkFilterTemplate, FilterTemplateError } from './filter.ts';

const GROUP = 'LDAP';

export const DEFAULT_USER_FILTER = '(&(objectClass=inetOrgPerson)(uid=%u))';
export const DEFAULT_GROUP_FILTER = '(&(objectClass=groupOfNames)(member=%d))';

export const LDAP_OPTIONS: OptionSpec[] = [
  { name: 'ldap-url', type: 'string', group: GROUP, placeholder: 'URL',
    description: 'ldap://host[:port] or ldaps://host[:port] of the directory server. Setting it makes LDAP the user directory: accounts are read from there (not created, changed or deleted by imnode), passwords are checked by binding as the user, and in a pool every node must point at the same directory.' },
  { name: 'ldap-starttls', type: 'bool', default: false, group: GROUP,
    description: 'Upgrade ldap:// connections with StartTLS (RFC 4511 §4.14) before anything is sent; the server certificate is verified.' },
  { name: 'ldap-ca-file', type: 'path', group: GROUP, placeholder: 'FILE',
    description: 'PEM CA certificate(s) that sign the directory server\'s certificate (ldaps:// or --ldap-starttls). Default: the system CAs.' },
  { name: 'ldap-bind-dn', type: 'string', group: GROUP, placeholder: 'DN',
    description: 'DN of the service account that searches for users and groups. Without it, searches are anonymous.' },
  { name: 'ldap-bind-password', type: 'string', secret: true, group: GROUP, placeholder: 'SECRET',
    description: 'Password of --ldap-bind-dn. Prefer --ldap-bind-password-file or IMNODE_LDAP_BIND_PASSWORD: a flag is visible in `ps`.' },
  { name: 'ldap-bind-password-file', type: 'path', group: GROUP, placeholder: 'FILE',
    description: 'Read the password of --ldap-bind-dn from the first line of FILE. Not together with --ldap-bind-password.' },
  { name: 'ldap-base-dn', type: 'string', group: GROUP, placeholder: 'DN',
    description: 'Where users are searched (subtree), e.g. ou=people,dc=example,dc=org. Required with --ldap-url.' },
  { name: 'ldap-user-filter', type: 'string', default: DEFAULT_USER_FILTER, group: GROUP, placeholder: 'FILTER',
    description: 'RFC 4515 filter that finds one user; %u is the XMPP localpart, escaped (a localpart such as "*)(uid=*" matches nobody).' },
  { name: 'ldap-uid-attribute', type: 'string', default: 'uid', group: GROUP, placeholder: 'ATTRIBUTE',
    description: 'Attribute holding the XMPP localpart (read back to list users and to check the entry found).' },
  { name: 'ldap-name-attribute', type: 'string', default: 'cn', group: GROUP, placeholder: 'ATTRIBUTE',
    description: 'Attribute for the display name (vCard FN).' },
  { name: 'ldap-email-attribute', type: 'string', default: 'mail', group: GROUP, placeholder: 'ATTRIBUTE',
    description: 'Attribute for the e-mail address (vCard EMAIL).' },
  { name: 'ldap-photo-attribute', type: 'string', default: 'jpegPhoto', group: GROUP, placeholder: 'ATTRIBUTE',
    description: 'Attribute for the photo (vCard PHOTO, JPEG).' },
  { name: 'ldap-group-base-dn', type: 'string', group: GROUP, placeholder: 'DN',
    description: 'Where groups are searched (subtree). Default: --ldap-base-dn.' },
  { name: 'ldap-group-filter', type: 'string', default: DEFAULT_GROUP_FILTER, group: GROUP, placeholder: 'FILTER',
    description: 'RFC 4515 filter that finds the groups of a user; %d is the user\'s DN and %u the localpart, both escaped.' },
  { name: 'ldap-group-attribute', type: 'string', default: 'cn', group: GROUP, placeholder: 'ATTRIBUTE',
    description: 'Attribute holding a group\'s name.' },
  { name: 'ldap-connect-timeout', type: 'duration', default: '5s', min: 100, max: 120_000, group: GROUP,
    description: 'Longest wait for a TCP (and TLS) connection to the directory.' },
  { name: 'ldap-timeout', type: 'duration', default: '5s', min: 100, max: 120_000, group: GROUP,
    description: 'Longest wait for one LDAP operation (search, bind), a free pooled connection included. Nothing waits on LDAP longer: a login then fails with temporary-auth-failure.' },
  { name: 'ldap-pool-size', type: 'int', default: 4, min: 1, max: 64, group: GROUP,
    description: 'Connections to the directory for searches, and as many again for the binds that check passwords.' },
  { name: 'ldap-retry-max', type: 'duration', default: '30s', min: 100, max: 600_000, group: GROUP,
    description: 'While the directory is unreachable, reconnections back off from 250 ms up to this; meanwhile LDAP operations fail at once.' },
  { name: 'ldap-cache-ttl', type: 'duration', default: '10m', min: 0, group: GROUP,
    description: 'How long a user found in the directory (DN, attributes, groups) is used from this node\'s LevelDB cache before it is searched again. While the directory is unreachable, older entries are still used.' },
  { name: 'ldap-negative-cache-ttl', type: 'duration', default: '60s', min: 0, group: GROUP,
    description: 'How long "no such user" is remembered.' },
  { name: 'ldap-scram-verifiers', type: 'bool', default: false, group: GROUP,
    description: 'Read SCRAM verifiers (RFC 5803 authPassword values "SCRAM-SHA-1$..." and "SCRAM-SHA-256$...") from the user entries and offer SCRAM; the service account must be allowed to read authPassword.' },
  { name: 'ldap-scram-cache', type: 'bool', default: false, group: GROUP,
    description: 'Keep, in this node\'s cache, the SCRAM verifier derived from the password of each successful PLAIN login, and offer SCRAM: users who logged in once with PLAIN on this node can then use SCRAM, and can log in while the directory is unreachable. A password changed in the directory stops working with SCRAM only when the user next logs in with PLAIN or after --ldap-scram-cache-ttl; SCRAM is offered to every user, so a client that picks it and does not fall back to PLAIN cannot log in on a node where it never used PLAIN. Off by default.' },
  { name: 'ldap-scram-cache-ttl', type: 'duration', default: '7d', min: 0, group: GROUP,
    description: 'Age after which a verifier kept by --ldap-scram-cache is no longer used.' },
  { name: 'ldap-shared-roster', type: 'bool', default: false, group: GROUP,
    description: 'Show the members of each directory group (--ldap-group-filter) in each other\'s rosters, in a roster group named after it (shared roster groups).' },
];

declareOptions(LDAP_OPTIONS);

/** What LdapDirectory needs, read from the config. */
export interface LdapConfig {
  url: string;
  startTls: boolean;
  ca?: string;
  bindDn?: string;
  bindPassword?: string;
  baseDn: string;
  userFilter: string;
  groupBaseDn: string;
  groupFilter: string;
  attributes: { uid: string; name: string; email: string; photo: string; group: string };
  connectTimeoutMs: number;
  timeoutMs: number;
  poolSize: number;
  retryMaxMs: number;
  cacheTtlMs: number;
  negativeTtlMs: number;
  scramVerifiers: boolean;
  scramCache: boolean;
  scramCacheTtlMs: number;
  sharedRoster: boolean;
}

export function ldapEnabled(config: Config): boolean {
  return getOptionalString(config, 'ldap-url') !== undefined;
}

const ATTRIBUTE_RE = /^[A-Za-z][A-Za-z0-9-]*$/;

/** The LDAP settings, checked; ConfigError (one line, exit 2) for anything wrong. null without --ldap-url. */
export async function ldapConfig(config: Config): Promise<LdapConfig | null> {
  const url = getOptionalString(config, 'ldap-url');
  if (url === undefined) {
    const given = Object.keys(config).filter((k) => k.startsWith('ldap-') && config[k] !== undefined && k !== 'ldap-url'
      && LDAP_OPTIONS.find((o) => o.name === k)?.default === undefined);
    if (given.length) throw new ConfigError(`--${given[0]} needs --ldap-url`, given[0]);
    return null;
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ConfigError(`--ldap-url: '${url}' is not a URL (ldap://host[:port] or ldaps://host[:port])`, 'ldap-url');
  }
  if (parsed.protocol !== 'ldap:' && parsed.protocol !== 'ldaps:') {
    throw new ConfigError(`--ldap-url: '${url}' must start with ldap:// or ldaps://`, 'ldap-url');
  }
  if (!parsed.hostname) throw new ConfigError(`--ldap-url: '${url}' names no host`, 'ldap-url');
  if ((parsed.pathname && parsed.pathname !== '/') || parsed.search) {
    throw new ConfigError(`--ldap-url: give scheme, host and port only; the base DN goes in --ldap-base-dn`, 'ldap-url');
  }
  const startTls = getBool(config, 'ldap-starttls');
  if (startTls && parsed.protocol === 'ldaps:') throw new ConfigError('--ldap-starttls: the ldaps:// URL is TLS already', 'ldap-starttls');
  const baseDn = getOptionalString(config, 'ldap-base-dn');
  if (!baseDn) throw new ConfigError('--ldap-url needs --ldap-base-dn (where the users are)', 'ldap-base-dn');

  let ca: string | undefined;
  const caFile = getOptionalString(config, 'ldap-ca-file');
  if (caFile) {
    try {
      ca = await readFile(caFile, 'utf8');
    } catch (e) {
      throw new ConfigError(`--ldap-ca-file: cannot read ${caFile} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, 'ldap-ca-file');
    }
    if (!ca.includes('-----BEGIN CERTIFICATE-----')) throw new ConfigError(`--ldap-ca-file: ${caFile} holds no PEM certificate`, 'ldap-ca-file');
  }

  const bindDn = getOptionalString(config, 'ldap-bind-dn');
  let bindPassword = getOptionalString(config, 'ldap-bind-password');
  const pwFile = getOptionalString(config, 'ldap-bind-password-file');
  if (bindPassword !== undefined && pwFile) {
    throw new ConfigError('--ldap-bind-password and --ldap-bind-password-file: give one of them', 'ldap-bind-password-file');
  }
  if (pwFile) {
    try {
      bindPassword = (await readFile(pwFile, 'utf8')).split(/\r?\n/, 1)[0];
    } catch (e) {
      throw new ConfigError(`--ldap-bind-password-file: cannot read ${pwFile} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, 'ldap-bind-password-file');
    }
    if (!bindPassword) throw new ConfigError(`--ldap-bind-password-file: the first line of ${pwFile} is empty`, 'ldap-bind-password-file');
  }
  if (bindDn && bindPassword === undefined) throw new ConfigError('--ldap-bind-dn needs --ldap-bind-password or --ldap-bind-password-file', 'ldap-bind-dn');
  if (!bindDn && bindPassword !== undefined) throw new ConfigError('--ldap-bind-password without --ldap-bind-dn', 'ldap-bind-password');

  const userFilter = getString(config, 'ldap-user-filter');
  const groupFilter = getString(config, 'ldap-group-filter');
  try {
    checkFilterTemplate(userFilter, ['u']);
  } catch (e) {
    if (e instanceof FilterTemplateError) throw new ConfigError(`--ldap-user-filter: ${e.message}`, 'ldap-user-filter');
    throw e;
  }
  try {
    checkFilterTemplate(groupFilter, [], ['u', 'd']);
  } catch (e) {
    if (e instanceof FilterTemplateError) throw new ConfigError(`--ldap-group-filter: ${e.message}`, 'ldap-group-filter');
    throw e;
  }
  const attr = (name: string): string => {
    const v = getString(config, name);
    if (!ATTRIBUTE_RE.test(v)) throw new ConfigError(`--${name}: '${v}' is not an attribute name`, name);
    return v;
  };
  const scramVerifiers = getBool(config, 'ldap-scram-verifiers');
  const scramCache = getBool(config, 'ldap-scram-cache');
  if (getBool(config, 'allow-registration')) {
    throw new ConfigError('--allow-registration: accounts cannot be created in an LDAP directory (--ldap-url); create them in the directory', 'allow-registration');
  }
  return {
    url: `${parsed.protocol}//${parsed.host}`,
    startTls,
    ca,
    bindDn,
    bindPassword,
    baseDn,
    userFilter,
    groupBaseDn: getOptionalString(config, 'ldap-group-base-dn') ?? baseDn,
    groupFilter,
    attributes: {
      uid: attr('ldap-uid-attribute'),
      name: attr('ldap-name-attribute'),
      email: attr('ldap-email-attribute'),
      photo: attr('ldap-photo-attribute'),
      group: attr('ldap-group-attribute'),
    },
    connectTimeoutMs: getNumber(config, 'ldap-connect-timeout'),
    timeoutMs: getNumber(config, 'ldap-timeout'),
    poolSize: getNumber(config, 'ldap-pool-size'),
    retryMaxMs: getNumber(config, 'ldap-retry-max'),
    cacheTtlMs: getNumber(config, 'ldap-cache-ttl'),
    negativeTtlMs: getNumber(config, 'ldap-negative-cache-ttl'),
    scramVerifiers,
    scramCache,
    scramCacheTtlMs: getNumber(config, 'ldap-scram-cache-ttl'),
    sharedRoster: getBool(config, 'ldap-shared-roster'),
  };
}
