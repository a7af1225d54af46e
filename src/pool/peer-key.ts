// The node's libp2p identity (DESIGN.md "Shoal, mapped": persisted peer key). It is
// created on first start and kept in <data-dir>/pool/peer.key so that a restarted
// node keeps its peer id: the other members then see the same peer come back
// instead of a stranger, and static peer lists with /p2p/<id> stay valid.
import { chmod, mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import type { Logger } from '../admin/log.ts';

export class PeerKeyError extends Error {
  readonly path: string;
  constructor(message: string, path: string) {
    super(message);
    this.name = 'PeerKeyError';
    this.path = path;
  }
}

export function peerKeyPath(dataDir: string): string {
  return join(dataDir, 'pool', 'peer.key');
}

/**
 * Reads the node's private key, creating it (Ed25519) on first start. A file that
 * exists but cannot be decoded is an error, never silently replaced: a new key is a
 * new peer id, which the operator must choose knowingly (by deleting the file).
 */
export async function loadOrCreatePeerKey(dataDir: string, log?: Logger): Promise<PrivateKey> {
  const file = peerKeyPath(dataDir);
  let bytes: Uint8Array | undefined;
  try {
    bytes = await readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new PeerKeyError(`cannot read the pool peer key ${file}: ${(e as Error).message}`, file);
    }
  }
  if (bytes) {
    const st = await stat(file);
    if ((st.mode & 0o077) !== 0) {
      // A copied or restored file often loses its mode; the key is a credential.
      log?.warn(`pool peer key ${file} was readable by others (mode ${(st.mode & 0o777).toString(8)}); setting it to 0600`);
      await chmod(file, 0o600);
    }
    try {
      return privateKeyFromProtobuf(bytes);
    } catch (e) {
      throw new PeerKeyError(`pool peer key ${file} is not a valid libp2p private key (${(e as Error).message}); delete it to create a new peer id`, file);
    }
  }

  const key = await generateKeyPair('Ed25519');
  await mkdir(join(dataDir, 'pool'), { recursive: true, mode: 0o700 });
  // Written under a temporary name then renamed, so a crash never leaves half a key.
  const tmp = `${file}.${process.pid}.tmp`;
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(privateKeyToProtobuf(key));
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  log?.info(`created the pool peer key ${file}`);
  return key;
}
