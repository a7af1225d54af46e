// TLS material for the client listeners (RFC 6120 §5 STARTTLS, XEP-0368 direct TLS).
// An operator's certificate is checked at start-up (readable, parseable, key matches)
// so a mistake stops the server with one clear line instead of failing every client
// handshake later. Without one, a self-signed certificate for the domain is made
// once in <data-dir>/tls and reused, so clients that pinned it keep trusting it.
import { mkdir, readFile, rename, writeFile, chmod } from 'node:fs/promises';
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { join } from 'node:path';
import type { SecureContextOptions } from 'node:tls';
import { ConfigError } from '../admin/options.ts';

export interface TlsMaterial {
  key: string;
  cert: string;
  selfSigned: boolean;
  certPath: string;
  keyPath: string;
}

const VALID_YEARS = 10;

async function readPem(path: string, option: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new ConfigError(`--${option}: cannot read ${path} (${err.code ?? err.message})`, option);
  }
}

function parseCert(pem: string, path: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch {
    throw new ConfigError(`--cert: ${path} is not a PEM certificate`, 'cert');
  }
}

function parseKey(pem: string, path: string): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch (e) {
    const encrypted = /passphrase/i.test((e as Error).message);
    throw new ConfigError(encrypted
      ? `--key: ${path} is encrypted; imnode needs an unencrypted private key`
      : `--key: ${path} is not a PEM private key`, 'key');
  }
}

/** The SAN imnode writes into its own certificates; anything else means it was made for another domain. */
function expectedSan(domain: string): string {
  return `DNS:${domain}, DNS:*.${domain}`;
}

/** Our generated pair is reusable if it is intact, for this domain and not about to expire. */
async function reusable(certPath: string, keyPath: string, domain: string): Promise<{ cert: string; key: string } | null> {
  let cert: string, key: string;
  try {
    [cert, key] = await Promise.all([readFile(certPath, 'utf8'), readFile(keyPath, 'utf8')]);
  } catch {
    return null;
  }
  try {
    const x509 = new X509Certificate(cert);
    if (x509.subjectAltName !== expectedSan(domain)) return null;
    if (x509.validToDate.getTime() < Date.now() + 86_400_000) return null;
    if (!x509.checkPrivateKey(createPrivateKey(key))) return null;
  } catch {
    return null;
  }
  return { cert, key };
}

async function writeAtomically(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, data, { mode });
  await chmod(tmp, mode);
  await rename(tmp, path);
}

async function generateSelfSigned(domain: string): Promise<{ cert: string; key: string }> {
  const notBefore = new Date(Date.now() - 3_600_000); // tolerate clients whose clock is a little behind
  const notAfter = new Date(notBefore);
  notAfter.setFullYear(notAfter.getFullYear() + VALID_YEARS);
  // Loaded only to make a certificate: selfsigned and its X.509 stack are the
  // largest part of a node's start-up otherwise (~0.1 s), for a once-per-data-dir job.
  const { generate } = await import('selfsigned');
  const pems = await generate([{ name: 'commonName', value: domain }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: notBefore,
    notAfterDate: notAfter,
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, critical: true },
      // clientAuth too: server-to-server links present the same certificate when they dial out.
      { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
      { name: 'subjectAltName', altNames: [{ type: 2, value: domain }, { type: 2, value: `*.${domain}` }] },
    ],
  });
  return { cert: pems.cert, key: pems.private };
}

export async function loadTlsMaterial(opts: { domain: string; dataDir: string; cert?: string; key?: string }): Promise<TlsMaterial> {
  if (opts.cert !== undefined || opts.key !== undefined) {
    if (opts.cert === undefined) throw new ConfigError('--key: given without --cert (both are needed)', 'key');
    if (opts.key === undefined) throw new ConfigError('--cert: given without --key (both are needed)', 'cert');
    const [cert, key] = [await readPem(opts.cert, 'cert'), await readPem(opts.key, 'key')];
    const x509 = parseCert(cert, opts.cert);
    const keyObject = parseKey(key, opts.key);
    if (!x509.checkPrivateKey(keyObject)) {
      throw new ConfigError(`--key: ${opts.key} does not match the certificate in ${opts.cert}`, 'key');
    }
    return { cert, key, selfSigned: false, certPath: opts.cert, keyPath: opts.key };
  }

  const dir = join(opts.dataDir, 'tls');
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  const existing = await reusable(certPath, keyPath, opts.domain);
  if (existing) return { ...existing, selfSigned: true, certPath, keyPath };

  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const fresh = await generateSelfSigned(opts.domain);
    // Key first: a crash between the two writes leaves a mismatched pair, which the next start replaces.
    await writeAtomically(keyPath, fresh.key, 0o600);
    await writeAtomically(certPath, fresh.cert, 0o644);
    return { ...fresh, selfSigned: true, certPath, keyPath };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new ConfigError(`--data-dir: cannot write the self-signed certificate in ${dir} (${err.code ?? err.message})`, 'data-dir');
  }
}

export function secureContextOptions(m: TlsMaterial): SecureContextOptions {
  return { key: m.key, cert: m.cert, minVersion: 'TLSv1.2' };
}

/** Replaces the generated self-signed pair in the data dir (a pool adopting one certificate for all its nodes). */
export async function saveSelfSigned(m: TlsMaterial, pair: { cert: string; key: string }): Promise<TlsMaterial> {
  await writeAtomically(m.keyPath, pair.key, 0o600);
  await writeAtomically(m.certPath, pair.cert, 0o644);
  return { ...m, ...pair };
}
