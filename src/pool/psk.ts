// The pool secret (DESIGN.md "Shoal, mapped": pool password): every connection
// between pool nodes is wrapped by @libp2p/pnet, whose 32-byte pre-shared key is
// derived here from the pool password with scrypt. The salt is bound to the XMPP
// domain, so two pools that happen to share a password (or that both run without
// one) still cannot read each other's traffic. Without a password the key depends
// on the domain alone: anyone who knows the domain can join, which is the
// zero-configuration LAN default and is logged loudly by the pool.
import { scrypt } from 'node:crypto';

/**
 * scrypt cost. N = 2^15 with r = 8 takes 32 MiB and, on a current core, some tens
 * of milliseconds: paid once per start, but it multiplies the cost of guessing a
 * pool password from captured traffic by the same factor.
 */
export const SCRYPT_PARAMS = { N: 2 ** 15, r: 8, p: 1 } as const;

export const KEY_LENGTH = 32;

/** Versioned so that a future change of KDF cannot silently collide with this one. */
const SALT_PREFIX = 'imnode/pool-psk/v1/';

/** The domain as it names the pool: case and a trailing root dot do not make another pool. */
export function normalizeDomain(domain: string): string {
  const d = domain.trim().toLowerCase().replace(/\.$/, '');
  if (!d) throw new Error('the pool key needs a non-empty XMPP domain');
  return d;
}

export interface DeriveOptions {
  /** Overrides SCRYPT_PARAMS (tests use a small N to stay fast). */
  N?: number;
}

/** The raw 32-byte pool key. An empty password counts as no password. */
export async function derivePoolKey(domain: string, password?: string, opts: DeriveOptions = {}): Promise<Uint8Array> {
  // "No password" has its own salt, so no password a user could type gives the open pool's key.
  const salt = Buffer.from(SALT_PREFIX + (password ? 'password/' : 'open/') + normalizeDomain(domain), 'utf8');
  const secret = Buffer.from(password ? password.normalize('NFC') : '', 'utf8');
  const N = opts.N ?? SCRYPT_PARAMS.N;
  const key = await new Promise<Buffer>((resolve, reject) => {
    scrypt(secret, salt, KEY_LENGTH, { N, r: SCRYPT_PARAMS.r, p: SCRYPT_PARAMS.p, maxmem: 256 * N * SCRYPT_PARAMS.r + (1 << 20) }, (err, k) => (err ? reject(err) : resolve(k)));
  });
  return new Uint8Array(key);
}

/** The key in the "swarm key" text format that @libp2p/pnet's preSharedKey({ psk }) expects. */
export function pnetKeyFile(key: Uint8Array): Uint8Array {
  if (key.length !== KEY_LENGTH) throw new Error(`a pool key is ${KEY_LENGTH} bytes, not ${key.length}`);
  return new TextEncoder().encode('/key/swarm/psk/1.0.0/\n/base16/\n' + Buffer.from(key).toString('hex'));
}

const derived = new Map<string, Promise<Uint8Array>>();

/**
 * derivePoolKey + pnetKeyFile: what Libp2pPool hands to @libp2p/pnet. Memoised
 * per process, so that start-up can begin the derivation (on the thread pool)
 * before it loads libp2p, and the pool then finds the key ready.
 */
export function poolPsk(domain: string, password?: string, opts?: DeriveOptions): Promise<Uint8Array> {
  const id = JSON.stringify([normalizeDomain(domain), password ?? '', opts?.N ?? SCRYPT_PARAMS.N]);
  let p = derived.get(id);
  if (!p) {
    p = derivePoolKey(domain, password, opts).then(pnetKeyFile);
    // A failed derivation is not kept: the next start tries again.
    p.catch(() => derived.delete(id));
    derived.set(id, p);
  }
  return p;
}
