// The LDAP directory over TLS against a real slapd with a self-signed
// certificate for "localhost": ldaps:// (RFC 4513 §3.1.3 server identity) and
// StartTLS (RFC 4511 §4.14), each verified with --ldap-ca-file; without the CA
// the certificate is refused and the directory counts as unreachable.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { LdapUnavailableError, type LdapDirectory } from '../../src/store/ldap/directory.ts';
import { PEOPLE_DN, SERVICE_DN, SERVICE_PASSWORD, type Slapd } from '../helpers/slapd.ts';
import { LdapUnit } from '../helpers/ldap-unit.ts';

let unit: LdapUnit;
let slapd: Slapd;

test.before(async () => {
  unit = await LdapUnit.start({ tls: true, users: [{ uid: 'alice', password: 'alice-pw' }] }, 'imnode-ldap-tls-');
  slapd = unit.slapd;
});

test.after(async () => {
  await unit?.cleanup();
});

function directory(...args: string[]): Promise<LdapDirectory> {
  return unit.directory(['--ldap-base-dn', PEOPLE_DN, '--ldap-bind-dn', SERVICE_DN, '--ldap-bind-password', SERVICE_PASSWORD, '--ldap-timeout', '2s', ...args]);
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
