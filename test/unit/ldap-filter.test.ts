// RFC 4515 escaping and filter templates of the LDAP directory, the RFC 5803
// authPassword parser, member DNs to localparts (RFC 4514), shared roster items.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { checkFilterTemplate, escapeFilterValue, renderFilter, FilterTemplateError } from '../../src/store/ldap/filter.ts';
import { localpartOfDn, parseAuthPasswords } from '../../src/store/ldap/directory.ts';
import { sharedItem } from '../../src/modules/shared-roster.ts';
import { deriveCredential } from '../../src/xmpp/scram.ts';

test('escapeFilterValue: the five characters of RFC 4515 §3, nothing else', () => {
  assert.is(escapeFilterValue('*)(uid=*'), '\\2a\\29\\28uid=\\2a');
  assert.is(escapeFilterValue('a\\b'), 'a\\5cb');
  assert.is(escapeFilterValue('nul\0'), 'nul\\00');
  assert.is(escapeFilterValue('plain.name-1_x'), 'plain.name-1_x');
  // UTF-8 goes as is (RFC 4515 §3: UTF1SUBSET and UTFMB are valid in a value).
  assert.is(escapeFilterValue('jürgen'), 'jürgen');
  assert.is(escapeFilterValue('日本'), '日本');
});

test('renderFilter: placeholders escaped, %% literal', () => {
  assert.is(renderFilter('(&(objectClass=inetOrgPerson)(uid=%u))', { u: '*)(uid=*' }), '(&(objectClass=inetOrgPerson)(uid=\\2a\\29\\28uid=\\2a))');
  assert.is(renderFilter('(&(member=%d)(cn=100%%))', { d: 'uid=a*,dc=x' }), '(&(member=uid=a\\2a,dc=x)(cn=100%))');
  assert.throws(() => renderFilter('(uid=%u)', {}), TypeError);
});

test('checkFilterTemplate: parentheses, placeholders, required ones', () => {
  checkFilterTemplate('(uid=%u)', ['u']);
  checkFilterTemplate('(&(member=%d)(x=%%))', [], ['u', 'd']);
  const bad: Array<[string, RegExp]> = [
    ['uid=%u', /parentheses/],
    ['((uid=%u)', /unbalanced/],
    ['(a=%u))(b=1)', /unbalanced/],
    ['(uid=%x)', /unknown placeholder %x/],
    ['(uid=alice)', /must contain %u/],
    ['(member=%d)', /%d cannot be used/],
  ];
  for (const [t, re] of bad) {
    try {
      checkFilterTemplate(t, ['u']);
      assert.unreachable(t);
    } catch (e) {
      assert.instance(e, FilterTemplateError, t);
      assert.match((e as Error).message, re, t);
    }
  }
});

test('parseAuthPasswords: RFC 5803 values of both hashes, spaces allowed, others ignored', async () => {
  const c1 = await deriveCredential('SHA-1', 'pencil', Buffer.from('QSXCR+Q6sek8bf92', 'base64'), 4096);
  const c256 = await deriveCredential('SHA-256', 'pencil', Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64'), 4096);
  const out = parseAuthPasswords([
    `SCRAM-SHA-1$${c1.iterations}:${c1.salt}$${c1.storedKey}:${c1.serverKey}`,
    `SCRAM-SHA-256 $ ${c256.iterations}:${c256.salt} $ ${c256.storedKey}:${c256.serverKey}`,
    'MD5$xyz$abc',
    'SCRAM-SHA-1$0:abc$def:ghi',
    'SCRAM-SHA-1$4096:!!$x:y',
    'garbage',
  ]);
  assert.equal(out['SHA-1'], c1);
  assert.equal(out['SHA-256'], c256);
  assert.equal(parseAuthPasswords(['MD5$xyz$abc']), {});
});

test('localpartOfDn: the first RDN when it is the uid attribute, escapes undone, prepared', () => {
  assert.is(localpartOfDn('uid=bob,ou=people,dc=x', 'uid'), 'bob');
  assert.is(localpartOfDn('UID=Bob,ou=people,dc=x', 'uid'), 'bob');
  assert.is(localpartOfDn('uid=j\\c3\\bcrgen,ou=people', 'uid'), 'jürgen');
  assert.is(localpartOfDn('uid=jürgen,ou=people', 'uid'), 'jürgen');
  assert.is(localpartOfDn('uid=a\\,b,ou=people', 'uid'), 'a,b', 'an escaped comma is part of the value');
  assert.is(localpartOfDn('cn=Bob Builder,ou=people', 'uid'), null, 'another naming attribute: unknown without a search');
  assert.is(localpartOfDn('uid=a@b,ou=people', 'uid'), null, 'not a possible localpart');
});

test('sharedItem: adds the group and a mutual subscription, keeps the name, no-op when there', () => {
  assert.equal(sharedItem(undefined, 'b@x', 'staff'), { jid: 'b@x', subscription: 'both', groups: ['staff'] });
  assert.equal(sharedItem({ jid: 'b@x', name: 'Bob', subscription: 'to', groups: ['friends'] }, 'b@x', 'staff'),
    { jid: 'b@x', name: 'Bob', subscription: 'both', groups: ['friends', 'staff'] });
  assert.is(sharedItem({ jid: 'b@x', subscription: 'both', groups: ['staff'] }, 'b@x', 'staff'), null);
});

test.run();
