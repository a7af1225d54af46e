// Wires a relay-only node (`imnode --relay-only`, DESIGN.md "Discovery" and
// "Packaging"): a pool member that serves no XMPP client. It runs the pool node
// with the circuit relay v2 server (src/pool/relay.ts), routes membership gossip so
// that members of other subnets learn of each other, keeps its peer key in the
// data dir so that its address (/p2p/<id>) stays the same across restarts, and
// answers `imnode pool status` on its admin socket. No store, no modules, no c2s.
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { Logger } from './admin/log.ts';
import { getBool, getList, getString, type Config } from './admin/options.ts';
import { Libp2pPool } from './pool/libp2p-pool.ts';
import { poolOptionsFromConfig } from './pool/options.ts';
import { startAdminServer } from './admin/admin-server.ts';
import { VERSION } from './admin/version.ts';

export interface RunningRelay {
  readonly pool: Libp2pPool;
  stop(reason?: string): Promise<void>;
}

/** Client options that mean nothing on a relay: worth a warning when given. */
const CLIENT_OPTIONS = ['allow-registration', 'cert', 'key'];

export async function startRelayNode(config: Config, log: Logger): Promise<RunningRelay> {
  if (!getBool(config, 'relay-only')) throw new Error('startRelayNode needs --relay-only');
  const dataDir = path.resolve(getString(config, 'data-dir'));
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });
  const ignored = CLIENT_OPTIONS.filter((o) => config[o] !== undefined && config[o] !== false);
  if (ignored.length) log.warn(`--${ignored.join(', --')} ignored: a relay-only node serves no clients`);

  const pool = new Libp2pPool(await poolOptionsFromConfig(config, log.child('pool')));
  await pool.start();
  const started = Date.now();
  let lastBytes = 0, lastHolders = '', lastBytesLog = 0;
  // The relay's own account of its work, for operators who only read logs: who
  // holds a reservation (on every change), and what it carried (once a minute while it carries).
  const report = setInterval(() => {
    const s = pool.relayServerStatus();
    if (!s) return;
    const holders = s.reservations.map((r) => pool.member(r.peerId)?.serverId ?? r.peerId).sort().join(', ');
    if (holders !== lastHolders) {
      lastHolders = holders;
      log.info(`relay: ${s.reservations.length} reservation(s)${holders ? `: ${holders}` : ''}`);
    }
    if (s.relayedBytes !== lastBytes && Date.now() - lastBytesLog >= 60_000) {
      lastBytes = s.relayedBytes;
      lastBytesLog = Date.now();
      log.info(`relay: ${s.openCircuits} relayed connection(s) open, ${s.circuits} since start, ${s.relayedBytes} bytes relayed since start`);
    }
  }, 5000);
  report.unref();

  const admin = await startAdminServer({
    dataDir, log: log.child('admin'),
    status: () => {
      const relay = pool.relayServerStatus();
      return {
        role: 'relay',
        serverId: pool.serverId,
        peerId: pool.peerId,
        domain: getString(config, 'domain'),
        version: VERSION,
        uptime: Math.round((Date.now() - started) / 1000),
        sessions: 0,
        ports: {},
        members: pool.allMembers(),
        connections: pool.connections(),
        relay: relay && {
          ...relay,
          // Server ids read better than peer ids in `imnode pool status`.
          reservations: relay.reservations.map((r) => ({ ...r, serverId: pool.member(r.peerId)?.serverId })),
        },
        traffic: { ...pool.traffic },
      };
    },
  });
  const addrs = pool.addresses();
  log.info(`relay address${addrs.length > 1 ? 'es' : ''}: ${addrs.join(' ') || '(none)'} (list one with --relay on the pool's nodes)`);
  log.info(`ready: relay ${pool.serverId} (${pool.peerId}), domain ${getString(config, 'domain')}, ${getList(config, 'peer').length} static peer(s), data in ${dataDir}`);

  let stopped: Promise<void> | null = null;
  return {
    pool,
    stop(reason = 'shutdown') {
      stopped ??= (async () => {
        log.info(`stopping (${reason})`);
        clearInterval(report);
        await admin.stop();
        await pool.stop();
        log.info('stopped');
      })();
      return stopped;
    },
  };
}
