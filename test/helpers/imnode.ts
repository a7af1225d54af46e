// Starts real imnode processes for end-to-end tests: ephemeral ports, a temp
// data dir, the process ended by PID when the test is done (or fails).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync, writeFileSync, cpSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';

export const ROOT = path.resolve(import.meta.dirname, '../..');
export const BIN = path.join(ROOT, 'bin/imnode.ts');
export const NODE = process.execPath;

export interface TestServer {
  proc: ChildProcess;
  pid: number;
  domain: string;
  port: number;
  tlsPort: number;
  dataDir: string;
  /** Everything the server wrote to stderr/stdout so far. */
  output(): string;
  /** SIGTERM and wait; resolves with the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait. */
  kill(): Promise<void>;
  certPem(): string;
}

const running = new Set<TestServer>();
process.on('exit', () => {
  for (const s of running) try { process.kill(s.pid, 'SIGKILL'); } catch { /* gone */ }
});

export function tempDir(prefix = 'imnode-test-'): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function runCli(args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(NODE, [BIN, ...args], { cwd: ROOT, env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
    p.stdin.end(opts.input ?? '');
  });
}

export async function addUser(dataDir: string, domain: string, name: string, password: string): Promise<void> {
  const r = await runCli(['user', 'add', name, '--data-dir', dataDir, '--domain', domain], { input: password + '\n' });
  if (r.code !== 0) throw new Error(`user add ${name} failed (${r.code}): ${r.stderr}`);
}

export interface StartOptions {
  args?: string[];
  dataDir?: string;
  domain?: string;
  env?: NodeJS.ProcessEnv;
  /** Accounts created with `imnode user add` before the server starts (the data dir is locked while it runs). */
  users?: Record<string, string>;
  /** A data dir to copy into the new one first (see prepareTemplate): accounts and certificate without the wait. */
  template?: string;
}

const templates = new Map<string, Promise<string>>();

/**
 * A data dir with these accounts and a TLS certificate, made once per test
 * process; startServer({ template }) copies it, which is much faster than
 * `imnode user add` per account and server, and every server started from it
 * has the same certificate. Removed when the process exits.
 */
export function prepareTemplate(users: Record<string, string>, domain = 'localhost'): Promise<string> {
  const key = JSON.stringify([domain, users]);
  let p = templates.get(key);
  if (!p) {
    p = (async () => {
      const dir = tempDir('imnode-template-');
      for (const [name, pw] of Object.entries(users)) await addUser(dir, domain, name, pw);
      // One start generates the self-signed certificate.
      const s = await startServer({ dataDir: dir, domain });
      await s.stop();
      process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
      return dir;
    })();
    templates.set(key, p);
  }
  return p;
}

export async function startServer(opts: StartOptions = {}): Promise<TestServer> {
  const dataDir = opts.dataDir ?? tempDir();
  const domain = opts.domain ?? 'localhost';
  if (opts.template) cpSync(opts.template, dataDir, { recursive: true });
  for (const [name, pw] of Object.entries(opts.users ?? {})) await addUser(dataDir, domain, name, pw);
  const args = [BIN, '--domain', domain, '--data-dir', dataDir, '--bind', '127.0.0.1', '--c2s-port', '0', '--c2s-tls-port', '0',
    '--auth-fail-delay', '50ms', '--log-level', 'debug', ...(opts.args ?? [])];
  const proc = spawn(NODE, args, { cwd: ROOT, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  const ready = await new Promise<RegExpExecArray>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('imnode did not start within 15 s:\n' + out)), 15_000);
    const check = () => {
      const m = /ready: domain \S+, c2s port (\d+)(?:, direct TLS port (\d+))?/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    };
    proc.stdout!.on('data', check);
    proc.stderr!.on('data', check);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`imnode exited with ${code} before it was ready:\n${out}`));
    });
  });
  const server: TestServer = {
    proc,
    pid: proc.pid!,
    domain,
    port: Number(ready[1]),
    tlsPort: Number(ready[2] ?? 0),
    dataDir,
    output: () => out,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const code = await exited;
      running.delete(server);
      if (!opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
      return code;
    },
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
      running.delete(server);
    },
    certPem() {
      return readFileSync(path.join(dataDir, 'tls', 'cert.pem'), 'utf8');
    },
  };
  running.add(server);
  return server;
}

/**
 * Makes this process trust the server's self-signed certificate, so clients
 * written by others verify it for real instead of skipping verification.
 */
export function trustServerCert(server: TestServer): void {
  const current = tls.getCACertificates('default');
  tls.setDefaultCACertificates([...current, server.certPem()]);
}

export function writeTemp(content: string): string {
  const f = path.join(tempDir('imnode-file-'), 'f');
  writeFileSync(f, content);
  return f;
}
