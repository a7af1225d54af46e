// PLAIN server: RFC 4616 §2 (message = [authzid] NUL authcid NUL passwd), with the
// authzid rules of RFC 6120 §6.3.8. It sends the password in the clear, so the c2s
// layer offers it only over TLS; it is the mechanism that works with directories
// that hold no SCRAM keys (LDAP bind).
import {
  MAX_SASL_MESSAGE, authzidAllowed, decodeUtf8, failure, prepUsernameSafe,
  type SaslBackend, type SaslMechanismFactory, type SaslSession, type SaslStep,
} from './mechanism.ts';

class PlainSession implements SaslSession {
  readonly #backend: SaslBackend;
  #state: 'initial' | 'waiting' | 'done' = 'initial';
  #busy = false;

  constructor(backend: SaslBackend) {
    this.#backend = backend;
  }

  async step(data: Buffer): Promise<SaslStep> {
    if (this.#state === 'done') return failure('malformed-request', 'exchange already complete');
    if (this.#busy) {
      this.#state = 'done';
      return failure('malformed-request', 'step already in progress');
    }
    // No initial response: an empty challenge asks the client for the message (RFC 4616 §2).
    if (this.#state === 'initial' && data.length === 0) {
      this.#state = 'waiting';
      return { kind: 'challenge', data: Buffer.alloc(0) };
    }
    this.#busy = true;
    try {
      return await this.#check(data);
    } catch {
      // Only the backend can throw here (storage down, LDAP unreachable).
      return failure('temporary-auth-failure');
    } finally {
      this.#busy = false;
      this.#state = 'done';
    }
  }

  async #check(data: Buffer): Promise<SaslStep> {
    if (data.length > MAX_SASL_MESSAGE) return failure('malformed-request', 'message too long');
    const msg = decodeUtf8(data);
    if (msg === null) return failure('malformed-request', 'message is not UTF-8');
    const parts = msg.split('\0');
    if (parts.length !== 3) return failure('malformed-request', 'expected authzid NUL authcid NUL password');
    const [authzid, authcid, password] = parts;
    if (authcid === '' || password === '') return failure('malformed-request', 'empty authcid or password');
    const username = prepUsernameSafe(this.#backend, authcid);
    if (username === null) return failure('not-authorized');
    if (!authzidAllowed(this.#backend, authzid, username)) return failure('invalid-authzid');
    if (!(await this.#backend.verifyPassword(username, password))) return failure('not-authorized');
    return { kind: 'success', username };
  }
}

export const PLAIN: SaslMechanismFactory = {
  name: 'PLAIN',
  needsTls: true,
  start: (backend) => new PlainSession(backend),
};
