// Drives slixmpp (a Python client library written by others) through
// test/helpers/slixdriver.py: one Python process per client, JSON lines both
// ways. Generic on purpose: it knows nothing of the server it talks to, so
// multi-node tests can point clients at any node.
//
// slixmpp comes from the Debian package python3-slixmpp, installed for
// /usr/bin/python3 (the python3 first on PATH may be another interpreter).
// When it is missing, start() throws: tests fail, they never skip.
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { existsSync } from 'node:fs';
import { parseElement } from '../../src/xmpp/parser.ts';
import type { Element } from '../../src/xmpp/element.ts';
import type { TestServer } from './imnode.ts';

export const PYTHON = process.env.IMNODE_SLIX_PYTHON ?? '/usr/bin/python3';
export const DRIVER = path.join(import.meta.dirname, 'slixdriver.py');

/** One line from the driver: {ev: 'message', xml: '<message .../>', ...}. */
export interface SlixEvent {
  ev: string;
  id?: number | null;
  xml?: string;
  error?: string;
  [field: string]: unknown;
}

export interface SlixConnectArgs {
  jid: string;
  password: string;
  host?: string;
  port: number;
  direct_tls?: boolean;
  mechanism?: 'SCRAM-SHA-256' | 'SCRAM-SHA-1' | 'PLAIN' | null;
  /** PEM file of the certificate to trust; verified for real against the JID's domain. */
  cafile?: string;
  /** slixmpp plugins to register, e.g. ['xep_0030', 'xep_0280', 'xep_0198']. */
  plugins?: string[];
  /** slixmpp's own answer to subscription requests: true approves, false denies, null (default) leaves them to the test. */
  auto_authorize?: boolean | null;
  auto_subscribe?: boolean;
  [more: string]: unknown;
}

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of running) try { process.kill(p.pid!, 'SIGKILL'); } catch { /* gone */ }
});

interface Waiter { pred: (e: SlixEvent) => boolean; resolve: (e: SlixEvent) => void }

export class Slix {
  readonly name: string;
  readonly proc: ChildProcess;
  /** Events not yet taken by waitFor(). */
  readonly pending: SlixEvent[] = [];
  /** Every event, taken or not. */
  readonly history: SlixEvent[] = [];
  stderr = '';
  exited = false;
  #nextId = 1;
  #waiters: Waiter[] = [];
  #replies = new Map<number, (e: SlixEvent) => void>();
  #exit: Promise<void>;

  private constructor(name: string, proc: ChildProcess) {
    this.name = name;
    this.proc = proc;
    this.#exit = new Promise((r) => proc.on('exit', () => {
      this.exited = true;
      running.delete(proc);
      r();
    }));
    let buf = '';
    proc.stdout!.setEncoding('utf8');
    proc.stdout!.on('data', (d: string) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim()) this.#onLine(line);
      }
    });
    proc.stderr!.setEncoding('utf8');
    proc.stderr!.on('data', (d: string) => (this.stderr += d));
  }

  /** Starts a driver process and waits until it is ready. */
  static async start(opts: { name?: string; debug?: boolean } = {}): Promise<Slix> {
    if (!existsSync(PYTHON)) throw new Error(`${PYTHON} not found: slixmpp tests need Debian's python3 with python3-slixmpp`);
    const args = [DRIVER, ...(opts.debug ? ['--debug'] : [])];
    const proc = spawn(PYTHON, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, PYTHONUNBUFFERED: '1' } });
    running.add(proc);
    const s = new Slix(opts.name ?? 'slix', proc);
    try {
      const first = await s.waitFor((e) => e.ev === 'ready' || e.ev === 'fatal', 15_000, 'the driver to start');
      if (first.ev === 'fatal') throw new Error(`slixmpp driver: ${first.error}`);
    } catch (e) {
      await s.stop();
      throw new Error(`${(e as Error).message}\n${s.stderr}`);
    }
    return s;
  }

  #onLine(line: string): void {
    let e: SlixEvent;
    try {
      e = JSON.parse(line) as SlixEvent;
    } catch {
      e = { ev: 'garbage', line };
    }
    this.history.push(e);
    if ((e.ev === 'result' || e.ev === 'error') && typeof e.id === 'number' && this.#replies.has(e.id)) {
      const r = this.#replies.get(e.id)!;
      this.#replies.delete(e.id);
      r(e);
      return;
    }
    for (let i = 0; i < this.#waiters.length; i++) {
      if (this.#waiters[i].pred(e)) {
        this.#waiters.splice(i, 1)[0].resolve(e);
        return;
      }
    }
    this.pending.push(e);
  }

  /** Sends one command; resolves with its result event, rejects with its error. */
  command(op: string, args: Record<string, unknown> = {}, timeoutMs = 10_000): Promise<SlixEvent> {
    if (this.exited) return Promise.reject(new Error(`${this.name}: the driver has exited\n${this.stderr}`));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#replies.delete(id);
        reject(new Error(`${this.name}: no answer to ${op} within ${timeoutMs} ms\n${this.stderr.slice(-2000)}`));
      }, timeoutMs);
      this.#replies.set(id, (e) => {
        clearTimeout(timer);
        if (e.ev === 'error') reject(new Error(`${this.name}: ${op} failed: ${e.error}`));
        else resolve(e);
      });
      this.proc.stdin!.write(JSON.stringify({ ...args, op, id }) + '\n');
    });
  }

  /** The first event matching pred, already received or to come; it is taken from pending. */
  waitFor(pred: (e: SlixEvent) => boolean, timeoutMs = 5000, what = 'an event'): Promise<SlixEvent> {
    const i = this.pending.findIndex(pred);
    if (i !== -1) return Promise.resolve(this.pending.splice(i, 1)[0]);
    return new Promise((resolve, reject) => {
      const w: Waiter = { pred, resolve: (e) => { clearTimeout(timer); resolve(e); } };
      const timer = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        const recent = this.history.slice(-15).map((e) => JSON.stringify(e).slice(0, 300)).join('\n');
        reject(new Error(`${this.name}: timed out after ${timeoutMs} ms waiting for ${what}; last events:\n${recent}\n${this.stderr.slice(-1500)}`));
      }, timeoutMs);
      this.#waiters.push(w);
    });
  }

  /** Waits for an incoming stanza (any kind) whose parsed element matches pred. */
  async waitStanza(pred: (el: Element) => boolean, timeoutMs = 5000, what = 'a stanza'): Promise<Element> {
    const e = await this.waitFor((ev) => {
      if (ev.ev !== 'stanza' || typeof ev.xml !== 'string') return false;
      const el = tryElement(ev);
      return el !== null && pred(el);
    }, timeoutMs, what);
    return element(e);
  }

  /** Connects and waits for session_start; throws with what happened instead. */
  async connect(args: SlixConnectArgs, timeoutMs = 10_000): Promise<string> {
    await this.command('connect', args);
    const e = await this.waitFor((ev) => ['session_start', 'failed_auth', 'failed_all_auth', 'stream_error', 'disconnected'].includes(ev.ev),
      timeoutMs, 'session_start');
    if (e.ev !== 'session_start') throw new Error(`${this.name}: login failed: ${JSON.stringify(e)}\n${this.stderr.slice(-1500)}`);
    return String(e.jid);
  }

  /** Closes the stream politely and waits for the disconnection. */
  async disconnect(timeoutMs = 5000): Promise<void> {
    await this.command('disconnect', {}, timeoutMs);
  }

  /** Ends the driver: asks it to exit, then kills it by PID if it does not. */
  async stop(): Promise<void> {
    if (this.exited) return;
    try { this.proc.stdin!.write(JSON.stringify({ op: 'exit' }) + '\n'); } catch { /* pipe gone */ }
    const t = setTimeout(() => { try { process.kill(this.proc.pid!, 'SIGKILL'); } catch { /* gone */ } }, 2000);
    await this.#exit;
    clearTimeout(t);
  }
}

/** The stanza an event carries, parsed with the project's parser. */
export function element(e: SlixEvent): Element {
  if (typeof e.xml !== 'string') throw new Error(`event ${e.ev} carries no XML`);
  // slixmpp writes stream-level elements (<stream:features/>, <stream:error/>)
  // with their prefix but without its declaration, which lives on the stream header.
  const xml = e.xml.startsWith('<stream:') && !e.xml.includes('xmlns:stream=')
    ? e.xml.replace(/^<stream:([\w-]+)/, "<stream:$1 xmlns:stream='http://etherx.jabber.org/streams'")
    : e.xml;
  return parseElement(xml);
}

function tryElement(e: SlixEvent): Element | null {
  try {
    return element(e);
  } catch {
    return null;
  }
}

export interface SlixLogin {
  username: string;
  password: string;
  resource?: string;
  mechanism?: SlixConnectArgs['mechanism'];
  directTls?: boolean;
  plugins?: string[];
  name?: string;
  debug?: boolean;
  extra?: Record<string, unknown>;
}

/** Connection arguments for a test server (its certificate as the only trust anchor). */
export function slixArgs(server: TestServer, o: SlixLogin): SlixConnectArgs {
  const jid = `${o.username}@${server.domain}${o.resource ? '/' + o.resource : ''}`;
  return {
    jid, password: o.password, host: '127.0.0.1',
    port: o.directTls ? server.tlsPort : server.port,
    direct_tls: o.directTls ?? false,
    mechanism: o.mechanism ?? null,
    cafile: path.join(server.dataDir, 'tls', 'cert.pem'),
    plugins: o.plugins ?? [],
    ...o.extra,
  };
}

/** Starts a driver and logs it in to a test server; stops the driver if the login fails. */
export async function slixLogin(server: TestServer, o: SlixLogin): Promise<Slix> {
  const s = await Slix.start({ name: o.name ?? o.username, debug: o.debug });
  try {
    await s.connect(slixArgs(server, o));
  } catch (e) {
    await s.stop();
    throw e;
  }
  return s;
}

/** What slixmpp's xep_0045 join_muc_wait made of entering a room (slixdriver.py muc_join). */
export interface SlixMucJoin {
  /** The presence error's condition when the room refused entry. */
  error?: string;
  nick: string;
  codes: number[];
  role: string;
  affiliation: string;
  subject: string;
  occupants: string[];
  history: string[];
}

/** Enters a room with slixmpp's MUC plugin (register 'xep_0045' at login). */
export async function slixMucJoin(s: Slix, room: string, nick: string, opts: { password?: string; maxstanzas?: number; seconds?: number; timeout?: number } = {}): Promise<SlixMucJoin> {
  const r = await s.command('muc_join', { room, nick, ...opts }, ((opts.timeout ?? 10) + 5) * 1000);
  return r as unknown as SlixMucJoin;
}
