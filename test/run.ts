// npm test: type check, then every uvu file in its own process (a crash in one
// cannot hide the others), then one closing line "N passed, M failed".
// `node test/run.ts unit|e2e|<substring>` runs a subset.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import * as path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const filter = process.argv[2] ?? '';
const PER_FILE_TIMEOUT = Number(process.env.IMNODE_TEST_TIMEOUT ?? 600) * 1000;

interface Result { name: string; passed: number; failed: number; seconds: number }

function run(cmd: string, args: string[], timeoutMs: number): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: root, env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const onData = (d: Buffer) => {
      out += d.toString();
      process.stdout.write(d);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const timer = setTimeout(() => {
      out += `\n[test/run] ${args.join(' ')} timed out after ${timeoutMs / 1000}s; killing it\n`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, out });
    });
  });
}

function uvuCounts(out: string): { total: number; passed: number } | null {
  const total = /Total:\s+(\d+)/.exec(out);
  const passed = /Passed:\s+(\d+)/.exec(out);
  if (!total || !passed) return null;
  return { total: Number(total[1]), passed: Number(passed[1]) };
}

const results: Result[] = [];
const node = process.execPath;

if (filter === '' || filter === 'unit' || filter === 'typecheck') {
  const t0 = Date.now();
  console.log('\n=== tsc --noEmit');
  const r = await run(node, [path.join(root, 'node_modules/typescript/bin/tsc'), '--noEmit', '-p', root], 300_000);
  results.push({ name: 'tsc --noEmit', passed: r.code === 0 ? 1 : 0, failed: r.code === 0 ? 0 : 1, seconds: (Date.now() - t0) / 1000 });
}

const groups = ['unit', 'e2e'];
for (const group of groups) {
  const dir = path.join(root, 'test', group);
  const files = readdirSync(dir).filter((f) => f.endsWith('.test.ts')).sort();
  for (const f of files) {
    const rel = path.join('test', group, f);
    if (filter && filter !== group && !rel.includes(filter)) continue;
    if (filter === 'typecheck') continue;
    console.log(`\n=== ${rel}`);
    const t0 = Date.now();
    const r = await run(node, [rel], PER_FILE_TIMEOUT);
    const counts = uvuCounts(r.out);
    const seconds = (Date.now() - t0) / 1000;
    if (!counts) {
      // A file that crashed or printed no summary counts as one failure, loudly.
      console.log(`[test/run] ${rel} exited ${r.code} without a uvu summary: counted as failed`);
      results.push({ name: rel, passed: 0, failed: 1, seconds });
      continue;
    }
    let failed = counts.total - counts.passed;
    if (r.code !== 0 && failed === 0) failed = 1;
    results.push({ name: rel, passed: counts.passed, failed, seconds });
  }
}

console.log('\n=== summary');
for (const r of results) console.log(`${r.failed ? 'FAIL' : 'ok  '} ${r.name}  (${r.passed} passed, ${r.failed} failed, ${r.seconds.toFixed(1)}s)`);
const passed = results.reduce((a, r) => a + r.passed, 0);
const failed = results.reduce((a, r) => a + r.failed, 0);
if (results.length === 0) {
  console.log(`no test file matches '${filter}'`);
  process.exitCode = 1;
}
console.log(`${passed} passed, ${failed} failed`);
if (failed) process.exitCode = 1;
