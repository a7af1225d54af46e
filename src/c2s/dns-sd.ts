// Zero-config client discovery on the LAN: DNS-Based Service Discovery (RFC 6763)
// over Multicast DNS (RFC 6762), so that a client given only a JID finds a node.
//
// Implemented:
// - RFC 6763 §4.1, §5, §6: the service instance <instance>._xmpp-client._tcp.local
//   (and _xmpps-client._tcp for direct TLS, XEP-0368 §3) with its PTR, SRV and TXT
//   records; the TXT record carries the XMPP domain (domain=...), since the
//   instance name is the node's, not the domain's. §9: the _services._dns-sd._udp
//   enumeration PTR. §12.1-§12.2: the SRV target's A/AAAA as additional records.
// - For a --domain ending in .local (RFC 6762 §3), answers for the domain itself:
//   A/AAAA <domain> (this node's addresses) and SRV _xmpp-client._tcp.<domain> (and
//   _xmpps-client), i.e. what an RFC 6120 §3.2.1 client looks up for the JID. Every
//   node answers these, so they are shared records (§10.2: no cache-flush bit);
//   the records naming this node alone are unique (cache-flush set).
// - RFC 6762 §6: answers to multicast queries by multicast, to QU questions
//   (§5.4) and to legacy unicast resolvers (§6.7: source port not 5353; the reply
//   repeats the query id and question, TTLs at most 10 s) by unicast. §6.2:
//   addresses on the querier's subnet first. §8.3: two unsolicited announcements
//   at start; §10.1: goodbye (TTL 0) at stop. TTLs as §10 recommends: 120 s for
//   host records, 4500 s for the others.
// Not implemented: probing (§8.1; a duplicate server id is refused by the pool
// anyway), known-answer suppression (§7.1), mDNS over IPv6 (AAAA records are
// answered over IPv4).
import { hostname, networkInterfaces } from 'node:os';
import { isIPv4 } from 'node:net';
import type { RemoteInfo } from 'node:dgram';
import type { Answer, Question } from 'dns-packet';
import type { MulticastDNS, QueryPacket } from 'multicast-dns';
import type { Logger } from '../admin/log.ts';
import type { Config, OptionSpec } from '../admin/options.ts';

const CLIENT = '_xmpp-client._tcp';
const CLIENT_TLS = '_xmpps-client._tcp';
const SERVICES = '_services._dns-sd._udp.local';
const HOST_TTL = 120;
const OTHER_TTL = 4500;
const LEGACY_TTL = 10;
const MDNS_PORT = 5353;

/** Declared with the core options (core-options.ts), so --help and the README know it. */
export const DNS_SD_OPTIONS: OptionSpec[] = [
  { name: 'dns-sd', type: 'bool', group: 'Pool',
    description: 'Announce the client service on the LAN with DNS-SD over mDNS (_xmpp-client._tcp and _xmpps-client._tcp, RFC 6763) and, when --domain ends in .local, answer mDNS queries for the domain with this node\'s addresses, so that a client given only the JID finds a node. On by default with --autodiscover; --no-dns-sd turns it off, --dns-sd turns it on without a pool.' },
];

/** --dns-sd when given, else on exactly when the node autodiscovers its pool. */
export function dnsSdEnabled(config: Config): boolean {
  const v = config['dns-sd'];
  return typeof v === 'boolean' ? v : config.autodiscover === true;
}

export interface DnsSdOptions {
  /** The XMPP domain served. */
  domain: string;
  /** This node's name among the pool's (its server id): the DNS-SD instance name. */
  instance: string;
  /** The c2s ports; tls 0 or absent when there is no direct TLS listener. */
  ports: { c2s: number; tls?: number };
  /** The address the client listeners are bound to: only addresses that accept clients are announced. */
  bind?: string;
  log: Logger;
  /** For tests: the UDP port (default 5353) and the interface address to use. */
  port?: number;
  interface?: string;
}

interface Addr { address: string; family: 4 | 6; netmask: string }

/** A DNS label from any server id: letters, digits and hyphens, at most 63 bytes. */
export function hostLabel(id: string): string {
  const s = id.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 56);
  return `imnode-${s || 'node'}`;
}

function sameName(a: string, b: string): boolean {
  return a.toLowerCase() === b.toLowerCase();
}

function ipv4ToInt(a: string): number {
  return a.split('.').reduce((n, o) => (n << 8) + Number(o), 0) >>> 0;
}

/** The class of a question: dns-packet 5 leaves the QU bit (RFC 6762 §5.4) in an UNKNOWN_<n> string. */
function questionClass(q: Question): { ok: boolean; unicast: boolean } {
  const c = String(q.class ?? 'IN');
  if (c === 'IN' || c === 'ANY') return { ok: true, unicast: false };
  const m = /^UNKNOWN_(\d+)$/.exec(c);
  if (!m) return { ok: false, unicast: false };
  const n = Number(m[1]);
  const cls = n & 0x7fff;
  return { ok: cls === 1 || cls === 255, unicast: (n & 0x8000) !== 0 };
}

/** The records this module makes (dns-packet's Answer is a wide union). */
type Rec =
  | { name: string; type: 'A' | 'AAAA' | 'PTR'; ttl: number; flush?: boolean; data: string }
  | { name: string; type: 'TXT'; ttl: number; flush?: boolean; data: string[] }
  | { name: string; type: 'SRV'; ttl: number; flush?: boolean; data: { priority: number; weight: number; port: number; target: string } };

/** A question as this module reads it ('ANY' is a valid qtype that dns-packet's types omit). */
interface Ask { name: string; type: string }

function noFlush(a: Rec): Rec {
  return { ...a, flush: false };
}

export class DnsSd {
  readonly #o: DnsSdOptions;
  readonly #host: string;
  readonly #domainIsLocal: boolean;
  #mdns: MulticastDNS | null = null;
  #timers = new Set<NodeJS.Timeout>();
  /** Queries answered so far (for debugging). */
  answered = 0;

  constructor(o: DnsSdOptions) {
    this.#o = o;
    this.#host = `${hostLabel(o.instance)}.local`;
    this.#domainIsLocal = /\.local$/i.test(o.domain);
  }

  /** The service instance names announced (for the log and tests). */
  get instances(): string[] {
    return this.#services().map((s) => `${this.#instanceLabel()}.${s.type}.local`);
  }

  /** The host name the SRV records point to. */
  get host(): string {
    return this.#host;
  }

  async start(): Promise<void> {
    // Loaded here: a node without DNS-SD (and every CLI command) never pays for it.
    const { default: makeMdns } = await import('multicast-dns');
    const mdns = makeMdns({ port: this.#o.port ?? MDNS_PORT, interface: this.#o.interface, reuseAddr: true });
    try {
      await new Promise<void>((resolve, reject) => {
        mdns.once('ready', resolve);
        mdns.once('error', reject);
      });
    } catch (e) {
      mdns.destroy();
      throw e;
    }
    mdns.on('error', (e: Error) => this.#o.log.warn('mDNS:', e.message));
    mdns.on('warning', (e: Error) => this.#o.log.debug('mDNS warning:', e.message));
    mdns.on('query', (q: QueryPacket, rinfo: RemoteInfo) => this.#onQuery(q, rinfo));
    this.#mdns = mdns;
    // RFC 6762 §8.3: announce twice, one second apart.
    this.#announce();
    const t = setTimeout(() => { this.#timers.delete(t); this.#announce(); }, 1000);
    this.#timers.add(t);
    this.#o.log.info(`DNS-SD: announcing ${this.instances.join(', ')} on ${this.#host}` +
      (this.#domainIsLocal ? `; answering mDNS for ${this.#o.domain}` : ''));
    // Interfaces may still come up (DHCP): answers follow them, so this is a warning only.
    if (!this.#addresses(null).length) this.#o.log.warn(`DNS-SD: no LAN address to announce${this.#o.bind ? ` (--bind ${this.#o.bind})` : ''}: clients on the LAN will not reach this node`);
  }

  async stop(): Promise<void> {
    const mdns = this.#mdns;
    if (!mdns) return;
    this.#mdns = null;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    // RFC 6762 §10.1: a goodbye, so that caches drop this node at once.
    await new Promise<void>((r) => mdns.respond({ answers: this.#records(null, 0) as Answer[] }, () => r()));
    await new Promise<void>((r) => mdns.destroy(() => r()));
  }

  #instanceLabel(): string {
    // RFC 6763 §4.1.1: any UTF-8 up to 63 bytes; dots are legal but confuse naive parsers.
    return this.#o.instance.replace(/\./g, '-').slice(0, 63);
  }

  #services(): { type: string; port: number }[] {
    const out = [{ type: CLIENT, port: this.#o.ports.c2s }];
    if (this.#o.ports.tls) out.push({ type: CLIENT_TLS, port: this.#o.ports.tls });
    return out;
  }

  /** This node's addresses that clients can reach; those on the querier's subnet first. */
  #addresses(near: string | null): Addr[] {
    const bind = this.#o.bind;
    const all: Addr[] = [];
    for (const list of Object.values(networkInterfaces())) {
      for (const i of list ?? []) {
        if (i.internal) continue;
        // fe80:: addresses need a zone to be usable; a LAN client gets the others or IPv4.
        if (i.family === 'IPv6' && i.address.toLowerCase().startsWith('fe80:')) continue;
        const family = i.family === 'IPv4' ? 4 : 6;
        // Listening on one address: announce only that one.
        if (bind && bind !== '::' && bind !== '0.0.0.0' && i.address !== bind) continue;
        if (bind === '0.0.0.0' && family === 6) continue;
        all.push({ address: i.address, family, netmask: i.netmask });
      }
    }
    if (!near || !isIPv4(near)) return all;
    const n = ipv4ToInt(near);
    const onLink = all.filter((a) => a.family === 4 && ((ipv4ToInt(a.address) ^ n) & ipv4ToInt(a.netmask)) === 0);
    // RFC 6762 §6.2: only the addresses of the interface the query came in on, when known.
    return onLink.length ? onLink : all;
  }

  #addressRecords(name: string, near: string | null, ttl: number, flush: boolean): Rec[] {
    return this.#addresses(near).map((a) => ({
      name, type: a.family === 4 ? 'A' as const : 'AAAA' as const, ttl, flush, data: a.address,
    }));
  }

  /** Every record this node answers for, or those matching one question (name, type). */
  #records(q: Ask | null, ttlOverride: number | null, near: string | null = null): Rec[] {
    const ttl = (t: number): number => ttlOverride ?? t;
    const out: Rec[] = [];
    const want = (name: string, type: string): boolean =>
      q === null || (sameName(q.name, name) && (q.type === type || q.type === 'ANY'));
    const instance = this.#instanceLabel();
    for (const s of this.#services()) {
      const service = `${s.type}.local`;
      const full = `${instance}.${service}`;
      if (want(SERVICES, 'PTR')) out.push({ name: SERVICES, type: 'PTR', ttl: ttl(OTHER_TTL), data: service });
      if (want(service, 'PTR')) out.push({ name: service, type: 'PTR', ttl: ttl(OTHER_TTL), data: full });
      if (want(full, 'SRV')) out.push({ name: full, type: 'SRV', ttl: ttl(HOST_TTL), flush: true, data: { priority: 0, weight: 0, port: s.port, target: this.#host } });
      if (want(full, 'TXT')) out.push({ name: full, type: 'TXT', ttl: ttl(OTHER_TTL), flush: true, data: [`domain=${this.#o.domain}`, `port=${s.port}`] });
      if (this.#domainIsLocal) {
        const srv = `${s.type}.${this.#o.domain}`;
        if (want(srv, 'SRV')) out.push({ name: srv, type: 'SRV', ttl: ttl(HOST_TTL), data: { priority: 0, weight: 0, port: s.port, target: this.#host } });
      }
    }
    if (q === null || (sameName(q.name, this.#host) && ['A', 'AAAA', 'ANY'].includes(q.type))) {
      out.push(...this.#addressRecords(this.#host, near, ttl(HOST_TTL), true).filter((a) => q === null || q.type === 'ANY' || q.type === a.type));
    }
    if (this.#domainIsLocal && (q === null || (sameName(q.name, this.#o.domain) && ['A', 'AAAA', 'ANY'].includes(q.type)))) {
      out.push(...this.#addressRecords(this.#o.domain, near, ttl(HOST_TTL), false).filter((a) => q === null || q.type === 'ANY' || q.type === a.type));
    }
    // The enumeration PTR is the same for both services.
    return out.filter((a, i) => a.type !== 'PTR' || out.findIndex((b) => b.type === 'PTR' && b.name === a.name && b.data === a.data) === i);
  }

  /** RFC 6763 §12: what a client will ask next, sent along. */
  #additionals(answers: Rec[], ttlOverride: number | null, near: string): Rec[] {
    const extra: Rec[] = [];
    const has = (a: Rec): boolean => [...answers, ...extra].some((b) => b.name === a.name && b.type === a.type && JSON.stringify(b.data) === JSON.stringify(a.data));
    const add = (list: Rec[]): void => { for (const a of list) if (!has(a)) extra.push(a); };
    for (const a of answers) {
      if (a.type === 'PTR' && a.name !== SERVICES) {
        add(this.#records({ name: a.data, type: 'SRV' }, ttlOverride, near));
        add(this.#records({ name: a.data, type: 'TXT' }, ttlOverride, near));
      }
      if (a.type === 'PTR' || a.type === 'SRV') add(this.#records({ name: this.#host, type: 'ANY' }, ttlOverride, near));
    }
    return extra;
  }

  #onQuery(query: QueryPacket, rinfo: RemoteInfo): void {
    const mdns = this.#mdns;
    if (!mdns) return;
    const legacy = rinfo.port !== MDNS_PORT;
    const ttl = legacy ? LEGACY_TTL : null;
    const answers: Rec[] = [];
    let unicast = legacy;
    const answered: Question[] = [];
    for (const q of query.questions) {
      const cls = questionClass(q);
      if (!cls.ok) continue;
      const found = this.#records({ name: q.name, type: String(q.type) }, ttl, rinfo.address);
      if (!found.length) continue;
      answered.push({ name: q.name, type: q.type, class: 'IN' });
      if (cls.unicast) unicast = true;
      answers.push(...found);
    }
    if (!answers.length) return;
    this.answered++;
    const additionals = this.#additionals(answers, ttl, rinfo.address);
    const reply = legacy
      // §6.7: a plain DNS resolver matches the reply by id and question,
      // and a cache-flush bit would confuse it.
      ? { id: query.id, questions: answered, answers: answers.map(noFlush) as Answer[], additionals: additionals.map(noFlush) as Answer[] }
      : { answers: answers as Answer[], additionals: additionals as Answer[] };
    const cb = (e?: Error | null): void => { if (e) this.#o.log.debug('mDNS reply failed:', e.message); };
    if (unicast) mdns.respond(reply, { address: rinfo.address, port: rinfo.port }, cb);
    else mdns.respond(reply, cb);
  }

  #announce(): void {
    this.#mdns?.respond({ answers: this.#records(null, null) as Answer[] }, (e?: Error | null) => {
      if (e) this.#o.log.debug('mDNS announcement failed:', e.message);
    });
  }
}

/** The instance name a node without a pool announces. */
export function defaultInstance(): string {
  return hostname() || 'imnode';
}
