// The servers the bench compares, each started as the bench's own child process
// on a loopback port, with everything it writes in one temp dir, and stopped by
// PID (Run.stop in ../loadgen/env.ts): imnode, Prosody 0.12 (prosody.cfg.lua),
// ejabberd 23.01 (ejabberd.yml, run with `erl` directly: no ejabberdctl, no
// system service, no Erlang distribution, hence no epmd left behind), and the
// ceiling (../ceiling.ts).
//
// The same accounts u1..uN (password secret-N) exist on all of them with the
// same SCRAM-SHA-1 salt and iteration count: imnode's are imported first, and
// their stored keys are written into Prosody's data files and ejabberd's Mnesia
// table. So the load generator derives each client key once for all servers
// (PBKDF2 in set-up only), and no server pays for a different hash setting.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Store } from '../../src/store/db.ts';
import { EmbeddedDirectory } from '../../src/store/directory.ts';
import type { ScramCredential } from '../../src/xmpp/scram.ts';
import { NODE, ROOT } from '../../test/helpers/imnode.ts';
import { DOMAIN, account, pool, startBenchServer, trackProcess, type BenchServer } from '../loadgen/env.ts';
import { sleep } from '../loadgen/measure.ts';
import type { ScramKeyCache } from '../loadgen/scram.ts';

export const SERVER_KINDS = ['imnode', 'prosody', 'ejabberd', 'ceiling'] as const;
export type ServerKind = (typeof SERVER_KINDS)[number];

const HERE = import.meta.dirname;
const PROSODY = '/usr/bin/prosody';
const ERL = '/usr/bin/erl';
const EJABBERD_LIBS = '/usr/lib/x86_64-linux-gnu';

/** What `kind` needs on this machine, or null when it is there. */
export function missing(kind: ServerKind): string | null {
  if (kind === 'prosody' && !existsSync(PROSODY)) return `${PROSODY} not found (Debian package prosody)`;
  if (kind === 'ejabberd' && (!existsSync(ERL) || !existsSync(path.join(EJABBERD_LIBS, 'ejabberd-23.01')))) {
    return `${ERL} or ${EJABBERD_LIBS}/ejabberd-23.01 not found (Debian package ejabberd)`;
  }
  return null;
}

/** Version strings for the report. */
export function versionOf(kind: ServerKind): string {
  try {
    if (kind === 'prosody') return execFileSync('dpkg-query', ['-W', '-f', '${Version}', 'prosody'], { encoding: 'utf8' }).trim();
    if (kind === 'ejabberd') return execFileSync('dpkg-query', ['-W', '-f', '${Version}', 'ejabberd'], { encoding: 'utf8' }).trim();
  } catch { /* not a Debian system: no version */ }
  return kind === 'imnode' ? JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version : '';
}

/**
 * The accounts and certificate every server of one bench run uses. `dataDir`
 * is imnode's data dir with the accounts already imported and no server run on
 * it yet (the store is opened here).
 */
export class ServerSet {
  readonly root: string;
  readonly imnodeDir: string;
  readonly cert: string;
  readonly key: string;
  accounts = 0;
  /** Extra arguments for node running imnode (e.g. --cpu-prof). */
  imnodeNodeArgs: string[] = [];

  constructor(root: string, imnodeDir: string) {
    this.root = root;
    this.imnodeDir = imnodeDir;
    this.cert = path.join(root, 'cert.pem');
    this.key = path.join(root, 'key.pem');
  }

  /**
   * Reads the SCRAM-SHA-1 credentials of u1..u<count> from imnode's store,
   * derives the client keys from them (the cache is shared by every server) and
   * writes them for Prosody and ejabberd; makes the self-signed certificate.
   */
  async prepare(count: number, keys: ScramKeyCache, kinds: ServerKind[]): Promise<void> {
    this.accounts = count;
    // EC P-256: what current deployments use; the same certificate for every server.
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', this.key, '-out', this.cert, '-days', '30', '-subj', `/CN=${DOMAIN}`,
      '-addext', `subjectAltName=DNS:${DOMAIN},DNS:conference.${DOMAIN}`], { stdio: 'pipe' });
    writeFileSync(path.join(this.root, 'all.pem'), readFileSync(this.key, 'utf8') + readFileSync(this.cert, 'utf8'));
    const creds = await readCredentials(this.imnodeDir, count);
    await pool(count, 8, async (i) => {
      const c = creds[i];
      await keys.get(account(i + 1).username, account(i + 1).password, c.salt, c.iterations);
    });
    if (kinds.includes('prosody')) writeProsodyAccounts(path.join(this.root, 'prosody', 'data'), creds);
    if (kinds.includes('ejabberd')) writeEjabberdAccounts(path.join(this.root, 'ejabberd', 'accounts.terms'), creds);
  }

  async start(kind: ServerKind): Promise<BenchServer> {
    switch (kind) {
      case 'imnode': return startBenchServer(this.imnodeDir, ['--cert', this.cert, '--key', this.key], this.imnodeNodeArgs);
      case 'prosody': return this.#prosody();
      case 'ejabberd': return this.#ejabberd();
      case 'ceiling': return this.#ceiling();
    }
  }

  async #prosody(): Promise<BenchServer> {
    const dir = path.join(this.root, 'prosody');
    mkdirSync(path.join(dir, 'certs'), { recursive: true });
    const port = await freePort();
    const cfg = path.join(dir, 'prosody.cfg.lua');
    writeFileSync(cfg, fill(readFileSync(path.join(HERE, 'prosody.cfg.lua'), 'utf8'), { DIR: dir, PORT: String(port), CERT: this.cert, KEY: this.key, DOMAIN }));
    return launch('prosody', PROSODY, ['--config', cfg], { cwd: dir, env: process.env }, port, null, path.join(dir, 'prosody.log'));
  }

  async #ejabberd(): Promise<BenchServer> {
    const dir = path.join(this.root, 'ejabberd');
    const spool = path.join(dir, 'spool');
    mkdirSync(spool, { recursive: true });
    mkdirSync(path.join(dir, 'logs'), { recursive: true });
    const port = await freePort();
    const cfg = path.join(dir, 'ejabberd.yml');
    writeFileSync(cfg, fill(readFileSync(path.join(HERE, 'ejabberd.yml'), 'utf8'), { PEM: path.join(this.root, 'all.pem'), PORT: String(port), DOMAIN }));
    const terms = path.join(dir, 'accounts.terms');
    // Runs after `-s ejabberd` has started the application: the passwd records
    // (ejabberd_auth.hrl, scram.hrl: base64 strings as imnode stores them) go
    // straight into Mnesia, then a line tells the bench the accounts are there.
    const evalCode = `{ok, Ts} = file:consult("${terms}"), lists:foreach(fun(T) -> mnesia:dirty_write(T) end, Ts), ` +
      'io:format("imnode-bench: ~b accounts~n", [length(Ts)]).';
    const env = {
      ...process.env, EJABBERD_CONFIG_PATH: cfg, EJABBERD_LOG_PATH: path.join(dir, 'logs', 'ejabberd.log'),
      ERL_LIBS: EJABBERD_LIBS, ERL_CRASH_DUMP: path.join(dir, 'logs', 'erl_crash.dump'), ERL_CRASH_DUMP_BYTES: '0',
      ERL_MAX_PORTS: '65536',
    };
    // As ejabberdctl starts it (+K true +P 250000), without -sname: a node with no distribution.
    const args = ['+K', 'true', '+P', '250000', '-noinput', '-noshell', '-mnesia', 'dir', `"${spool}"`, '-s', 'ejabberd', '-eval', evalCode];
    return launch('ejabberd', ERL, args, { cwd: spool, env }, port, new RegExp(`imnode-bench: ${this.accounts} accounts`), path.join(dir, 'logs', 'error.log'));
  }

  async #ceiling(): Promise<BenchServer> {
    const port = await freePort();
    return launch('ceiling', NODE, [path.join(HERE, '..', 'ceiling.ts'), '--port', String(port), '--domain', DOMAIN],
      { cwd: ROOT, env: process.env }, port, /ceiling: listening/, null);
  }
}

function fill(template: string, values: Record<string, string>): string {
  return template.replace(/\{\{(\w+)\}\}/g, (_, k: string) => {
    if (!(k in values)) throw new Error(`no value for {{${k}}}`);
    return values[k];
  });
}

async function readCredentials(dataDir: string, count: number): Promise<ScramCredential[]> {
  const store = await Store.open(path.join(dataDir, 'db'));
  try {
    const dir = new EmbeddedDirectory(store);
    const out: ScramCredential[] = [];
    for (let i = 1; i <= count; i++) {
      const c = (await dir.getCredentials(account(i).username))?.['SHA-1'];
      if (!c) throw new Error(`no SCRAM-SHA-1 credentials for u${i} in ${dataDir}`);
      out.push(c);
    }
    return out;
  } finally {
    await store.close();
  }
}

/** A Lua string literal with every byte escaped (the salt is raw bytes in Prosody's files). */
function luaBytes(b: Buffer): string {
  let s = '"';
  for (const x of b) s += `\\${x}`;
  return s + '"';
}

/** mod_auth_internal_hashed's records (data/<host>/accounts/<user>.dat), as prosodyctl register writes them. */
function writeProsodyAccounts(dataDir: string, creds: ScramCredential[]): void {
  // Prosody encodes the host name in the path; 'localhost' stays as it is.
  const dir = path.join(dataDir, DOMAIN, 'accounts');
  mkdirSync(dir, { recursive: true });
  creds.forEach((c, i) => {
    const hex = (b64: string) => Buffer.from(b64, 'base64').toString('hex');
    writeFileSync(path.join(dir, `${account(i + 1).username}.dat`), 'return {\n' +
      `\t["salt"] = ${luaBytes(Buffer.from(c.salt, 'base64'))};\n\t["iteration_count"] = ${c.iterations};\n` +
      `\t["stored_key"] = "${hex(c.storedKey)}";\n\t["server_key"] = "${hex(c.serverKey)}";\n};\n`);
  });
}

/** #passwd{us, password = #scram{storedkey, serverkey, salt, hash, iterationcount}} terms for file:consult/1. */
function writeEjabberdAccounts(file: string, creds: ScramCredential[]): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, creds.map((c, i) =>
    `{passwd, {<<"${account(i + 1).username}">>, <<"${DOMAIN}">>}, {scram, <<"${c.storedKey}">>, <<"${c.serverKey}">>, <<"${c.salt}">>, sha, ${c.iterations}}}.\n`).join(''));
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.on('connect', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

/**
 * Spawns a server and waits (at most 60 s) until it accepts connections on
 * `port` and, if given, has printed `readyLine`. `logFile`: where it writes its
 * errors (its complaints are read from there as well as from its output).
 */
async function launch(
  name: string, cmd: string, args: string[], o: { cwd: string; env: NodeJS.ProcessEnv },
  port: number, readyLine: RegExp | null, logFile: string | null,
): Promise<BenchServer> {
  const proc = spawn(cmd, args, { cwd: o.cwd, env: o.env, stdio: ['ignore', 'pipe', 'pipe'] });
  trackProcess(proc);
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<void>((r) => proc.on('exit', () => r()));
  // Prosody prints a banner about optional Lua libraries on stdout: its log file says what went wrong.
  const output = (): string => {
    if (!logFile) return out;
    try { return readFileSync(logFile, 'utf8'); } catch { return ''; }
  };
  const limit = Date.now() + 60_000;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${name} exited (${proc.exitCode ?? proc.signalCode}) before it listened:\n${(out + output()).slice(-3000)}`);
    if (Date.now() > limit) {
      proc.kill('SIGKILL');
      throw new Error(`${name} did not listen on ${port} within 60 s:\n${(out + output()).slice(-3000)}`);
    }
    if ((!readyLine || readyLine.test(out)) && await accepts(port)) break;
    await sleep(50);
  }
  return { proc, pid: proc.pid!, port, domain: DOMAIN, output, exited };
}
