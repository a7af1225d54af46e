// A real OpenLDAP slapd for the LDAP tests (Debian packages slapd and ldap-utils):
// a generated slapd.conf (mdb backend, schemas core, cosine, inetorgperson, nis,
// and a small authPassword schema, see below) in a temp dir, test users and
// groups loaded with slapadd before it starts, listening on one address and port
// only. It can be stopped and started again on the same port and data (outage
// tests); it is ended by PID and its dir removed by cleanup(), also from a
// process 'exit' hook. Fails loudly when slapd is not installed.
//
// Debian's slapd knows no authPassword attribute (RFC 3112; OpenLDAP builds it
// only with SLAPD_AUTHPASSWD, and its syntax then), so the config defines one with
// the RFC's OID and an IA5 string syntax: enough to store and read RFC 5803 SCRAM
// verifiers, which is all imnode does with them.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { generate } from 'selfsigned';

export const SLAPD = '/usr/sbin/slapd';
export const SLAPADD = '/usr/sbin/slapadd';
export const LDAPMODIFY = '/usr/bin/ldapmodify';
export const BASE_DN = 'dc=example,dc=test';
export const PEOPLE_DN = `ou=people,${BASE_DN}`;
export const GROUPS_DN = `ou=groups,${BASE_DN}`;
export const ADMIN_DN = `cn=admin,${BASE_DN}`;
export const ADMIN_PASSWORD = 'admin-secret';
export const SERVICE_DN = `cn=imnode,ou=services,${BASE_DN}`;
export const SERVICE_PASSWORD = 'service-secret';

export interface SlapdUser {
  uid: string;
  password: string;
  cn?: string;
  mail?: string;
  photo?: Buffer;
  /** RFC 5803 values, e.g. "SCRAM-SHA-1$4096:salt$storedKey:serverKey". */
  authPassword?: string[];
}

export interface SlapdGroup {
  cn: string;
  /** uids of the members. */
  members: string[];
}

export interface SlapdOptions {
  users?: SlapdUser[];
  groups?: SlapdGroup[];
  /** Address to listen on (default 127.0.0.1). */
  host?: string;
  /**
   * Also serve TLS: StartTLS on the ldap:// port and ldaps:// on another, with a
   * self-signed certificate for the name "localhost" (Slapd.caFile trusts it).
   */
  tls?: boolean;
}

export interface Slapd {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** With tls: the ldaps:// port, and the PEM file of the certificate (its own CA). */
  readonly tlsPort: number;
  readonly caFile: string;
  readonly dir: string;
  readonly pid: number;
  readonly running: boolean;
  /** Everything slapd wrote. */
  output(): string;
  /** SIGTERM and wait for the exit (the data stays). */
  stop(): Promise<void>;
  /** Starts again on the same address, port and data. */
  start(): Promise<void>;
  /**
   * SIGSTOP, resolving once every thread is stopped (the signal takes effect
   * asynchronously: a busy slapd may still answer for a few ms): a server that
   * accepts connections and never answers.
   */
  freeze(): Promise<void>;
  /** SIGCONT. */
  thaw(): void;
  /** Applies an LDIF change (ldapmodify as the admin). */
  modify(ldif: string): void;
  /** Stops slapd and removes its dir. Idempotent. */
  cleanup(): Promise<void>;
  /** The imnode flags that point at this directory with the service account. */
  imnodeArgs(): string[];
}

export function userDn(uid: string): string {
  return `uid=${uid},${PEOPLE_DN}`;
}

/** {SSHA} userPassword value (RFC 2307 style), as slappasswd makes it. */
export function ssha(password: string): string {
  const salt = randomBytes(8);
  const digest = createHash('sha1').update(password).update(salt).digest();
  return '{SSHA}' + Buffer.concat([digest, salt]).toString('base64');
}

const live = new Set<Slapd>();
let hooked = false;

function requireSlapd(): void {
  for (const bin of [SLAPD, SLAPADD, LDAPMODIFY]) {
    if (!existsSync(bin)) {
      throw new Error(`LDAP tests need ${bin}: install the Debian packages slapd and ldap-utils (apt-get install slapd ldap-utils)`);
    }
  }
}

/** A free TCP port on host (a small race with other processes is acceptable in tests). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function ldifValue(name: string, v: string | Buffer): string {
  // RFC 2849: base64 for binary data and for values that do not fit SAFE-STRING.
  if (Buffer.isBuffer(v) || !/^[\x01-\x09\x0b\x0c\x0e-\x1f\x21-\x39\x3b\x3d-\x7f][\x01-\x09\x0b\x0c\x0e-\x7f]*$/.test(v)) {
    return `${name}:: ${Buffer.from(v).toString('base64')}`;
  }
  return `${name}: ${v}`;
}

function entriesLdif(users: SlapdUser[], groups: SlapdGroup[]): string {
  const blocks: string[] = [
    `dn: ${BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example`,
    `dn: ou=people,${BASE_DN}\nobjectClass: organizationalUnit\nou: people`,
    `dn: ou=groups,${BASE_DN}\nobjectClass: organizationalUnit\nou: groups`,
    `dn: ou=services,${BASE_DN}\nobjectClass: organizationalUnit\nou: services`,
    `dn: ${SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: imnode\nuserPassword: ${ssha(SERVICE_PASSWORD)}`,
  ];
  for (const u of users) blocks.push(userLdif(u));
  for (const g of groups) {
    const lines = [`dn: cn=${g.cn},${GROUPS_DN}`, 'objectClass: groupOfNames', `cn: ${g.cn}`];
    // groupOfNames needs a member; an empty group names the service account.
    for (const m of g.members.length ? g.members.map(userDn) : [SERVICE_DN]) lines.push(`member: ${m}`);
    blocks.push(lines.join('\n'));
  }
  return blocks.join('\n\n') + '\n';
}

export function userLdif(u: SlapdUser): string {
  const lines = [`dn: ${userDn(u.uid)}`, 'objectClass: inetOrgPerson'];
  if (u.authPassword?.length) lines.push('objectClass: authPasswordObject');
  lines.push(ldifValue('uid', u.uid), ldifValue('cn', u.cn ?? u.uid), ldifValue('sn', u.uid), `userPassword: ${ssha(u.password)}`);
  if (u.mail) lines.push(ldifValue('mail', u.mail));
  if (u.photo) lines.push(ldifValue('jpegPhoto', u.photo));
  for (const a of u.authPassword ?? []) lines.push(ldifValue('authPassword', a));
  return lines.join('\n');
}

const AUTHPASSWORD_SCHEMA = `attributetype ( 1.3.6.1.4.1.4203.1.3.4 NAME 'authPassword'
  DESC 'RFC 3112 authentication password (test schema: IA5 syntax)'
  EQUALITY caseExactIA5Match SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 )
objectclass ( 1.3.6.1.4.1.4203.1.4.7 NAME 'authPasswordObject'
  DESC 'RFC 3112 authentication password mix in class' AUXILIARY MAY authPassword )
`;

function slapdConf(dir: string, tls: boolean): string {
  const tlsLines = tls ? `TLSCertificateFile ${dir}/cert.pem\nTLSCertificateKeyFile ${dir}/key.pem\n` : '';
  return `${tlsLines}include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
include ${dir}/authpassword.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile ${dir}/slapd.pid
argsfile ${dir}/slapd.args
sizelimit 5000
database mdb
suffix "${BASE_DN}"
rootdn "${ADMIN_DN}"
rootpw ${ADMIN_PASSWORD}
directory ${dir}/db
maxsize 67108864
dbnosync
access to attrs=userPassword
  by anonymous auth
  by * none
access to attrs=authPassword
  by dn.exact="${SERVICE_DN}" read
  by * none
access to *
  by * read
`;
}

function run(cmd: string, args: string[], input?: string): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input });
  if (r.status !== 0) throw new Error(`${path.basename(cmd)} ${args.join(' ')} failed (${r.status ?? r.signal}): ${(r.stderr || r.stdout || '').trim()}`);
}

async function waitListening(host: string, port: number, proc: ChildProcess, out: () => string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`slapd exited (${proc.exitCode ?? proc.signalCode}) before listening:\n${out()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host, port });
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`slapd did not listen on ${host}:${port} within ${timeoutMs} ms:\n${out()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startSlapd(opts: SlapdOptions = {}): Promise<Slapd> {
  requireSlapd();
  if (!hooked) {
    hooked = true;
    process.on('exit', () => {
      for (const s of live) {
        try { if (s.running) process.kill(s.pid, 'SIGKILL'); } catch { /* gone */ }
        rmSync(s.dir, { recursive: true, force: true });
      }
    });
  }
  const host = opts.host ?? '127.0.0.1';
  const dir = mkdtempSync(path.join(os.tmpdir(), 'imnode-slapd-'));
  mkdirSync(path.join(dir, 'db'));
  writeFileSync(path.join(dir, 'authpassword.schema'), AUTHPASSWORD_SCHEMA);
  const conf = path.join(dir, 'slapd.conf');
  writeFileSync(conf, slapdConf(dir, !!opts.tls));
  if (opts.tls) {
    const pems = await generate([{ name: 'commonName', value: 'localhost' }], {
      keyType: 'rsa', keySize: 2048, algorithm: 'sha256',
      notBeforeDate: new Date(Date.now() - 3_600_000), notAfterDate: new Date(Date.now() + 86_400_000),
      extensions: [
        { name: 'basicConstraints', cA: true },
        { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, keyCertSign: true },
        { name: 'extKeyUsage', serverAuth: true },
        { name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }] },
      ],
    });
    writeFileSync(path.join(dir, 'cert.pem'), pems.cert);
    writeFileSync(path.join(dir, 'key.pem'), pems.private, { mode: 0o600 });
  }
  const ldif = path.join(dir, 'data.ldif');
  writeFileSync(ldif, entriesLdif(opts.users ?? [], opts.groups ?? []));
  try {
    run(SLAPADD, ['-q', '-f', conf, '-l', ldif]);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const port = await freePort(host);
  const tlsPort = opts.tls ? await freePort(host) : 0;
  const url = `ldap://${host}:${port}`;
  const listen = [`ldap://${host}:${port}/`, ...(opts.tls ? [`ldaps://${host}:${tlsPort}/`] : [])].join(' ');
  let proc: ChildProcess | null = null;
  let out = '';
  let exited: Promise<void> = Promise.resolve();
  let cleaned = false;

  const slapd: Slapd = {
    url, host, port, tlsPort, dir,
    caFile: opts.tls ? path.join(dir, 'cert.pem') : '',
    get pid() { return proc?.pid ?? 0; },
    get running() { return !!proc && proc.exitCode === null && proc.signalCode === null; },
    output: () => out,
    async start() {
      if (slapd.running) throw new Error('slapd is running already');
      // -d 0: stay in the foreground (so the PID is slapd's own) without debug output.
      const p = spawn(SLAPD, ['-f', conf, '-h', listen, '-d', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
      proc = p;
      p.stdout!.on('data', (d) => (out += d));
      p.stderr!.on('data', (d) => (out += d));
      exited = new Promise((r) => p.on('exit', () => r()));
      await waitListening(host, port, p, () => out);
    },
    async stop() {
      if (!slapd.running) return;
      process.kill(proc!.pid!, 'SIGTERM');
      const t = setTimeout(() => { if (slapd.running) process.kill(proc!.pid!, 'SIGKILL'); }, 10_000);
      await exited;
      clearTimeout(t);
    },
    async freeze() {
      const pid = proc!.pid!;
      process.kill(pid, 'SIGSTOP');
      const deadline = Date.now() + 5000;
      const stopped = (): boolean => readdirSync(`/proc/${pid}/task`).every((t) => {
        try {
          const stat = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
          return /^[Tt]$/.test(stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3));
        } catch {
          return true; // the thread is gone
        }
      });
      while (!stopped()) {
        if (Date.now() > deadline) throw new Error(`slapd ${pid} did not stop within 5 s of SIGSTOP`);
        await new Promise((r) => setTimeout(r, 5));
      }
    },
    thaw() {
      if (slapd.running) process.kill(proc!.pid!, 'SIGCONT');
    },
    modify(change: string) {
      run(LDAPMODIFY, ['-x', '-H', url, '-D', ADMIN_DN, '-w', ADMIN_PASSWORD], change);
    },
    async cleanup() {
      if (cleaned) return;
      cleaned = true;
      if (slapd.running) {
        process.kill(proc!.pid!, 'SIGKILL');
        await exited;
      }
      live.delete(slapd);
      rmSync(dir, { recursive: true, force: true });
    },
    imnodeArgs() {
      return ['--ldap-url', url, '--ldap-base-dn', PEOPLE_DN, '--ldap-group-base-dn', GROUPS_DN,
        '--ldap-bind-dn', SERVICE_DN, '--ldap-bind-password', SERVICE_PASSWORD];
    },
  };
  live.add(slapd);
  try {
    await slapd.start();
  } catch (e) {
    await slapd.cleanup();
    throw e;
  }
  return slapd;
}
