// vCards (XEP-0054) by account: the <vCard/> element as the client sent it, as
// an XML string, so photos and unknown fields come back byte for byte.
import type { Keyspace, Store, BatchOp } from './db.ts';

export const VCARD_KEYSPACE = 'vcard';

export class VCardStore {
  readonly #ks: Keyspace<string>;

  constructor(store: Store) {
    this.#ks = store.keyspace<string>(VCARD_KEYSPACE);
  }

  get(username: string): Promise<string | undefined> {
    return this.#ks.get(username);
  }

  /** Resolves once the vCard is on disk. */
  set(username: string, xml: string): Promise<void> {
    return this.#ks.put(username, xml);
  }

  delete(username: string): Promise<void> {
    return this.#ks.del(username);
  }

  deleteOp(username: string): BatchOp {
    return this.#ks.delOp(username);
  }
}
