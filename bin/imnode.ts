// The imnode command: parses arguments, then either runs a subcommand (accounts,
// pool status, the coserver list) or starts the server through src/node.ts. It
// holds no server logic. Account commands go through the admin channel of the node
// running with --data-dir when one answers (the database is locked while it runs),
// and open the data dir directly otherwise.
// Exit codes: 0 ok, 1 the operation failed, 2 bad usage or config.
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, realpath, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { dirname } from 'node:path';
import { databaseDir, defaultConfigFile } from '../src/admin/core-options.ts';
import { AdminClient, AdminRequestError, AdminUnavailableError } from '../src/admin/admin-server.ts';
import { checkPoolAddress, checkPoolConfig } from '../src/pool/options.ts';
// Modules declare their own options when imported; load them before parsing flags.
import '../src/modules/index.ts';
import {
  ConfigError, loadConfig, optionsHelp, getString, getOptionalString, type Config,
} from '../src/admin/options.ts';
import { createLogger, type LogLevel } from '../src/admin/log.ts';
import { Store } from '../src/store/db.ts';
import { EmbeddedDirectory, UnknownUserError, UserExistsError } from '../src/store/directory.ts';
import { prepDomain, prepLocal, prepPassword } from '../src/xmpp/jid.ts';

/** Bad usage: exit 2. */
class UsageError extends Error {}
/** The operation was refused (the user exists, is unknown, ...): exit 1. */
class Failure extends Error {}
/** The operator aborted a prompt. */
class Interrupted extends Error {}

const USAGE = `Usage:
  imnode [options]                start the server
  imnode user add <name>          create an account
  imnode user passwd <name>       change an account's password
  imnode user del <name>          delete an account
  imnode user list                list the accounts
  imnode user import [FILE|-]     create many accounts at once from FILE or stdin
  imnode pool status [--json]     the pool as the node running with --data-dir sees it
  imnode coserver add <multiaddr> add a static peer to the config file
  imnode coserver delete <multiaddr>
  imnode coserver list [--json]   the static peers of the config file

<name> is a user name or a bare JID of the configured --domain. The password is
read from --password-file, else from standard input when it is not a terminal,
else asked for twice on the terminal (not echoed). While a server runs with
--data-dir, user add|passwd|del|list go through its admin socket (admin.sock).
user import reads one account per line, "name:password" or "name password";
empty lines and lines starting with # are skipped. Nothing is created unless
every line is valid and names an account that does not exist yet; it needs the
server stopped.
coserver edits the "peer" list of --config FILE, by default <data-dir>/imnode.json
(read at start when no --config is given); a node reads it when it starts.

Options:
`;

async function version(): Promise<string> {
  const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

// ---- accounts --------------------------------------------------------------------

/** A localpart or a bare JID of our (prepared) domain -> the prepared localpart. */
function userName(input: string, domain: string): string {
  if (input.includes('/')) throw new UsageError(`'${input}' is a full JID; give a user name or a bare JID`);
  let local = input;
  const at = input.indexOf('@');
  if (at >= 0) {
    let d: string;
    try { d = prepDomain(input.slice(at + 1)); } catch { d = ''; }
    if (d !== domain) throw new UsageError(`'${input}' is not in the domain ${domain}`);
    local = input.slice(0, at);
  }
  try {
    return prepLocal(local);
  } catch (e) {
    throw new UsageError(`'${input}' is not a valid user name (${(e as Error).message})`);
  }
}

function firstLine(text: string): string {
  return text.split(/\r?\n/, 1)[0];
}

async function readStdinLine(): Promise<string> {
  let buf = '';
  process.stdin.setEncoding('utf8');
  for await (const chunk of process.stdin) {
    buf += chunk as string;
    // Stop at the first line: the rest of the input is not ours to wait for.
    if (buf.includes('\n')) break;
  }
  return firstLine(buf);
}

/** Reads one line from the terminal in raw mode, so that nothing is echoed. */
function promptHidden(question: string): Promise<string> {
  const stdin = process.stdin;
  return new Promise((resolve, reject) => {
    let buf = '';
    const finish = (err?: Error): void => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
      if (err) reject(err); else resolve(buf);
    };
    const onData = (s: string): void => {
      for (const ch of s) {
        if (ch === '\r' || ch === '\n') return finish();
        if (ch === '\u0003' || (ch === '\u0004' && !buf)) return finish(new Interrupted('aborted'));
        if (ch === '\u007f' || ch === '\b') buf = [...buf].slice(0, -1).join('');
        else if (ch === '\u0015') buf = '';
        else if (ch >= ' ') buf += ch;
      }
    };
    process.stderr.write(question);
    stdin.setEncoding('utf8');
    stdin.setRawMode(true);
    stdin.on('data', onData);
    stdin.resume();
  });
}

async function readPassword(config: Config, jid: string): Promise<string> {
  let password: string;
  const file = getOptionalString(config, 'password-file');
  if (file) {
    try {
      password = firstLine(await readFile(file, 'utf8'));
    } catch (e) {
      throw new UsageError(`--password-file: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
  } else if (!process.stdin.isTTY) {
    password = await readStdinLine();
  } else {
    password = await promptHidden(`Password for ${jid}: `);
    const again = await promptHidden('Again: ');
    if (again !== password) throw new UsageError('the passwords do not match');
  }
  if (password === '') throw new UsageError('no password given');
  try {
    return prepPassword(password);
  } catch {
    // The reason could quote the password; say what is wrong without it.
    throw new UsageError('the password contains characters that are not allowed (RFC 8265 OpaqueString)');
  }
}

async function openStore(config: Config): Promise<Store> {
  const dataDir = getString(config, 'data-dir');
  const location = databaseDir(dataDir);
  try {
    // Same mode as the server gives it: the directory holds password hashes and the TLS key.
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    return await Store.open(location);
  } catch (e) {
    const err = e as Error & { code?: string; cause?: { code?: string } };
    if (err.cause?.code === 'LEVEL_LOCKED') {
      throw new Failure(`the data dir ${dataDir} is in use by a running imnode; stop it first`);
    }
    throw new Failure(`cannot open the database in ${location} (${err.cause?.code ?? err.code ?? err.message})`);
  }
}

/** The accounts as `imnode user` reaches them: through the running node, or in the data dir. */
interface Accounts {
  exists(name: string): Promise<boolean>;
  create(name: string, password: string): Promise<void>;
  setPassword(name: string, password: string): Promise<void>;
  delete(name: string): Promise<void>;
  list(): Promise<string[]>;
  close(): Promise<void>;
}

async function openAccounts(config: Config): Promise<Accounts> {
  const admin = new AdminClient(getString(config, 'data-dir'));
  let viaNode: boolean;
  try {
    viaNode = await admin.available();
  } catch (e) {
    throw new Failure(`cannot reach the running node: ${(e as Error).message}`);
  }
  if (viaNode) {
    return {
      exists: (n) => admin.userExists(n),
      create: (n, p) => admin.addUser(n, p),
      setPassword: (n, p) => admin.setPassword(n, p),
      delete: (n) => admin.deleteUser(n),
      list: () => admin.listUsers(),
      close: async () => {},
    };
  }
  const store = await openStore(config);
  const directory = new EmbeddedDirectory(store);
  return {
    exists: (n) => directory.exists(n),
    create: (n, p) => directory.create(n, p),
    setPassword: (n, p) => directory.setPassword(n, p),
    delete: (n) => directory.delete(n),
    list: () => directory.list(),
    close: () => store.close(),
  };
}

interface ImportedAccount { line: number; name: string; password: string }

/** Errors listed before the rest are summed up: enough to fix a file in a few rounds. */
const MAX_IMPORT_ERRORS = 10;

async function readImportInput(source: string | undefined): Promise<string> {
  if (source === undefined && process.stdin.isTTY) {
    throw new UsageError('user import: give a FILE, or pipe the accounts into standard input (or use - to type them)');
  }
  if (source === undefined || source === '-') {
    let text = '';
    process.stdin.setEncoding('utf8');
    for await (const chunk of process.stdin) text += chunk as string;
    return text;
  }
  try {
    return await readFile(source, 'utf8');
  } catch (e) {
    throw new UsageError(`user import: cannot read ${source} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/**
 * Parses "name:password" / "name password" lines. A localpart may contain
 * neither ':' nor spaces (RFC 7622 §3.3.1), so the first of them ends the name
 * and the password keeps any later ones.
 */
function parseImport(text: string, domain: string): { accounts: ImportedAccount[]; errors: string[] } {
  const accounts: ImportedAccount[] = [];
  const errors: string[] = [];
  const firstLineOf = new Map<string, number>();
  const lines = text.split('\n');
  // A final newline does not start another line.
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((raw, i) => {
    const line = i + 1;
    const s = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (s.trim() === '' || s.startsWith('#')) return;
    const m = /^([^:\s]+)(?::|[ \t]+)(.*)$/.exec(s);
    if (!m) return void errors.push(`line ${line}: expected "name:password" or "name password"`);
    let name: string;
    try {
      name = userName(m[1], domain);
    } catch (e) {
      return void errors.push(`line ${line}: ${(e as Error).message}`);
    }
    if (m[2] === '') return void errors.push(`line ${line}: no password for ${name}`);
    let password: string;
    try {
      password = prepPassword(m[2]);
    } catch {
      // Never quote the password itself.
      return void errors.push(`line ${line}: the password of ${name} contains characters that are not allowed (RFC 8265 OpaqueString)`);
    }
    const seen = firstLineOf.get(name);
    if (seen !== undefined) return void errors.push(`line ${line}: duplicate user ${name}@${domain} (already on line ${seen})`);
    firstLineOf.set(name, line);
    accounts.push({ line, name, password });
  });
  return { accounts, errors };
}

function importErrors(errors: string[]): Failure {
  const shown = errors.slice(0, MAX_IMPORT_ERRORS);
  if (errors.length > shown.length) shown.push(`... and ${errors.length - shown.length} more`);
  return new Failure(`user import: nothing imported:\n  ${shown.join('\n  ')}`);
}

async function importUsers(directory: EmbeddedDirectory, accounts: ImportedAccount[], domain: string): Promise<number> {
  // Everything is checked before the first write, so a bad file leaves the database as it was.
  const existing = new Set(await directory.list());
  const clashes = accounts.filter((a) => existing.has(a.name))
    .map((a) => `line ${a.line}: user ${a.name}@${domain} already exists`);
  if (clashes.length) throw importErrors(clashes);
  // Key derivation (PBKDF2) dominates and runs on the libuv pool: keep it busy, not flooded.
  const workers = Math.max(2, availableParallelism() * 2);
  let next = 0;
  let created = 0;
  const work = async (): Promise<void> => {
    while (next < accounts.length) {
      const a = accounts[next++];
      await directory.create(a.name, a.password);
      created++;
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(workers, accounts.length) }, work));
  } catch (e) {
    // Only storage can fail here; say how far the import got.
    const reason = e instanceof UserExistsError ? `user ${e.username}@${domain} was created meanwhile` : (e as Error).message;
    throw new Failure(`user import: stopped after creating ${created} of ${accounts.length} accounts: ${reason}`);
  }
  return created;
}

async function userCommand(args: string[], config: Config): Promise<void> {
  const [action, ...rest] = args;
  const arity: Record<string, [number, number, string]> = {
    add: [1, 1, ' <name>'], passwd: [1, 1, ' <name>'], del: [1, 1, ' <name>'], list: [0, 0, ''], import: [0, 1, ' [FILE|-]'],
  };
  if (action === undefined || !(action in arity)) {
    throw new UsageError(`unknown user command '${action ?? ''}' (add, passwd, del, list, import)`);
  }
  const [min, max, params] = arity[action];
  if (rest.length < min || rest.length > max) throw new UsageError(`usage: imnode user ${action}${params}`);
  let domain: string;
  try {
    domain = prepDomain(getString(config, 'domain'));
  } catch {
    throw new ConfigError(`--domain: '${getString(config, 'domain')}' is not a valid domain name`, 'domain');
  }
  if (action === 'import') {
    // Read and checked before the database is opened: a bad file needs no lock.
    const { accounts, errors } = parseImport(await readImportInput(rest[0]), domain);
    if (errors.length) throw importErrors(errors);
    const store = await openStore(config);
    try {
      const n = await importUsers(new EmbeddedDirectory(store), accounts, domain);
      process.stderr.write(`imported ${n} accounts\n`);
    } finally {
      await store.close();
    }
    return;
  }
  const name = action === 'list' ? '' : userName(rest[0], domain);
  const jid = `${name}@${domain}`;

  const directory = await openAccounts(config);
  try {
    switch (action) {
      case 'list':
        for (const u of (await directory.list()).sort()) process.stdout.write(u + '\n');
        return;
      case 'add':
        // Check first so nobody types a password for nothing.
        if (await directory.exists(name)) throw new Failure(`user ${jid} already exists`);
        await directory.create(name, await readPassword(config, jid));
        process.stderr.write(`created ${jid}\n`);
        return;
      case 'passwd':
        if (!(await directory.exists(name))) throw new Failure(`no such user: ${jid}`);
        await directory.setPassword(name, await readPassword(config, jid));
        process.stderr.write(`changed the password of ${jid}\n`);
        return;
      case 'del':
        await directory.delete(name);
        process.stderr.write(`deleted ${jid}\n`);
        return;
    }
  } catch (e) {
    if (e instanceof UserExistsError) throw new Failure(`user ${jid} already exists`);
    if (e instanceof UnknownUserError) throw new Failure(`no such user: ${jid}`);
    if (e instanceof AdminRequestError) throw new Failure(`the running node refused: ${e.message}`);
    if (e instanceof AdminUnavailableError) throw new Failure(`the running node stopped answering (${e.message})`);
    throw e;
  } finally {
    await directory.close();
  }
}

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

async function poolCommand(args: string[], config: Config): Promise<void> {
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
  const self = typeof status.serverId === 'string' ? `, this node ${status.serverId}` : '';
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
    rows.push([str(m.serverId) + (self ? ' *' : ''), str(m.peerId), addresses, str(m.state), str(m.sessions), up]);
  }
  process.stdout.write(table(rows));
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

async function coserverCommand(args: string[], config: Config): Promise<void> {
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

// ---- server ----------------------------------------------------------------------

async function serve(config: Config): Promise<void> {
  // A bad pool value stops here with one line, before anything has started.
  await checkPoolConfig(config);
  const log = createLogger(getString(config, 'log-level') as LogLevel);
  const file = getOptionalString(config, 'config');
  if (file) log.info(`config file ${file}`);
  // Loaded lazily: account commands need none of the server.
  const { startNode } = await import('../src/node.ts');
  type RunningNode = Awaited<ReturnType<typeof startNode>>;
  let node: RunningNode | undefined;
  let stopping: string | undefined;
  const shutdown = (running: RunningNode, signal: string): void => {
    running.stop(signal).then(
      () => process.exit(0),
      (e: unknown) => { log.error('shutdown failed:', e); process.exit(1); },
    );
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      log.warn(`${signal} again: exiting without finishing the shutdown`);
      process.exit(1);
    }
    stopping = signal;
    log.info(`${signal}: shutting down`);
    // During start-up the node is stopped as soon as it exists.
    if (node) shutdown(node, signal);
  };
  // Installed before start-up: with no handler, a signal kills the process at once,
  // and whoever waits for the 'ready' line may signal right after it.
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    node = await startNode(config, log);
  } catch (e) {
    // Expected start-up failures get one line; anything else keeps its stack.
    const err = e as NodeJS.ErrnoException & { cause?: { code?: string } };
    if (err.cause?.code === 'LEVEL_LOCKED') throw new Failure(`the data dir ${getString(config, 'data-dir')} is in use by another imnode`);
    if (err.syscall) throw new Failure(`cannot start: ${err.message}`);
    throw e;
  }
  if (stopping) shutdown(node, stopping);
}

// ---- main ------------------------------------------------------------------------

async function main(argv: string[]): Promise<number> {
  // --help and --version work even when the rest of the command line or the config file is wrong.
  const flags = argv.includes('--') ? argv.slice(0, argv.indexOf('--')) : argv;
  if (flags.includes('--help') || flags.includes('-h')) {
    process.stdout.write(USAGE + optionsHelp());
    return 0;
  }
  if (flags.includes('--version')) {
    process.stdout.write(`imnode ${await version()}\n`);
    return 0;
  }
  let { config, positionals } = await loadConfig(argv, process.env);
  if (config.config === undefined) {
    // No --config: the data dir's own file, if there is one (where `coserver` writes).
    const file = defaultConfigFile(getString(config, 'data-dir'));
    if (existsSync(file)) {
      const dataDir = config['data-dir'];
      ({ config, positionals } = await loadConfig(argv, { ...process.env, IMNODE_CONFIG: file }));
      if (config['data-dir'] !== dataDir) {
        throw new ConfigError(`config file ${file}: "data-dir" cannot name another directory in the data dir's own config file`, 'data-dir');
      }
    }
  }
  const [command, ...args] = positionals;
  if (command === undefined) {
    await serve(config);
    return -1; // keep running until a signal
  }
  if (command === 'user') {
    await userCommand(args, config);
    return 0;
  }
  if (command === 'pool') {
    await poolCommand(args, config);
    return 0;
  }
  if (command === 'coserver') {
    await coserverCommand(args, config);
    return 0;
  }
  throw new UsageError(`unknown command '${command}' (see imnode --help)`);
}

main(process.argv.slice(2)).then(
  (code) => { if (code >= 0) process.exitCode = code; },
  (e: unknown) => {
    if (e instanceof ConfigError || e instanceof UsageError) {
      process.stderr.write(`imnode: ${e.message}\n`);
      process.exitCode = 2;
    } else if (e instanceof Failure) {
      process.stderr.write(`imnode: ${e.message}\n`);
      process.exitCode = 1;
    } else if (e instanceof Interrupted) {
      process.exitCode = 130;
    } else {
      process.stderr.write(`imnode: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
      process.exitCode = 1;
    }
  },
);
