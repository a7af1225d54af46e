// The LDAP directory over TLS against a real slapd with a self-signed
// certificate for "localhost": ldaps:// (RFC 4513 §3.1.3 server identity) and
// StartTLS (RFC 4511 §4.14), each verified with --ldap-ca-file; without the CA
// the certificate is refused and the directory counts as unreachable.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../../src/store/db.ts';
import { LdapDirectory, LdapUnavailableError } from '../../src/store/ldap/directory.ts';
import { ldapConfig } from '../../src/store/ldap/options.ts';
import { loadConfig } from '../../src/admin/options.ts';
import { createLogger } from '../../src/admin/log.ts';
import '../../src/admin/core-options.ts';
import '../../src/modules/index.ts';
import { startSlapd, PEOPLE_DN, SERVICE_DN, SERVICE_PASSWORD, type Slapd } from '../helpers/slapd.ts';

let slapd: Slapd;
let dir: string;
let store: Store;
const opened: LdapDirectory[] = [];

test.before(async () => {
  slapd = await startSlapd({ tls: true, users: [{ uid: 'alice', password: 'alice-pw' }] });
  dir = await mkdtemp(join(tmpdir(), 'imnode-ldap-tls-'));
  store = await Store.open(dir);
});

test.after(async () => {
  for (const d of opened) await d.stop();
  await store?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
  await slapd?.cleanup();
});

async function directory(...args: string[]): Promise<LdapDirectory> {
  const { config } = await loadConfig(['--ldap-base-dn', PEOPLE_DN, '--ldap-bind-dn', SERVICE_DN, '--ldap-bind-password', SERVICE_PASSWORD,
    '--ldap-timeout', '2s', ...args], {});
  const d = new LdapDirectory({ config: (await ldapConfig(config))!, store, log: createLogger('error') });
  opened.push(d);
  await d.flushCache();
  return d;
}

test('ldaps:// with --ldap-ca-file: search and bind', async () => {
  const d = await directory('--ldap-url', `ldaps://localhost:${slapd.tlsPort}`, '--ldap-ca-file', slapd.caFile);
  assert.ok(await d.exists('alice'));
  assert.ok(await d.verifyPassword('alice', 'alice-pw'));
  assert.not.ok(await d.verifyPassword('alice', 'wrong'));
});

test('ldap:// with --ldap-starttls and --ldap-ca-file: search and bind', async () => {
  const d = await directory('--ldap-url', `ldap://localhost:${slapd.port}`, '--ldap-starttls', '--ldap-ca-file', slapd.caFile);
  assert.ok(await d.exists('alice'));
  assert.ok(await d.verifyPassword('alice', 'alice-pw'));
});

test('an untrusted certificate is refused (ldaps:// and StartTLS alike)', async () => {
  for (const args of [['--ldap-url', `ldaps://localhost:${slapd.tlsPort}`], ['--ldap-url', `ldap://localhost:${slapd.port}`, '--ldap-starttls']]) {
    const d = await directory(...args);
    try {
      await d.exists('alice');
      assert.unreachable(`${args.join(' ')}: the self-signed certificate was accepted`);
    } catch (e) {
      assert.instance(e, LdapUnavailableError, String(e));
      assert.match((e as Error).message, /certificate/i);
    }
  }
});

test.run();
