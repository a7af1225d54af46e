// SCRAM with the LDAP directory, against a real slapd: it is offered only when
// verifiers exist.
//  - --ldap-scram-verifiers: RFC 5803 authPassword values read from the entry
//    (Debian's slapd has no authPassword schema; test/helpers/slapd.ts defines it).
//  - --ldap-scram-cache: the verifier derived at the last successful PLAIN login;
//    SCRAM then needs no LDAP operation, logins of such users go on while the
//    directory is down, and a password changed in the directory ends the old
//    verifier as soon as the old password is refused by a bind.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { prepareTemplate, startServer, type TestServer } from '../helpers/imnode.ts';
import { RawClient, NS_SASL, trustOnly } from '../helpers/raw.ts';
import { connect, connectFails } from '../helpers/xmppjs.ts';
import { startSlapd, ssha, userDn, type Slapd } from '../helpers/slapd.ts';
import { AdminClient } from '../../src/admin/admin-server.ts';
import { deriveCredentials } from '../../src/xmpp/scram.ts';

let slapd: Slapd;
const servers: TestServer[] = [];

async function authPasswords(password: string): Promise<string[]> {
  const c = await deriveCredentials(password, 4096);
  return (['SHA-1', 'SHA-256'] as const).map((h) => `SCRAM-${h}$${c[h].iterations}:${c[h].salt}$${c[h].storedKey}:${c[h].serverKey}`);
}

test.before(async () => {
  slapd = await startSlapd({
    users: [
      { uid: 'victor', password: 'victor-pw', authPassword: await authPasswords('victor-pw') },
      { uid: 'wendy', password: 'wendy-pw' },
      { uid: 'xavier', password: 'xavier-pw' },
    ],
  });
});

test.after(async () => {
  for (const s of servers) await s.stop();
  await slapd?.cleanup();
});

async function server(...args: string[]): Promise<TestServer> {
  const s = await startServer({ template: await prepareTemplate({}), args: [...slapd.imnodeArgs(), '--ldap-timeout', '2s', '--ldap-retry-max', '500ms', ...args] });
  servers.push(s);
  return s;
}

async function mechanisms(s: TestServer): Promise<string[]> {
  trustOnly(s);
  const c = await RawClient.to(s);
  try {
    const f = await c.hello(true);
    return f.getChild('mechanisms', NS_SASL)?.getChildren('mechanism').map((m) => m.text()) ?? [];
  } finally {
    c.destroy();
  }
}

async function login(s: TestServer, username: string, password: string, mechanism: 'SCRAM-SHA-1' | 'PLAIN'): Promise<string> {
  trustOnly(s);
  try {
    const c = await connect(s, { username, password, mechanism });
    await c.stop();
    return 'success';
  } catch (e) {
    return (e as { condition?: string }).condition ?? String(e);
  }
}

async function ldapStats(s: TestServer): Promise<Record<string, number>> {
  return (await new AdminClient(s.dataDir).status()).ldap as Record<string, number>;
}

test('--ldap-scram-verifiers: SCRAM offered, checked against the authPassword values', async () => {
  const s = await server('--ldap-scram-verifiers');
  assert.equal(await mechanisms(s), ['SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN']);
  const before = await ldapStats(s);
  assert.is(await login(s, 'victor', 'victor-pw', 'SCRAM-SHA-1'), 'success');
  assert.is((await ldapStats(s)).binds - before.binds, 0, 'SCRAM needs no bind');
  assert.is(await login(s, 'victor', 'wrong', 'SCRAM-SHA-1'), 'not-authorized');
  assert.is(await login(s, 'victor', 'victor-pw', 'PLAIN'), 'success');
  // A user without verifiers: SCRAM cannot work, PLAIN does.
  const e = await connectFails(s, { username: 'wendy', password: 'wendy-pw', mechanism: 'SCRAM-SHA-1' }) as Error & { condition?: string };
  assert.is(e.condition, 'not-authorized');
  assert.is(await login(s, 'wendy', 'wendy-pw', 'PLAIN'), 'success');
});

test('--ldap-scram-cache: SCRAM after a PLAIN login, without LDAP, and through an outage', async () => {
  const s = await server('--ldap-scram-cache');
  assert.equal(await mechanisms(s), ['SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN']);
  assert.is(await login(s, 'wendy', 'wendy-pw', 'SCRAM-SHA-1'), 'not-authorized', 'no verifier before a PLAIN login');
  assert.is(await login(s, 'wendy', 'wendy-pw', 'PLAIN'), 'success');
  const before = await ldapStats(s);
  assert.is(await login(s, 'wendy', 'wendy-pw', 'SCRAM-SHA-1'), 'success');
  assert.is(await login(s, 'wendy', 'bad', 'SCRAM-SHA-1'), 'not-authorized');
  const after = await ldapStats(s);
  assert.is(after.binds - before.binds, 0);
  assert.is(after.searches - before.searches, 0);

  await slapd.stop();
  try {
    assert.is(await login(s, 'wendy', 'wendy-pw', 'SCRAM-SHA-1'), 'success', 'SCRAM with the cached verifier while slapd is down');
    assert.is(await login(s, 'wendy', 'wendy-pw', 'PLAIN'), 'success', 'PLAIN checked against the cached verifier while slapd is down');
    assert.is(await login(s, 'wendy', 'bad', 'PLAIN'), 'not-authorized');
    assert.is(await login(s, 'xavier', 'xavier-pw', 'PLAIN'), 'temporary-auth-failure', 'a user never seen cannot be checked');
  } finally {
    await slapd.start();
  }
});

test('--ldap-scram-cache: a password changed in the directory ends the old verifier', async () => {
  const s = servers[1];
  assert.ok(s);
  // Wait for the pool to have reconnected after the previous test's outage.
  const t0 = Date.now();
  while (await login(s, 'xavier', 'xavier-pw', 'PLAIN') !== 'success') {
    if (Date.now() - t0 > 10_000) assert.unreachable('slapd not usable again within 10 s');
    await new Promise((r) => setTimeout(r, 200));
  }
  slapd.modify(`dn: ${userDn('wendy')}\nchangetype: modify\nreplace: userPassword\nuserPassword: ${ssha('wendy-new')}\n`);
  // The old password still opens SCRAM until a bind refuses it (the documented cost of --ldap-scram-cache)...
  assert.is(await login(s, 'wendy', 'wendy-pw', 'SCRAM-SHA-1'), 'success');
  assert.is(await login(s, 'wendy', 'wendy-pw', 'PLAIN'), 'not-authorized');
  // ...and then it does not.
  assert.is(await login(s, 'wendy', 'wendy-pw', 'SCRAM-SHA-1'), 'not-authorized');
  assert.is(await login(s, 'wendy', 'wendy-new', 'PLAIN'), 'success');
  assert.is(await login(s, 'wendy', 'wendy-new', 'SCRAM-SHA-1'), 'success');
});

test.run();
