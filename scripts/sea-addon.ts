// Loads a native addon from inside the single executable (scripts/build.ts swaps
// this in for classic-level's node-gyp-build lookup). The dynamic linker can only
// open files, so the addon, stored as a SEA asset, is written once to a cache
// directory named after its SHA-256 and dlopen()ed from there; a later start (or
// another binary of the same build) finds it in place. Outside a SEA (the bundle
// run with a plain `node dist/imnode.cjs`), the file the build copied from is used.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as sea from 'node:sea';

/** Candidate cache roots, best first: a read-only home must not stop the server. */
function cacheRoots(): string[] {
  const roots: string[] = [];
  const xdg = process.env.XDG_CACHE_HOME;
  // The XDG spec says to ignore a relative value.
  if (xdg && path.isAbsolute(xdg)) roots.push(path.join(xdg, 'imnode'));
  const home = process.env.HOME;
  if (home && path.isAbsolute(home)) roots.push(path.join(home, '.cache', 'imnode'));
  // `env -i` leaves no HOME: a per-user directory in /tmp, checked below.
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  roots.push(path.join(os.tmpdir(), `imnode-${uid}`));
  return roots;
}

/**
 * In a shared directory such as /tmp, another user could have planted the
 * directory or the file: only a directory of our own that nobody else can write
 * to is trusted with code we are about to run.
 */
function checkPrivate(dir: string): void {
  const st = fs.lstatSync(dir);
  const uid = typeof process.getuid === 'function' ? process.getuid() : st.uid;
  if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o022) !== 0) {
    throw new Error(`${dir} is not a private directory of this user`);
  }
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Writes the addon under `root` (unless a verified copy is there) and returns its path. */
function extract(root: string, name: string, data: Uint8Array, digest: string): string {
  const dir = path.join(root, digest.slice(0, 16));
  const file = path.join(dir, name);
  fs.mkdirSync(root, { recursive: true, mode: 0o700 });
  checkPrivate(root);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  checkPrivate(dir);
  try {
    // A file left half-written or altered is replaced, never loaded.
    if (sha256(fs.readFileSync(file)) === digest) return file;
  } catch { /* not there yet */ }
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, data, { mode: 0o500 });
  // Atomic: two binaries starting at once both end with a complete file.
  fs.renameSync(tmp, file);
  return file;
}

function dlopen(file: string): unknown {
  const mod = { exports: {} as unknown };
  process.dlopen(mod, file);
  return mod.exports;
}

/** The exports of the native addon stored as SEA asset `name` (or at `devPath` outside a SEA). */
export function loadAddon(name: string, devPath: string): unknown {
  if (!sea.isSea()) return dlopen(devPath);
  const data = new Uint8Array(sea.getRawAsset(name));
  const digest = sha256(data);
  const errors: string[] = [];
  for (const root of cacheRoots()) {
    try {
      // dlopen fails on a noexec mount even after a good write: then the next place.
      return dlopen(extract(root, name, data, digest));
    } catch (e) {
      errors.push(`${root}: ${(e as Error).message}`);
    }
  }
  throw new Error(`cannot load the native addon ${name} from a cache directory (${errors.join('; ')}); set XDG_CACHE_HOME to a writable directory`);
}
