// Wires the parts of one node together (DESIGN.md): storage, user directory,
// router, modules, client listeners. The only place that knows them all;
// bin/imnode parses arguments and calls startNode.
import * as path from 'node:path';
import * as fs from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { prepDomain, prepLocal } from './xmpp/jid.ts';
import { Store } from './store/db.ts';
import { createUserData } from './store/user-data.ts';
import type { UserDirectory } from './store/directory.ts';
import { Router } from './router/router.ts';
import { ServerInfo } from './modules/server-info.ts';
import { loadModules } from './modules/loader.ts';
import { defaultModules } from './modules/index.ts';
import type { Module } from './modules/api.ts';
import { C2SServer } from './c2s/server.ts';
import { PoolCertificate } from './c2s/pool-certificate.ts';
import { SCRAM_SHA_1, SCRAM_SHA_256 } from './c2s/sasl/scram.ts';
import { PLAIN } from './c2s/sasl/plain.ts';
import { loadTlsMaterial, secureContextOptions } from './c2s/tls.ts';
import type { Logger } from './admin/log.ts';
import { getBool, getList, type Config } from './admin/options.ts';
import { Libp2pPool } from './pool/libp2p-pool.ts';
import { poolOptionsFromConfig } from './pool/options.ts';
import { PoolRouting, conflictError } from './router/pool-routing.ts';
import type { Session } from './c2s/session.ts';
import { startAdminServer, type AdminServer } from './admin/admin-server.ts';
import { StreamError } from './xmpp/errors.ts';
import { VERSION } from './admin/version.ts';


export interface RunningNode {
  readonly domain: string;
  readonly router: Router;
  readonly store: Store;
  readonly directory: UserDirectory;
  readonly c2s: C2SServer;
  readonly ports: { c2s: number; tls: number };
  /** The pool, when this node is a member of one. */
  readonly pool: Libp2pPool | null;
  readonly poolRouting: PoolRouting | null;
  stop(reason?: string): Promise<void>;
}

/** A node is a pool member when it is told how to find the others. */
export function poolEnabled(config: Config): boolean {
  return getBool(config, 'autodiscover') || getList(config, 'peer').length > 0 || getList(config, 'pool-listen').length > 0;
}

export async function startNode(config: Config, log: Logger, opts: { modules?: Module[] } = {}): Promise<RunningNode> {
  const domain = prepDomain(String(config.domain));
  const dataDir = path.resolve(String(config['data-dir']));
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });

  const store = await Store.open(path.join(dataDir, 'db'));
  const material = await loadTlsMaterial({
    domain, dataDir,
    cert: config.cert as string | undefined,
    key: config.key as string | undefined,
  });
  if (material.selfSigned) log.info(`using the self-signed certificate in ${material.certPath}`);
  const secret = await serverSecret(dataDir);

  let pool: Libp2pPool | null = null;
  if (!poolEnabled(config)) {
    const given = ['pool-password', 'pool-password-file', 'server-id'].filter((o) => config[o] !== undefined);
    if (given.length) log.warn(`--${given.join(', --')} given, but no pool is started: add --autodiscover, --peer or --pool-listen`);
  }
  if (poolEnabled(config)) {
    pool = new Libp2pPool(await poolOptionsFromConfig(config, log.child('pool')));
    await pool.start();
    log.info(`pool member ${pool.serverId} (${pool.peerId})`);
  }
  // Accounts, rosters, vCards, blocklists and offline messages: plain LevelDB
  // on a single node, replicated to every member in a pool.
  const userData = await createUserData({ store, pool: pool ?? undefined, log });
  const directory = userData.directory;
  if (pool) await userData.sync().catch((e: unknown) => log.warn('initial user data sync incomplete:', String(e)));

  const router = new Router({ domain, log: log.child('router') });
  const info = new ServerInfo();
  const modules = await loadModules(opts.modules ?? defaultModules(), {
    domain, router, store, directory, config, log, info, kv: userData.kv,
  });

  const c2s = new C2SServer({
    opts: {
      bind: String(config.bind),
      port: Number(config['c2s-port']),
      tlsPort: Number(config['c2s-tls-port']),
      directTls: config['direct-tls'] !== false,
      requireTls: config['require-tls'] as 'always' | 'not-loopback' | 'never',
      maxStanzaSize: Number(config['max-stanza-size']),
      smResumeTimeout: Number(config['sm-resume-timeout']),
      authFailDelay: Number(config['auth-fail-delay']),
    },
    domain, router, log: log.child('c2s'), info, tlsOptions: secureContextOptions(material),
    mechanisms: [SCRAM_SHA_256, SCRAM_SHA_1, PLAIN],
    saslBackend: {
      domain,
      secret,
      prepUsername(s) {
        try { return prepLocal(s); } catch { return null; }
      },
      getCredentials: (u) => directory.getCredentials(u),
      verifyPassword: (u, p) => directory.verifyPassword(u, p),
    },
  });
  let poolRouting: PoolRouting | null = null;
  let poolCert: PoolCertificate | null = null;
  if (pool) {
    poolRouting = new PoolRouting({
      router, pool, store, log: log.child('pool-routing'), clock: userData.kv.clock,
      onConflict: (session: Session) => void c2s.kick(session, conflictError()),
    });
    await poolRouting.start();
    if (material.selfSigned) {
      poolCert = await PoolCertificate.start({ pool, store, clock: userData.kv.clock, material, c2s, log: log.child('pool-tls'), domain });
    }
  }
  await c2s.start();
  const started = Date.now();
  const admin: AdminServer = await startAdminServer({
    dataDir, log: log.child('admin'),
    status: () => ({
      serverId: pool?.serverId,
      peerId: pool?.peerId,
      domain,
      version: VERSION,
      uptime: Math.round((Date.now() - started) / 1000),
      sessions: router.sessionCount,
      ports: { c2s: c2s.ports.c2s, ...(c2s.ports.tls ? { tls: c2s.ports.tls } : {}) },
      members: pool?.members() ?? [],
      // Convergence checks compare these across nodes.
      routes: poolRouting ? { count: poolRouting.routes.size, digest: poolRouting.routes.digest(), remoteSessions: poolRouting.remoteCount, byOwner: poolRouting.byOwner(), ...poolRouting.stats } : undefined,
      // Payload bytes handed to gossip and to point-to-point streams (bench/: pool traffic per login).
      traffic: pool ? { ...pool.traffic } : undefined,
      userData: pool ? { digest: userData.digest() } : undefined,
      // Every session of the pool and the node that serves it (full JID -> server id).
      routeTable: poolRouting ? Object.fromEntries(poolRouting.routes.entries().map(([k, v]) => [k, v.server])) : undefined,
      tlsFingerprint: poolCert?.fingerprint,
      digests: pool && poolRouting ? { routes: poolRouting.routes.digest(), userData: userData.digest() } : undefined,
    }),
    users: {
      add: (name, password) => directory.create(name, password),
      passwd: (name, password) => directory.setPassword(name, password),
      async del(name) {
        await directory.delete(name);
        // As for in-band removal (XEP-0077 §3.2): the account's sessions end, its data goes.
        for (const s of router.localSessionsOf(`${name}@${domain}`)) {
          await c2s.kick(s as Session, new StreamError('not-authorized', 'the account was removed'));
        }
        await router.hooks.emit('account-removed', { username: name });
      },
      list: () => directory.list(),
      exists: (name) => directory.exists(name),
    },
  });
  log.info(`ready: domain ${domain}, c2s port ${c2s.ports.c2s}${c2s.ports.tls ? `, direct TLS port ${c2s.ports.tls}` : ''}, data in ${dataDir}`);

  let stopped: Promise<void> | null = null;
  return {
    domain, router, store, directory, c2s, pool, poolRouting,
    ports: c2s.ports,
    stop(reason = 'shutdown') {
      stopped ??= (async () => {
        log.info(`stopping (${reason})`);
        await admin.stop();
        await c2s.stop();
        await poolRouting?.stop();
        await poolCert?.stop();
        await modules.stop();
        await userData.stop();
        await pool?.stop();
        await store.close();
        log.info('stopped');
      })();
      return stopped;
    },
  };
}

/** A per-data-dir secret (fake SCRAM salts for unknown users must be stable across restarts). */
async function serverSecret(dataDir: string): Promise<Buffer> {
  const file = path.join(dataDir, 'secret');
  try {
    const b = await fs.readFile(file);
    if (b.length >= 32) return b;
  } catch { /* first start */ }
  const b = randomBytes(32);
  await fs.writeFile(file, b, { mode: 0o600 });
  return b;
}
