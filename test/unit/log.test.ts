import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createLogger, setLogLevel, setLogWriter, getLogLevel } from '../../src/admin/log.ts';

let out: string[] = [];
let restore: (line: string) => void;
test.before.each(() => { out = []; restore = setLogWriter((l) => out.push(l)); });
test.after.each(() => { setLogWriter(restore); });

test('one line per entry: time, level, component, message', () => {
  const log = createLogger('info');
  log.info('listening on', 5222, { tls: true });
  assert.is(out.length, 1);
  assert.match(out[0], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO  imnode listening on 5222 \{ tls: true \}$/);
});

test('children name their component', () => {
  const log = createLogger('info').child('pool').child('membership');
  log.warn('suspected');
  assert.match(out[0], / WARN  imnode:pool:membership suspected$/);
  createLogger('info', 'other').child('c2s').error('x');
  assert.match(out[1], / ERROR other:c2s x$/);
});

test('the level filters, process-wide', () => {
  const log = createLogger('warn');
  const child = log.child('c2s');
  log.info('hidden');
  child.debug('hidden');
  child.warn('shown');
  assert.is(out.length, 1);
  setLogLevel('debug');
  assert.is(getLogLevel(), 'debug');
  child.debug('now shown');
  assert.is(out.length, 2);
  setLogLevel('error');
  log.warn('hidden');
  assert.is(out.length, 2);
  assert.throws(() => setLogLevel('verbose' as never), /unknown log level/);
});

test('errors and multi-line text stay on one line', () => {
  const log = createLogger('info');
  const err = Object.assign(new Error('boom\nsecond'), { code: 'EBOOM' });
  log.error('failed:', err);
  assert.is(out.length, 1);
  assert.not.match(out[0], /\n/);
  assert.match(out[0], /failed: Error: boom\\nsecond \(EBOOM\)$/);
  setLogLevel('debug');
  log.error('failed:', new Error('deep'));
  assert.match(out[1], /failed: Error: deep at .*log\.test\.ts/);
  assert.not.match(out[1], /\n/);
});

test.run();
