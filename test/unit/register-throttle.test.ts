// The per-address limit on in-band registrations (XEP-0077 §3.1.1 policy) and
// the XEP-0082 offset format of entity time (XEP-0202).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RegistrationThrottle } from '../../src/modules/register.ts';
import { tzo } from '../../src/modules/time.ts';

test('one registration per address per interval', () => {
  const t = new RegistrationThrottle(60_000);
  assert.ok(t.take('10.0.0.1', 1000));
  assert.is(t.take('10.0.0.1', 2000), null);
  assert.ok(t.take('10.0.0.2', 2000), 'another address is not affected');
  assert.is(t.take('10.0.0.1', 60_999), null);
  assert.ok(t.take('10.0.0.1', 61_000), 'free again after the interval');
});

test('a released slot (failed registration) can be taken again at once', () => {
  const t = new RegistrationThrottle(60_000);
  const release = t.take('10.0.0.1', 1000)!;
  release();
  assert.ok(t.take('10.0.0.1', 1001));
  // Releasing an old reservation does not free a newer one.
  release();
  assert.is(t.take('10.0.0.1', 1002), null);
});

test('an interval of 0 never limits', () => {
  const t = new RegistrationThrottle(0);
  for (let i = 0; i < 5; i++) assert.ok(t.take('10.0.0.1', 1000));
});

test('tzo: XEP-0082 TZD of the local offset', () => {
  const s = tzo(new Date());
  assert.match(s, /^[+-]\d\d:\d\d$/);
  const off = -new Date().getTimezoneOffset();
  const [h, mm] = s.slice(1).split(':').map(Number);
  assert.is((s[0] === '-' ? -1 : 1) * (h * 60 + mm), off);
});

test.run();
