// How the admin subcommands that change a node's data reach it: through the admin
// socket of the running node when one answers there (it holds the LevelDB lock and
// must see the change at once), else in the data dir directly. `imnode user` and
// `imnode cache` share it, so that both say the same thing for the same failure.
import { mkdir } from 'node:fs/promises';
import { databaseDir } from '../core-options.ts';
import { AdminClient, AdminRequestError, AdminUnavailableError } from '../admin-server.ts';
import { ConfigError, getString, type Config } from '../options.ts';
import { Store } from '../../store/db.ts';
import { prepDomain, prepLocal } from '../../xmpp/jid.ts';
import { Failure, UsageError } from './errors.ts';

/** The configured domain, prepared (RFC 7622 §3.2); a bad one is a configuration error. */
export function configuredDomain(config: Config): string {
  try {
    return prepDomain(getString(config, 'domain'));
  } catch {
    throw new ConfigError(`--domain: '${getString(config, 'domain')}' is not a valid domain name`, 'domain');
  }
}

/** A localpart or a bare JID of our (prepared) domain -> the prepared localpart. */
export function userName(input: string, domain: string): string {
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

/** The running node's admin client when it answers on the socket of the data dir, else null (no node runs there). */
export async function runningNode(dataDir: string): Promise<AdminClient | null> {
  const admin = new AdminClient(dataDir);
  let viaNode: boolean;
  try {
    viaNode = await admin.available();
  } catch (e) {
    throw new Failure(`cannot reach the running node: ${(e as Error).message}`);
  }
  return viaNode ? admin : null;
}

/** An admin-socket failure after the node answered once, as the operator should read it. */
export function nodeFailure(e: unknown): unknown {
  if (e instanceof AdminRequestError) return new Failure(`the running node refused: ${e.message}`);
  if (e instanceof AdminUnavailableError) return new Failure(`the running node stopped answering (${e.message})`);
  return e;
}

/**
 * Opens the data dir's database for a command run while no node answers on the
 * admin socket. `locked`: what to say when the LevelDB lock is held anyway (a node
 * that runs but does not answer).
 */
export async function openDataStore(dataDir: string, locked: string): Promise<Store> {
  const location = databaseDir(dataDir);
  try {
    // Same mode as the server gives it: the directory holds password hashes and the TLS key.
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    return await Store.open(location);
  } catch (e) {
    const err = e as Error & { code?: string; cause?: { code?: string } };
    if (err.cause?.code === 'LEVEL_LOCKED') throw new Failure(`the data dir ${dataDir} is ${locked}`);
    throw new Failure(`cannot open the database in ${location} (${err.cause?.code ?? err.code ?? err.message})`);
  }
}
