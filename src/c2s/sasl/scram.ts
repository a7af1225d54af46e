// SCRAM server: RFC 5802 §5 (exchange), §7 (message syntax), §9 (security), with the
// SHA-256 variant of RFC 7677. Channel binding (-PLUS) is not offered, so a client
// may say "n" (no binding) or "y" (it could bind but thinks we cannot), never "p=".
// For a user that does not exist the exchange goes on with a fake credential whose
// salt is stable per name (RFC 5802 §9), so the server-first message does not tell
// an attacker which accounts exist; the exchange then fails like a wrong password.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import {
  DEFAULT_ITERATIONS, H, HMAC, hashLength, xor,
  type ScramCredential, type ScramHash,
} from '../../xmpp/scram.ts';
import {
  MAX_SASL_MESSAGE, authzidAllowed, decodeBase64, decodeUtf8, failure, prepUsernameSafe,
  type SaslBackend, type SaslMechanismFactory, type SaslSession, type SaslStep,
} from './mechanism.ts';

const NONCE_BYTES = 18;
// RFC 5802 §7: printable = %x21-2B / %x2D-7E (visible ASCII except ",").
const PRINTABLE = /^[\x21-\x2b\x2d-\x7e]+$/;
const ATTR = /^[A-Za-z]=/;

export interface ScramSessionOptions {
  /** Fixed server nonce part, for reproducing the RFC test vectors. Random otherwise. */
  serverNonce?: string;
}

type Malformed = { error: SaslStep };

/**
 * RFC 5802 §5.1 saslname: "=2C" is ",", "=3D" is "="; any other "=" is an error,
 * as is an empty name or a NUL.
 */
export function unescapeSaslname(s: string): string | null {
  if (s === '' || s.includes('\0')) return null;
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    if (ch !== '=') {
      out += ch;
      continue;
    }
    const esc = s.slice(i + 1, i + 3);
    if (esc === '2C') out += ',';
    else if (esc === '3D') out += '=';
    else return null;
    i += 2;
  }
  return out;
}

function fakeCredential(hash: ScramHash, backend: SaslBackend, username: string): ScramCredential {
  // Only the salt must be stable: the exchange fails whatever the keys are.
  const salt = HMAC(hash, backend.secret, `scram-fake-salt\0${hash}\0${username}`).subarray(0, 16);
  return {
    salt: salt.toString('base64'),
    iterations: DEFAULT_ITERATIONS,
    storedKey: randomBytes(hashLength(hash)).toString('base64'),
    serverKey: randomBytes(hashLength(hash)).toString('base64'),
  };
}

interface ClientFirst {
  gs2Header: string;
  authzid: string;
  rawUsername: string;
  clientNonce: string;
  bare: string;
}

function parseClientFirst(msg: string): ClientFirst | Malformed {
  const malformed = (text: string): Malformed => ({ error: failure('malformed-request', text) });
  // gs2-header = gs2-cbind-flag "," [ authzid ] ","
  const c1 = msg.indexOf(',');
  const c2 = c1 < 0 ? -1 : msg.indexOf(',', c1 + 1);
  if (c2 < 0) return malformed('missing GS2 header');
  const flag = msg.slice(0, c1);
  const authzPart = msg.slice(c1 + 1, c2);
  if (flag.startsWith('p=')) return { error: failure('not-authorized', 'channel binding not supported') };
  if (flag !== 'n' && flag !== 'y') return malformed('invalid GS2 channel binding flag');
  let authzid = '';
  if (authzPart !== '') {
    if (!authzPart.startsWith('a=')) return malformed('invalid GS2 authzid');
    const a = unescapeSaslname(authzPart.slice(2));
    if (a === null) return malformed('invalid authzid encoding');
    authzid = a;
  }
  const bare = msg.slice(c2 + 1);
  const attrs = bare.split(',');
  // RFC 5802 §7 reserves m= for mandatory extensions; we know none, so we must fail.
  if (attrs[0].startsWith('m=')) return malformed('unsupported mandatory extension');
  if (attrs.length < 2 || !attrs[0].startsWith('n=') || !attrs[1].startsWith('r=')) {
    return malformed('expected n= and r= attributes');
  }
  const rawUsername = unescapeSaslname(attrs[0].slice(2));
  if (rawUsername === null) return malformed('invalid username encoding');
  const clientNonce = attrs[1].slice(2);
  if (!PRINTABLE.test(clientNonce)) return malformed('invalid nonce');
  for (const ext of attrs.slice(2)) {
    if (!ATTR.test(ext)) return malformed('invalid attribute');
  }
  return { gs2Header: msg.slice(0, c2 + 1), authzid, rawUsername, clientNonce, bare };
}

class ScramSession implements SaslSession {
  readonly #hash: ScramHash;
  readonly #backend: SaslBackend;
  readonly #serverNonce: string | undefined;
  #state: 'initial' | 'first' | 'final' | 'done' = 'initial';
  #busy = false;
  // Set by the client-first message.
  #username = '';
  #known = false;
  #cred: ScramCredential | undefined;
  #gs2Header = '';
  #nonce = '';
  #clientFirstBare = '';
  #serverFirst = '';

  constructor(hash: ScramHash, backend: SaslBackend, opts: ScramSessionOptions) {
    this.#hash = hash;
    this.#backend = backend;
    this.#serverNonce = opts.serverNonce;
  }

  async step(data: Buffer): Promise<SaslStep> {
    if (this.#busy) return this.#fail(failure('malformed-request', 'step already in progress'));
    this.#busy = true;
    try {
      return await this.#step(data);
    } catch {
      // Only the backend can throw here (storage down, LDAP unreachable).
      return this.#fail(failure('temporary-auth-failure'));
    } finally {
      this.#busy = false;
    }
  }

  #fail(step: SaslStep): SaslStep {
    this.#state = 'done';
    return step;
  }

  async #step(data: Buffer): Promise<SaslStep> {
    if (this.#state === 'done') return failure('malformed-request', 'exchange already complete');
    if (data.length > MAX_SASL_MESSAGE) return this.#fail(failure('malformed-request', 'message too long'));
    const msg = decodeUtf8(data);
    if (msg === null) return this.#fail(failure('malformed-request', 'message is not UTF-8'));
    switch (this.#state) {
      case 'initial':
        // SCRAM is client-first: no initial response means "send me an empty challenge" (RFC 6120 §6.4.2).
        if (msg === '') {
          this.#state = 'first';
          return { kind: 'challenge', data: Buffer.alloc(0) };
        }
        return this.#clientFirst(msg);
      case 'first':
        return this.#clientFirst(msg);
      case 'final':
        return this.#clientFinal(msg);
    }
  }

  async #clientFirst(msg: string): Promise<SaslStep> {
    const parsed = parseClientFirst(msg);
    if ('error' in parsed) return this.#fail(parsed.error);
    const username = prepUsernameSafe(this.#backend, parsed.rawUsername);
    if (username === null) return this.#fail(failure('not-authorized'));
    if (!authzidAllowed(this.#backend, parsed.authzid, username)) return this.#fail(failure('invalid-authzid'));
    const creds = await this.#backend.getCredentials(username);
    const cred = creds?.[this.#hash];
    this.#known = cred !== undefined;
    this.#cred = cred ?? fakeCredential(this.#hash, this.#backend, username);
    this.#username = username;
    this.#gs2Header = parsed.gs2Header;
    this.#nonce = parsed.clientNonce + (this.#serverNonce ?? randomBytes(NONCE_BYTES).toString('base64'));
    this.#clientFirstBare = parsed.bare;
    this.#serverFirst = `r=${this.#nonce},s=${this.#cred.salt},i=${this.#cred.iterations}`;
    this.#state = 'final';
    return { kind: 'challenge', data: Buffer.from(this.#serverFirst, 'utf8') };
  }

  async #clientFinal(msg: string): Promise<SaslStep> {
    // client-final-message = channel-binding "," nonce ["," extensions] "," proof
    const proofAt = msg.lastIndexOf(',p=');
    if (proofAt < 0) return this.#fail(failure('malformed-request', 'missing proof'));
    const withoutProof = msg.slice(0, proofAt);
    const proofB64 = msg.slice(proofAt + 3);
    const attrs = withoutProof.split(',');
    if (attrs.length < 2 || !attrs[0].startsWith('c=') || !attrs[1].startsWith('r=')) {
      return this.#fail(failure('malformed-request', 'expected c= and r= attributes'));
    }
    for (const ext of attrs.slice(2)) {
      if (!ATTR.test(ext)) return this.#fail(failure('malformed-request', 'invalid attribute'));
    }
    const cbind = decodeBase64(attrs[0].slice(2));
    const proof = decodeBase64(proofB64);
    if (cbind === null || proof === null) return this.#fail(failure('incorrect-encoding'));
    // Without channel binding data, c= must repeat the GS2 header exactly (RFC 5802 §7),
    // which stops a downgrade of the flag or a swap of the authzid.
    if (!cbind.equals(Buffer.from(this.#gs2Header, 'utf8'))) {
      return this.#fail(failure('not-authorized', 'channel binding mismatch'));
    }
    if (attrs[1].slice(2) !== this.#nonce) return this.#fail(failure('not-authorized', 'nonce mismatch'));
    if (proof.length !== hashLength(this.#hash)) return this.#fail(failure('malformed-request', 'invalid proof length'));

    const cred = this.#cred!;
    const authMessage = `${this.#clientFirstBare},${this.#serverFirst},${withoutProof}`;
    const storedKey = Buffer.from(cred.storedKey, 'base64');
    const clientSignature = HMAC(this.#hash, storedKey, authMessage);
    const clientKey = xor(proof, clientSignature);
    const ok = timingSafeEqual(H(this.#hash, clientKey), storedKey);
    if (!ok || !this.#known) return this.#fail(failure('not-authorized'));
    const serverSignature = HMAC(this.#hash, Buffer.from(cred.serverKey, 'base64'), authMessage);
    this.#state = 'done';
    return { kind: 'success', username: this.#username, data: Buffer.from(`v=${serverSignature.toString('base64')}`, 'utf8') };
  }
}

export function createScramSession(hash: ScramHash, backend: SaslBackend, opts: ScramSessionOptions = {}): SaslSession {
  return new ScramSession(hash, backend, opts);
}

export const SCRAM_SHA_1: SaslMechanismFactory = {
  name: 'SCRAM-SHA-1',
  needsTls: false,
  start: (backend) => createScramSession('SHA-1', backend),
};

export const SCRAM_SHA_256: SaslMechanismFactory = {
  name: 'SCRAM-SHA-256',
  needsTls: false,
  start: (backend) => createScramSession('SHA-256', backend),
};
