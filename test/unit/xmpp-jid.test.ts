import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  InvalidJIDError, JID, parseJID, prepDomain, prepLocal, prepPassword, prepResource, tryParseJID,
} from '../../src/xmpp/jid.ts';

function parts(s: string): [string, string, string] {
  const j = parseJID(s);
  return [j.local, j.domain, j.resource];
}

function invalid(s: string): void {
  try {
    parseJID(s);
  } catch (err) {
    assert.instance(err, InvalidJIDError, `wrong error type for ${JSON.stringify(s)}`);
    assert.is((err as InvalidJIDError).input, s);
    return;
  }
  assert.unreachable(`${JSON.stringify(s)} should be invalid`);
}

// uvu's assert.throws calls a function argument as a predicate, not as a class.
function throwsInvalid(fn: () => unknown, msg?: string): void {
  assert.throws(fn, (err: unknown) => err instanceof InvalidJIDError, msg);
}

// RFC 7622 §3.5, Table 1 (legal JIDs).
test('RFC 7622 §3.5 valid examples', () => {
  assert.equal(parts('juliet@example.com'), ['juliet', 'example.com', '']);
  assert.equal(parts('juliet@example.com/foo'), ['juliet', 'example.com', 'foo']);
  assert.equal(parts('juliet@example.com/foo bar'), ['juliet', 'example.com', 'foo bar']);
  assert.equal(parts('juliet@example.com/foo@bar'), ['juliet', 'example.com', 'foo@bar']);
  // XEP-0106 escapes are plain characters at this layer, not unescaped.
  assert.equal(parts('foo\\20bar@example.com'), ['foo\\20bar', 'example.com', '']);
  assert.equal(parts('fussball@example.com'), ['fussball', 'example.com', '']);
  assert.equal(parts('fu\u00dfball@example.com'), ['fu\u00dfball', 'example.com', '']);
  assert.equal(parts('\u03c0@example.com'), ['\u03c0', 'example.com', '']);
  // Capital sigma lower-cases to sigma; final sigma is kept (RFC 5892 exception).
  assert.equal(parts('\u03a3@example.com/foo'), ['\u03c3', 'example.com', 'foo']);
  assert.equal(parts('\u03c3@example.com/foo'), ['\u03c3', 'example.com', 'foo']);
  assert.equal(parts('\u03c2@example.com/foo'), ['\u03c2', 'example.com', 'foo']);
  assert.equal(parts('king@example.com/\u265a'), ['king', 'example.com', '\u265a']);
  assert.equal(parts('example.com'), ['', 'example.com', '']);
  assert.equal(parts('example.com/foobar'), ['', 'example.com', 'foobar']);
  assert.equal(parts('a.example.com/b@example.net'), ['', 'a.example.com', 'b@example.net']);
});

test('eszett is not folded to ss: fussball and fußball are different users', () => {
  assert.not.ok(parseJID('fussball@example.com').equals(parseJID('fu\u00dfball@example.com')));
});

// RFC 7622 §3.5, Table 2 (strings that violate the JID rules).
test('RFC 7622 §3.5 invalid examples', () => {
  invalid('"juliet"@example.com');
  invalid('foo bar@example.com');
  invalid('@example.com/');
  invalid('henry\u2163@example.com'); // ROMAN NUMERAL FOUR has a compatibility equivalent
  invalid('\u265a@example.com'); // symbols are not in the IdentifierClass
  invalid('juliet@');
  invalid('/foobar');
});

test('leading space in a resourcepart is kept, as OpaqueString allows it', () => {
  // RFC 7622's table lists "juliet@example.com/ foo" as invalid, but the
  // OpaqueString profile it points to (RFC 8265 §4.2) has no such rule.
  assert.is(parseJID('juliet@example.com/ foo').resource, ' foo');
});

test('structure: first slash starts the resource, empty parts are rejected', () => {
  assert.equal(parts('a@b.example/c/d@e'), ['a', 'b.example', 'c/d@e']);
  assert.equal(parts('b.example/@x'), ['', 'b.example', '@x']);
  invalid('juliet@example.com/');
  invalid('@example.com');
  invalid('example.com/');
  invalid('');
  invalid('a@b@example.com'); // the second '@' lands in the domainpart
});

test('localpart: UsernameCaseMapped', () => {
  assert.is(parseJID('Juliet@Example.COM').toString(), 'juliet@example.com');
  assert.is(parseJID('ROMEO@example.com/Orchard').toString(), 'romeo@example.com/Orchard');
  // Fullwidth letters map to their ASCII decomposition before case mapping.
  assert.is(prepLocal('\uff2a\uff35\uff2c\uff29\uff25\uff34'), 'juliet');
  // Halfwidth katakana map to the full forms (and the voiced mark composes).
  assert.is(prepLocal('\uff76\uff9e'), '\u30ac');
  // NFC: e + combining acute is the precomposed é.
  assert.is(prepLocal('caf\u0065\u0301'), 'caf\u00e9');
  assert.is(prepLocal('\u00c9LISE'), '\u00e9lise');
  // ℃ is not a width-mapped character, and it has a compatibility
  // decomposition (°C), so the IdentifierClass rejects it rather than folding it.
  throwsInvalid(() => prepLocal('\u2103'));
  throwsInvalid(() => prepLocal('\ufb01x')); // ﬁ ligature
  throwsInvalid(() => prepLocal('x\u00b2')); // superscript two
});

test('localpart: RFC 7622 §3.3.1 exclusions and IdentifierClass', () => {
  for (const c of ['"', '&', "'", '/', ':', '<', '>', '@']) {
    throwsInvalid(() => prepLocal(`a${c}b`), `${c} must be excluded`);
  }
  // Other ASCII punctuation is allowed by the IdentifierClass.
  assert.is(prepLocal('a.b-c_d+e!#$%*=?^`{|}~'), 'a.b-c_d+e!#$%*=?^`{|}~');
  throwsInvalid(() => prepLocal('a\tb')); // control
  throwsInvalid(() => prepLocal('a\u00a0b')); // non-ASCII space
  throwsInvalid(() => prepLocal('a\u200bb')); // default ignorable
  throwsInvalid(() => prepLocal('a\u0378')); // unassigned
  throwsInvalid(() => prepLocal('a\ue000')); // private use
  throwsInvalid(() => prepLocal('a\u20acb')); // symbol outside ASCII
  throwsInvalid(() => prepLocal('a\u00bfb')); // punctuation outside ASCII
  throwsInvalid(() => prepLocal('\ud800x')); // lone surrogate
  throwsInvalid(() => prepLocal(''));
});

test('localpart: context rules (RFC 5892 appendix A)', () => {
  assert.is(prepLocal('pal\u00b7la'), 'pal\u00b7la'); // Catalan middle dot between two l
  throwsInvalid(() => prepLocal('pa\u00b7b'));
  assert.is(prepLocal('\u0915\u094d\u200d\u0937'), '\u0915\u094d\u200d\u0937'); // ZWJ after a virama
  throwsInvalid(() => prepLocal('a\u200db'));
  throwsInvalid(() => prepLocal('\u0661\u06f1')); // mixed Arabic-Indic digit sets
});

test('localpart: Bidi Rule for right-to-left strings', () => {
  assert.is(prepLocal('\u05e9\u05dc\u05d5\u05dd'), '\u05e9\u05dc\u05d5\u05dd');
  assert.is(prepLocal('\u05e9\u05dc\u05d5\u05dd1'), '\u05e9\u05dc\u05d5\u05dd1');
  throwsInvalid(() => prepLocal('a\u05e9\u05dc\u05d5\u05dd')); // LTR letter mixed in
  throwsInvalid(() => prepLocal('1\u05e9\u05dc\u05d5\u05dd')); // starts with a digit
  throwsInvalid(() => prepLocal('\u05e9\u05dc\u05d5\u05dd-')); // ends with a neutral
  throwsInvalid(() => prepLocal('\u0645\u0631\u0661' + '4')); // AN and EN together
});

test('domainpart: case, trailing dot, IDN', () => {
  assert.is(prepDomain('Example.COM'), 'example.com');
  assert.is(parseJID('juliet@example.com.').toString(), 'juliet@example.com');
  assert.ok(parseJID('juliet@example.com.').equals(parseJID('juliet@example.com')));
  assert.is(prepDomain('M\u00dcNCHEN.de'), 'm\u00fcnchen.de');
  // A-labels are turned into U-labels so both spellings compare equal.
  assert.is(prepDomain('xn--mnchen-3ya.de'), 'm\u00fcnchen.de');
  assert.is(prepDomain('\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\uff0ecom'), 'example.com');
  assert.is(prepDomain('\u4f8b\u3048\u3002\u30c6\u30b9\u30c8'), '\u4f8b\u3048.\u30c6\u30b9\u30c8');
  throwsInvalid(() => prepDomain('xn--zz.de')); // broken punycode
  throwsInvalid(() => prepDomain('\u265a.example')); // UTS 46 allows it, IDNA2008 does not
  throwsInvalid(() => prepDomain('\u00b9.example')); // UTS 46 would fold it to "1"
});

test('domainpart: rejected forms', () => {
  for (const d of ['.', 'example.com..', 'a..b', 'exa mple.com', 'exa@mple.com', 'a:b', 'a%b.com', '-a.com',
    'a-.com', 'ab--cd.com', 'exa\tmple.com', 'example.123', '1.2.3', '256.1.1.1', '0x7f.1', '[::1', '[fe80::1%eth0]',
    '[not-ip]', '::1']) {
    throwsInvalid(() => prepDomain(d), `${JSON.stringify(d)} should be invalid`);
  }
});

test('domainpart: IP literals kept as written', () => {
  assert.is(prepDomain('192.0.2.1'), '192.0.2.1');
  assert.is(prepDomain('[2001:DB8::1]'), '[2001:db8::1]');
  assert.equal(parts('node@[::1]/r'), ['node', '[::1]', 'r']);
});

test('domainpart: label and total length limits', () => {
  const label63 = 'a'.repeat(63);
  assert.is(prepDomain(`${label63}.example`), `${label63}.example`);
  throwsInvalid(() => prepDomain(`${label63}a.example`));
  // 63 octets is measured on the ASCII (punycode) form of an IDN label.
  throwsInvalid(() => prepDomain(`${'\u00fc'.repeat(60)}.example`));
  const long = Array(16).fill(label63).join('.'); // 16 × 64 - 1 = 1023 bytes
  assert.is(prepDomain(long).length, 1023);
  throwsInvalid(() => prepDomain(`a.${long}`));
});

test('resourcepart: OpaqueString', () => {
  assert.is(prepResource('foo bar/baz@qux'), 'foo bar/baz@qux');
  assert.is(prepResource('Balcony'), 'Balcony'); // no case mapping
  assert.is(prepResource('a\u00a0b\u3000c'), 'a b c'); // non-ASCII spaces become U+0020
  assert.is(prepResource('caf\u0065\u0301'), 'caf\u00e9'); // NFC
  assert.is(prepResource('\uff21'), '\uff21'); // no width mapping
  assert.is(prepResource('\u2163 \u2103 \u00bf'), '\u2163 \u2103 \u00bf'); // compat, symbols, punctuation are free
  throwsInvalid(() => prepResource('a\u0007'));
  throwsInvalid(() => prepResource('a\u0378'));
  throwsInvalid(() => prepResource('a\ue000'));
  throwsInvalid(() => prepResource('a\ufdd0')); // noncharacter
  throwsInvalid(() => prepResource('a\udc00')); // lone surrogate
  throwsInvalid(() => prepResource(''));
});

test('length limits are 1023 UTF-8 bytes per part', () => {
  assert.is(prepLocal('a'.repeat(1023)).length, 1023);
  throwsInvalid(() => prepLocal('a'.repeat(1024)));
  assert.is(prepResource('r'.repeat(1023)).length, 1023);
  throwsInvalid(() => prepResource('r'.repeat(1024)));
  // 341 × 3 bytes = 1023; one more character crosses the limit in bytes, not in length.
  assert.is(prepResource('\u20ac'.repeat(341)).length, 341);
  throwsInvalid(() => prepResource('\u20ac'.repeat(342)));
  assert.is(prepLocal('\u4e2d'.repeat(341)).length, 341);
  throwsInvalid(() => prepLocal('\u4e2d'.repeat(342)));
  const jid = parseJID(`${'a'.repeat(1023)}@example.com/${'r'.repeat(1023)}`);
  assert.is(jid.local.length, 1023);
  invalid(`x@example.com/${'r'.repeat(20000)}`);
});

test('JID object: bare, isBare, isDomain, toString', () => {
  const full = parseJID('juliet@example.com/balcony');
  assert.not.ok(full.isBare);
  assert.not.ok(full.isDomain);
  assert.is(full.toString(), 'juliet@example.com/balcony');
  assert.is(full.toBareString(), 'juliet@example.com');
  assert.is(`${full}`, 'juliet@example.com/balcony');
  const bare = full.bare;
  assert.ok(bare.isBare);
  assert.is(bare.toString(), 'juliet@example.com');
  assert.is(full.bare, bare); // computed once
  assert.is(bare.bare, bare); // already bare: the same object
  const domain = parseJID('example.com');
  assert.ok(domain.isDomain);
  assert.ok(domain.isBare);
  assert.not.ok(parseJID('example.com/x').isDomain);
  assert.not.ok(parseJID('a@example.com').isDomain);
  assert.is(new JID('', 'example.com', 'r').toString(), 'example.com/r');
  assert.is(new JID('a', 'example.com').resource, '');
});

test('JID object: equals and withResource', () => {
  const a = parseJID('Juliet@Example.com/Balcony');
  const b = new JID('juliet', 'example.com', 'Balcony');
  assert.ok(a.equals(b));
  assert.ok(b.equals(a));
  assert.not.ok(a.equals(b.bare));
  assert.not.ok(a.equals(new JID('juliet', 'example.com', 'balcony'))); // resources are case-sensitive
  assert.not.ok(a.equals(new JID('juliet', 'example.org', 'Balcony')));
  const moved = a.bare.withResource('Orchard\u00a0Wall');
  assert.is(moved.toString(), 'juliet@example.com/Orchard Wall');
  assert.is(a.resource, 'Balcony'); // the original is untouched
  throwsInvalid(() => a.withResource(''));
  throwsInvalid(() => a.withResource('x\u0000'));
});

test('parseJID caches results and keeps recently used entries', () => {
  const first = parseJID('cache-a@example.com/r');
  assert.is(parseJID('cache-a@example.com/r'), first);
  const second = parseJID('cache-b@example.com/r');
  // Fill the 10,000-entry cache, touching `first` so that it is recent while
  // `second` ages out.
  for (let i = 0; i < 9_999; i++) {
    if (i === 5_000) assert.is(parseJID('cache-a@example.com/r'), first);
    parseJID(`filler${i}@example.com`);
  }
  assert.is(parseJID('cache-a@example.com/r'), first);
  const again = parseJID('cache-b@example.com/r');
  assert.is.not(again, second);
  assert.ok(again.equals(second));
});

test('tryParseJID', () => {
  assert.is(tryParseJID(null), null);
  assert.is(tryParseJID(undefined), null);
  assert.is(tryParseJID(''), null);
  assert.is(tryParseJID('juliet@'), null);
  assert.is(tryParseJID('juliet@example.com')?.toString(), 'juliet@example.com');
});

test('InvalidJIDError carries the whole input', () => {
  try {
    parseJID('romeo@exa mple.com/r');
    assert.unreachable();
  } catch (err) {
    assert.instance(err, InvalidJIDError);
    assert.instance(err, Error);
    assert.is((err as InvalidJIDError).input, 'romeo@exa mple.com/r');
    assert.is((err as Error).name, 'InvalidJIDError');
  }
});

test('prepPassword: OpaqueString', () => {
  assert.is(prepPassword('correct horse'), 'correct horse');
  assert.is(prepPassword('Pass\u00a0word'), 'Pass word');
  assert.is(prepPassword('\u2163'), '\u2163'); // no compatibility folding
  assert.is(prepPassword('e\u0301'), '\u00e9');
  throwsInvalid(() => prepPassword(''));
  for (const bad of ['s3cret\u0000word', 's3cret\nword', 's3cret\u007f', 's3cret\u200b']) {
    try {
      prepPassword(bad);
      assert.unreachable(`${JSON.stringify(bad)} should be rejected`);
    } catch (err) {
      assert.instance(err, InvalidJIDError);
      // The password must not leak into logs through the error.
      assert.not.ok((err as Error).message.includes('s3cret'));
      assert.is((err as InvalidJIDError).input, '');
    }
  }
});

test.run();
