// XEP-0191 §"JID Matching" (the XEP-0016 order) as implemented by the blocking module.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { matches } from '../../src/modules/blocking.ts';
import { parseJID } from '../../src/xmpp/jid.ts';

const m = (items: string[], jid: string) => matches(new Set(items), parseJID(jid));

test('an empty list matches nothing', () => {
  assert.not.ok(m([], 'romeo@montague.net/orchard'));
});

test('a full JID matches only that resource', () => {
  assert.ok(m(['romeo@montague.net/orchard'], 'romeo@montague.net/orchard'));
  assert.not.ok(m(['romeo@montague.net/orchard'], 'romeo@montague.net/garden'));
  assert.not.ok(m(['romeo@montague.net/orchard'], 'romeo@montague.net'));
});

test('a bare JID matches the account and all its resources', () => {
  assert.ok(m(['romeo@montague.net'], 'romeo@montague.net'));
  assert.ok(m(['romeo@montague.net'], 'romeo@montague.net/orchard'));
  assert.not.ok(m(['romeo@montague.net'], 'benvolio@montague.net/orchard'));
  assert.not.ok(m(['romeo@montague.net'], 'montague.net'));
});

test('domain/resource matches only that resource', () => {
  assert.ok(m(['montague.net/bot'], 'montague.net/bot'));
  assert.ok(m(['montague.net/bot'], 'romeo@montague.net/bot'));
  assert.not.ok(m(['montague.net/bot'], 'montague.net/other'));
  assert.not.ok(m(['montague.net/bot'], 'romeo@montague.net'));
});

test('a domain matches itself, its users, its resources and its subdomains', () => {
  for (const jid of ['montague.net', 'romeo@montague.net', 'romeo@montague.net/x', 'montague.net/x', 'chat.montague.net', 'a@b.chat.montague.net/c']) {
    assert.ok(m(['montague.net'], jid), jid);
  }
  assert.not.ok(m(['montague.net'], 'evilmontague.net'));
  assert.not.ok(m(['montague.net'], 'romeo@capulet.net'));
  assert.not.ok(m(['chat.montague.net'], 'montague.net'));
});

test('entries are compared in their prepared form', () => {
  // The module stores parseJID(item).toString(); a stanza address is prepared the same way.
  assert.ok(m([parseJID('Romeo@Montague.NET').toString()], 'romeo@montague.net/x'));
});

test.run();
