// Server side of SASL authentication as XMPP uses it: RFC 6120 §6.4 (exchange),
// §6.5 (failure conditions) and §6.3.8 (authorization identity).
// A mechanism is a factory of sessions; a session is driven one client message at a
// time and answers with a challenge, a success or a failure. Sessions never throw for
// anything a client can send: every bad input is a failure value.
import type { StoredCredentials } from '../../xmpp/scram.ts';

export type SaslFailureCondition =
  | 'aborted' | 'account-disabled' | 'credentials-expired' | 'encryption-required'
  | 'incorrect-encoding' | 'invalid-authzid' | 'invalid-mechanism' | 'malformed-request'
  | 'mechanism-too-weak' | 'not-authorized' | 'temporary-auth-failure';

export type SaslStep =
  | { kind: 'challenge'; data: Buffer }
  /** username is the prepared localpart. */
  | { kind: 'success'; username: string; data?: Buffer }
  | { kind: 'failure'; condition: SaslFailureCondition; text?: string };

/** One per authentication attempt; the first call gets the <auth/> payload (possibly empty). */
export interface SaslSession {
  step(data: Buffer): Promise<SaslStep>;
}

export interface SaslBackend {
  /** Returns null if the name is not a valid localpart. */
  prepUsername(s: string): string | null;
  /** null = unknown user. */
  getCredentials(username: string): Promise<StoredCredentials | null>;
  verifyPassword(username: string, password: string): Promise<boolean>;
  /** The server's own domain: an authzid other than username@domain (or empty) gives invalid-authzid. */
  domain: string;
  /** Secret used to derive a fake, stable salt for unknown users so that SCRAM does not reveal which users exist. */
  secret: Buffer;
}

export interface SaslMechanismFactory {
  /** 'SCRAM-SHA-256' | 'SCRAM-SHA-1' | 'PLAIN' */
  name: string;
  /** Mechanisms that expose the password (PLAIN) are offered only over TLS. */
  needsTls: boolean;
  start(backend: SaslBackend): SaslSession;
}

/** No legitimate message of these mechanisms comes close; bigger ones are an attack on memory or CPU. */
export const MAX_SASL_MESSAGE = 4096;

export function failure(condition: SaslFailureCondition, text?: string): SaslStep {
  return text === undefined ? { kind: 'failure', condition } : { kind: 'failure', condition, text };
}

const STRICT_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Strict base64 (RFC 4648 §4, no whitespace, correct padding). Buffer.from() silently
 * skips bad characters, which would turn a garbled message into a different valid one.
 */
export function decodeBase64(s: string): Buffer | null {
  if (!STRICT_BASE64.test(s)) return null;
  const buf = Buffer.from(s, 'base64');
  // Non-zero bits in the last character's padding part mean a non-canonical encoding.
  if (buf.toString('base64') !== s) return null;
  return buf;
}

/**
 * The text content of <auth/> or <response/> (RFC 6120 §6.4.2): empty for no data,
 * "=" for an explicitly empty initial response, base64 otherwise. null if malformed.
 */
export function decodeSaslPayload(text: string): Buffer | null {
  const s = text.trim();
  if (s === '' || s === '=') return Buffer.alloc(0);
  return decodeBase64(s);
}

export function encodeSaslPayload(data: Buffer | undefined): string {
  if (!data) return '';
  return data.length === 0 ? '=' : data.toString('base64');
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** null if not valid UTF-8. */
export function decodeUtf8(data: Buffer): string | null {
  try {
    return utf8.decode(data);
  } catch {
    return null;
  }
}

/**
 * RFC 6120 §6.3.8: the only identity we let a client act as is its own bare JID.
 * An empty authzid means the same. The domain compare is ASCII case-insensitive
 * because the domain we hold is already in its prepared, lower-case form.
 */
export function authzidAllowed(backend: SaslBackend, authzid: string, username: string): boolean {
  if (authzid === '') return true;
  if (authzid.includes('/')) return false;
  const at = authzid.indexOf('@');
  if (at <= 0 || authzid.indexOf('@', at + 1) !== -1) return false;
  let local: string | null;
  try {
    local = backend.prepUsername(authzid.slice(0, at));
  } catch {
    return false;
  }
  if (local === null || local !== username) return false;
  const domain = authzid.slice(at + 1).replace(/\.$/, '');
  return domain.toLowerCase() === backend.domain.toLowerCase();
}

/** prepUsername for names coming from the wire: any throw counts as invalid. */
export function prepUsernameSafe(backend: SaslBackend, s: string): string | null {
  try {
    return backend.prepUsername(s);
  } catch {
    return null;
  }
}
