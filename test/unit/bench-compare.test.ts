// The benchmark's summary (bench/loadgen/compare.ts): medians and ranges over
// repetitions, ratios of medians, and the cells that must never show a figure
// (a server without the feature, a scenario that failed every time).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cell, markdownTable, type RunResult } from '../../bench/loadgen/compare.ts';

function run(server: RunResult['server'], scenario: string, rep: number, metrics: Record<string, number>, extra: Partial<RunResult> = {}): RunResult {
  return { scenario, server, rep, ok: true, seconds: 1, params: {}, metrics, ...extra };
}

test('cell: median, min and max over the repetitions', () => {
  const rs = [
    run('imnode', 'message', 1, { messages_per_s: 300 }),
    run('imnode', 'message', 2, { messages_per_s: 100 }),
    run('imnode', 'message', 3, { messages_per_s: 200 }),
    run('prosody', 'message', 1, { messages_per_s: 7 }),
  ];
  assert.equal(cell(rs, 'imnode', 'message', 'messages_per_s'), { median: 200, min: 100, max: 300, n: 3 });
  // An even count: the mean of the two middle values.
  rs.push(run('imnode', 'message', 4, { messages_per_s: 400 }));
  assert.equal(cell(rs, 'imnode', 'message', 'messages_per_s'), { median: 250, min: 100, max: 400, n: 4 });
  assert.is(cell(rs, 'ejabberd', 'message', 'messages_per_s'), null);
});

test('cell: failed runs are left out, and never turned into a figure', () => {
  const rs = [
    run('ejabberd', 'login', 1, { logins_per_s: 900 }),
    run('ejabberd', 'login', 2, {}, { ok: false, error: 'boom', metrics: undefined }),
    run('prosody', 'login', 1, {}, { ok: false, error: 'boom', metrics: undefined }),
  ];
  assert.equal(cell(rs, 'ejabberd', 'login', 'logins_per_s'), { median: 900, min: 900, max: 900, n: 1 });
  assert.is(cell(rs, 'prosody', 'login', 'logins_per_s'), 'failed (1×)');
});

test('markdownTable: ratios of medians, "not available" where a server lacks the service', () => {
  const rs = [
    run('imnode', 'message', 1, { messages_per_s: 40000, latency_ms_p99: 10 }),
    run('prosody', 'message', 1, { messages_per_s: 8000, latency_ms_p99: 40 }),
    run('ejabberd', 'message', 1, { messages_per_s: 20000, latency_ms_p99: 20 }),
    run('ceiling', 'message', 1, { messages_per_s: 80000, latency_ms_p99: 5 }),
    run('imnode', 'muc', 1, {}, { available: false, error: 'no MUC', metrics: undefined }),
    run('prosody', 'muc', 1, { deliveries_per_s: 20000, latency_ms_p99: 30 }),
    run('ejabberd', 'muc', 1, { deliveries_per_s: 50000, latency_ms_p99: 10 }),
  ];
  const md = markdownTable(rs, ['imnode', 'prosody', 'ejabberd', 'ceiling']);
  const lines = md.split('\n');
  assert.is(lines[0], '| figure | imnode | prosody | ejabberd | imnode/prosody | imnode/ejabberd |');
  const msg = lines.find((l) => l.startsWith('| one-to-one msgs/s'))!;
  assert.ok(msg, md);
  assert.match(msg, /\| 40,000 \(40,000–40,000\) \| 8,000 .* \| 20,000 .* \| 5\.00 \| 2\.00 \|$/);
  const p99 = lines.find((l) => l.startsWith('| one-to-one p99'))!;
  assert.match(p99, /0\.25 \(lower is better\) \| 0\.50 \(lower is better\) \|$/);
  const muc = lines.find((l) => l.startsWith('| group chat deliveries/s'))!;
  assert.match(muc, /^\| group chat deliveries\/s \| not available \| 20,000 .* \| – \| – \|$/);
  assert.match(md, /imnode reaches \*\*0\.50\*\* of it/);
  // The ceiling is a reference, not a column.
  assert.not.match(lines[0], /ceiling/);
});

test.run();
