// Client side of SASL SCRAM-SHA-1 (RFC 5802 §3, §5, §7) for the load generator.
// Like a real client (RFC 5802 §5.1 "client may cache ClientKey/ServerKey"), it
// derives SaltedPassword once per user, salt and iteration count, and keeps only
// ClientKey, StoredKey and ServerKey: a set-up pass pays PBKDF2, measured runs
// pay a few HMACs. Written against node:crypto, not the server's scram.ts, so a
// bug there cannot hide behind the same bug here.
import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto';

interface Keys { clientKey: Buffer; storedKey: Buffer; serverKey: Buffer }

export class ScramKeyCache {
  readonly #keys = new Map<string, Keys>();
  readonly #pending = new Map<string, Promise<Keys>>();
  /** Derivations done (each one is a PBKDF2 run). */
  derivations = 0;
  /** Iteration counts the server asked for. */
  readonly iterations = new Set<number>();

  get size(): number {
    return this.#keys.size;
  }

  async get(username: string, password: string, salt: string, iterations: number): Promise<Keys> {
    this.iterations.add(iterations);
    const id = `${username}\0${salt}\0${iterations}`;
    const hit = this.#keys.get(id);
    if (hit) return hit;
    let p = this.#pending.get(id);
    if (!p) {
      this.derivations++;
      p = derive(password, Buffer.from(salt, 'base64'), iterations).then((k) => {
        this.#keys.set(id, k);
        this.#pending.delete(id);
        return k;
      });
      this.#pending.set(id, p);
    }
    return p;
  }
}

function derive(password: string, salt: Buffer, iterations: number): Promise<Keys> {
  return new Promise((resolve, reject) => {
    pbkdf2(password, salt, iterations, 20, 'sha1', (err, salted) => {
      if (err) return reject(err);
      const clientKey = hmac(salted, 'Client Key');
      resolve({ clientKey, storedKey: createHash('sha1').update(clientKey).digest(), serverKey: hmac(salted, 'Server Key') });
    });
  });
}

function hmac(key: Buffer, data: string): Buffer {
  return createHmac('sha1', key).update(data).digest();
}

/** RFC 5802 §5.1 saslname. */
function saslname(s: string): string {
  return s.replace(/=/g, '=3D').replace(/,/g, '=2C');
}

/** One exchange: first() -> respond(challenge) -> verify(success data). */
export class ScramClient {
  readonly #user: string;
  readonly #password: string;
  readonly #cache: ScramKeyCache;
  readonly #nonce = randomBytes(18).toString('base64url');
  #clientFirstBare = '';
  #serverSignature: Buffer | null = null;

  constructor(username: string, password: string, cache: ScramKeyCache) {
    this.#user = username;
    this.#password = password;
    this.#cache = cache;
  }

  /** Base64 initial response for <auth mechanism='SCRAM-SHA-1'>. */
  first(): string {
    this.#clientFirstBare = `n=${saslname(this.#user)},r=${this.#nonce}`;
    return Buffer.from('n,,' + this.#clientFirstBare).toString('base64');
  }

  /** Base64 server-first-message in, base64 client-final-message out. */
  async respond(challengeB64: string): Promise<string> {
    const serverFirst = Buffer.from(challengeB64, 'base64').toString('utf8');
    const attrs = new Map<string, string>();
    for (const part of serverFirst.split(',')) attrs.set(part.slice(0, 1), part.slice(2));
    const nonce = attrs.get('r') ?? '';
    const salt = attrs.get('s') ?? '';
    const iterations = Number(attrs.get('i'));
    if (!nonce.startsWith(this.#nonce) || nonce.length <= this.#nonce.length) throw new Error(`SCRAM: the server nonce does not extend ours: ${serverFirst}`);
    if (!salt || !Number.isInteger(iterations) || iterations < 1) throw new Error(`SCRAM: bad server-first-message: ${serverFirst}`);
    const keys = await this.#cache.get(this.#user, this.#password, salt, iterations);
    // c=biws is base64("n,,"): no channel binding, no authzid.
    const finalNoProof = `c=biws,r=${nonce}`;
    const authMessage = `${this.#clientFirstBare},${serverFirst},${finalNoProof}`;
    const signature = createHmac('sha1', keys.storedKey).update(authMessage).digest();
    const proof = Buffer.alloc(20);
    for (let i = 0; i < 20; i++) proof[i] = keys.clientKey[i] ^ signature[i];
    this.#serverSignature = createHmac('sha1', keys.serverKey).update(authMessage).digest();
    return Buffer.from(`${finalNoProof},p=${proof.toString('base64')}`).toString('base64');
  }

  /** Throws unless the server proved it knows the password (its v= matches). */
  verify(successB64: string): void {
    const msg = Buffer.from(successB64, 'base64').toString('utf8');
    if (!msg.startsWith('v=') || !this.#serverSignature) throw new Error(`SCRAM: no server signature in <success/>: '${msg}'`);
    const v = Buffer.from(msg.slice(2), 'base64');
    if (v.length !== this.#serverSignature.length || !timingSafeEqual(v, this.#serverSignature)) {
      throw new Error('SCRAM: the server signature does not match');
    }
  }
}
