// The LDAP user directory against a real OpenLDAP slapd (test/helpers/slapd.ts),
// one imnode with --ldap-url: PLAIN login verified by binding as the user (RFC
// 4513 §5.1.3; SCRAM not offered without verifiers), wrong password, unknown
// user, filter injection (RFC 4515 escaping), the vCard (XEP-0054) built from
// the entry's attributes, the cache (a warm login costs no search; concurrent
// logins of one user share one search; `imnode cache flush`), accounts refused
// (`imnode user add`, XEP-0077 password change and removal), and the outage
// rules: slapd stopped, the logged-in user is still served and a cached user's
// vCard still answered while a new login fails at once with
// temporary-auth-failure; slapd hung (SIGSTOP), the login fails after
// --ldap-timeout, not later; slapd back, logins work again without a restart.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rmSync } from 'node:fs';
import { prepareTemplate, runCli, startServer, tempDir, type TestServer } from '../helpers/imnode.ts';
import { RawClient, NS_SASL, trustOnly } from '../helpers/raw.ts';
import { connect, expectIqError, xml, type TestClient } from '../helpers/xmppjs.ts';
import { startSlapd, type Slapd } from '../helpers/slapd.ts';
import { AdminClient } from '../../src/admin/admin-server.ts';

const PHOTO = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0xff, 0xd9]);
const USERS = {
  alice: 'alice-pw', bob: 'bob-pw', carol: 'carol-pw', dave: 'dave-pw', erin: 'erin-pw', frank: 'frank-pw', grace: 'grace-pw',
};
const TIMEOUT_MS = 2000;

let slapd: Slapd;
let server: TestServer;
let alice: TestClient | undefined;
let dataDir: string | undefined;

test.before(async () => {
  slapd = await startSlapd({
    users: [
      { uid: 'alice', password: USERS.alice, cn: 'Alice Liddell', mail: 'alice@example.test' },
      { uid: 'bob', password: USERS.bob, cn: 'Bob Builder', mail: 'bob@example.test', photo: PHOTO },
      ...['carol', 'dave', 'erin', 'frank', 'grace'].map((u) => ({ uid: u, password: USERS[u as keyof typeof USERS] })),
    ],
  });
  dataDir = tempDir();
  server = await startServer({
    dataDir,
    template: await prepareTemplate({}),
    args: [...slapd.imnodeArgs(), '--ldap-timeout', `${TIMEOUT_MS}ms`, '--ldap-connect-timeout', '1s', '--ldap-retry-max', '500ms'],
  });
  trustOnly(server);
});

test.after(async () => {
  await alice?.stop();
  await server?.stop();
  await slapd?.cleanup();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

async function stats(): Promise<Record<string, number>> {
  const s = await new AdminClient(server.dataDir).status();
  assert.ok(s.ldap, 'the status reports no ldap counters');
  return s.ldap as Record<string, number>;
}

/** One PLAIN attempt on a fresh raw stream: the SASL outcome element's name, or the failure condition, and the time it took. */
async function plain(user: string, password: string): Promise<{ outcome: string; ms: number }> {
  const c = await RawClient.to(server);
  try {
    await c.hello(true);
    const t0 = performance.now();
    const r = await c.authPlain(user, password);
    const ms = performance.now() - t0;
    return { outcome: r.name === 'success' ? 'success' : (r.elements[0]?.name ?? '?'), ms };
  } finally {
    c.destroy();
  }
}

test('only PLAIN is offered (no SCRAM verifiers), and a PLAIN login binds as the user', async () => {
  const c = await RawClient.to(server);
  try {
    const f = await c.hello(true);
    const mechs = f.getChild('mechanisms', NS_SASL)?.getChildren('mechanism').map((m) => m.text()) ?? [];
    assert.equal(mechs, ['PLAIN']);
  } finally {
    c.destroy();
  }
  const before = await stats();
  alice = await connect(server, { username: 'alice', password: USERS.alice, resource: 'desk', mechanism: 'PLAIN' });
  assert.is(alice.jid, 'alice@localhost/desk');
  const after = await stats();
  assert.is(after.binds - before.binds, 1, 'one bind for the login');
});

test('wrong password and unknown user: not-authorized', async () => {
  assert.is((await plain('alice', 'not-her-password')).outcome, 'not-authorized');
  assert.is((await plain('nobody', 'whatever')).outcome, 'not-authorized');
});

test('filter injection: a localpart such as *)(uid=* matches nobody', async () => {
  const before = await stats();
  for (const name of ['*)(uid=*', '*', 'alice)(uid=*', 'a*', '*)(|(uid=*']) {
    assert.is((await plain(name, USERS.alice)).outcome, 'not-authorized', name);
  }
  const after = await stats();
  // Each was searched (escaped) and found nobody, so nobody was bound.
  assert.is(after.binds - before.binds, 0, 'no bind: no entry matched');
  assert.ok(after.searches - before.searches >= 1, 'the names were searched');
});

test('vCard from the directory attributes (FN, EMAIL, PHOTO); unknown user: service-unavailable', async () => {
  assert.ok(alice);
  const r = await alice.iq(xml('iq', { type: 'get', to: 'bob@localhost' }, xml('vCard', { xmlns: 'vcard-temp' })));
  const v = r.getChild('vCard', 'vcard-temp');
  assert.ok(v, r.toString());
  assert.is(v.getChildText('FN'), 'Bob Builder');
  assert.is(v.getChild('EMAIL')?.getChildText('USERID'), 'bob@example.test');
  assert.is(v.getChild('PHOTO')?.getChildText('TYPE'), 'image/jpeg');
  assert.equal(Buffer.from(v.getChild('PHOTO')?.getChildText('BINVAL') ?? '', 'base64'), PHOTO);
  const e = await expectIqError(alice, xml('iq', { type: 'get', to: 'nobody@localhost' }, xml('vCard', { xmlns: 'vcard-temp' })));
  assert.is(e.condition, 'service-unavailable');
});

test('own vCard: the fields the directory has win, the others are kept', async () => {
  assert.ok(alice);
  await alice.iq(xml('iq', { type: 'set' }, xml('vCard', { xmlns: 'vcard-temp' }, xml('FN', {}, 'Not Alice'), xml('NICKNAME', {}, 'ally'))));
  const r = await alice.iq(xml('iq', { type: 'get' }, xml('vCard', { xmlns: 'vcard-temp' })));
  const v = r.getChild('vCard', 'vcard-temp')!;
  assert.is(v.getChildText('FN'), 'Alice Liddell');
  assert.is(v.getChildText('NICKNAME'), 'ally');
  assert.is(v.getChildren('FN').length, 1);
});

test('warm cache: a login costs one bind and no search', async () => {
  const before = await stats();
  for (let i = 0; i < 3; i++) assert.is((await plain('alice', USERS.alice)).outcome, 'success');
  const after = await stats();
  assert.is(after.searches - before.searches, 0, 'searches with a warm cache');
  assert.is(after.binds - before.binds, 3);
});

test('concurrent logins of one uncached user share one search', async () => {
  const before = await stats();
  const outcomes = await Promise.all(Array.from({ length: 6 }, () => plain('dave', USERS.dave)));
  assert.equal(outcomes.map((o) => o.outcome), Array(6).fill('success'));
  const after = await stats();
  assert.is(after.searches - before.searches, 1, 'one search for six logins');
});

test('imnode cache flush <name> through the running node: the next login searches again', async () => {
  const r = await runCli(['cache', 'flush', 'dave', '--data-dir', server.dataDir, '--domain', server.domain]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /flushed 1 cache entries of dave@localhost on the running node/);
  const before = await stats();
  assert.is((await plain('dave', USERS.dave)).outcome, 'success');
  assert.is((await stats()).searches - before.searches, 1);
});

test('imnode user list on the running node lists the directory\'s users', async () => {
  const r = await runCli(['user', 'list', '--data-dir', server.dataDir, '--domain', server.domain]);
  assert.is(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim().split('\n'), Object.keys(USERS).sort());
});

test('accounts are managed in the directory: imnode user add is refused', async () => {
  const r = await runCli(['user', 'add', 'zoe', '--data-dir', server.dataDir, '--domain', server.domain], { input: 'pw\n' });
  assert.is(r.code, 1, r.stderr);
  assert.match(r.stderr, /read-only/);
});

test('in-band password change and account removal (XEP-0077 §3.3, §3.2): not-allowed, the password unchanged', async () => {
  assert.ok(alice);
  const reg = (...children: ReturnType<typeof xml>[]) => xml('iq', { type: 'set', to: server.domain }, xml('query', { xmlns: 'jabber:iq:register' }, ...children));
  let e = await expectIqError(alice, reg(xml('username', {}, 'alice'), xml('password', {}, 'hijacked')));
  assert.is(e.condition, 'not-allowed');
  e = await expectIqError(alice, reg(xml('remove')));
  assert.is(e.condition, 'not-allowed');
  assert.is((await plain('alice', USERS.alice)).outcome, 'success');
  assert.is((await plain('alice', 'hijacked')).outcome, 'not-authorized');
});

test('slapd stopped: the logged-in user is served, a cached vCard answered, a new login fails at once with temporary-auth-failure', async () => {
  assert.ok(alice);
  await slapd.stop();
  // The session goes on: the server answers it.
  await alice.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
  const r = await alice.iq(xml('iq', { type: 'get', to: 'bob@localhost' }, xml('vCard', { xmlns: 'vcard-temp' })));
  assert.is(r.getChild('vCard', 'vcard-temp')?.getChildText('FN'), 'Bob Builder');
  const t = await plain('erin', USERS.erin);
  assert.is(t.outcome, 'temporary-auth-failure');
  assert.ok(t.ms < TIMEOUT_MS, `the failure took ${Math.round(t.ms)} ms`);
  // A cached user cannot log in either: only a bind checks a password (no --ldap-scram-cache).
  assert.is((await plain('alice', USERS.alice)).outcome, 'temporary-auth-failure');
  assert.ok(server.proc.exitCode === null, 'imnode still runs');
});

/** Retries a PLAIN login every 200 ms until it succeeds or `ms` pass (the directory coming back); the last outcome. */
async function plainWithin(user: keyof typeof USERS, ms: number): Promise<string> {
  const t0 = Date.now();
  let outcome = '';
  while (Date.now() - t0 < ms) {
    outcome = (await plain(user, USERS[user])).outcome;
    if (outcome === 'success') break;
    await new Promise((r) => setTimeout(r, 200));
  }
  return outcome;
}

test('slapd back: logins work again without restarting imnode', async () => {
  await slapd.start();
  assert.is(await plainWithin('erin', 10_000), 'success', 'erin could not log in within 10 s of the restart');
  assert.is((await plain('alice', USERS.alice)).outcome, 'success');
});

test('slapd hung (SIGSTOP): a new login fails after --ldap-timeout, not later, and works once it answers again', async () => {
  await slapd.freeze();
  try {
    const t = await plain('frank', USERS.frank);
    assert.is(t.outcome, 'temporary-auth-failure');
    assert.ok(t.ms < TIMEOUT_MS + 1500, `the failure took ${Math.round(t.ms)} ms (timeout ${TIMEOUT_MS})`);
  } finally {
    slapd.thaw();
  }
  assert.is(await plainWithin('frank', 10_000), 'success', 'frank could not log in within 10 s of the thaw');
});

test('imnode cache flush (all) through the running node', async () => {
  const r = await runCli(['cache', 'flush', '--data-dir', server.dataDir, '--domain', server.domain]);
  assert.is(r.code, 0, r.stderr);
  const n = Number(/flushed (\d+) cache entries of every user/.exec(r.stderr)?.[1]);
  assert.ok(n >= 5, r.stderr);
  const before = await stats();
  assert.is((await plain('alice', USERS.alice)).outcome, 'success');
  assert.is((await stats()).searches - before.searches, 1);
});

test('imnode cache flush on a stopped node works in its data dir', async () => {
  assert.is(await server.stop(), 0);
  const r = await runCli(['cache', 'flush', '--data-dir', server.dataDir, '--domain', server.domain]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`flushed [1-9]\\d* cache entries of every user in ${server.dataDir}`));
  const again = await runCli(['cache', 'flush', '--data-dir', server.dataDir, '--domain', server.domain]);
  assert.match(again.stderr, /flushed 0 cache entries/);
});

test('bad LDAP settings stop the start with one line and exit code 2', async () => {
  const cases: Array<[string[], RegExp]> = [
    [['--ldap-url', slapd.url], /--ldap-url needs --ldap-base-dn/],
    [['--ldap-url', 'http://x', '--ldap-base-dn', 'dc=x'], /must start with ldap:\/\/ or ldaps:\/\//],
    [[...slapd.imnodeArgs(), '--ldap-user-filter', '(uid=alice)'], /--ldap-user-filter: the filter must contain %u/],
    [[...slapd.imnodeArgs(), '--allow-registration'], /--allow-registration: accounts cannot be created in an LDAP directory/],
    [['--ldap-base-dn', 'dc=x'], /--ldap-base-dn needs --ldap-url/],
  ];
  for (const [args, re] of cases) {
    const r = await runCli(['--data-dir', server.dataDir + '-bad', '--c2s-port', '0', '--c2s-tls-port', '0', ...args]);
    assert.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
});

test.run();
