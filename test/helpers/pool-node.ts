// A standalone pool node for the pool tests: starts a Libp2pPool from flags, with
// no XMPP server around it, and talks JSON lines so a test can drive it.
//
//   node test/helpers/pool-node.ts --data-dir DIR --domain D [--password P] [--server-id ID]
//        [--listen MULTIADDR]... [--autodiscover] [--peer MULTIADDR]... [--failure-timeout MS]
//        [--log-level debug]
//
// stdout, one JSON object a line: {"type":"ready",...}, {"type":"event","event":"joined",...},
// {"type":"refused",...}, {"type":"gossip",...}, {"type":"message",...}, {"type":"status",...},
// {"type":"reply","cmd":...,"ok":...}. Logs go to stderr.
// stdin commands, one a line (TARGET is a server id or a peer id):
//   status | subscribe TOPIC | publish TOPIC TEXT | send TARGET PROTO TEXT
//   sendmany TARGET PROTO COUNT | request TARGET PROTO TEXT | load N | stop
// Handlers registered on start: 'echo' answers "echo:" + text; 'seq' reports every message.
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { Libp2pPool } from '../../src/pool/libp2p-pool.ts';
import { createLogger, type LogLevel } from '../../src/admin/log.ts';
import type { MemberInfo, MembershipEvent } from '../../src/pool/types.ts';

const { values } = parseArgs({
  options: {
    'data-dir': { type: 'string' },
    domain: { type: 'string' },
    password: { type: 'string' },
    'server-id': { type: 'string' },
    listen: { type: 'string', multiple: true },
    autodiscover: { type: 'boolean', default: false },
    peer: { type: 'string', multiple: true },
    'failure-timeout': { type: 'string' },
    'log-level': { type: 'string', default: 'info' },
  },
  strict: true,
});

function out(obj: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify({ ...obj, at: Date.now() }) + '\n');
}

if (!values['data-dir'] || !values.domain) {
  process.stderr.write('pool-node: --data-dir and --domain are required\n');
  process.exit(2);
}

const log = createLogger(values['log-level'] as LogLevel, 'imnode').child('pool');
const enc = new TextEncoder();
const dec = new TextDecoder();

const pool = new Libp2pPool({
  dataDir: values['data-dir'],
  domain: values.domain,
  password: values.password,
  serverId: values['server-id'],
  listen: values.listen,
  autodiscover: values.autodiscover,
  peers: values.peer,
  failureTimeoutMs: values['failure-timeout'] ? Number(values['failure-timeout']) : undefined,
  log,
  onRefused: (info) => out({ type: 'refused', ...info }),
});

const serverOf = (peer: string): string | undefined => pool.member(peer)?.serverId;

pool.handle('echo', (data) => enc.encode('echo:' + dec.decode(data)));
pool.handle('seq', (data, from) => {
  out({ type: 'message', proto: 'seq', from, fromServer: serverOf(from), text: dec.decode(data) });
});

function target(t: string): string {
  const m = pool.members().find((x) => x.serverId === t || x.peerId === t);
  return m ? m.peerId : t;
}

function memberJson(m: MemberInfo): Record<string, unknown> {
  return { ...m };
}

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await pool.stop();
  out({ type: 'stopped' });
  process.exit(0);
}

async function command(line: string): Promise<void> {
  const [cmd, ...rest] = line.trim().split(' ');
  try {
    switch (cmd) {
      case '':
        return;
      case 'status':
        out({ type: 'status', serverId: pool.serverId, peerId: pool.peerId, members: pool.members().map(memberJson) });
        return;
      case 'subscribe': {
        const topic = rest[0];
        pool.subscribe(topic, (data, from) => out({ type: 'gossip', topic, from, fromServer: serverOf(from), text: dec.decode(data) }));
        out({ type: 'reply', cmd, ok: true });
        return;
      }
      case 'publish':
        await pool.publish(rest[0], enc.encode(rest.slice(1).join(' ')));
        out({ type: 'reply', cmd, ok: true });
        return;
      case 'send':
        await pool.send(target(rest[0]), rest[1], enc.encode(rest.slice(2).join(' ')));
        out({ type: 'reply', cmd, ok: true });
        return;
      case 'sendmany': {
        const peer = target(rest[0]);
        const count = Number(rest[2]);
        const t0 = Date.now();
        // Not awaited one by one: ordering must come from the channel, not from the caller.
        const sends: Promise<void>[] = [];
        for (let i = 0; i < count; i++) sends.push(pool.send(peer, rest[1], enc.encode(String(i))));
        await Promise.all(sends);
        out({ type: 'reply', cmd, ok: true, ms: Date.now() - t0 });
        return;
      }
      case 'request': {
        const res = await pool.request(target(rest[0]), rest[1], enc.encode(rest.slice(2).join(' ')), 5000);
        out({ type: 'reply', cmd, ok: true, text: dec.decode(res) });
        return;
      }
      case 'load':
        pool.setLoad(Number(rest[0]));
        out({ type: 'reply', cmd, ok: true });
        return;
      case 'stop':
        await stop();
        return;
      default:
        out({ type: 'reply', cmd, ok: false, error: `unknown command ${cmd}` });
    }
  } catch (e) {
    out({ type: 'reply', cmd, ok: false, error: (e as Error).message, name: (e as Error).name });
  }
}

try {
  await pool.start();
} catch (e) {
  process.stderr.write(`pool-node: cannot start: ${(e as Error).message}\n`);
  process.exit(1);
}
for (const ev of ['joined', 'left', 'suspected', 'failed', 'updated'] as MembershipEvent[]) {
  pool.on(ev, (m) => out({ type: 'event', event: ev, serverId: m.serverId, peerId: m.peerId, state: m.state }));
}
out({ type: 'ready', serverId: pool.serverId, peerId: pool.peerId, addresses: pool.members().find((m) => m.peerId === pool.peerId)?.addresses ?? [] });

// Commands run one after another so that a test sees replies in the order it asked.
let chain = Promise.resolve();
createInterface({ input: process.stdin }).on('line', (line) => {
  chain = chain.then(() => command(line));
}).on('close', () => {
  chain = chain.then(() => stop());
});
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
