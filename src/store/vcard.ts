// vCards (XEP-0054) by account: the <vCard/> element as the client sent it, as
// an XML string, so photos and unknown fields come back byte for byte. Kept in
// a KV keyspace (src/store/kv.ts): plain LevelDB on one node, replicated to
// every node in a pool without LDAP (one key per account, last writer wins).
import type { Store } from './db.ts';
import { kvProvider, type KV, type KVProvider } from './kv.ts';

export const VCARD_KEYSPACE = 'vcard';

export class VCardStore {
  readonly #kv: KV<string>;

  /** A Store means its plain LevelDB keyspaces. */
  constructor(src: Store | KVProvider) {
    this.#kv = kvProvider(src).kv<string>(VCARD_KEYSPACE);
  }

  get(username: string): Promise<string | undefined> {
    return this.#kv.get(username);
  }

  /** Resolves once the vCard is on disk. */
  set(username: string, xml: string): Promise<void> {
    return this.#kv.put(username, xml);
  }

  delete(username: string): Promise<void> {
    return this.#kv.del(username);
  }
}
