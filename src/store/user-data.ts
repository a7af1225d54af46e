// Where the user data of a node lives (DESIGN.md "What is replicated"): the
// accounts (SCRAM keys), rosters, vCards, blocklists and offline messages.
//  - One node (no pool): plain LevelDB keyspaces, as always.
//  - A pool without LDAP: replicated keyspaces (src/store/replicated-kv.ts),
//    so a user registered on one node logs in on any other with the same
//    roster, and an offline message stored on one node is delivered on another.
// The stores take the KVProvider returned here and do not know which it is.
// With an external directory (LDAP, shared by every node) the accounts are
// not ours: nothing of them is kept or replicated, only the other user data.
//
// Plain keyspaces are an inbox in pool mode: at start, whatever they hold (the
// data of a node that ran alone before joining a pool, accounts the offline
// CLI added since) is written into the replicated keyspaces with fresh
// versions, so it wins over older versions elsewhere, and removed from the
// plain ones.
import type { Store } from './db.ts';
import type { Logger } from '../admin/log.ts';
import type { Pool } from '../pool/types.ts';
import { ACCOUNTS_KEYSPACE, EmbeddedDirectory, type UserDirectory } from './directory.ts';
import { ROSTER_KEYSPACE } from './roster.ts';
import { OFFLINE_KEYSPACE, OFFLINE_META_KEYSPACE } from './offline.ts';
import { VCARD_KEYSPACE } from './vcard.ts';
import { BLOCKLIST_KEYSPACE } from './blocking.ts';
import { LevelKVProvider, type KVOp, type KVProvider } from './kv.ts';
import { ReplicatedKVProvider, type ReplicationTuning } from './replicated-kv.ts';

/** The keyspaces of user data: replicated in a pool without LDAP. */
export const USER_DATA_KEYSPACES: readonly string[] = [ACCOUNTS_KEYSPACE, ROSTER_KEYSPACE, VCARD_KEYSPACE, BLOCKLIST_KEYSPACE, OFFLINE_KEYSPACE];

const IMPORT_BATCH = 500;

export interface UserDataOptions {
  store: Store;
  /** The pool, when this node is in one; undefined on a single node. */
  pool?: Pool;
  log: Logger;
  /** PBKDF2 iterations for new accounts (tests lower it). */
  iterations?: number;
  /** Pool only: see KVProvider.settleMs. */
  settleMs?: number;
  /** Pool only: replication intervals (tests shorten them). */
  tuning?: ReplicationTuning;
  /** An external directory (LDAP) instead of the embedded accounts, which are then neither kept nor replicated. */
  directory?: UserDirectory;
}

export interface UserData {
  kv: KVProvider;
  directory: UserDirectory;
  /** Pool only: one hash per keyspace, equal on nodes that hold the same user data; null on a single node. */
  digest(): Record<string, string> | null;
  /**
   * Pool only: one anti-entropy round with every alive member (start() runs
   * one in the background; a node that just joined may await this before it
   * accepts clients, so that existing users can log in at once).
   */
  sync(): Promise<void>;
  /** Stops replicating (pool) and writes what is pending; the caller closes the Store after. */
  stop(): Promise<void>;
}

export async function createUserData(opts: UserDataOptions): Promise<UserData> {
  const { store, pool, log } = opts;
  if (!pool) {
    const kv = new LevelKVProvider(store);
    return {
      kv,
      directory: opts.directory ?? new EmbeddedDirectory(kv, { iterations: opts.iterations }),
      digest: () => null,
      sync: async () => undefined,
      stop: async () => undefined,
    };
  }
  const names = opts.directory ? USER_DATA_KEYSPACES.filter((n) => n !== ACCOUNTS_KEYSPACE) : USER_DATA_KEYSPACES;
  const kv = await ReplicatedKVProvider.open({
    store, pool, names, log: log.child('user-data'),
    settleMs: opts.settleMs, tuning: opts.tuning,
  });
  await importPlain(store, kv, log, names);
  await kv.start();
  log.info(`user data replicated in the pool: ${names.join(', ')}`);
  let stopped: Promise<void> | null = null;
  return {
    kv,
    directory: opts.directory ?? new EmbeddedDirectory(kv, { iterations: opts.iterations }),
    digest: () => kv.digest(),
    sync: () => kv.syncAll(),
    stop: () => (stopped ??= kv.stop()),
  };
}

/** Moves what the plain keyspaces hold into the replicated ones (see the note at the top). */
export async function importPlain(store: Store, kv: ReplicatedKVProvider, log: Logger, names: readonly string[] = USER_DATA_KEYSPACES): Promise<number> {
  let total = 0;
  for (const name of names) {
    const plain = store.keyspace<unknown>(name);
    const target = kv.kv<unknown>(name);
    let ops: KVOp<unknown>[] = [];
    let n = 0;
    const write = async (): Promise<void> => {
      await target.batch(ops);
      await store.batch(ops.map((op) => plain.delOp(op.key)));
      n += ops.length;
      ops = [];
    };
    for await (const [key, value] of plain.entries()) {
      if (key === '' || value === undefined) continue;
      ops.push({ type: 'put', key, value });
      if (ops.length >= IMPORT_BATCH) await write();
    }
    if (ops.length) await write();
    if (n) log.info(`imported ${n} ${name} records of this node into the pool's user data`);
    total += n;
  }
  // The per-user counters of the older offline layout mean nothing now.
  await store.keyspace(OFFLINE_META_KEYSPACE).clear();
  return total;
}
