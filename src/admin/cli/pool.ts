// `imnode pool status` (asked of the running node over its admin socket) and
// `imnode coserver add|list|delete` (the static peer list in the config file).
import { chmod, mkdir, readFile, realpath, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { defaultConfigFile } from '../core-options.ts';
import { AdminClient, AdminUnavailableError } from '../admin-server.ts';
import { checkPoolAddress } from '../../pool/options.ts';
import { getString, getOptionalString, type Config } from '../options.ts';
import { UsageError, Failure } from './errors.ts';

// ---- pool status -----------------------------------------------------------------

function duration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  const pad = (n: number): string => String(n).padStart(2, '0');
  if (d) return `${d}d ${pad(h)}h`;
  if (h) return `${h}h ${pad(m)}m`;
  if (m) return `${m}m ${pad(s % 60)}s`;
  return `${s}s`;
}

/** Columns padded to their widest cell; the last one is not padded. */
function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd() + '\n').join('');
}

export async function poolCommand(args: string[], config: Config): Promise<void> {
  if (args[0] !== 'status' || args.length !== 1) throw new UsageError('usage: imnode pool status [--json]');
  const dataDir = getString(config, 'data-dir');
  let status: Record<string, unknown>;
  try {
    status = await new AdminClient(dataDir, { timeoutMs: 10_000 }).status();
  } catch (e) {
    if (e instanceof AdminUnavailableError) throw new Failure(`no imnode is running with the data dir ${dataDir} (${e.message})`);
    throw new Failure(`cannot read the status of the node running with ${dataDir}: ${(e as Error).message}`);
  }
  if (config.json === true) {
    process.stdout.write(JSON.stringify(status, null, 2) + '\n');
    return;
  }
  const str = (v: unknown): string => (v === undefined || v === null ? '-' : String(v));
  const members = Array.isArray(status.members) ? status.members as Record<string, unknown>[] : [];
  const uptime = typeof status.uptime === 'number' ? `, up ${duration(status.uptime * 1000)}` : '';
  const self = typeof status.serverId === 'string' ? `, this node ${status.serverId}${status.role === 'relay' ? ' (relay-only)' : ''}` : '';
  process.stdout.write(`domain ${str(status.domain)}${self}${uptime}, ${str(status.sessions)} sessions\n`);
  if (!members.length) {
    process.stdout.write('no pool members: the pool is not running on this node\n');
    return;
  }
  const now = Date.now();
  const rows = [['SERVER ID', 'PEER ID', 'ADDRESSES', 'STATE', 'SESSIONS', 'UPTIME']];
  for (const m of members) {
    const self = m.peerId !== undefined && m.peerId === status.peerId;
    // The peer id has its own column: an address need not repeat it.
    const suffix = `/p2p/${String(m.peerId)}`;
    const addrs = Array.isArray(m.addresses) ? (m.addresses as unknown[]).map((a) => String(a).replace(suffix, '')) : [];
    const addresses = addrs.length ? addrs.join(',') : '-';
    // A member's start time is on its own clock: good to the minute between synchronised hosts.
    const up = typeof m.startedAt === 'number' && m.state !== 'failed' && m.state !== 'left' ? duration(now - m.startedAt) : '-';
    const role = m.role === 'relay' ? ' (relay)' : '';
    rows.push([str(m.serverId) + (self ? ' *' : '') + role, str(m.peerId), addresses, str(m.state), str(m.sessions), up]);
  }
  process.stdout.write(table(rows));
  process.stdout.write(relayText(status));
}

/** The connections to members (direct or through which relay), and the relay part of the status. */
function relayText(status: Record<string, unknown>): string {
  const out: string[] = [];
  const list = (v: unknown): Record<string, unknown>[] => (Array.isArray(v) ? v as Record<string, unknown>[] : []);
  const conns = list(status.connections);
  if (conns.length) {
    const rows = [['CONNECTION TO', 'REMOTE ADDRESS', 'DIRECTION', 'PATH']];
    for (const c of conns) {
      const addr = String(c.remoteAddr ?? '-').replace(`/p2p/${String(c.peerId)}`, '');
      rows.push([String(c.serverId ?? c.peerId), addr, String(c.direction ?? '-'), c.relayed ? `relayed via ${String(c.relay ?? '?')}` : 'direct']);
    }
    out.push('', table(rows).trimEnd());
  }
  const relays = list(status.relays);
  if (relays.length) {
    const rows = [['RELAY', 'PEER ID', 'CONNECTED', 'RESERVATION']];
    for (const r of relays) rows.push([String(r.address), String(r.peerId ?? '-'), r.connected ? 'yes' : 'no', r.reserved ? 'yes' : 'no']);
    out.push('', table(rows).trimEnd());
  }
  const relay = status.relay as Record<string, unknown> | undefined;
  if (relay && typeof relay === 'object') {
    const res = list(relay.reservations);
    out.push('', `relay: ${res.length} reservation(s), ${String(relay.openCircuits ?? 0)} relayed connection(s) open, ` +
      `${String(relay.circuits ?? 0)} since start, ${String(relay.relayedBytes ?? 0)} bytes relayed`);
    if (res.length) {
      const rows = [['RESERVED BY', 'FROM', 'EXPIRES', 'LIMIT']];
      for (const r of res) {
        const lim = r.limit as Record<string, unknown> | null | undefined;
        const limit = lim ? [lim.data ? `${String(lim.data)} bytes` : '', lim.durationSec ? `${String(lim.durationSec)} s` : ''].filter(Boolean).join(', ') : 'none';
        const expires = typeof r.expiresAt === 'number' ? `in ${duration(r.expiresAt - Date.now())}` : '-';
        rows.push([String(r.serverId ?? r.peerId), String(r.addr ?? '-').replace(`/p2p/${String(r.peerId)}`, ''), expires, limit]);
      }
      out.push(table(rows).trimEnd());
    }
  }
  return out.length ? out.join('\n') + '\n' : '';
}

// ---- coserver list (static peers in the config file) ------------------------------

function configFile(config: Config): string {
  return getOptionalString(config, 'config') ?? defaultConfigFile(getString(config, 'data-dir'));
}

async function readConfigObject(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new Failure(`cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  // loadConfig has read and checked it already; this only guards against a change since.
  const data: unknown = JSON.parse(text);
  if (data === null || typeof data !== 'object' || Array.isArray(data)) throw new Failure(`${file} is not a JSON object`);
  return data as Record<string, unknown>;
}

function filePeers(data: Record<string, unknown>, file: string): string[] {
  const v = data.peer;
  if (v === undefined) return [];
  if (typeof v === 'string') return v.split(',').map((p) => p.trim()).filter(Boolean);
  if (Array.isArray(v) && v.every((p) => typeof p === 'string')) return v as string[];
  throw new Failure(`${file}: "peer" is not a list of multiaddrs`);
}

/** Rewrites the file in place (through a rename, so a reader never sees half of it), keeping its mode. */
async function writeConfigObject(file: string, data: Record<string, unknown>): Promise<void> {
  const target = await realpath(file).catch(() => file);
  const mode = await stat(target).then((st) => st.mode & 0o777, () => 0o600);
  // The default file lives in the data dir, which may not exist yet.
  await mkdir(dirname(target), { recursive: true, mode: 0o700 });
  const tmp = `${target}.${process.pid}.tmp`;
  try {
    await writeFile(tmp, JSON.stringify(data, null, 2) + '\n', { mode });
    await chmod(tmp, mode);
    await rename(tmp, target);
  } catch (e) {
    await unlink(tmp).catch(() => {});
    throw new Failure(`cannot write ${target} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

async function canonical(address: string): Promise<string | undefined> {
  try {
    return await checkPoolAddress(address, 'peer', 'coserver');
  } catch {
    return undefined;
  }
}

export async function coserverCommand(args: string[], config: Config): Promise<void> {
  const [action, ...rest] = args;
  const arity: Record<string, number> = { add: 1, delete: 1, list: 0 };
  if (action === undefined || !(action in arity)) throw new UsageError(`unknown coserver command '${action ?? ''}' (add, delete, list)`);
  if (rest.length !== arity[action]) throw new UsageError(`usage: imnode coserver ${action}${arity[action] ? ' <multiaddr>' : ''}`);
  const file = configFile(config);
  const data = await readConfigObject(file);
  const peers = filePeers(data, file);
  if (action === 'list') {
    process.stdout.write(config.json === true ? JSON.stringify(peers) + '\n' : peers.map((p) => p + '\n').join(''));
    return;
  }
  const arg = rest[0];
  if (action === 'add') {
    const address = await checkPoolAddress(arg, 'peer', 'coserver add');
    for (const p of peers) {
      if (p === address || await canonical(p) === address) throw new Failure(`${address} is already in the coserver list of ${file}`);
    }
    data.peer = [...peers, address];
    await writeConfigObject(file, data);
    process.stderr.write(`added ${address} to ${file} (a node reads it when it starts)\n`);
    return;
  }
  // An entry written by hand may be malformed: it can still be deleted by its exact text.
  let i = peers.indexOf(arg);
  if (i < 0) {
    const address = await checkPoolAddress(arg, 'peer', 'coserver delete');
    for (let j = 0; j < peers.length && i < 0; j++) if (await canonical(peers[j]) === address) i = j;
    if (i < 0) throw new Failure(`${address} is not in the coserver list of ${file}`);
  }
  const removed = peers[i];
  const left = peers.filter((_, j) => j !== i);
  if (left.length) data.peer = left;
  else delete data.peer;
  await writeConfigObject(file, data);
  process.stderr.write(`deleted ${removed} from ${file} (a node reads it when it starts)\n`);
}
