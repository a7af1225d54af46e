// SCRAM key derivation: RFC 5802 §3 (SCRAM-SHA-1) and RFC 7677 §3 (SCRAM-SHA-256).
// Only the derived keys are ever stored, so a leaked account database does not give
// out passwords, and the server can run SCRAM without knowing the password.
// Passwords are prepared with the OpaqueString profile (RFC 8265 §4.2) as RFC 7622
// deployments expect, instead of the obsolete SASLprep of RFC 5802.
import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto';
import { prepPassword } from './jid.ts';

export type ScramHash = 'SHA-1' | 'SHA-256';

/** Base64 strings, so that the credential can be stored as JSON. */
export interface ScramCredential {
  salt: string;
  iterations: number;
  storedKey: string;
  serverKey: string;
}

export type StoredCredentials = Record<ScramHash, ScramCredential>;

export const SCRAM_HASHES: readonly ScramHash[] = ['SHA-256', 'SHA-1'];
export const DEFAULT_ITERATIONS = 4096;
const SALT_BYTES = 16;

const NODE_HASH: Record<ScramHash, string> = { 'SHA-1': 'sha1', 'SHA-256': 'sha256' };
const HASH_LEN: Record<ScramHash, number> = { 'SHA-1': 20, 'SHA-256': 32 };

export function nodeHashName(hash: ScramHash): string {
  return NODE_HASH[hash];
}

export function hashLength(hash: ScramHash): number {
  return HASH_LEN[hash];
}

export function H(hash: ScramHash, data: Buffer): Buffer {
  return createHash(NODE_HASH[hash]).update(data).digest();
}

export function HMAC(hash: ScramHash, key: Buffer, data: Buffer | string): Buffer {
  return createHmac(NODE_HASH[hash], key).update(data).digest();
}

export function xor(a: Buffer, b: Buffer): Buffer {
  if (a.length !== b.length) throw new Error('xor of buffers of different lengths');
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] ^ b[i];
  return out;
}

function saltedPassword(hash: ScramHash, password: string, salt: Buffer, iterations: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    pbkdf2(Buffer.from(password, 'utf8'), salt, iterations, HASH_LEN[hash], NODE_HASH[hash], (err, key) => {
      if (err) reject(err);
      else resolve(key);
    });
  });
}

/** Throws if the password contains characters OpaqueString disallows. */
export async function deriveCredential(hash: ScramHash, password: string, salt: Buffer, iterations: number): Promise<ScramCredential> {
  if (!Number.isInteger(iterations) || iterations < 1) throw new RangeError(`invalid SCRAM iteration count: ${iterations}`);
  const salted = await saltedPassword(hash, prepPassword(password), salt, iterations);
  const clientKey = HMAC(hash, salted, 'Client Key');
  return {
    salt: salt.toString('base64'),
    iterations,
    storedKey: H(hash, clientKey).toString('base64'),
    serverKey: HMAC(hash, salted, 'Server Key').toString('base64'),
  };
}

export async function deriveCredentials(password: string, iterations = DEFAULT_ITERATIONS): Promise<StoredCredentials> {
  // Separate salts, so that the SHA-1 and SHA-256 entries share nothing an attacker could combine.
  const [sha1, sha256] = await Promise.all([
    deriveCredential('SHA-1', password, randomBytes(SALT_BYTES), iterations),
    deriveCredential('SHA-256', password, randomBytes(SALT_BYTES), iterations),
  ]);
  return { 'SHA-1': sha1, 'SHA-256': sha256 };
}

/** A password that OpaqueString rejects cannot match any stored one: false, not a throw. */
export async function verifyPassword(creds: StoredCredentials, password: string): Promise<boolean> {
  const stored = creds['SHA-256'];
  if (!stored) return false;
  let candidate: ScramCredential;
  try {
    candidate = await deriveCredential('SHA-256', password, Buffer.from(stored.salt, 'base64'), stored.iterations);
  } catch {
    return false;
  }
  const a = Buffer.from(candidate.storedKey, 'base64');
  const b = Buffer.from(stored.storedKey, 'base64');
  return a.length === b.length && timingSafeEqual(a, b);
}
