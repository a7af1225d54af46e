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
import { sharedRoster } from './modules/shared-roster.ts';
import type { Module } from './modules/api.ts';
import { C2SServer } from './c2s/server.ts';
import { PoolCertificate } from './c2s/pool-certificate.ts';
import { SCRAM_SHA_1, SCRAM_SHA_256 } from './c2s/sasl/scram.ts';
import { PLAIN } from './c2s/sasl/plain.ts';
import { loadTlsMaterial, secureContextOptions } from './c2s/tls.ts';
import type { Logger } from './admin/log.ts';
import { getBool, getList, type Config } from './admin/options.ts';
import type { Libp2pPool } from './pool/libp2p-pool.ts';
import { poolOptionsFromConfig } from './pool/options.ts';
import { poolPsk } from './pool/psk.ts';
import { PoolRouting, conflictError } from './router/pool-routing.ts';
import type { Session } from './c2s/session.ts';
import { startAdminServer, type AdminServer } from './admin/admin-server.ts';
import { StreamError } from './xmpp/errors.ts';
import { VERSION } from './admin/version.ts';
import { isSea } from 'node:sea';
import { DnsSd, dnsSdEnabled, defaultInstance } from './c2s/dns-sd.ts';
import { ldapConfig } from './store/ldap/options.ts';


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
  return getBool(config, 'autodiscover') || getList(config, 'peer').length > 0 || getList(config, 'pool-listen').length > 0 ||
    getList(config, 'relay').length > 0;
}

/** What bin/imnode starts: a relay-only node (src/relay-node.ts) with --relay-only, a full node otherwise. */
export async function startAny(config: Config, log: Logger): Promise<{ stop(reason?: string): Promise<void> }> {
  if (getBool(config, 'relay-only')) return (await import('./relay-node.ts')).startRelayNode(config, log);
  return startNode(config, log);
}

export async function startNode(config: Config, log: Logger, opts: { modules?: Module[] } = {}): Promise<RunningNode> {
  const domain = prepDomain(String(config.domain));
  const dataDir = path.resolve(String(config['data-dir']));
  // Checked before anything starts: a bad LDAP setting is a one-line ConfigError.
  const ldap = await ldapConfig(config);
  // Checked early too, and the pool key's scrypt starts now on the thread pool,
  // so that it overlaps loading libp2p and opening storage (start-up time).
  const poolOpts = poolEnabled(config) ? await poolOptionsFromConfig(config, log.child('pool')) : null;
  if (poolOpts) void poolPsk(poolOpts.domain, poolOpts.password).catch(() => undefined);
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
    if (given.length) log.warn(`--${given.join(', --')} given, but no pool is started: add --autodiscover, --peer, --pool-listen or --relay`);
  }
  if (poolOpts) {
    // Loaded only for a pool: libp2p is most of the start-up time of a node (~0.3 s).
    const { Libp2pPool } = await import('./pool/libp2p-pool.ts');
    pool = new Libp2pPool(poolOpts);
    await pool.start();
    log.info(`pool member ${pool.serverId} (${pool.peerId})`);
  }
  // Accounts, rosters, vCards, blocklists and offline messages: plain LevelDB
  // on a single node, replicated to every member in a pool.
  // With LDAP the accounts are the directory's: one directory shared by every node, cached in each node's LevelDB.
  // Loaded only with LDAP, like libp2p: ldapts is ~30 ms of every start otherwise.
  const external = ldap ? new (await import('./store/ldap/directory.ts')).LdapDirectory({ config: ldap, store, log: log.child('ldap') }) : undefined;
  await external?.start();
  const userData = await createUserData({ store, pool: pool ?? undefined, log, directory: external });
  const directory = userData.directory;
  if (pool) await userData.sync().catch((e: unknown) => log.warn('initial user data sync incomplete:', String(e)));

  const router = new Router({ domain, log: log.child('router') });
  const info = new ServerInfo();
  // Shared roster groups do something only with --ldap-shared-roster.
  const modules = await loadModules(opts.modules ?? [...defaultModules(), sharedRoster], {
    domain, router, store, directory, config, log, info, kv: userData.kv, pool,
  }).catch(async (e: unknown) => {
    // A module refused its configuration: the pool and storage already run and would keep the process alive.
    await userData.stop().catch(() => undefined);
    await pool?.stop().catch(() => undefined);
    await store.close().catch(() => undefined);
    throw e;
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
    // SCRAM needs stored keys; a directory without them (LDAP without verifiers) checks PLAIN passwords only.
    mechanisms: directory.scram === false ? [PLAIN] : [SCRAM_SHA_256, SCRAM_SHA_1, PLAIN],
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
  let dnsSd: DnsSd | null = null;
  if (dnsSdEnabled(config)) {
    dnsSd = new DnsSd({
      domain, instance: pool?.serverId ?? defaultInstance(), ports: c2s.ports, bind: String(config.bind), log: log.child('dns-sd'),
    });
    // Clients can still be told the address by hand: a busy or forbidden port 5353 is not fatal.
    await dnsSd.start().catch((e: unknown) => { log.warn(`DNS-SD not started: ${(e as Error).message}`); dnsSd = null; });
  }
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
      // Relay-only members included (role 'relay'): they serve no clients but are part of the pool.
      members: pool?.allMembers() ?? [],
      // Convergence checks compare these across nodes.
      routes: poolRouting ? { count: poolRouting.routes.size, digest: poolRouting.routes.digest(), remoteSessions: poolRouting.remoteCount, byOwner: poolRouting.byOwner(), ...poolRouting.stats } : undefined,
      // Payload bytes handed to gossip and to point-to-point streams (bench/: pool traffic per login).
      traffic: pool ? { ...pool.traffic } : undefined,
      // Direct or relayed, per member (issue 5), and this node's reservations on its --relay list.
      connections: pool?.connections(),
      relays: pool?.relays(),
      directUpgrades: pool?.directUpgrades,
      userData: pool ? { digest: userData.digest() } : undefined,
      // Every session of the pool and the node that serves it (full JID -> server id).
      routeTable: poolRouting ? Object.fromEntries(poolRouting.routes.entries().map(([k, v]) => [k, v.server])) : undefined,
      tlsFingerprint: poolCert?.fingerprint,
      // LDAP searches, binds and cache hits (bench/: LDAP searches per login).
      ldap: directory.stats?.(),
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
    cache: directory.flushCache ? { flush: (name) => directory.flushCache!(name) } : undefined,
  });
  log.info(`ready: domain ${domain}, c2s port ${c2s.ports.c2s}${c2s.ports.tls ? `, direct TLS port ${c2s.ports.tls}` : ''}, data in ${dataDir}`);
  // A fresh zero-config node says how to use it in its first lines.
  log.info(`clients: log in as NAME@${domain}` + (dnsSd ? ` (LAN clients find this node by DNS-SD/mDNS as ${dnsSd.host})` : ''));
  log.info(directory.writable === false
    ? 'users: from the LDAP directory (manage accounts there)'
    : `add a user: ${isSea() ? process.execPath : 'imnode'} user add NAME --data-dir ${dataDir}`);
  let membersTimer: NodeJS.Timeout | undefined;
  if (pool) {
    const p = pool;
    membersTimer = setTimeout(() => {
      const others = p.members().filter((m) => m.serverId !== p.serverId && m.state === 'alive').map((m) => m.serverId);
      log.info(others.length ? `pool members found: ${others.join(', ')}` : 'pool members found: none yet (they are logged as they join)');
    }, 3000).unref();
  }

  let stopped: Promise<void> | null = null;
  return {
    domain, router, store, directory, c2s, pool, poolRouting,
    ports: c2s.ports,
    stop(reason = 'shutdown') {
      stopped ??= (async () => {
        log.info(`stopping (${reason})`);
        clearTimeout(membersTimer);
        // First: LAN clients stop being sent here.
        await dnsSd?.stop();
        await admin.stop();
        await c2s.stop();
        await poolRouting?.stop();
        await poolCert?.stop();
        await modules.stop();
        await directory.stop?.();
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
