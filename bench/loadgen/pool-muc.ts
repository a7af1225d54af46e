// Conferences across the pool (issue 4's figures), on a pool of three nodes:
//  - fan-out: one room, `occupants` spread over the three nodes, `senders` of
//    them sending, deliveries per second and latency (the group chat run of
//    bench/loadgen/muc.ts, with its checks), next to the same room with every
//    occupant on one node, the node that sequences the room, so that nothing
//    crosses the pool;
//  - joins: `joinOccupants` sessions over the three nodes enter one room, 10
//    at a time; the time each entry takes (presence sent to self-presence
//    back) while the room fills, and for the last tenth, when it is nearly full.
import { createHash } from 'node:crypto';
import type { BenchClient } from './client.ts';
import type { Element } from '../../src/xmpp/element.ts';
import { account, pool, type Run } from './env.ts';
import { cpuMeter, percentile, round, sleep } from './measure.ts';
import { POOL_SIZE, type PoolNet } from './pool.ts';
import { groupChat, type MucOptions } from './muc.ts';
import type { Figures, Progress } from './scenarios.ts';

const NS_MUC = 'http://jabber.org/protocol/muc';

export interface PoolMucOptions extends MucOptions { joinOccupants: number }

/** The node that sequences a room: what src/modules/muc/replication.ts computes from the peer ids. */
function sequencerIndex(room: string, peerIds: string[]): number {
  let best = 0, bestScore = '';
  peerIds.forEach((p, i) => {
    const score = createHash('sha256').update(room).update('\0').update(p).digest('hex');
    if (score > bestScore) { bestScore = score; best = i; }
  });
  return best;
}

/** bench/loadgen/muc.ts drives a Run; this one puts account i on the node `nodeOf(i)` picks. */
function runOn(net: PoolNet, nodeOf: (i: number) => number): Run {
  const view = {
    server: { pid: net.nodes[0].pid },
    target: net.target(0),
    client: (a: { username: string; password: string; resource: string }) => net.client(nodeOf(Number(a.username.slice(1))), a),
    close: (c: BenchClient) => net.close(c),
  };
  return view as unknown as Run;
}

export async function poolMuc(net: PoolNet, opts: PoolMucOptions, progress: Progress): Promise<Figures> {
  await net.start();
  await net.settled(progress);
  const statuses = await net.statuses();
  const peerIds = statuses.map((s) => String((s as unknown as { peerId?: string }).peerId ?? ''));
  if (peerIds.some((p) => p === '')) throw new Error('a node does not report its peer id in /status');
  const room = `bench@conference.${net.target(0).domain}`;
  const seq = sequencerIndex(room, peerIds);

  const measure = async (nodeOf: (i: number) => number, what: string) => {
    progress.text = what;
    const meter = cpuMeter(net.pids());
    const r = await groupChat(runOn(net, nodeOf), opts, progress);
    const cpu = meter();
    // The room ends with its last occupant; the next run creates it again.
    await sleep(1500);
    return { r, cpu };
  };
  const spread = await measure((i) => (i - 1) % POOL_SIZE, 'fan-out over three nodes');
  const one = await measure(() => seq, 'fan-out on one node');
  const joins = await joinTimes(net, room.replace('bench@', 'joins@'), opts.joinOccupants, progress);
  const m = (prefix: string, x: typeof spread) => ({
    [`${prefix}_deliveries_per_s`]: x.r.metrics.deliveries_per_s,
    [`${prefix}_latency_ms_p50`]: x.r.metrics.latency_ms_p50,
    [`${prefix}_latency_ms_p99`]: x.r.metrics.latency_ms_p99,
    [`${prefix}_server_cpu_us_per_delivery`]: round((1e6 * x.cpu.server_cpu_s) / Number(x.r.metrics.deliveries), 2),
  });
  return {
    params: { nodes: POOL_SIZE, occupants: opts.occupants, senders: opts.senders, messages: opts.messages, in_flight_per_sender: opts.window, join_occupants: opts.joinOccupants },
    metrics: { ...m('pool', spread), ...m('one_node', one), ...joins },
    notes: [
      `fan-out: one room, ${opts.occupants} occupants on three nodes (pool_*) or all on the node that sequences the room (one_node_*); a delivery = one occupant receiving one message`,
      `joins: ${opts.joinOccupants} sessions over three nodes enter one room, 10 at a time; join = presence sent to self-presence received`,
    ],
  };
}

async function joinTimes(net: PoolNet, room: string, n: number, progress: Progress): Promise<Record<string, number>> {
  progress.text = `logging in ${n} occupants`;
  const clients = Array.from({ length: n }, (_, i) => net.client(i % POOL_SIZE, account(i + 1, 'join')));
  await pool(n, 100, (i) => clients[i].login());
  const times = new Float64Array(n);
  const t0 = performance.now();
  await enter(clients[0], room, 'j0', times, 0);
  await configure(clients[0], room);
  await pool(n - 1, 10, async (i) => {
    await enter(clients[i + 1], room, `j${i + 1}`, times, i + 1);
    progress.text = `joins: ${i + 2}/${n}`;
  });
  const total = performance.now() - t0;
  const tail = Float64Array.from(times.slice(Math.floor(n * 0.9))).sort();
  const all = Float64Array.from(times).sort();
  await net.closeAll(clients);
  return {
    join_all_s: round(total / 1000, 2),
    join_ms_p50: round(percentile(all, 50), 1),
    join_ms_p99: round(percentile(all, 99), 1),
    join_last_tenth_ms_p50: round(percentile(tail, 50), 1),
    join_last_tenth_ms_p99: round(percentile(tail, 99), 1),
  };
}

function enter(c: BenchClient, room: string, nick: string, times: Float64Array, i: number): Promise<void> {
  const t = performance.now();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no self-presence from ${room}/${nick} within 30 s`)), 30_000);
    c.onStanza = (el: Element) => {
      if (el.name !== 'presence' || el.attrs.from !== `${room}/${nick}`) return;
      if (el.attrs.type === 'error') {
        clearTimeout(timer);
        return reject(new Error(`entering ${room}: ${el.toString().slice(0, 300)}`));
      }
      if (!el.getChild('x', `${NS_MUC}#user`)?.getChildren('status').some((s) => s.attrs.code === '110')) return;
      clearTimeout(timer);
      times[i] = performance.now() - t;
      // Occupants' presences keep coming: ignore them from here on.
      c.onStanza = () => {};
      resolve();
    };
    c.send(`<presence to='${room}/${nick}'><x xmlns='${NS_MUC}'><history maxstanzas='0'/></x></presence>`);
  });
}

function configure(c: BenchClient, room: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no answer to the room configuration within 10 s')), 10_000);
    c.onStanza = (el: Element) => {
      if (el.name !== 'iq' || el.attrs.id !== 'join-cfg') return;
      clearTimeout(timer);
      c.onStanza = () => {};
      if (el.attrs.type === 'result') resolve();
      else reject(new Error(el.toString().slice(0, 300)));
    };
    c.send(`<iq type='set' to='${room}' id='join-cfg'><query xmlns='${NS_MUC}#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>`);
  });
}
