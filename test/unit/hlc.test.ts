import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ClockDriftError, HLC, MAX_LOGICAL, compare, decode, encode, encodeParts, wallOf, type Timestamp } from '../../src/pool/hlc.ts';

function fakeClock(start: number): { now: () => number; set: (t: number) => void } {
  let t = start;
  return { now: () => t, set: (x) => { t = x; } };
}

test('follows the physical clock when it moves forward', () => {
  const c = fakeClock(1000);
  const h = new HLC('a', { now: c.now });
  assert.equal(h.now(), { wall: 1000, logical: 0, node: 'a' });
  assert.equal(h.now(), { wall: 1000, logical: 1, node: 'a' });
  c.set(1005);
  assert.equal(h.now(), { wall: 1005, logical: 0, node: 'a' });
});

test('stays monotonic when the physical clock goes back', () => {
  const c = fakeClock(5000);
  const h = new HLC('a', { now: c.now });
  const seen: string[] = [encode(h.now())];
  c.set(1000);
  for (let i = 0; i < 5; i++) seen.push(encode(h.now()));
  c.set(5000);
  seen.push(encode(h.now()));
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i] > seen[i - 1], `${seen[i]} > ${seen[i - 1]}`);
  assert.is(decode(seen[5]).wall, 5000);
  assert.is(decode(seen[5]).logical, 5);
});

test('receiving a stamp from a node whose clock is ahead moves past it', () => {
  const c = fakeClock(1000);
  const h = new HLC('a', { now: c.now, maxDriftMs: 10_000 });
  const remote: Timestamp = { wall: 4000, logical: 7, node: 'b' };
  const t = h.update(remote);
  assert.equal(t, { wall: 4000, logical: 8, node: 'a' });
  assert.ok(compare(h.now(), remote) > 0);
  // A causally later local write wins over the remote one although our clock is behind it.
  assert.ok(encode(h.now()) > encode(remote));
});

test('receiving an older stamp ticks the logical counter only', () => {
  const c = fakeClock(1000);
  const h = new HLC('a', { now: c.now });
  h.now();
  assert.equal(h.update({ wall: 500, logical: 3, node: 'b' }), { wall: 1000, logical: 1, node: 'a' });
  assert.equal(h.update({ wall: 1000, logical: 9, node: 'b' }), { wall: 1000, logical: 10, node: 'a' });
  c.set(2000);
  assert.equal(h.update({ wall: 1500, logical: 0, node: 'b' }), { wall: 2000, logical: 0, node: 'a' });
});

test('refuses a stamp beyond the drift bound and leaves the clock alone', () => {
  const c = fakeClock(1000);
  const h = new HLC('a', { now: c.now, maxDriftMs: 500 });
  h.now();
  assert.ok(h.accepts(1500));
  assert.not.ok(h.accepts(1501));
  try {
    h.update({ wall: 9000, logical: 0, node: 'b' });
    assert.unreachable('should throw');
  } catch (err) {
    assert.instance(err, ClockDriftError);
    assert.is((err as ClockDriftError).remoteWall, 9000);
  }
  assert.equal(h.last(), { wall: 1000, logical: 0, node: 'a' });
  // Once real time catches up the same stamp is accepted.
  c.set(8600);
  assert.equal(h.update({ wall: 9000, logical: 0, node: 'b' }), { wall: 9000, logical: 1, node: 'a' });
});

test('witness moves the clock without a drift check (stamps reloaded from disk)', () => {
  const c = fakeClock(1000);
  const h = new HLC('a', { now: c.now, maxDriftMs: 10 });
  h.witness('0000000f42400003z');
  assert.equal(h.last(), { wall: 1_000_000, logical: 3, node: 'a' });
  assert.equal(h.now(), { wall: 1_000_000, logical: 4, node: 'a' });
  h.witness(encodeParts(5, 0, 'x'));
  assert.is(h.last().wall, 1_000_000);
});

test('logical overflow borrows one millisecond', () => {
  const c = fakeClock(1000);
  const h = new HLC('a', { now: c.now });
  h.witness({ wall: 1000, logical: MAX_LOGICAL, node: 'b' });
  assert.equal(h.now(), { wall: 1001, logical: 0, node: 'a' });
});

test('the node id breaks ties, the same way on every node', () => {
  const a = { wall: 10, logical: 2, node: 'node-a' };
  const b = { wall: 10, logical: 2, node: 'node-b' };
  assert.is(compare(a, b), -1);
  assert.is(compare(b, a), 1);
  assert.is(compare(a, { ...a }), 0);
  assert.ok(encode(a) < encode(b));
});

test('string encoding round-trips and sorts like compare()', () => {
  let seed = 42;
  const rnd = (): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const nodes = ['a', 'b', 'node-1', 'node-10', 'node-2', 'Ω'];
  const stamps: Timestamp[] = [];
  for (let i = 0; i < 2000; i++) {
    stamps.push({ wall: Math.floor(rnd() * 2 ** (rnd() < 0.5 ? 12 : 44)), logical: Math.floor(rnd() * 4), node: nodes[Math.floor(rnd() * nodes.length)] });
  }
  for (const s of stamps) assert.equal(decode(encode(s)), s);
  const byCompare = [...stamps].sort(compare).map(encode);
  const byString = stamps.map(encode).sort();
  assert.equal(byString, byCompare);
  assert.is(wallOf(encode(stamps[7])), stamps[7].wall);
  assert.is(encode({ wall: 1_700_000_000_000, logical: 1, node: 'n1' }), '018bcfe568000001n1');
});

test('rejects malformed stamps and out-of-range fields', () => {
  assert.throws(() => decode('xyz'));
  assert.throws(() => decode('0000000000000000'), /not an HLC/);
  assert.throws(() => encodeParts(-1, 0, 'a'), RangeError);
  assert.throws(() => encodeParts(1, MAX_LOGICAL + 1, 'a'), RangeError);
  assert.throws(() => new HLC(''));
});

test.run();
