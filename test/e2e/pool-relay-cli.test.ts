// `imnode pool status` with relays (issue 5): on a normal node, each connection's
// remote address and whether it is direct or through which relay, and its
// reservations on its --relay list; on a relay-only node, its reservations (who,
// from where, limits) and the bytes it relayed. The status comes from an admin
// socket served here with the shapes the nodes report (src/node.ts,
// src/relay-node.ts); the real nodes' status is checked in pool-relay*.test.ts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, tempDir } from '../helpers/imnode.ts';
import { startAdminServer } from '../../src/admin/admin-server.ts';
import type { Logger } from '../../src/admin/log.ts';

const silent: Logger = { debug() {}, info() {}, warn() {}, error() {}, child() { return silent; } } as unknown as Logger;
const R = '12D3KooWBWxE4Dmi3oDz7Uv7Jrvr8mh6mEL3tZywf5MNBZZbFtjr';
const A = '12D3KooWBLobzYoaB4c3TNCmsiyuv6hBvCG8qAxDNJ9oY6YE8USH';
const B = '12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf';
const dir = tempDir('imnode-relay-cli-');

async function statusOutput(name: string, status: object): Promise<string[]> {
  const d = join(dir, name);
  await mkdir(d, { recursive: true, mode: 0o700 });
  const admin = await startAdminServer({ dataDir: d, log: silent, status: () => status });
  try {
    const r = await runCli(['pool', 'status', '--data-dir', d]);
    assert.is(r.code, 0, r.stderr);
    return r.stdout.trimEnd().split('\n');
  } finally {
    await admin.stop();
  }
}

test('a node: its connections (direct, or relayed via which relay) and its reservations', async () => {
  const now = Date.now();
  const out = await statusOutput('node', {
    serverId: 'a1', peerId: A, domain: 'example.org', uptime: 60, sessions: 1, ports: { c2s: 5222 },
    members: [
      { serverId: 'a1', peerId: A, addresses: [`/ip4/10.0.1.2/tcp/7400/p2p/${A}`], state: 'alive', sessions: 1, startedAt: now - 60_000, lastSeen: now },
      { serverId: 'b1', peerId: B, addresses: [`/ip4/10.0.2.2/tcp/7400/p2p/${B}`], state: 'alive', sessions: 0, startedAt: now - 60_000, lastSeen: now },
      { serverId: 'relay', peerId: R, addresses: [`/ip4/10.0.1.10/tcp/7400/p2p/${R}`], state: 'alive', sessions: 0, startedAt: now - 60_000, lastSeen: now, role: 'relay' },
    ],
    connections: [
      { peerId: B, serverId: 'b1', remoteAddr: `/ip4/10.0.1.10/tcp/7400/p2p/${R}/p2p-circuit/p2p/${B}`, direction: 'outbound', relayed: true, relay: R },
      { peerId: R, serverId: 'relay', remoteAddr: `/ip4/10.0.1.10/tcp/7400/p2p/${R}`, direction: 'outbound', relayed: false },
    ],
    relays: [{ address: '/ip4/10.0.1.10/tcp/7400', peerId: R, connected: true, reserved: true, relayedAddresses: [] }],
  });
  assert.match(out[4], /^relay \(relay\) +12D3KooWBWxE\S+ +\/ip4\/10\.0\.1\.10\/tcp\/7400 +alive +0 +1m 0\ds$/);
  const conns = out.indexOf(out.find((l) => l.startsWith('CONNECTION TO'))!);
  assert.ok(conns > 0, out.join('\n'));
  assert.match(out[conns], /^CONNECTION TO +REMOTE ADDRESS +DIRECTION +PATH$/);
  assert.match(out[conns + 1], new RegExp(`^b1 +/ip4/10\\.0\\.1\\.10/tcp/7400/p2p/${R}/p2p-circuit +outbound +relayed via ${R}$`));
  assert.match(out[conns + 2], /^relay +\/ip4\/10\.0\.1\.10\/tcp\/7400 +outbound +direct$/);
  const relays = out.findIndex((l) => l.startsWith('RELAY '));
  assert.match(out[relays], /^RELAY +PEER ID +CONNECTED +RESERVATION$/);
  assert.match(out[relays + 1], new RegExp(`^/ip4/10\\.0\\.1\\.10/tcp/7400 +${R} +yes +yes$`));
});

test('a relay-only node: reservations, limits (none), relayed bytes', async () => {
  const now = Date.now();
  const out = await statusOutput('relay', {
    role: 'relay', serverId: 'relay', peerId: R, domain: 'example.org', uptime: 3600, sessions: 0, ports: {},
    members: [{ serverId: 'relay', peerId: R, addresses: [], state: 'alive', sessions: 0, startedAt: now - 3_600_000, lastSeen: now, role: 'relay' }],
    connections: [],
    relay: {
      reservations: [{ peerId: B, serverId: 'b1', addr: `/ip4/192.0.2.1/tcp/40001/p2p/${B}`, expiresAt: now + 7_000_000, limit: null }],
      circuits: 3, openCircuits: 1, relayedBytes: 123456,
    },
  });
  assert.is(out[0], 'domain example.org, this node relay (relay-only), up 1h 00m, 0 sessions');
  const line = out.find((l) => l.startsWith('relay: '));
  assert.is(line, 'relay: 1 reservation(s), 1 relayed connection(s) open, 3 since start, 123456 bytes relayed');
  const head = out.findIndex((l) => l.startsWith('RESERVED BY'));
  assert.match(out[head], /^RESERVED BY +FROM +EXPIRES +LIMIT$/);
  assert.match(out[head + 1], /^b1 +\/ip4\/192\.0\.2\.1\/tcp\/40001 +in 1h 5\dm +none$/);
});

test.after(async () => {
  const { rmSync } = await import('node:fs');
  rmSync(dir, { recursive: true, force: true });
});

test.run();
