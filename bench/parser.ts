// Micro-benchmark of the XMPP stream parser (src/xmpp/parser.ts): a realistic mix of
// message, presence and iq stanzas, fed in 4 KiB chunks as a socket would deliver them.
// Run: node_modules/.bin/node bench/parser.ts [seconds]

import { StreamParser } from '../src/xmpp/parser.ts';
import type { Element } from '../src/xmpp/element.ts';

const CHUNK = 4096;
const SECONDS = Number(process.argv[2] ?? 3);
const TARGET_BYTES = 4 * 1024 * 1024;

const HEADER = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' " +
  "xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' xml:lang='en'>";

const bodies = [
  'Hi! Are we still on for lunch tomorrow?',
  'Sure &amp; I will bring the slides &lt;final version&gt;.',
  'Grüße aus München — bis später! 😀',
  'The build is green again, thanks for the quick fix.',
  'Je pense que c’est prêt : on déploie à 14 h ?',
  '会議は3時からです。よろしくお願いします。',
];

function message(i: number): string {
  const body = bodies[i % bodies.length];
  return `<message to='juliet${i % 50}@capulet.example' from='romeo@montague.example/orchard' type='chat' ` +
    `id='m${i}' xml:lang='en'><body>${body}</body>` +
    `<active xmlns='http://jabber.org/protocol/chatstates'/>` +
    `<request xmlns='urn:xmpp:receipts'/><origin-id xmlns='urn:xmpp:sid:0' id='a3f1${i}'/></message>`;
}

function presence(i: number): string {
  return `<presence from='user${i % 200}@example.com/phone' id='p${i}'>` +
    `<show>away</show><status>In a meeting until 4pm</status><priority>5</priority>` +
    `<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://conversations.im' ` +
    `ver='QgayPKawpkPSDYmwT/WM94uAlu0='/>` +
    `<x xmlns='vcard-temp:x:update'><photo>01b87fcd030b72895ff8e88db57ec525450f000d</photo></x></presence>`;
}

function iq(i: number): string {
  if (i % 3 === 0) return `<iq type='get' id='ping${i}' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>`;
  if (i % 3 === 1) {
    return `<iq type='get' id='disco${i}' to='conference.example.com'>` +
      `<query xmlns='http://jabber.org/protocol/disco#info'/></iq>`;
  }
  let items = '';
  for (let k = 0; k < 8; k++) {
    items += `<item jid='friend${k}@example.org' name='Friend ${k}' subscription='both'><group>Friends</group></item>`;
  }
  return `<iq type='result' id='roster${i}' to='romeo@montague.example/orchard'>` +
    `<query xmlns='jabber:iq:roster' ver='ver${i}'>${items}</query></iq>`;
}

// Roughly what a busy client sends: mostly messages and presence, some iqs, whitespace pings.
let body = '';
let stanzas = 0;
for (let i = 0; body.length < TARGET_BYTES; i++) {
  const r = i % 10;
  body += r < 5 ? message(i) : r < 8 ? presence(i) : iq(i);
  if (i % 25 === 0) body += '\n';
  stanzas++;
}
const stream = Buffer.from(HEADER + body);
const chunks: Buffer[] = [];
for (let off = 0; off < stream.length; off += CHUNK) chunks.push(stream.subarray(off, off + CHUNK));

let seen = 0;
const handlers = {
  onStreamStart() {},
  onStanza(el: Element) {
    seen++;
    if (el.children.length < 0) throw new Error('unreachable');
  },
  onStreamEnd() {},
  onError(err: Error) {
    throw err;
  },
};

function pass(): void {
  const parser = new StreamParser(handlers);
  for (const c of chunks) parser.write(c);
}

// Warm up so that the measured runs see optimized code.
for (let i = 0; i < 3; i++) pass();
seen = 0;

let passes = 0;
const t0 = performance.now();
const deadline = t0 + SECONDS * 1000;
while (performance.now() < deadline) {
  pass();
  passes++;
}
const sec = (performance.now() - t0) / 1000;
if (seen !== passes * stanzas) throw new Error(`parsed ${seen} stanzas, expected ${passes * stanzas}`);

const mb = (passes * stream.length) / 1e6;
console.log(`stream: ${(stream.length / 1e6).toFixed(1)} MB, ${stanzas} stanzas (avg ${Math.round(stream.length / stanzas)} B), ${CHUNK} B chunks`);
console.log(`${passes} passes in ${sec.toFixed(2)} s`);
console.log(`${(mb / sec).toFixed(1)} MB/s`);
console.log(`${Math.round((passes * stanzas) / sec).toLocaleString('en')} stanzas/s`);
