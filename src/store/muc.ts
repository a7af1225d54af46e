// Persistent conference rooms (XEP-0045 §10.2 muc#roomconfig_persistentroom):
// configuration, affiliations and subject, one record per room, in LevelDB.
// In a pool the keyspace is replicated to every node (src/store/replicated-kv.ts),
// so a node that joins later knows every persistent room, and the rooms survive
// a restart of the whole pool. Concurrent writes resolve by last writer wins,
// but only the node that sequences a room writes its record (src/modules/muc/).
import type { Store } from './db.ts';
import type { Logger } from '../admin/log.ts';
import type { Pool } from '../pool/types.ts';
import type { HLC } from '../pool/hlc.ts';
import { LevelKVProvider, type KV } from './kv.ts';
import { ReplicatedKVProvider } from './replicated-kv.ts';

export const MUC_KEYSPACE = 'muc-rooms';

export interface RoomRecord {
  config: Record<string, unknown>;
  affiliations: Record<string, string>;
  subject: { text: string; nick: string; stamp: number } | null;
  created: number;
}

export class MucStore {
  readonly #kv: KV<RoomRecord>;
  readonly #replicated: ReplicatedKVProvider | null;

  private constructor(kv: KV<RoomRecord>, replicated: ReplicatedKVProvider | null) {
    this.#kv = kv;
    this.#replicated = replicated;
  }

  /** Plain LevelDB on a single node; a replicated keyspace (started here) in a pool. */
  static async open(o: { store: Store; pool: Pool | null; clock?: HLC; log?: Logger }): Promise<MucStore> {
    if (!o.pool) return new MucStore(new LevelKVProvider(o.store).kv<RoomRecord>(MUC_KEYSPACE), null);
    const p = await ReplicatedKVProvider.open({ store: o.store, pool: o.pool, names: [MUC_KEYSPACE], clock: o.clock, log: o.log });
    await p.start();
    return new MucStore(p.kv<RoomRecord>(MUC_KEYSPACE), p);
  }

  get(room: string): Promise<RoomRecord | undefined> {
    return this.#kv.get(room);
  }

  put(room: string, rec: RoomRecord): Promise<void> {
    return this.#kv.put(room, rec);
  }

  del(room: string): Promise<void> {
    return this.#kv.del(room);
  }

  async list(): Promise<Array<[string, RoomRecord]>> {
    const out: Array<[string, RoomRecord]> = [];
    for await (const e of this.#kv.entries()) out.push(e);
    return out;
  }

  /** Told when another node wrote a record (its rooms list changes). */
  onRemoteChange(fn: (room: string) => void): () => void {
    return this.#kv.onChange((key, origin) => { if (origin === 'remote') fn(key); });
  }

  /** Pool: one anti-entropy round with every member (a node that just joined learns the rooms). */
  async sync(): Promise<void> {
    await this.#replicated?.syncAll();
  }

  async stop(): Promise<void> {
    await this.#replicated?.stop();
  }
}
