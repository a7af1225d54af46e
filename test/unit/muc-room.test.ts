// The room state machine (src/modules/muc/room.ts) without a server: inputs in,
// state and stanzas out. Determinism is what the pool relies on: replicas
// that apply the same inputs hold the same room and send the same stanzas.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { apply, type RoomInput, type Applied } from '../../src/modules/muc/room.ts';
import { DEFAULT_CONFIG, type Defaults, type RoomState } from '../../src/modules/muc/state.ts';
import { prepNick, nickKey, InvalidNickError } from '../../src/modules/muc/nick.ts';
import { selectHistory } from '../../src/modules/muc/history.ts';

const ROOM = 'r@conference.x';
const defaults: Defaults = { config: { ...DEFAULT_CONFIG }, maxUsersLimit: 0, maxHistoryLimit: 100 };
let clock = 1_000_000;

function st(from: string, xml: string, node = 'n1'): RoomInput {
  return { kind: 'stanza', from, node, xml, now: (clock += 1000) };
}
const join = (from: string, nick: string, node = 'n1', inner = '') =>
  st(from, `<presence to='${ROOM}/${nick}'><x xmlns='http://jabber.org/protocol/muc'>${inner}</x></presence>`, node);
const submit = (from: string) =>
  st(from, `<iq type='set' id='c' to='${ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>`);
const say = (from: string, body: string) => st(from, `<message to='${ROOM}' type='groupchat'><body>${body}</body></message>`);

function run(inputs: RoomInput[], start: RoomState | null = null): { state: RoomState | null; all: Applied[] } {
  let state = start;
  const all: Applied[] = [];
  for (const i of inputs) {
    const a = apply(state, i, { room: ROOM, defaults });
    all.push(a);
    state = a.state;
  }
  return { state, all };
}

const statusCodes = (a: Applied, to: string) => a.outputs.filter((o) => o.to === to && o.stanza.name === 'presence')
  .flatMap((o) => o.stanza.getChild('x', 'http://jabber.org/protocol/muc#user')?.getChildren('status').map((s) => s.attrs.code) ?? []);

test('creating a room: locked with 201 until the owner submits; others get item-not-found meanwhile', () => {
  const { state, all } = run([join('a@x/1', 'A'), join('b@x/1', 'B')]);
  assert.ok(state!.locked);
  assert.equal(statusCodes(all[0], 'a@x/1').sort(), ['110', '201']);
  assert.is(all[1].mutated, false);
  const err = all[1].outputs[0];
  assert.ok(err.route, 'errors go back through the router');
  assert.ok(err.stanza.toString().includes('item-not-found'), err.stanza.toString());
  const after = run([submit('a@x/1'), join('b@x/1', 'B')], state);
  assert.is(after.state!.locked, false);
  assert.equal(Object.keys(after.state!.occupants).sort(), ['a', 'b']);
});

test('the same inputs give the same state and stanzas on every replica (determinism)', () => {
  const inputs = [join('a@x/1', 'A'), submit('a@x/1'), join('b@x/1', 'B', 'n2'), say('a@x/1', 'hi'), say('b@x/1', 'yo'),
    join('c@x/1', 'b', 'n3'), st('b@x/1', `<presence to='${ROOM}/B' type='unavailable'/>`, 'n2')];
  const one = run(inputs);
  const two = run(inputs);
  assert.equal(JSON.stringify(one.state), JSON.stringify(two.state));
  assert.equal(one.all.map((a) => a.outputs.map((o) => o.to + o.stanza.toString())), two.all.map((a) => a.outputs.map((o) => o.to + o.stanza.toString())));
  // c took nick 'b' while B was in: conflict (nicks compare case-folded).
  assert.ok(one.all[5].outputs[0].stanza.toString().includes('conflict'));
  assert.equal(one.state!.history.map((h) => h.xml.includes('hi') || h.xml.includes('yo')), [true, true]);
});

test('two joins with one nick in the same instant: the first sequenced wins, the second gets 409', () => {
  const { state } = run([join('a@x/1', 'A'), submit('a@x/1')]);
  const r = run([join('b@x/1', 'Same', 'n2'), join('c@x/1', 'same', 'n3')], state);
  assert.is(r.state!.occupants.same.bare, 'b@x');
  assert.ok(r.all[1].outputs.some((o) => o.to === 'c@x/1' && o.stanza.toString().includes('<conflict')));
});

test('a failed node: its occupants leave with 333, the others are told, the room lives on', () => {
  const { state } = run([join('a@x/1', 'A', 'n1'), submit('a@x/1'), join('b@x/1', 'B', 'n2'), join('c@x/1', 'C', 'n2')]);
  const a = apply(state, { kind: 'node-gone', node: 'n2', now: clock + 1 }, { room: ROOM, defaults });
  assert.equal(Object.keys(a.state!.occupants), ['a']);
  const toA = a.outputs.filter((o) => o.to === 'a@x/1');
  assert.is(toA.length, 2);
  for (const o of toA) assert.is(o.stanza.attrs.type, 'unavailable');
  assert.equal(statusCodes(a, 'a@x/1'), ['333', '333']);
  // The gone node's own sessions are told they are out (110, 333), for the case
  // it was only thought failed; nothing else is built for them.
  assert.equal(statusCodes(a, 'b@x/1'), ['110', '333']);
  assert.equal(statusCodes(a, 'c@x/1'), ['110', '333']);
  // A node builds only its own sessions' stanzas; the state is the same whatever it builds.
  const onN1 = apply(state, { kind: 'node-gone', node: 'n2', now: clock + 1 }, { room: ROOM, defaults, wants: (to) => to.startsWith('a@') });
  assert.ok(onN1.outputs.every((o) => o.to === 'a@x/1'));
  assert.equal(JSON.stringify(onN1.state), JSON.stringify(a.state));
});

test('a temporary room ends with its last occupant; a failed input changes nothing', () => {
  const { state } = run([join('a@x/1', 'A'), submit('a@x/1')]);
  const bad = apply(state, say('z@x/1', 'not in'), { room: ROOM, defaults });
  assert.is(bad.mutated, false);
  assert.is(bad.state, state);
  const gone = apply(state, st('a@x/1', `<presence to='${ROOM}/A' type='unavailable'/>`), { room: ROOM, defaults });
  assert.is(gone.state, null);
});

test('history selection: maxstanzas, seconds, since and maxchars combine', () => {
  const h = [1, 2, 3, 4, 5].map((i) => ({ xml: `<message><body>m${i}</body></message>`, stamp: i * 1000 }));
  assert.is(selectHistory(h, {}, 6000).length, 5);
  assert.equal(selectHistory(h, { maxstanzas: 2 }, 6000).map((e) => e.stamp), [4000, 5000]);
  assert.equal(selectHistory(h, { seconds: 2 }, 6000).map((e) => e.stamp), [4000, 5000]);
  assert.equal(selectHistory(h, { since: 3000 }, 6000).map((e) => e.stamp), [4000, 5000]);
  assert.equal(selectHistory(h, { since: 1000, maxstanzas: 1 }, 6000).map((e) => e.stamp), [5000]);
  assert.equal(selectHistory(h, { maxchars: h[0].xml.length * 2 }, 6000).map((e) => e.stamp), [4000, 5000]);
  assert.is(selectHistory(h, { maxstanzas: 0 }, 6000).length, 0);
});

test('RFC 8266 nicknames: spaces, NFKC, case-folded comparison, emoji ZWJ sequences allowed, controls refused', () => {
  assert.is(prepNick('  Bob   the\u00A0Builder '), 'Bob the Builder');
  assert.is(prepNick('ＡＢ'), 'AB');
  assert.is(nickKey(prepNick('ALICE')), nickKey(prepNick('alice')));
  assert.is(prepNick('👨‍👩‍👧'), '👨‍👩‍👧');
  assert.is(prepNick('🏳️‍🌈 fan'), '🏳️‍🌈 fan');
  for (const bad of ['', '   ', 'a\u0007b', 'x\u200Dy', '\uE000']) assert.throws(() => prepNick(bad), (e: unknown) => e instanceof InvalidNickError, JSON.stringify(bad));
});

test.run();
