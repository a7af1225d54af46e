// Output of a bench run: a table for people, one JSON line per scenario for
// tools, and both saved under bench/results/ (latest.json and <date>.md).
import { mkdirSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Figures } from './scenarios.ts';

export interface ScenarioResult extends Partial<Figures> {
  scenario: string;
  /** Comparison runs: which server, which repetition. */
  server?: string;
  rep?: number;
  available?: boolean;
  ok: boolean;
  error?: string;
  /** Wall time of the whole scenario, set-up included. */
  seconds: number;
  /** Warnings and errors the server logged during the scenario. */
  server_log?: string[];
}

export interface Meta {
  date: string;
  node: string;
  os: string;
  cpus: string;
  /** 1, 5 and 15 minute load averages at the start: other work on the machine skews the figures. */
  loadavg: number[];
  argv: string[];
}

export function meta(argv: string[]): Meta {
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    node: process.version,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    cpus: `${cpus.length} × ${cpus[0]?.model.trim() ?? '?'}`,
    loadavg: os.loadavg().map((l) => Math.round(l * 100) / 100),
    argv,
  };
}

function headline(r: ScenarioResult): string {
  if (!r.ok) return `FAILED: ${(r.error ?? '').split('\n')[0].slice(0, 160)}`;
  if (r.available === false) return `not available: ${(r.error ?? '').split('\n')[0].slice(0, 160)}`;
  const m = r.metrics ?? {};
  switch (r.scenario) {
    case 'login': case 'login-tls': return `${m.logins_per_s} logins/s (p50 ${m.login_ms_p50} ms, p99 ${m.login_ms_p99} ms)`;
    case 'message': return `${m.messages_per_s} msg/s (p50 ${m.latency_ms_p50} ms, p99 ${m.latency_ms_p99} ms)`;
    case 'latency': return `at ${r.params?.rate_per_s} msg/s: p50 ${m.latency_ms_p50} ms, p99 ${m.latency_ms_p99} ms, max ${m.latency_ms_max} ms`;
    case 'muc': return `${m.deliveries_per_s} deliveries/s (p50 ${m.latency_ms_p50} ms, p99 ${m.latency_ms_p99} ms)`;
    case 'idle': return Object.keys(m).filter((k) => k.startsWith('kib_per_session_at_')).map((k) => `${m[k]} KiB/session at ${k.slice(19)}`).join(', ') +
      ` (RSS ${mib(m.rss_before_kib)} MiB before)`;
    case 'parser': return `${m.mb_per_s} MB/s, ${m.stanzas_per_s} stanzas/s`;
    case 'pool-form': return `3 alive members everywhere ${m.formed_s} s after spawn (${m.formed_after_last_ready_ms} ms after the last ready), accounts everywhere at ${m.accounts_everywhere_s} s`;
    case 'pool-message': return `cross-node ${m.cross_messages_per_s} msg/s (p50 ${m.cross_latency_ms_p50} ms, p99 ${m.cross_latency_ms_p99} ms); ` +
      `one node ${m.local_messages_per_s} msg/s (p50 ${m.local_latency_ms_p50} ms, p99 ${m.local_latency_ms_p99} ms)`;
    case 'pool-purge': return `routes of the killed node purged everywhere in ${m.purged_ms} ms (failed in ${m.failed_ms} ms)`;
    case 'pool-logins': return `${m.logins_per_s} logins/s, routes converged ${m.converged_after_last_bind_ms} ms after the last bind, ` +
      `${m.pool_wire_bytes_per_login ?? '?'} B of pool traffic per login (${m.pool_payload_bytes_per_login} B payload)`;
    case 'pool-netns': return `3 nodes in namespaces: ${m.logins_per_s} logins/s; cross-node ${m.messages_per_s} msg/s ` +
      `(p50 ${m.message_latency_ms_p50} ms, p99 ${m.message_latency_ms_p99} ms); group chat ${m.deliveries_per_s} deliveries/s (p99 ${m.muc_latency_ms_p99} ms)`;
    default: return JSON.stringify(m);
  }
}

function mib(kib: number | undefined): string {
  return kib === undefined ? '?' : (kib / 1024).toFixed(1);
}

function cpuCell(s: number | undefined, pct: number | undefined): string {
  return s === undefined ? '-' : `${pct}% (${s} s)`;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c])).join('  ').trimEnd()).join('\n');
}

/** The human-readable part: a summary table, then each scenario's parameters and figures. */
export function humanReport(m: Meta, results: ScenarioResult[]): string {
  const lines = [`imnode bench, ${m.date}, node ${m.node}, ${m.cpus}, ${m.os}, load average ${m.loadavg.join(' ')} at the start`, ''];
  const rows = [['scenario', 'result', 'loadgen CPU', 'server CPU', 'phase wall']];
  for (const r of results) {
    rows.push([r.server ? `${r.scenario} ${r.server} #${r.rep}` : r.scenario, headline(r), cpuCell(r.cpu?.loadgen_cpu_s, r.cpu?.loadgen_cpu_pct),
      cpuCell(r.cpu?.server_cpu_s, r.cpu?.server_cpu_pct), r.cpu ? `${r.cpu.wall_s} s` : '-']);
  }
  lines.push(table(rows), '', 'CPU: during the measured phase only; 100% = one core busy for the whole phase.');
  for (const r of results) {
    lines.push('', `[${r.scenario}${r.server ? ` ${r.server} #${r.rep}` : ''}] ${r.ok ? 'ok' : 'FAILED'} in ${r.seconds} s`);
    if (r.params) lines.push('  params:  ' + Object.entries(r.params).map(([k, v]) => `${k}=${v}`).join(' '));
    if (r.metrics) lines.push('  figures: ' + Object.entries(r.metrics).map(([k, v]) => `${k}=${v}`).join(' '));
    for (const n of r.notes ?? []) lines.push('  note:    ' + n);
    if (r.error) lines.push('  error:   ' + r.error.replace(/\n/g, '\n           '));
    for (const l of r.server_log ?? []) lines.push('  server:  ' + l);
  }
  return lines.join('\n') + '\n';
}

export function jsonLines(results: ScenarioResult[]): string {
  return results.map((r) => JSON.stringify(r)).join('\n') + '\n';
}

/** Writes bench/results/latest.json and bench/results/<date>.md; returns their paths. */
export function save(dir: string, m: Meta, results: ScenarioResult[], summary = ''): string[] {
  mkdirSync(dir, { recursive: true });
  const json = path.join(dir, 'latest.json');
  writeFileSync(json, JSON.stringify({ ...m, results }, null, 2) + '\n');
  // ISO 8601 without the colons, which some file systems refuse.
  const md = path.join(dir, `${m.date.replace(/\.\d+Z$/, 'Z').replace(/:/g, '-')}.md`);
  writeFileSync(md, `# imnode bench ${m.date}\n\n\`${['node bench/run.ts', ...m.argv].join(' ')}\`\n\n` +
    (summary ? `## imnode, Prosody and ejabberd\n\n${summary}\n## Every run\n\n` : '') +
    '```\n' + humanReport(m, results) + '```\n\nJSON, one line per scenario:\n\n```json\n' + jsonLines(results) + '```\n');
  return [json, md];
}
