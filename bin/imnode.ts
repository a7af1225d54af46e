// The imnode command: parses arguments, then either runs a subcommand (accounts,
// pool status, the coserver list) or starts the server through src/node.ts. It
// holds no server logic. Account commands go through the admin channel of the node
// running with --data-dir when one answers (the database is locked while it runs),
// and open the data dir directly otherwise.
// Exit codes: 0 ok, 1 the operation failed, 2 bad usage or config.
import { existsSync } from 'node:fs';
import { VERSION } from '../src/admin/version.ts';
import { defaultConfigFile } from '../src/admin/core-options.ts';
import { checkPoolConfig } from '../src/pool/options.ts';
// Modules declare their own options when imported; load them before parsing flags.
import '../src/modules/index.ts';
import { ConfigError, loadConfig, optionsHelp, getString, getOptionalString, type Config } from '../src/admin/options.ts';
import { createLogger, type LogLevel } from '../src/admin/log.ts';
import { UsageError, Failure, Interrupted } from '../src/admin/cli/errors.ts';
import { userCommand } from '../src/admin/cli/users.ts';
import { poolCommand, coserverCommand } from '../src/admin/cli/pool.ts';
import { cacheCommand } from '../src/admin/cli/cache.ts';

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
  imnode cache flush [<name>]     drop the node's cached LDAP directory data (of one user)

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

// ---- server ----------------------------------------------------------------------

async function serve(config: Config): Promise<void> {
  // A bad pool value stops here with one line, before anything has started.
  await checkPoolConfig(config);
  const log = createLogger(getString(config, 'log-level') as LogLevel);
  const file = getOptionalString(config, 'config');
  if (file) log.info(`config file ${file}`);
  // Loaded lazily: account commands need none of the server.
  const { startAny } = await import('../src/node.ts');
  type RunningNode = Awaited<ReturnType<typeof startAny>>;
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
    node = await startAny(config, log);
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
    process.stdout.write(`imnode ${VERSION}\n`);
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
  if (command === 'cache') {
    await cacheCommand(args, config);
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
