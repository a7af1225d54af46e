import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { StreamParser, parseElement } from '../../src/xmpp/parser.ts';
import type { ParserOptions } from '../../src/xmpp/parser.ts';
import { Element } from '../../src/xmpp/element.ts';
import type { Node } from '../../src/xmpp/element.ts';
import { StreamError } from '../../src/xmpp/errors.ts';

type Tree = [string, Record<string, string>, Array<Tree | string>];

/** The exact shape of an element: names, attribute order and values, and text nodes as emitted. */
function tree(el: Element): Tree {
  return [el.name, { ...el.attrs }, el.children.map((c: Node) => (typeof c === 'string' ? c : tree(c)))];
}

function collect(opts?: ParserOptions) {
  const events: string[] = [];
  const stanzas: Element[] = [];
  const errors: StreamError[] = [];
  const parser = new StreamParser({
    onStreamStart: (name, attrs) => events.push(`start ${name} ${JSON.stringify(attrs)}`),
    onStanza: (el) => {
      stanzas.push(el);
      events.push(`stanza ${JSON.stringify(tree(el))}`);
    },
    onStreamEnd: () => events.push('end'),
    onError: (err) => {
      errors.push(err);
      events.push(`error ${err.condition}`);
    },
  }, opts);
  return { parser, events, stanzas, errors };
}

function run(chunks: Array<Buffer | string>, opts?: ParserOptions): string[] {
  const { parser, events } = collect(opts);
  for (const c of chunks) parser.write(c);
  return events;
}

const HEADER = "<stream:stream to='example.com' xmlns='jabber:client' " +
  "xmlns:stream='http://etherx.jabber.org/streams' version='1.0' xml:lang=\"en\">";

const SAMPLE = "<?xml version='1.0' encoding='UTF-8'?>\n" + HEADER + '\n' +
  "  <auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldAByMG0zMG15cjBtMzA=</auth>\n" +
  "<iq type='set' id='bind_1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>balcony</resource></bind></iq>" +
  '<message to="romeo@example.net" type=\'chat\' id="m&amp;1" xml:lang = \'en\' >' +
  '<body>Wherefore art thou, Romeo? &lt;3 &#x1F339;&#233;\r\nline two</body>' +
  "<html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'>" +
  "<p style='font-weight:bold'>Hi <b>there</b>!</p></body></html></message>\n\n" +
  '<presence><show>away</show><status>Zzz… 😴 <![CDATA[<sleeping> & ]] dreaming]]> still</status></presence>' +
  "<données xmlns='urn:example:ü' clé=\"ça\tva\">ünïcødé 日本語 😀</données >" +
  "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>" +
  "<r xmlns='urn:xmpp:sm:3'/> \t\r\n </stream:stream>";

const SAMPLE_EVENTS = [
  'start stream:stream {"to":"example.com","xmlns":"jabber:client","xmlns:stream":"http://etherx.jabber.org/streams","version":"1.0","xml:lang":"en"}',
  'stanza ' + JSON.stringify(['auth', { xmlns: 'urn:ietf:params:xml:ns:xmpp-sasl', mechanism: 'PLAIN' }, ['AGp1bGlldAByMG0zMG15cjBtMzA=']]),
  'stanza ' + JSON.stringify(['iq', { type: 'set', id: 'bind_1' }, [
    ['bind', { xmlns: 'urn:ietf:params:xml:ns:xmpp-bind' }, [['resource', {}, ['balcony']]]]]]),
  'stanza ' + JSON.stringify(['message', { to: 'romeo@example.net', type: 'chat', id: 'm&1', 'xml:lang': 'en' }, [
    ['body', {}, ['Wherefore art thou, Romeo? <3 🌹é\nline two']],
    ['html', { xmlns: 'http://jabber.org/protocol/xhtml-im' }, [
      ['body', { xmlns: 'http://www.w3.org/1999/xhtml' }, [
        ['p', { style: 'font-weight:bold' }, ['Hi ', ['b', {}, ['there']], '!']]]]]]]]),
  'stanza ' + JSON.stringify(['presence', {}, [
    ['show', {}, ['away']], ['status', {}, ['Zzz… 😴 <sleeping> & ]] dreaming still']]]]),
  'stanza ' + JSON.stringify(['données', { xmlns: 'urn:example:ü', clé: 'ça va' }, ['ünïcødé 日本語 😀']]),
  'stanza ' + JSON.stringify(['stream:error', {}, [['conflict', { xmlns: 'urn:ietf:params:xml:ns:xmpp-streams' }, []]]]),
  'stanza ' + JSON.stringify(['r', { xmlns: 'urn:xmpp:sm:3' }, []]),
  'end',
];

const SAMPLE_BYTES = Buffer.from(SAMPLE);

test('a full sample stream fed whole', () => {
  const { parser, events, stanzas } = collect();
  parser.write(SAMPLE_BYTES);
  assert.equal(events, SAMPLE_EVENTS);
  for (const s of stanzas) assert.is(s.parent, null);
  const msg = stanzas[2];
  assert.is(msg.getNS(), '', 'top-level stanzas are not linked to the stream element');
  assert.is(msg.getChild('html')!.getChild('body')!.getNS(), 'http://www.w3.org/1999/xhtml');
  assert.is(msg.getChild('html')!.getChild('body')!.getChild('p')!.getNS(), 'http://www.w3.org/1999/xhtml');
  assert.is(stanzas[5].getName(), 'error');
  assert.is(parser.bytesInStanza, 0);
});

test('the sample fed byte by byte gives the same events', () => {
  const chunks: Buffer[] = [];
  for (let i = 0; i < SAMPLE_BYTES.length; i++) chunks.push(SAMPLE_BYTES.subarray(i, i + 1));
  assert.equal(run(chunks), SAMPLE_EVENTS);
});

test('the sample split in two at every byte gives the same events', () => {
  for (let i = 0; i <= SAMPLE_BYTES.length; i++) {
    assert.equal(run([SAMPLE_BYTES.subarray(0, i), SAMPLE_BYTES.subarray(i)]), SAMPLE_EVENTS, `split at byte ${i}`);
  }
});

test('the sample as strings split at every code unit gives the same events', () => {
  for (let i = 0; i <= SAMPLE.length; i++) {
    assert.equal(run([SAMPLE.slice(0, i), SAMPLE.slice(i)]), SAMPLE_EVENTS, `split at index ${i}`);
  }
});

test('the sample in random chunk sizes gives the same events', () => {
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  for (let r = 0; r < 300; r++) {
    const chunks: Buffer[] = [];
    for (let off = 0; off < SAMPLE_BYTES.length;) {
      const n = 1 + rnd(r % 2 ? 7 : 40);
      chunks.push(SAMPLE_BYTES.subarray(off, off + n));
      off += n;
    }
    assert.equal(run(chunks), SAMPLE_EVENTS, `run ${r}`);
  }
});

test('multi-byte UTF-8 characters split across chunks in text, attributes and names', () => {
  const xml = Buffer.from(HEADER + "<message id='é€😀'><body>a é € 😀 z</body><ü😀ñ/></message>");
  const start = xml.indexOf('<message');
  for (let i = start; i < xml.length; i++) {
    for (const j of [i + 1, i + 2, i + 3]) {
      const { parser, stanzas, errors } = collect();
      parser.write(xml.subarray(0, i));
      parser.write(xml.subarray(i, j));
      parser.write(xml.subarray(j));
      assert.equal(errors, [], `split at ${i}/${j}`);
      assert.is(stanzas.length, 1);
      assert.is(stanzas[0].attrs.id, 'é€😀');
      assert.equal(stanzas[0].getChild('body')!.children, ['a é € 😀 z'], 'one text node');
      assert.is(stanzas[0].elements[1].name, 'ü😀ñ');
    }
  }
});

test('invalid UTF-8 is unsupported-encoding', () => {
  const { parser, events } = collect();
  parser.write(HEADER + '<message><body>');
  parser.write(Buffer.from([0x61, 0xc3, 0x28, 0x62]));
  assert.equal(events.slice(1), ['error unsupported-encoding']);
});

test('predefined entities and character references', () => {
  const el = parseElement('<a>&lt;&gt;&amp;&quot;&apos; &#65;&#x42;&#x000063;&#128512;&#x1f600;</a>');
  assert.equal(el.children, [`<>&"' ABc😀😀`]);
  for (const bad of ['&#0;', '&#x8;', '&#xD800;', '&#xFFFE;', '&#x110000;', '&#99999999999;', '&#;', '&#x;',
    '&#X41;', '&#12a;', '&;', '& ;', 'a & b', '&lt']) {
    assert.throws(() => parseElement(`<a>${bad}</a>`), (e: StreamError) => e.condition === 'not-well-formed', bad);
  }
});

test('CDATA sections become text joined with the text around them', () => {
  const el = parseElement('<a>x<![CDATA[<b>&amp; ]] ]>]]>y&amp;<![CDATA[]]>z<c/><![CDATA[\r\n]]></a>');
  assert.is(el.children.length, 3);
  assert.is(el.children[0], 'x<b>&amp; ]] ]>y&z');
  assert.is((el.children[1] as Element).name, 'c');
  assert.is(el.children[2], '\n');
  assert.throws(() => parseElement('<a><![CDATA[x]]</a>'), (e: StreamError) => e.condition === 'not-well-formed');
  assert.throws(() => parseElement('<a><![CDAT[x]]></a>'), (e: StreamError) => e.condition === 'not-well-formed');
  assert.equal(run([HEADER, '<![CDATA[ ]]>']).slice(1), ['error not-well-formed'], 'CDATA outside stanzas');
});

test('attributes: both quote styles, entities, normalization', () => {
  const el = parseElement(`<a b="it's" c='say "hi"' d="&lt;&#x3E;&amp;&quot;&apos;" e='1>2' f = "x\ty\nz\r\nw" g='&#9;&#10;&#13;'/>`);
  assert.equal({ ...el.attrs }, {
    b: "it's", c: 'say "hi"', d: `<>&"'`, e: '1>2', f: 'x y z w', g: '\t\n\r',
  });
  const proto = parseElement(`<a __proto__='x' constructor='y'/>`);
  assert.ok(Object.hasOwn(proto.attrs, '__proto__'));
  assert.is(proto.attrs.constructor, 'y');
  assert.is(Object.getPrototypeOf(proto.attrs), Object.prototype);
});

test('whitespace between stanzas is ignored, text inside stanzas is kept as written', () => {
  const events = run([HEADER, '\n \t', '<message><body>  two  spaces\n</body>\n  <x xmlns="y"/> </message>', '\r\n ', ' ']);
  assert.equal(events.slice(1), ['stanza ' + JSON.stringify(['message', {}, [
    ['body', {}, ['  two  spaces\n']], '\n  ', ['x', { xmlns: 'y' }, []], ' ']])]);
});

test('reset() then a new stream header', () => {
  const { parser, events } = collect();
  parser.write("<?xml version='1.0'?>" + HEADER + "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><message><bo");
  parser.reset();
  assert.is(parser.bytesInStanza, 0);
  parser.write("<?xml version='1.0'?>" + HEADER.replace("to='example.com'", "to='example.org'") + '<presence/>');
  parser.reset();
  parser.write(HEADER + '<iq/>');
  assert.equal(events.map((e) => e.slice(0, 35)), [
    'start stream:stream {"to":"example.', 'stanza ["starttls",{"xmlns":"urn:ie',
    'start stream:stream {"to":"example.', 'stanza ["presence",{},[]]',
    'start stream:stream {"to":"example.', 'stanza ["iq",{},[]]',
  ]);
  assert.ok(events[2].includes('example.org') && events[4].includes('example.com'));
});

test('reset() from a handler drops the rest of the chunk (no STARTTLS command injection)', () => {
  const seen: string[] = [];
  const parser: StreamParser = new StreamParser({
    onStreamStart: (name) => seen.push(name),
    onStanza: (el) => {
      seen.push(el.name);
      if (el.name === 'starttls') parser.reset();
    },
    onStreamEnd: () => seen.push('end'),
    onError: (e) => seen.push(e.condition),
  });
  parser.write(HEADER + "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><message to='evil'/><presence/>");
  parser.write(HEADER + '<iq/>');
  assert.equal(seen, ['stream:stream', 'starttls', 'stream:stream', 'iq']);
});

test('writes from inside a handler are queued in order', () => {
  const seen: string[] = [];
  const parser: StreamParser = new StreamParser({
    onStreamStart: () => {},
    onStanza: (el) => {
      seen.push(el.name);
      if (el.name === 'a') parser.write('<c/>');
    },
    onStreamEnd: () => {},
    onError: (e) => seen.push(e.condition),
  });
  parser.write(HEADER + '<a/><b/>');
  assert.equal(seen, ['a', 'b', 'c']);
});

test('a throwing handler does not make the parser re-emit or lose stanzas', () => {
  const seen: string[] = [];
  const parser = new StreamParser({
    onStreamStart: () => {},
    onStanza: (el) => {
      seen.push(el.name);
      if (el.name === 'a') throw new Error('boom');
    },
    onStreamEnd: () => {},
    onError: (e) => seen.push(e.condition),
  });
  assert.throws(() => parser.write(HEADER + '<a/><b/>'), /boom/);
  parser.write('<c/>');
  assert.equal(seen, ['a', 'b', 'c']);
});

function expectError(condition: string, chunks: Array<Buffer | string>, what: string, opts?: ParserOptions): void {
  const { parser, events, errors } = collect(opts);
  for (const c of chunks) parser.write(c);
  assert.is(errors.length, 1, `${what}: expected one error, got ${JSON.stringify(events)}`);
  assert.is(errors[0].condition, condition, `${what}: ${errors[0].message}`);
  assert.instance(errors[0], StreamError);
}

test('restricted-xml: comments, processing instructions, DTDs, entity declarations and references', () => {
  const cases: Array<[string, string[]]> = [
    ['comment before the header', ['<!-- hi -->' + HEADER]],
    ['comment after the declaration', ["<?xml version='1.0'?><!-- hi -->"]],
    ['comment between stanzas', [HEADER, '<message/><!-- hi --><presence/>']],
    ['comment inside a stanza', [HEADER, '<message><body>a<!-- hi -->b</body></message>']],
    ['comment start split across chunks', [HEADER, '<message><', '!', '-', '-']],
    ['PI before the header', ["<?xml-stylesheet href='a'?>" + HEADER]],
    ['PI other than xml', ['<?php echo 1; ?>']],
    ['PI between stanzas', [HEADER, "<?xml version='1.0'?>"]],
    ['PI inside a stanza', [HEADER, '<message><?foo bar?></message>']],
    ['second XML declaration', ["<?xml version='1.0'?><?xml version='1.0'?>"]],
    ['DOCTYPE', ['<!DOCTYPE stream:stream>' + HEADER]],
    ['DOCTYPE after the declaration', ["<?xml version='1.0'?>\n<!DOCTYPE x [ <!ENTITY a 'b'> ]>"]],
    ['ENTITY declaration inside a stanza', [HEADER, "<message><!ENTITY a 'b'></message>"]],
    ['custom entity in text', [HEADER, '<message><body>&custom;</body></message>']],
    ['custom entity in an attribute', [HEADER, "<message id='&custom;'/>"]],
    ['external entity reference', [HEADER, '<message><body>&xxe;</body></message>']],
  ];
  for (const [what, chunks] of cases) expectError('restricted-xml', chunks, what);
});

test('a billion laughs document is refused at the DOCTYPE without expanding anything', () => {
  let dtd = '<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n';
  for (let i = 1; i <= 9; i++) {
    const prev = i === 1 ? '&lol;' : `&lol${i - 1};`;
    dtd += ` <!ENTITY lol${i} "${prev.repeat(10)}">\n`;
  }
  dtd += ']>\n';
  const doc = `<?xml version="1.0"?>\n${dtd}<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>` +
    '<message><body>&lol9;</body></message>';
  const { parser, events, stanzas } = collect();
  const t0 = performance.now();
  parser.write(Buffer.from(doc));
  assert.ok(performance.now() - t0 < 100, 'no expansion');
  assert.equal(events, ['error restricted-xml']);
  assert.is(stanzas.length, 0);
  // And with the same document inside a stream, split in small chunks.
  const c2 = collect();
  const inner = HEADER + dtd;
  for (let i = 0; i < inner.length; i += 5) c2.parser.write(inner.slice(i, i + 5));
  assert.equal(c2.events.slice(1), ['error restricted-xml']);
});

test('not-well-formed cases', () => {
  const cases: Array<[string, Array<string | Buffer>]> = [
    ['mismatched end tag', [HEADER, '<message><body>x</bdy></message>']],
    ['end tag closing the wrong element', [HEADER, '<message><body></message></body>']],
    ['unclosed end tag', [HEADER, '<message></message<presence/>']],
    ['stream end while a stanza is open', [HEADER, '<message><body>hi</stream:stream>']],
    ['stream end tag with the wrong name', [HEADER, '</stream:streams>']],
    ['end tag before the header', ['</stream:stream>']],
    ['duplicate attribute', [HEADER, "<message to='a' to='b'/>"]],
    ['duplicate attribute, other quotes', [HEADER, `<message id="a" type='chat' id='a'/>`]],
    ['invalid name start', [HEADER, '<1message/>']],
    ['invalid name character', [HEADER, '<mes$sage/>']],
    ['invalid attribute name', [HEADER, "<message t@o='a'/>"]],
    ['empty prefix', [HEADER, '<:message/>']],
    ['empty local name', [HEADER, "<message xmlns:a='x'><a:/></message>"]],
    ['two colons', [HEADER, "<message xmlns:a='x'><a:b:c/></message>"]],
    ['unquoted attribute value', [HEADER, '<message to=juliet/>']],
    ['attribute without value', [HEADER, '<message to/>']],
    ['missing whitespace between attributes', [HEADER, "<message to='a'id='b'/>"]],
    ["'<' in an attribute value", [HEADER, "<message to='a<b'/>"]],
    ["'/' not followed by '>'", [HEADER, '<message/ >']],
    ['control character in text', [HEADER, '<message><body>a\u0001b</body></message>']],
    ['vertical tab', [HEADER, '<message><body>a\u000Bb</body></message>']],
    ['NUL in an attribute value', [HEADER, "<message id='a\u0000'/>"]],
    ['escape between stanzas', [HEADER, '\u001b']],
    ['U+FFFE', [HEADER, '<message><body>\uFFFE</body></message>']],
    ['U+FFFF as UTF-8 bytes', [Buffer.from(HEADER + '<message><body>\uFFFF</body></message>')]],
    ['lone high surrogate', [HEADER, '<message><body>\uD800x</body></message>']],
    ['lone low surrogate', [HEADER, '<message><body>\uDC00</body></message>']],
    ['non-whitespace text between stanzas', [HEADER, '<message/>hello<presence/>']],
    ['entity between stanzas', [HEADER, '&amp;']],
    ['stanza before the stream header', ['<message/>' + HEADER]],
    ['garbage before the header', ['GET / HTTP/1.1\r\n']],
    ['text before the header', ['hi ' + HEADER]],
    ["']]>' in text", [HEADER, '<message><body>a]]>b</body></message>']],
    ["']]>' split across chunks", [HEADER, '<message><body>a]', ']', '>b</body></message>']],
    ["bare '&'", [HEADER, '<message><body>fish & chips</body></message>']],
    ['content after the stream end', [HEADER, '</stream:stream><message/>']],
    ['malformed XML declaration', ["<?xml version='2.0'?>" + HEADER]],
  ];
  for (const [what, chunks] of cases) expectError('not-well-formed', chunks, what);
  expectError('unsupported-encoding', ["<?xml version='1.0' encoding='ISO-8859-1'?>"], 'non-UTF-8 declaration');
});

test('bad-namespace-prefix for undeclared prefixes', () => {
  expectError('bad-namespace-prefix', [HEADER, '<foo:message/>'], 'undeclared element prefix');
  expectError('bad-namespace-prefix', [HEADER, "<message><x:y/></message>"], 'undeclared nested prefix');
  expectError('bad-namespace-prefix', [HEADER, "<message x:id='1'/>"], 'undeclared attribute prefix');
  expectError('bad-namespace-prefix', [HEADER, "<message><a xmlns:x='u'/><x:b/></message>"], 'prefix out of scope');
  expectError('bad-namespace-prefix', [HEADER, "<message xmlns:x=''><x:b/></message>"], 'empty declaration');
  expectError('bad-namespace-prefix', ["<stream:stream xmlns='jabber:client'>"], 'header prefix undeclared');
  // Declared on the element itself, an ancestor, or the header: fine.
  const events = run([HEADER, "<x:a xmlns:x='u' x:b='1'><x:c><y:d xmlns:y='v'/></x:c></x:a><stream:features/>",
    "<message xml:lang='en'/>"]);
  assert.is(events.length, 4, JSON.stringify(events));
  assert.ok(!events.some((e) => e.startsWith('error')));
});

test('policy-violation for a 10 MiB stanza written in 64 KiB chunks, before 400 KiB and with bounded memory', () => {
  const { parser, events, errors } = collect();
  parser.write(HEADER);
  const CHUNK = 64 * 1024;
  const filler = Buffer.alloc(CHUNK, 'a');
  let written = 0;
  let erroredAt = -1;
  let maxBuffered = 0;
  parser.write("<message to='juliet@example.com'><body>");
  written += 40;
  while (written < 10 * 1024 * 1024) {
    parser.write(filler);
    written += CHUNK;
    maxBuffered = Math.max(maxBuffered, parser.bytesInStanza);
    if (errors.length > 0 && erroredAt === -1) erroredAt = written;
  }
  parser.write('</body></message>');
  assert.equal(events.slice(1), ['error policy-violation']);
  assert.ok(erroredAt > 256 * 1024 && erroredAt < 400 * 1024, `error after ${erroredAt} bytes`);
  assert.ok(maxBuffered <= 256 * 1024, `buffered ${maxBuffered}`);
  assert.is(parser.bytesInStanza, 0, 'nothing kept after the error');
});

test('the size limit counts UTF-8 bytes, is exact, and also applies within one write', () => {
  const max = 1000;
  const make = (n: number) => `<m>${'é'.repeat(n)}</m>`; // 7 + 2n bytes
  assert.equal(run([HEADER, make(496)], { maxStanzaSize: max }).slice(1).map((e) => e.slice(0, 10)), ['stanza ["m']);
  assert.equal(run([HEADER, make(497)], { maxStanzaSize: max }).slice(1), ['error policy-violation']);
  const big = Buffer.from(make(497));
  for (const at of [3, 500, 800, 1001]) {
    assert.equal(run([HEADER, big.subarray(0, at), big.subarray(at)], { maxStanzaSize: max }).slice(1),
      ['error policy-violation'], `split at ${at}`);
  }
  assert.equal(run([HEADER, `<m>${'x'.repeat(5000)}</m>`], { maxStanzaSize: max }).slice(1), ['error policy-violation']);
  assert.equal(run([HEADER, `<m a='${'x'.repeat(400)}'>`, `<n b='${'x'.repeat(700)}'/></m>`], { maxStanzaSize: max }).slice(1),
    ['error policy-violation'], 'attributes count');
});

test('the stream header and whitespace between stanzas are bounded too', () => {
  expectError('policy-violation', ["<stream:stream xmlns:stream='http://etherx.jabber.org/streams' a='" + 'x'.repeat(2000)], 'huge header', { maxStanzaSize: 1000 });
  const { parser, events } = collect({ maxStanzaSize: 1000 });
  parser.write(HEADER);
  for (let i = 0; i < 9; i++) parser.write(' '.repeat(100));
  parser.write('<presence/>');
  for (let i = 0; i < 9; i++) parser.write('\n'.repeat(100));
  assert.equal(events.slice(1), ['stanza ["presence",{},[]]'], 'keep-alives below the bound are fine');
  parser.write(' '.repeat(200));
  assert.equal(events.slice(2), ['error policy-violation']);
});

test('nesting deeper than any XMPP payload needs is a policy-violation', () => {
  expectError('policy-violation', [HEADER, '<a>'.repeat(1000)], 'deep nesting');
  assert.equal(run([HEADER, '<a>'.repeat(50) + '</a>'.repeat(50)]).length, 2);
});

test('onError fires once and later input is ignored until reset()', () => {
  const { parser, events } = collect();
  parser.write(HEADER + '<message><!-- x -->');
  parser.write('</message><presence/>');
  parser.write('<!-- more --><<<<');
  parser.write(Buffer.from([0xff, 0xfe]));
  assert.equal(events.slice(1), ['error restricted-xml']);
  assert.is(parser.bytesInStanza, 0);
  parser.reset();
  parser.write(HEADER + '<presence/>');
  assert.equal(events.slice(2).map((e) => e.slice(0, 20)), ['start stream:stream ', 'stanza ["presence",{']);
});

test('a self-closing header opens and closes the stream; a UTF-8 BOM is skipped', () => {
  assert.equal(run(["<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>"]),
    ['start stream:stream {"xmlns:stream":"http://etherx.jabber.org/streams"}', 'end']);
  assert.equal(run([Buffer.from([0xef, 0xbb]), Buffer.concat([Buffer.from([0xbf]), Buffer.from(HEADER)])]).length, 1);
  assert.equal(run(['\uFEFF' + HEADER]).length, 1);
});

function rng(seed: number) {
  return (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
}

test('random trees survive toString() and parsing in random chunks', () => {
  const rnd = rng(7);
  const names = ['message', 'body', 'x', 'item', 'query', 'ü', 'a-b.c_d', 'données'];
  const texts = ['hi', ' ', '<&>', 'a]]>b', '"quoted" \'single\'', 'é€😀', 'line\nbreak\ttab', '日本語'];
  const values = ['', 'a@b/c', '<&>"\'', 'é€😀', 'x]]>y', '1 > 0'];
  const make = (depth: number): Element => {
    const attrs: Record<string, string> = {};
    for (let i = rnd(4); i > 0; i--) attrs[['id', 'to', 'from', 'type', 'data-x', 'ñ'][rnd(6)]] = values[rnd(values.length)];
    const el = new Element(names[rnd(names.length)], attrs);
    let lastText = false;
    for (let i = depth > 0 ? rnd(5) : 0; i > 0; i--) {
      if (rnd(2) === 0 && !lastText) {
        el.t(texts[rnd(texts.length)]);
        lastText = true;
      } else {
        el.append(make(depth - 1));
        lastText = false;
      }
    }
    return el;
  };
  for (let r = 0; r < 300; r++) {
    const els = [make(4), make(3), make(2)];
    const bytes = Buffer.from(HEADER + els.map((e) => e.toString()).join(r % 2 ? '\n' : ''));
    const chunks: Buffer[] = [];
    for (let off = 0; off < bytes.length;) {
      const n = 1 + rnd(r % 3 === 0 ? 5 : 300);
      chunks.push(bytes.subarray(off, off + n));
      off += n;
    }
    const { parser, stanzas, errors } = collect();
    for (const c of chunks) parser.write(c);
    assert.equal(errors, [], `run ${r}`);
    assert.equal(stanzas.map(tree), els.map(tree), `run ${r}`);
  }
});

test('mutated input never throws out of write() and reports at most one error', () => {
  const rnd = rng(99);
  const bytes = Buffer.from(SAMPLE);
  for (let r = 0; r < 2000; r++) {
    const m = Buffer.from(bytes);
    for (let i = 1 + rnd(3); i > 0; i--) m[rnd(m.length)] = [0x3c, 0x3e, 0x26, 0x27, 0x22, 0x2f, 0x21, 0x3f, 0x5d, 0x3a, 0x20, 0x61, 0xc3, 0x00][rnd(14)];
    const { parser, events } = collect();
    const step = 1 + rnd(64);
    for (let off = 0; off < m.length; off += step) parser.write(m.subarray(off, off + step));
    const errorAt = events.findIndex((e) => e.startsWith('error'));
    if (errorAt !== -1) assert.is(errorAt, events.length - 1, `run ${r}: events after the error`);
  }
});

test('parseElement', () => {
  const el = parseElement(" \n<iq type='result' id='1'><query xmlns='jabber:iq:roster'><item jid='a@b'/>text &amp; more</query></iq>\n");
  assert.is(el.name, 'iq');
  assert.is(el.parent, null);
  assert.is(el.attrs.id, '1');
  const q = el.getChild('query', 'jabber:iq:roster')!;
  assert.ok(q);
  assert.is(q.getChild('item')!.getNS(), 'jabber:iq:roster');
  assert.is(q.text(), 'text & more');
  assert.is(parseElement('<a/>').toString(), '<a/>');
  for (const bad of ['', '   ', 'text', '<a>', '<a></b>', '<a/><b/>', '<a/>x', '<a/><', '<!-- c --><a/>', '<a>&foo;</a>',
    '<x:a/>', '<a b=c/>', "<?xml version='1.0'?><a/>", '<a>\uD800</a>']) {
    assert.throws(() => parseElement(bad), (e: unknown) => e instanceof StreamError, JSON.stringify(bad));
  }
  assert.throws(() => parseElement('<a>&foo;</a>'), (e: StreamError) => e.condition === 'restricted-xml');
  assert.throws(() => parseElement('<x:a/>'), (e: StreamError) => e.condition === 'bad-namespace-prefix');
  const large = parseElement(`<a>${'x'.repeat(300_000)}</a>`);
  assert.is(large.text().length, 300_000, 'no stanza size limit for standalone elements');
});

test.run();
