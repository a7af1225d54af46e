// The imnode command: parses arguments, then either runs an account subcommand
// against the data dir or starts the server through src/node.ts. It holds no
// server logic. Exit codes: 0 ok, 1 the operation failed, 2 bad usage or config.
import { mkdir, readFile } from 'node:fs/promises';
import { databaseDir } from '../src/admin/core-options.ts';
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

<name> is a user name or a bare JID of the configured --domain. The password is
read from --password-file, else from standard input when it is not a terminal,
else asked for twice on the terminal (not echoed).

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

async function userCommand(args: string[], config: Config): Promise<void> {
  const [action, ...rest] = args;
  const arity: Record<string, number> = { add: 1, passwd: 1, del: 1, list: 0 };
  if (action === undefined || !(action in arity)) {
    throw new UsageError(`unknown user command '${action ?? ''}' (add, passwd, del, list)`);
  }
  if (rest.length !== arity[action]) throw new UsageError(`usage: imnode user ${action}${arity[action] ? ' <name>' : ''}`);
  let domain: string;
  try {
    domain = prepDomain(getString(config, 'domain'));
  } catch {
    throw new ConfigError(`--domain: '${getString(config, 'domain')}' is not a valid domain name`, 'domain');
  }
  const name = action === 'list' ? '' : userName(rest[0], domain);
  const jid = `${name}@${domain}`;

  const store = await openStore(config);
  try {
    const directory = new EmbeddedDirectory(store);
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
    throw e;
  } finally {
    await store.close();
  }
}

// ---- server ----------------------------------------------------------------------

async function serve(config: Config): Promise<void> {
  const log = createLogger(getString(config, 'log-level') as LogLevel);
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
  const { config, positionals } = await loadConfig(argv, process.env);
  const [command, ...args] = positionals;
  if (command === undefined) {
    await serve(config);
    return -1; // keep running until a signal
  }
  if (command === 'user') {
    await userCommand(args, config);
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
