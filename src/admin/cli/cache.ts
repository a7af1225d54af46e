// `imnode cache flush [<name>]`: drops this node's cached LDAP directory data
// (users, groups, "no such user" entries, kept SCRAM verifiers), of one user or
// all, through the admin socket of the running node, or in the data dir when
// the node is stopped. Only the cache: the directory and the users' own data
// (rosters, vCards, offline messages) are untouched.
import { getString, type Config } from '../options.ts';
import { LdapCache } from '../../store/ldap/cache.ts';
import { UsageError } from './errors.ts';
import { configuredDomain, nodeFailure, openDataStore, runningNode, userName } from './admin-access.ts';

export async function cacheCommand(args: string[], config: Config): Promise<void> {
  const [action, ...rest] = args;
  if (action !== 'flush') throw new UsageError(`unknown cache command '${action ?? ''}' (flush)`);
  if (rest.length > 1) throw new UsageError('usage: imnode cache flush [<name>]');
  const domain = configuredDomain(config);
  const name = rest.length ? userName(rest[0], domain) : undefined;
  const what = name ? `of ${name}@${domain}` : 'of every user';
  const dataDir = getString(config, 'data-dir');
  const admin = await runningNode(dataDir);
  if (admin) {
    try {
      const n = await admin.flushCache(name);
      process.stderr.write(`flushed ${n} cache entries ${what} on the running node\n`);
      return;
    } catch (e) {
      throw nodeFailure(e);
    }
  }
  const store = await openDataStore(dataDir, 'in use by an imnode that does not answer on its admin socket');
  try {
    const n = await new LdapCache(store).flush(name);
    process.stderr.write(`flushed ${n} cache entries ${what} in ${dataDir}\n`);
  } finally {
    await store.close();
  }
}
