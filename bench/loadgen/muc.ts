// Group chat (issue 8, scenario 4), on XEP-0045 basics only, so that it runs on
// any server with a MUC service at conference.<domain>: §7.2 entering a room
// (presence to room/nick with <x xmlns='http://jabber.org/protocol/muc'/>, the
// self-presence with status 110 says we are in), §10.1.2 accepting the default
// configuration of a new room (the instant room form; harmless where rooms
// open unlocked), §7.4 groupchat messages, reflected to every occupant,
// the sender included.
//
// `occupants` sessions enter one room; `senders` of them send; a message counts
// as complete when every occupant has it, and each sender keeps at most
// `window` incomplete messages out. Every delivery is checked: the right room
// nick as from, each (occupant, message) once, nothing lost for 10 s.
// A server without the service (the join answered with an error, or not at all
// within 10 s) throws NotAvailable: the report says so instead of a figure.
import type { BenchClient } from './client.ts';
import type { Element } from '../../src/xmpp/element.ts';
import { account, pool, type Run } from './env.ts';
import { cpuMeter, percentile, round, type CpuReport } from './measure.ts';
import type { Figures, Progress } from './scenarios.ts';

const NS_MUC = 'http://jabber.org/protocol/muc';
const FILLER = 'Morning all! The release notes are in the shared folder, comments welcome.';

export class NotAvailable extends Error {}

export interface MucOptions { occupants: number; senders: number; messages: number; window: number; concurrency: number }

export async function groupChat(run: Run, opts: MucOptions, progress: Progress): Promise<Figures> {
  const { occupants, senders, messages, window } = opts;
  if (senders > occupants) throw new Error(`--muc-senders ${senders} > --occupants ${occupants}`);
  const room = `bench@conference.${run.target.domain}`;
  progress.text = 'logging in';
  const clients = Array.from({ length: occupants }, (_, i) => run.client(account(i + 1, 'muc')));
  await pool(clients.length, opts.concurrency, (i) => clients[i].login());

  // The first one creates the room and accepts the default configuration; then the others enter.
  progress.text = 'creating the room';
  await enter(clients[0], room, 'o0');
  await iq(clients[0], `<iq type='set' to='${room}' id='bench-cfg'><query xmlns='${NS_MUC}#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>`, 'bench-cfg');
  progress.text = 'entering the room';
  await pool(occupants - 1, 10, (i) => enter(clients[i + 1], room, `o${i + 1}`));

  const senderClients = clients.slice(0, senders);
  await broadcast(clients, senderClients, room, Math.min(200, Math.ceil(messages / 10)), window, 'w', progress, null);
  const latencies = new Float64Array(messages * occupants);
  const meter = cpuMeter(run.server.pid);
  const end: { cpu?: CpuReport } = {};
  await broadcast(clients, senderClients, room, messages, window, 'm', progress, latencies, () => (end.cpu = meter()));
  const cpu = end.cpu!;
  latencies.sort();
  const deliveries = messages * occupants;
  await pool(clients.length, 200, (i) => run.close(clients[i]));
  return {
    params: { occupants, senders, messages, in_flight_per_sender: window },
    metrics: {
      deliveries_per_s: round(deliveries / cpu.wall_s, 0),
      messages_per_s: round(messages / cpu.wall_s, 0),
      latency_ms_p50: round(percentile(latencies, 50), 2),
      latency_ms_p99: round(percentile(latencies, 99), 2),
      latency_ms_max: round(latencies[latencies.length - 1], 2),
      deliveries,
      server_cpu_us_per_delivery: round((1e6 * cpu.server_cpu_s) / deliveries, 2),
    },
    cpu,
    notes: [`one room, ${occupants} occupants, ${senders} of them sending; a delivery = one occupant (the sender's reflection included) receiving one message; latency = send call to parse at the occupant`],
  };
}

/** Enters the room; resolves on the self-presence (XEP-0045 §7.2.2, status 110). */
function enter(c: BenchClient, room: string, nick: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new NotAvailable(`no self-presence from ${room}/${nick} within 10 s`)), 10_000);
    const done = (err?: Error): void => {
      clearTimeout(timer);
      c.onStanza = () => {};
      if (err) reject(err);
      else resolve();
    };
    c.onStanza = (el: Element) => {
      if (el.name !== 'presence' || el.attrs.from !== `${room}/${nick}`) {
        if (el.name === 'presence' && el.attrs.type === 'error' && el.attrs.from?.startsWith(room)) {
          return done(new NotAvailable(`entering ${room}: ${el.toString().slice(0, 300)}`));
        }
        return;
      }
      if (el.attrs.type === 'error') return done(new NotAvailable(`entering ${room}: ${el.toString().slice(0, 300)}`));
      const x = el.getChild('x', `${NS_MUC}#user`);
      if (x?.getChildren('status').some((s) => s.attrs.code === '110')) done();
    };
    c.onDown = (e) => done(e);
    c.send(`<presence to='${room}/${nick}'><x xmlns='${NS_MUC}'><history maxstanzas='0'/></x></presence>`);
  });
}

function iq(c: BenchClient, xml: string, id: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new NotAvailable(`no answer to ${id} within 10 s`)), 10_000);
    c.onStanza = (el: Element) => {
      if (el.name !== 'iq' || el.attrs.id !== id) return;
      clearTimeout(timer);
      c.onStanza = () => {};
      if (el.attrs.type === 'result') resolve();
      else reject(new NotAvailable(`${id}: ${el.toString().slice(0, 300)}`));
    };
    c.send(xml);
  });
}

/**
 * Each sender sends its share of `total` groupchat messages, at most `window`
 * not yet delivered to every occupant; each occupant must get each one once.
 */
function broadcast(
  clients: BenchClient[], senders: BenchClient[], room: string, total: number, window: number, tag: string,
  progress: Progress, latencies: Float64Array | null, onLast: () => void = () => {},
): Promise<void> {
  return new Promise((resolve, reject) => {
    const nOcc = clients.length, nSend = senders.length;
    const quota = senders.map((_, s) => Math.floor(total / nSend) + (s < total % nSend ? 1 : 0));
    const offset: number[] = [];
    quota.reduce((acc, q, s) => { offset[s] = acc; return acc + q; }, 0);
    const sent = new Array<number>(nSend).fill(0);
    /** Occupants that have each message (by global message index). */
    const got = new Uint16Array(total);
    const seen = new Uint8Array(total * nOcc);
    let delivered = 0, finished = false;
    let lastProgress = performance.now();
    const expected = total * nOcc;

    const finish = (err?: Error): void => {
      if (finished) return;
      finished = true;
      clearInterval(watchdog);
      for (const c of clients) { c.onStanza = () => {}; c.onDown = () => {}; }
      if (err) reject(err);
      else resolve();
    };
    const describe = (): string => `phase ${tag}: ${delivered}/${expected} deliveries, ${sent.reduce((a, b) => a + b, 0)}/${total} messages sent`;
    const sendNext = (s: number): void => {
      const k = sent[s]++;
      senders[s].send(`<message to='${room}' type='groupchat'><body>${tag}${s}.${k} ${performance.now()} ${FILLER}</body></message>`);
    };
    const watchdog = setInterval(() => {
      progress.text = describe();
      if (performance.now() - lastProgress > 10_000) finish(new Error(`no delivery for 10 s: ${describe()}`));
    }, 1000);

    clients.forEach((c, o) => {
      c.onDown = (e) => finish(e);
      c.onStanza = (el: Element) => {
        if (el.name !== 'message') return;
        const now = performance.now();
        const body = el.getChildText('body');
        // The room's subject (§7.2.15) and other bodiless messages are not ours.
        if (body === null || body === undefined) return;
        if (el.attrs.type === 'error') return finish(new Error(`error to o${o}: ${el.toString().slice(0, 300)}`));
        const sp = body.indexOf(' ');
        const id = body.slice(0, sp);
        const dot = id.indexOf('.');
        if (!id.startsWith(tag) || dot < 0) return finish(new Error(`o${o} got an unexpected message: ${el.toString().slice(0, 300)}`));
        const s = Number(id.slice(tag.length, dot));
        const k = Number(id.slice(dot + 1));
        if (!(s >= 0 && s < nSend && k >= 0 && k < quota[s])) return finish(new Error(`o${o} got a message out of range: ${id}`));
        if (el.attrs.from !== `${room}/o${s}`) return finish(new Error(`message ${id} has from='${el.attrs.from}', expected ${room}/o${s}`));
        const m = offset[s] + k;
        if (seen[m * nOcc + o]) return finish(new Error(`message ${id} delivered twice to o${o}`));
        seen[m * nOcc + o] = 1;
        delivered++;
        lastProgress = now;
        if (latencies) latencies[m * nOcc + o] = now - parseFloat(body.slice(sp + 1));
        if (++got[m] === nOcc && sent[s] < quota[s]) sendNext(s);
        if (delivered === expected) {
          onLast();
          setTimeout(() => finish(), 300);
        }
      };
    });
    senders.forEach((_, s) => {
      for (let k = 0; k < window && sent[s] < quota[s]; k++) sendNext(s);
    });
  });
}
