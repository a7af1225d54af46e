// Relay pieces without a network (issue 5): relayed-address helpers, the
// DirectUpgrader's decisions (upgrade, back off, drop the relayed connection), the
// --relay / --relay-only options as the pool receives them, and the relay server's
// limits (none) checked against the library's defaults.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Connection } from '@libp2p/interface';
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import '../../src/admin/core-options.ts';
import { ConfigError, loadConfig } from '../../src/admin/options.ts';
import { checkPoolConfig, poolOptionsFromConfig } from '../../src/pool/options.ts';
import { dialDirectOrRelayed, DirectUpgrader, isRelayedAddr, relayOf, RELAY_V2_HOP_CODEC, RELAY_V2_STOP_CODEC, type UpgradeHost } from '../../src/pool/relay.ts';
import { relayReservationInit } from '../../src/pool/relay-services.ts';
import * as lib from '@libp2p/circuit-relay-v2';
import type { Logger } from '../../src/admin/log.ts';

const RELAY = '12D3KooWBWxE4Dmi3oDz7Uv7Jrvr8mh6mEL3tZywf5MNBZZbFtjr';
const PEER = '12D3KooWBLobzYoaB4c3TNCmsiyuv6hBvCG8qAxDNJ9oY6YE8USH';

const quiet: Logger = {
  debug() {}, info() {}, warn() {}, error() {},
  child() { return quiet; },
} as unknown as Logger;

test('relayed addresses: recognised, and their relay named', () => {
  const circuit = `/ip4/10.0.0.7/tcp/7400/p2p/${RELAY}/p2p-circuit/p2p/${PEER}`;
  assert.ok(isRelayedAddr(circuit));
  assert.ok(isRelayedAddr(multiaddr(circuit)));
  assert.is(relayOf(circuit), RELAY);
  assert.not.ok(isRelayedAddr(`/ip4/10.0.0.7/tcp/7400/p2p/${PEER}`));
  assert.is(relayOf(`/ip4/10.0.0.7/tcp/7400/p2p/${PEER}`), undefined);
});

/** A connection as DirectUpgrader sees one. */
function conn(direct: boolean, log: string[]): Connection {
  const c = {
    direct, status: 'open', remoteAddr: multiaddr(direct ? '/ip4/10.0.1.2/tcp/7400' : `/ip4/10.0.0.7/tcp/7400/p2p/${RELAY}/p2p-circuit`),
    close: async () => { log.push(direct ? 'close direct' : 'close relayed'); c.status = 'closed'; },
    abort: () => { log.push('abort'); },
  };
  return c as unknown as Connection;
}

function fakeHost(state: { conns: Connection[]; dial: () => Promise<Connection>; dials: number; addrs?: Multiaddr[] }): UpgradeHost {
  return {
    connections: () => state.conns.filter((c) => c.status === 'open'),
    directAddresses: () => state.addrs ?? [multiaddr(`/ip4/10.0.1.2/tcp/7400/p2p/${PEER}`)],
    dial: () => { state.dials++; return state.dial(); },
    peers: () => [PEER],
  };
}

const flush = (): Promise<void> => new Promise((r) => setTimeout(r, 10));

test('the relay protocol names are the library\'s', () => {
  assert.is(RELAY_V2_HOP_CODEC, lib.RELAY_V2_HOP_CODEC);
  assert.is(RELAY_V2_STOP_CODEC, lib.RELAY_V2_STOP_CODEC);
});

test('DirectUpgrader: a member reached only through a relay is dialled directly, and the relayed connection is closed', async () => {
  const log: string[] = [];
  const state = { conns: [conn(false, log)], dials: 0, dial: async () => { const d = conn(true, log); state.conns.push(d); return d; } };
  const up = new DirectUpgrader(fakeHost(state), quiet);
  up.tick();
  await flush();
  assert.is(state.dials, 1);
  assert.is(up.upgraded, 1);
  assert.equal(log, ['close relayed']);
  // Direct now: nothing more to do.
  up.tick();
  await flush();
  assert.is(state.dials, 1);
});

test('DirectUpgrader: a failing direct dial (NAT) backs off and keeps the relayed connection', async () => {
  const log: string[] = [];
  const state = { conns: [conn(false, log)], dials: 0, dial: async (): Promise<Connection> => { throw new Error('EHOSTUNREACH'); } };
  const up = new DirectUpgrader(fakeHost(state), quiet, { minBackoffMs: 1000, maxBackoffMs: 4000 });
  const t0 = Date.now();
  up.tick(t0);
  await flush();
  assert.is(state.dials, 1);
  up.tick(t0 + 500);
  await flush();
  assert.is(state.dials, 1, 'not again within the backoff');
  up.tick(Date.now() + 1100);
  await flush();
  assert.is(state.dials, 2);
  assert.equal(log, [], 'the relayed connection stays');
  assert.is(up.upgraded, 0);
});

test('DirectUpgrader: no direct address, or a direct connection already, means no dial; a leftover relayed one is closed', async () => {
  const log: string[] = [];
  const none = { conns: [conn(false, log)], dials: 0, addrs: [] as Multiaddr[], dial: async (): Promise<Connection> => { throw new Error('unused'); } };
  new DirectUpgrader(fakeHost(none), quiet).tick();
  assert.is(none.dials, 0);
  const both = { conns: [conn(true, log), conn(false, log)], dials: 0, dial: async (): Promise<Connection> => { throw new Error('unused'); } };
  new DirectUpgrader(fakeHost(both), quiet).tick();
  await flush();
  assert.is(both.dials, 0);
  assert.equal(log, ['close relayed']);
});

test('dialDirectOrRelayed: a direct address that swallows the dial (NAT) does not hold up the relayed one; a working direct one wins', async () => {
  const direct = [multiaddr(`/ip4/10.0.2.2/tcp/7400/p2p/${PEER}`)];
  const relayed = [multiaddr(`/ip4/10.0.0.7/tcp/7400/p2p/${RELAY}/p2p-circuit/p2p/${PEER}`)];
  const id = { toString: () => PEER } as unknown as import('@libp2p/interface').PeerId;
  const dialed: string[] = [];
  // Direct: never answers until aborted (a dropped SYN). Relayed: answers at once.
  const nat = {
    getConnections: () => [] as Connection[],
    dial: (addrs: Multiaddr[], o?: { signal?: AbortSignal }): Promise<Connection> => {
      dialed.push(isRelayedAddr(addrs[0]) ? 'relayed' : 'direct');
      if (isRelayedAddr(addrs[0])) return Promise.resolve({} as Connection);
      return new Promise((_, reject) => o?.signal?.addEventListener('abort', () => reject(new Error('timeout'))));
    },
  };
  const t0 = Date.now();
  await dialDirectOrRelayed(nat, id, direct, relayed, 2000);
  assert.ok(Date.now() - t0 < 1000, `took ${Date.now() - t0} ms`);
  assert.equal(dialed, ['direct', 'relayed']);
  // Routed network: the direct dial connects within the head start; no relayed dial at all.
  const open: Connection[] = [];
  const routed = {
    getConnections: () => open,
    dial: async (addrs: Multiaddr[]): Promise<Connection> => {
      dialed.push(isRelayedAddr(addrs[0]) ? 'relayed' : 'direct');
      const c = { status: 'open' } as unknown as Connection;
      open.push(c);
      return c;
    },
  };
  dialed.length = 0;
  await dialDirectOrRelayed(routed, id, direct, relayed, 2000);
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(dialed, ['direct']);
  // Both fail: the error is the first one's.
  const dead = { getConnections: () => [] as Connection[], dial: async (): Promise<Connection> => { throw new Error('EHOSTUNREACH'); } };
  try {
    await dialDirectOrRelayed(dead, id, direct, relayed, 600);
    assert.unreachable('should fail');
  } catch (e) {
    assert.match((e as Error).message, /EHOSTUNREACH/);
  }
});

async function refused(argv: string[], re: RegExp): Promise<void> {
  try {
    const { config } = await loadConfig(argv, {});
    await checkPoolConfig(config);
  } catch (e) {
    assert.instance(e, ConfigError, String(e));
    assert.match((e as Error).message, re);
    assert.not.match((e as Error).message, /\n/);
    return;
  }
  assert.unreachable(`${argv.join(' ')} accepted`);
}

test('--relay and --relay-only are accepted and reach the pool options; bad relay addresses are one-line errors', async () => {
  const { config } = await loadConfig(['--relay', '/ip4/10.0.0.7/tcp/7400', '--relay', `/ip4/10.0.0.8/tcp/7400/p2p/${RELAY}`, '--autodiscover'], {});
  const o = await poolOptionsFromConfig(config, quiet);
  assert.equal(o.relays, ['/ip4/10.0.0.7/tcp/7400', `/ip4/10.0.0.8/tcp/7400/p2p/${RELAY}`]);
  assert.is(o.relayServer, undefined);
  // Environment and config-file forms of the relay list (the classic relay URI list).
  const env = await loadConfig([], { IMNODE_RELAY: '/ip4/10.0.0.7/tcp/7400,/ip4/10.0.0.9/tcp/7400' });
  assert.equal((await poolOptionsFromConfig(env.config, quiet)).relays, ['/ip4/10.0.0.7/tcp/7400', '/ip4/10.0.0.9/tcp/7400']);

  const r = await loadConfig(['--relay-only', '--relay', '/ip4/10.0.0.9/tcp/7400', '--relay-max-reservations', '10'], {});
  const ro = await poolOptionsFromConfig(r.config, quiet);
  assert.equal(ro.relayServer, { maxReservations: 10 });
  // A relay reserves on no other relay: the other relays are peers to it.
  assert.is(ro.relays, undefined);
  assert.equal(ro.peers, ['/ip4/10.0.0.9/tcp/7400']);

  await refused(['--relay', '10.0.0.7:7400'], /^--relay 10\.0\.0\.7:7400: not a multiaddr/);
  await refused(['--relay', '/ip4/10.0.0.7/udp/7400'], /^--relay \/ip4\/10\.0\.0\.7\/udp\/7400: needs a TCP port/);
  await refused(['--relay', `/ip4/10.0.0.7/tcp/7400/p2p/${RELAY}/p2p-circuit`], /^--relay .*: unexpected \/p2p-circuit/);
  await refused(['--relay-max-reservations', '0'], /^--relay-max-reservations: 0 is below the minimum 1$/);
});

test('a pool relay applies no data or time limit, unlike the library default', async () => {
  // Internals, not exported: loaded by file path.
  const lib = (f: string): string => new URL(`../../node_modules/@libp2p/circuit-relay-v2/dist/src/${f}`, import.meta.url).href;
  const constants = await import(lib('constants.js')) as { DEFAULT_DATA_LIMIT: bigint; DEFAULT_DURATION_LIMIT: number };
  // What a default relay would cut at: what the NAT e2e test goes past.
  assert.is(constants.DEFAULT_DATA_LIMIT, 131072n);
  assert.is(constants.DEFAULT_DURATION_LIMIT, 120_000);
  const { ReservationStore } = await import(lib('server/reservation-store.js')) as {
    ReservationStore: new (c: unknown, init: unknown) => { reserve(peer: unknown, addr: unknown): { status: number }; get(peer: unknown): { limit?: unknown } | undefined };
  };
  const logger = { forComponent: () => Object.assign(() => {}, { error() {}, trace() {} }) };
  // The init relayServerService passes (src/pool/relay.ts).
  const store = new ReservationStore({ logger }, relayReservationInit({ maxReservations: 2 }));
  const peer = { toString: () => PEER, equals: () => false, toMultihash: () => ({ bytes: new Uint8Array([1, 2, 3]) }) };
  store.reserve(peer, multiaddr('/ip4/10.0.0.1/tcp/1'));
  assert.is(store.get(peer)?.limit, undefined, 'no limit on the reservation, so none on its relayed connections');
});

test.run();
