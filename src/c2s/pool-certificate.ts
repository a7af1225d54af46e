// One certificate for a zero-config pool. Without --cert/--key every node
// generates its own self-signed certificate, and a client that pinned the one
// of the node it met first (Conversations, Gajim do) would refuse the next
// node of the same domain. Nodes with a self-signed certificate therefore
// publish it in the replicated keyspace 'pool-tls' and all serve the oldest
// one (earliest notBefore, then lowest server id): deterministic, so the pool
// converges on one certificate whatever the order of discovery, and the
// certificate a pool started with stays when nodes join later. The private key
// travels only inside the pool, whose traffic the pool secret encrypts; nodes
// given an operator's certificate take no part.
import { X509Certificate } from 'node:crypto';
import type { Store } from '../store/db.ts';
import type { Logger } from '../admin/log.ts';
import type { Pool } from '../pool/types.ts';
import type { HLC } from '../pool/hlc.ts';
import { ReplicatedKeyspace } from '../pool/replicated.ts';
import { saveSelfSigned, secureContextOptions, type TlsMaterial } from './tls.ts';
import type { C2SServer } from './server.ts';

interface CertEntry {
  cert: string;
  key: string;
  /** notBefore of the certificate, ms. */
  created: number;
}

function fingerprint(pem: string): string {
  return new X509Certificate(pem).fingerprint256;
}

export class PoolCertificate {
  readonly #ks: ReplicatedKeyspace<CertEntry>;
  #material: TlsMaterial;
  readonly #c2s: C2SServer;
  readonly #log: Logger;
  readonly #domain: string;
  #serving: string;

  private constructor(ks: ReplicatedKeyspace<CertEntry>, material: TlsMaterial, c2s: C2SServer, log: Logger, domain: string) {
    this.#ks = ks;
    this.#material = material;
    this.#c2s = c2s;
    this.#log = log;
    this.#domain = domain;
    this.#serving = fingerprint(material.cert);
  }

  static async start(opts: { pool: Pool; store: Store; clock: HLC; material: TlsMaterial; c2s: C2SServer; log: Logger; domain: string }): Promise<PoolCertificate> {
    const ks = await ReplicatedKeyspace.open<CertEntry>({ name: 'pool-tls', pool: opts.pool, store: opts.store, clock: opts.clock, log: opts.log });
    const pc = new PoolCertificate(ks, opts.material, opts.c2s, opts.log, opts.domain);
    const x509 = new X509Certificate(opts.material.cert);
    const mine: CertEntry = { cert: opts.material.cert, key: opts.material.key, created: x509.validFromDate.getTime() };
    if (ks.get(opts.pool.serverId)?.cert !== mine.cert) await ks.put(opts.pool.serverId, mine);
    ks.onChange(() => void pc.#settle());
    await ks.start();
    await pc.#settle();
    return pc;
  }

  /** The entry every node agrees on: the oldest certificate, then the lowest server id. */
  #choice(): CertEntry | undefined {
    let best: [string, CertEntry] | undefined;
    for (const [id, e] of this.#ks.entries()) {
      if (!this.#usable(e)) continue;
      if (!best || e.created < best[1].created || (e.created === best[1].created && id < best[0])) best = [id, e];
    }
    return best?.[1];
  }

  #usable(e: CertEntry): boolean {
    try {
      const x = new X509Certificate(e.cert);
      return x.checkHost(this.#domain) !== undefined && x.validToDate.getTime() > Date.now();
    } catch {
      return false;
    }
  }

  async #settle(): Promise<void> {
    const best = this.#choice();
    if (!best) return;
    const fp = fingerprint(best.cert);
    if (fp === this.#serving) return;
    this.#serving = fp;
    this.#material = await saveSelfSigned(this.#material, best);
    this.#c2s.setTls(secureContextOptions(this.#material));
    this.#log.info(`serving the pool's self-signed certificate ${fp.slice(0, 23)}... (the oldest of the pool)`);
  }

  get fingerprint(): string {
    return this.#serving;
  }

  async stop(): Promise<void> {
    await this.#ks.stop();
  }
}
