// The scenarios. Each gets a fresh server (Run) and returns its figures; any
// failure (a login refused, a message lost or duplicated, a stall) throws, and
// the caller's deadline bounds the whole scenario.
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import type { Element } from '../../src/xmpp/element.ts';
import type { BenchClient } from './client.ts';
import { account, pool, type Run } from './env.ts';
import { cpuMeter, percentile, round, rssKiB, sleep, type CpuReport } from './measure.ts';

export interface Figures {
  params: Record<string, number | string>;
  metrics: Record<string, number>;
  cpu?: CpuReport;
  notes?: string[];
}

/** What a scenario reports while it runs, for the timeout message. */
export type Progress = { text: string };

// ---- 1. login rate ------------------------------------------------------------------

export async function loginRate(run: Run, opts: { sessions: number; concurrency: number; warmup?: number }, progress: Progress): Promise<Figures> {
  const { sessions, concurrency } = opts;
  const warmup = Math.min(sessions, opts.warmup ?? sessions);
  const keys = run.target.keys;
  const once = async (i: number, latencies: Float64Array | null): Promise<void> => {
    const c = run.client(account(i + 1));
    await c.login();
    if (latencies) latencies[i] = c.readyAt - c.startedAt;
    await run.close(c);
  };
  // Set-up pass: fills the client key cache (PBKDF2 per user) and warms up both processes.
  let n = 0;
  progress.text = 'set-up pass';
  await pool(warmup, concurrency, async (i) => { await once(i, null); progress.text = `set-up pass: ${++n}/${warmup}`; });
  const derivations = keys.derivations;

  const latencies = new Float64Array(sessions);
  n = 0;
  const meter = cpuMeter(run.server.pid);
  await pool(sessions, concurrency, async (i) => { await once(i, latencies); progress.text = `measured pass: ${++n}/${sessions}`; });
  const cpu = meter();
  if (keys.derivations !== derivations) throw new Error(`the measured pass derived ${keys.derivations - derivations} SCRAM keys: the cache did not work`);
  latencies.sort();
  return {
    params: { sessions, in_flight: concurrency, warmup, mechanism: 'SCRAM-SHA-1', starttls: run.target.tls ? 'yes' : 'no', iterations: [...keys.iterations].join(',') },
    metrics: {
      logins_per_s: round(sessions / cpu.wall_s, 0),
      login_ms_p50: round(percentile(latencies, 50), 2),
      login_ms_p99: round(percentile(latencies, 99), 2),
      // CPU per operation holds up better than rates when other work shares the machine.
      server_cpu_ms_per_login: round((1000 * cpu.server_cpu_s) / sessions, 3),
      loadgen_cpu_ms_per_login: round((1000 * cpu.loadgen_cpu_s) / sessions, 3),
    },
    cpu,
    notes: ['a login: TCP connect, stream, SCRAM-SHA-1, bind, initial presence, ping answered; then the stream is closed (inside the slot)'],
  };
}

// ---- 2. one-to-one messages -------------------------------------------------------

export interface Pair { sender: BenchClient; receiver: BenchClient }

export async function oneToOne(
  run: Run,
  opts: { pairs: number; messages: number; window: number; concurrency: number },
  progress: Progress,
): Promise<Figures> {
  const { pairs: npairs, messages, window } = opts;
  progress.text = 'logging in';
  const pairs: Pair[] = [];
  for (let i = 0; i < npairs; i++) {
    pairs.push({ sender: run.client(account(2 * i + 1, 'send')), receiver: run.client(account(2 * i + 2, 'recv')) });
  }
  const all = pairs.flatMap((p) => [p.sender, p.receiver]);
  await pool(all.length, opts.concurrency, (i) => all[i].login());

  // Warm-up phase (not measured), then the measured one; each checks every delivery.
  await exchange(pairs, Math.min(5000, Math.ceil(messages / 10)), window, 'w', progress, null, () => {});
  const latencies = new Float64Array(messages);
  const meter = cpuMeter(run.server.pid);
  const end: { cpu?: CpuReport } = {};
  // Read at the last delivery, not after the grace time that follows it.
  const stats = await exchange(pairs, messages, window, 'm', progress, latencies, () => (end.cpu = meter()));
  const cpu = end.cpu!;
  latencies.sort();
  await pool(all.length, 200, (i) => run.close(all[i]));
  return {
    params: { pairs: npairs, messages, in_flight_per_pair: window },
    metrics: {
      messages_per_s: round(messages / cpu.wall_s, 0),
      latency_ms_p50: round(percentile(latencies, 50), 2),
      latency_ms_p90: round(percentile(latencies, 90), 2),
      latency_ms_p99: round(percentile(latencies, 99), 2),
      latency_ms_max: round(latencies[latencies.length - 1], 2),
      delivered: stats.delivered,
      missing: 0,
      duplicates: 0,
      server_cpu_us_per_msg: round((1e6 * cpu.server_cpu_s) / messages, 1),
      loadgen_cpu_us_per_msg: round((1e6 * cpu.loadgen_cpu_s) / messages, 1),
    },
    cpu,
    notes: ['type=chat to the partner\'s full JID; latency = send call to parse on the receiving socket'],
  };
}

const FILLER = 'Hi! Are we still on for lunch tomorrow? I will bring the slides.';

/**
 * Each sender sends `quota` messages to its partner with at most `window` in
 * flight; a delivery releases the next one. Fails on a duplicate, on an error
 * bounced back, on a message from a wrong sender, and on a stall.
 */
export function exchange(
  pairs: Pair[], total: number, window: number, tag: string, progress: Progress,
  latencies: Float64Array | null, onLast: () => void,
): Promise<{ delivered: number }> {
  return new Promise((resolve, reject) => {
    const n = pairs.length;
    const quota = pairs.map((_, i) => Math.floor(total / n) + (i < total % n ? 1 : 0));
    const offset: number[] = [];
    quota.reduce((acc, q, i) => { offset[i] = acc; return acc + q; }, 0);
    const sent = new Array<number>(n).fill(0);
    const seen = new Uint8Array(total);
    let delivered = 0;
    let lastProgress = performance.now();
    let finished = false;

    const finish = (err?: Error): void => {
      if (finished) return;
      finished = true;
      clearInterval(watchdog);
      for (const p of pairs) {
        p.receiver.onStanza = () => {};
        p.sender.onStanza = () => {};
        p.sender.onDown = p.receiver.onDown = () => {};
      }
      if (err) reject(err);
      else resolve({ delivered });
    };
    const describe = (): string => {
      const missing: string[] = [];
      pairs.forEach((_, i) => {
        for (let s = 0; s < sent[i] && missing.length < 5; s++) if (!seen[offset[i] + s]) missing.push(`${tag}${i}.${s}`);
      });
      return `phase ${tag}: ${delivered}/${total} delivered, ${sent.reduce((a, b) => a + b, 0)} sent; first missing: ${missing.join(' ') || 'none'}`;
    };
    progress.text = describe();
    const sendNext = (i: number): void => {
      const s = sent[i]++;
      const p = pairs[i];
      p.sender.send(`<message to='${p.receiver.jid}' type='chat' id='${tag}${i}.${s}'><body>${performance.now()} ${FILLER}</body></message>`);
    };
    const watchdog = setInterval(() => {
      progress.text = describe();
      if (performance.now() - lastProgress > 10_000) finish(new Error(`no delivery for 10 s: ${describe()}`));
    }, 1000);

    receive(pairs, seen, finish, (i, id) => {
      const dot = id.indexOf('.');
      if (!id.startsWith(tag) || dot < 0) return null;
      const pi = Number(id.slice(tag.length, dot));
      const seq = Number(id.slice(dot + 1));
      if (pi !== i || !(seq >= 0 && seq < quota[i])) return `a message meant for another pair: ${id}`;
      return offset[i] + seq;
    }, (i, slot, now, el) => {
      delivered++;
      lastProgress = now;
      if (latencies) latencies[slot] = now - parseFloat(el.getChildText('body') ?? 'NaN');
      if (sent[i] < quota[i]) sendNext(i);
      if (delivered === total) {
        onLast();
        // Late duplicates would show up within this grace time.
        setTimeout(() => finish(), 300);
      }
    });
    pairs.forEach((_, i) => {
      for (let k = 0; k < window && sent[i] < quota[i]; k++) sendNext(i);
    });
    if (total === 0) {
      onLast();
      finish();
    }
  });
}

// ---- 3. idle memory ---------------------------------------------------------------

/**
 * Logs in sessions and leaves them idle; the server's VmRSS is read (after
 * `settleMs`) before the first and at each step of `steps` (cumulative session
 * counts, e.g. 2000 then 10000 in the same server).
 */
export async function idleMemory(run: Run, opts: { steps: number[]; concurrency: number; settleMs: number }, progress: Progress): Promise<Figures> {
  const { steps, concurrency, settleMs } = opts;
  const pid = run.server.pid;
  // Load the code paths once, so that lazy compilation is not counted as per-session memory.
  progress.text = 'warm-up';
  await pool(Math.min(200, steps[0]), 50, async (i) => {
    const c = run.client(account(i + 1, 'warmup'));
    await c.login();
    await run.close(c);
  });
  await sleep(settleMs);
  const before = rssKiB(pid);
  const clients: BenchClient[] = [];
  // Idle means idle: the connections must stay up.
  let down: Error | null = null;
  const metrics: Record<string, number> = { rss_before_kib: before };
  let n = 0;
  const t0 = performance.now();
  for (const step of steps) {
    const from = clients.length;
    await pool(step - from, concurrency, async (k) => {
      const c = run.client(account(from + k + 1, 'idle'));
      clients.push(c);
      await c.login();
      c.onDown = (e) => { down ??= e; };
      progress.text = `logged in ${++n}/${steps.at(-1)}`;
    });
    await sleep(settleMs);
    const rss = rssKiB(pid);
    if (down) throw down;
    metrics[`rss_at_${step}_kib`] = rss;
    metrics[`kib_per_session_at_${step}`] = round((rss - before) / step, 1);
  }
  metrics.login_s = round((performance.now() - t0) / 1000, 2);
  progress.text = 'closing';
  await pool(clients.length, 500, (i) => run.close(clients[i]));
  return {
    params: { steps: steps.join(','), settle_ms: settleMs },
    metrics,
    notes: ['VmRSS of the server process after the settle time, minus the reading before the first session (after a warm-up of 200 logins); it includes garbage not yet collected'],
  };
}

// ---- 3b. latency at a fixed rate -------------------------------------------------------

/**
 * `rate` messages per second in all, spread round-robin over the pairs and paced
 * by a 1 ms timer (each tick sends what is due), for `seconds` after one
 * unmeasured second; every delivery is checked as in exchange(). Latency = send
 * call to parse on the receiving socket.
 */
export async function latencyAtRate(run: Run, opts: { pairs: number; rate: number; seconds: number; concurrency: number }, progress: Progress): Promise<Figures> {
  const { pairs: npairs, rate, seconds } = opts;
  progress.text = 'logging in';
  const pairs: Pair[] = [];
  for (let i = 0; i < npairs; i++) {
    pairs.push({ sender: run.client(account(2 * i + 1, 'send')), receiver: run.client(account(2 * i + 2, 'recv')) });
  }
  const all = pairs.flatMap((p) => [p.sender, p.receiver]);
  await pool(all.length, opts.concurrency, (i) => all[i].login());
  await paced(pairs, rate, rate, 'w', progress, null, () => {});
  const total = Math.round(rate * seconds);
  const latencies = new Float64Array(total);
  const meter = cpuMeter(run.server.pid);
  const end: { cpu?: CpuReport } = {};
  const { lateTicks } = await paced(pairs, rate, total, 'm', progress, latencies, () => (end.cpu = meter()));
  const cpu = end.cpu!;
  latencies.sort();
  await pool(all.length, 200, (i) => run.close(all[i]));
  return {
    params: { pairs: npairs, rate_per_s: rate, seconds, messages: total },
    metrics: {
      achieved_per_s: round(total / cpu.wall_s, 0),
      latency_ms_p50: round(percentile(latencies, 50), 3),
      latency_ms_p90: round(percentile(latencies, 90), 3),
      latency_ms_p99: round(percentile(latencies, 99), 3),
      latency_ms_max: round(latencies[latencies.length - 1], 3),
      late_ticks: lateTicks,
      server_cpu_us_per_msg: round((1e6 * cpu.server_cpu_s) / total, 1),
    },
    cpu,
    notes: ['paced by a 1 ms timer; late_ticks: ticks that came more than 5 ms late (the load generator was held up: those messages went out in a burst)'],
  };
}

function paced(
  pairs: Pair[], rate: number, total: number, tag: string, progress: Progress, latencies: Float64Array | null, onLast: () => void,
): Promise<{ lateTicks: number }> {
  return new Promise((resolve, reject) => {
    const n = pairs.length;
    const seen = new Uint8Array(total);
    let sent = 0, delivered = 0, lateTicks = 0, finished = false;
    let lastProgress = performance.now();
    const t0 = performance.now();
    let lastTick = t0;
    const finish = (err?: Error): void => {
      if (finished) return;
      finished = true;
      clearInterval(ticker);
      clearInterval(watchdog);
      for (const p of pairs) {
        p.receiver.onStanza = p.sender.onStanza = () => {};
        p.sender.onDown = p.receiver.onDown = () => {};
      }
      if (err) reject(err);
      else resolve({ lateTicks });
    };
    const ticker = setInterval(() => {
      const now = performance.now();
      if (now - lastTick > 5) lateTicks++;
      lastTick = now;
      const due = Math.min(total, Math.floor(((now - t0) * rate) / 1000) + 1);
      for (; sent < due; sent++) {
        const p = pairs[sent % n];
        p.sender.send(`<message to='${p.receiver.jid}' type='chat' id='${tag}${sent}'><body>${performance.now()} ${FILLER}</body></message>`);
      }
    }, 1);
    const watchdog = setInterval(() => {
      progress.text = `phase ${tag}: ${delivered}/${total} delivered, ${sent} sent`;
      if (performance.now() - lastProgress > 10_000) finish(new Error(`no delivery for 10 s: ${progress.text}`));
    }, 1000);
    receive(pairs, seen, finish, (i, id) => {
      const seq = Number(id.slice(tag.length));
      return id.startsWith(tag) && seq >= 0 && seq < total && seq % n === i ? seq : null;
    }, (_i, slot, now, el) => {
      delivered++;
      lastProgress = now;
      if (latencies) latencies[slot] = now - parseFloat(el.getChildText('body') ?? 'NaN');
      if (delivered === total) {
        onLast();
        setTimeout(() => finish(), 300);
      }
    });
  });
}

/**
 * The delivery checks both one-to-one runs make: a receiver gets only its own
 * pair's messages (`slotOf` maps an id to the message's slot, null for a
 * foreign id, or names what is wrong), none an error, each from its sender and
 * once; a sender gets no message back; a connection that goes down ends the run.
 */
function receive(
  pairs: Pair[], seen: Uint8Array, finish: (err?: Error) => void,
  slotOf: (pair: number, id: string) => number | string | null,
  delivered: (pair: number, slot: number, now: number, el: Element) => void,
): void {
  pairs.forEach((p, i) => {
    const senderJid = p.sender.jid;
    p.receiver.onStanza = (el: Element) => {
      if (el.name !== 'message') return;
      const now = performance.now();
      const id = el.attrs.id ?? '';
      const slot = slotOf(i, id);
      if (slot === null) return finish(new Error(`${p.receiver.jid} got an unexpected message: ${el.toString().slice(0, 300)}`));
      if (typeof slot === 'string') return finish(new Error(`${p.receiver.jid} got ${slot}`));
      if (el.attrs.type === 'error') return finish(new Error(`an error came back to the receiver: ${el.toString()}`));
      if (el.attrs.from !== senderJid) return finish(new Error(`message ${id} has from='${el.attrs.from}', expected ${senderJid}`));
      if (seen[slot]) return finish(new Error(`message ${id} delivered twice`));
      seen[slot] = 1;
      delivered(i, slot, now, el);
    };
    p.sender.onStanza = (el: Element) => {
      if (el.name === 'message') finish(new Error(`the sender got a message back: ${el.toString().slice(0, 500)}`));
    };
    p.sender.onDown = p.receiver.onDown = (e) => finish(e);
  });
}

// ---- 4. parser micro-benchmark ------------------------------------------------------

/** Runs bench/parser.ts as it is, in its own process, and reads its figures. */
export function parser(seconds: number, timeoutMs: number): Promise<Figures> {
  const script = path.join(import.meta.dirname, '..', 'parser.ts');
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [script, String(seconds)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (code) => {
      clearTimeout(timer);
      const mb = /([\d.]+) MB\/s/.exec(out);
      const st = /([\d,]+) stanzas\/s/.exec(out);
      if (code !== 0 || !mb || !st) return reject(new Error(`bench/parser.ts failed (exit ${code}):\n${out}`));
      resolve({
        params: { seconds },
        metrics: { mb_per_s: Number(mb[1]), stanzas_per_s: Number(st[1].replace(/,/g, '')) },
        notes: out.trim().split('\n').slice(0, 1),
      });
    });
  });
}
