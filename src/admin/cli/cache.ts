// `imnode cache flush [<name>]`: drops this node's cached LDAP directory data
// (users, groups, "no such user" entries, kept SCRAM verifiers), of one user or
// all, through the admin socket of the running node, or in the data dir when
// the node is stopped. Only the cache: the directory and the users' own data
// (rosters, vCards, offline messages) are untouched.
import { mkdir } from 'node:fs/promises';
import { databaseDir } from '../core-options.ts';
import { AdminClient, AdminRequestError, AdminUnavailableError } from '../admin-server.ts';
import { ConfigError, getString, type Config } from '../options.ts';
import { Store } from '../../store/db.ts';
import { LdapCache } from '../../store/ldap/cache.ts';
import { prepDomain, prepLocal } from '../../xmpp/jid.ts';
import { Failure, UsageError } from './errors.ts';

function userName(input: string, domain: string): string {
  let local = input;
  const at = input.indexOf('@');
  if (input.includes('/')) throw new UsageError(`'${input}' is a full JID; give a user name or a bare JID`);
  if (at >= 0) {
    let d = '';
    try { d = prepDomain(input.slice(at + 1)); } catch { /* reported below */ }
    if (d !== domain) throw new UsageError(`'${input}' is not in the domain ${domain}`);
    local = input.slice(0, at);
  }
  try {
    return prepLocal(local);
  } catch (e) {
    throw new UsageError(`'${input}' is not a valid user name (${(e as Error).message})`);
  }
}

export async function cacheCommand(args: string[], config: Config): Promise<void> {
  const [action, ...rest] = args;
  if (action !== 'flush') throw new UsageError(`unknown cache command '${action ?? ''}' (flush)`);
  if (rest.length > 1) throw new UsageError('usage: imnode cache flush [<name>]');
  let domain: string;
  try {
    domain = prepDomain(getString(config, 'domain'));
  } catch {
    throw new ConfigError(`--domain: '${getString(config, 'domain')}' is not a valid domain name`, 'domain');
  }
  const name = rest.length ? userName(rest[0], domain) : undefined;
  const what = name ? `of ${name}@${domain}` : 'of every user';
  const dataDir = getString(config, 'data-dir');
  const admin = new AdminClient(dataDir);
  let viaNode: boolean;
  try {
    viaNode = await admin.available();
  } catch (e) {
    throw new Failure(`cannot reach the running node: ${(e as Error).message}`);
  }
  if (viaNode) {
    try {
      const n = await admin.flushCache(name);
      process.stderr.write(`flushed ${n} cache entries ${what} on the running node\n`);
      return;
    } catch (e) {
      if (e instanceof AdminRequestError) throw new Failure(`the running node refused: ${e.message}`);
      if (e instanceof AdminUnavailableError) throw new Failure(`the running node stopped answering (${e.message})`);
      throw e;
    }
  }
  let store: Store;
  try {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    store = await Store.open(databaseDir(dataDir));
  } catch (e) {
    const err = e as Error & { code?: string; cause?: { code?: string } };
    if (err.cause?.code === 'LEVEL_LOCKED') throw new Failure(`the data dir ${dataDir} is in use by an imnode that does not answer on its admin socket`);
    throw new Failure(`cannot open the database in ${databaseDir(dataDir)} (${err.cause?.code ?? err.code ?? err.message})`);
  }
  try {
    const n = await new LdapCache(store).flush(name);
    process.stderr.write(`flushed ${n} cache entries ${what} in ${dataDir}\n`);
  } finally {
    await store.close();
  }
}
