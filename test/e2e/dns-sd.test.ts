// Clients find the pool with no DNS set up (src/c2s/dns-sd.ts; RFC 6763 over RFC
// 6762): four nodes serving pool.local autodiscover each other in network
// namespaces (one with --no-dns-sd, which must stay silent); a resolver in a fifth
// namespace, given only alice@pool.local, looks
// up _xmpp-client._tcp.pool.local (SRV) and pool.local (A) over mDNS, browses
// _xmpp-client._tcp.local (PTR, SRV, TXT), opens an XMPP stream to what it found,
// and alice then logs in there with slixmpp. Also: a legacy unicast resolver
// (RFC 6762 §6.7) and the goodbye of a stopping node (§10.1).
// The resolver is this file run inside the namespace as `dns-sd.test.ts resolve|legacy|watch ...`,
// with multicast-dns as the client library.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import makeMdns from 'multicast-dns';
import packet from 'dns-packet';
import { PoolLab } from '../helpers/pool-lab.ts';
import { Slix } from '../helpers/slix.ts';
import { dnsSdEnabled, hostLabel } from '../../src/c2s/dns-sd.ts';

const MODE = process.argv[2];
if (MODE === 'resolve' || MODE === 'legacy' || MODE === 'watch') {
  await resolverMain(MODE, process.argv.slice(3));
} else {
  tests();
}

// ---- the resolver (runs in its own namespace) -------------------------------------

interface Rec { name: string; type: string; ttl: number; data: unknown; flush?: boolean; from: string }

async function resolverMain(mode: string, args: string[]): Promise<void> {
  if (mode === 'legacy') {
    // A plain DNS client (like `dig @224.0.0.251 -p 5353`): an ephemeral source port.
    const [name, type] = args;
    const sock = dgram.createSocket('udp4');
    const replies: unknown[] = [];
    sock.on('message', (msg, rinfo) => {
      const p = packet.decode(msg);
      replies.push({ id: p.id, from: rinfo.address, questions: p.questions, answers: p.answers, additionals: p.additionals });
    });
    await new Promise<void>((r) => sock.bind(0, r));
    sock.send(packet.encode({ type: 'query', id: 4242, questions: [{ name, type: type as 'A' }] }), 5353, '224.0.0.251');
    await new Promise((r) => setTimeout(r, 1500));
    sock.close();
    process.stdout.write(JSON.stringify(replies) + '\n');
    return;
  }
  const mdns = makeMdns({ reuseAddr: true });
  await new Promise<void>((r) => mdns.once('ready', () => r()));
  const seen: Rec[] = [];
  mdns.on('response', (res, rinfo) => {
    for (const a of [...res.answers, ...res.additionals]) {
      const rec = { name: a.name, type: a.type, ttl: (a as { ttl?: number }).ttl ?? 0, data: (a as { data?: unknown }).data, flush: (a as { flush?: boolean }).flush, from: rinfo.address };
      seen.push(rec);
      if (mode === 'watch' && rec.ttl === 0) process.stdout.write(JSON.stringify(rec) + '\n');
    }
  });
  if (mode === 'watch') {
    process.stdout.write('{"watching":true}\n');
    await new Promise((r) => setTimeout(r, Number(args[0]) * 1000));
    mdns.destroy();
    return;
  }
  // resolve <jid>: what a client does with nothing but the JID.
  const domain = args[0].split('@')[1];
  const ask = (): void => mdns.query({ questions: [
    { name: `_xmpp-client._tcp.${domain}`, type: 'SRV' },
    { name: domain, type: 'A' },
    { name: '_xmpp-client._tcp.local', type: 'PTR' },
  ] });
  ask();
  await new Promise((r) => setTimeout(r, 1000));
  ask();
  await new Promise((r) => setTimeout(r, 1500));
  const srv = seen.filter((r) => r.type === 'SRV' && r.name === `_xmpp-client._tcp.${domain}`)
    .map((r) => ({ ...(r.data as { target: string; port: number }), from: r.from }));
  const addrOf = (host: string): string[] => [...new Set(seen.filter((r) => r.type === 'A' && r.name === host).map((r) => String(r.data)))];
  const domainA = addrOf(domain);
  const instances = [...new Set(seen.filter((r) => r.type === 'PTR' && r.name === '_xmpp-client._tcp.local').map((r) => String(r.data)))];
  const browse = instances.map((i) => ({
    instance: i,
    srv: seen.find((r) => r.type === 'SRV' && r.name === i)?.data,
    txt: (seen.find((r) => r.type === 'TXT' && r.name === i)?.data as Buffer[] | undefined)?.map((b) => Buffer.from(b).toString()),
  }));
  let connected: { address: string; port: number; features: string } | null = null;
  const first = srv[0];
  if (first) {
    const address = addrOf(first.target)[0];
    if (address) connected = { address, port: first.port, features: await streamFeatures(address, first.port, domain) };
  }
  mdns.destroy();
  process.stdout.write(JSON.stringify({ srv, targets: Object.fromEntries(srv.map((s) => [s.target, addrOf(s.target)])), domainA, browse, connected }) + '\n');
}

/** Opens an XMPP client stream (RFC 6120 §4.2) and returns the features the server offers. */
function streamFeatures(host: string, port: number, domain: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port }, () => {
      s.write(`<?xml version='1.0'?><stream:stream to='${domain}' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`);
    });
    let buf = '';
    const t = setTimeout(() => { s.destroy(); reject(new Error(`no stream features from ${host}:${port}: ${buf}`)); }, 5000);
    s.on('data', (d) => {
      buf += d.toString();
      const m = /<stream:features>[\s\S]*<\/stream:features>/.exec(buf);
      if (m) { clearTimeout(t); s.destroy(); resolve(m[0]); }
    });
    s.on('error', (e) => { clearTimeout(t); reject(e); });
  });
}

// ---- the tests (root namespace) ----------------------------------------------------

function tests(): void {
  const SELF = path.resolve(import.meta.filename);
  const DOMAIN = 'pool.local';

  test('dns-sd is on with --autodiscover unless --no-dns-sd, and --dns-sd turns it on alone', () => {
    assert.is(dnsSdEnabled({ autodiscover: true }), true);
    assert.is(dnsSdEnabled({ autodiscover: true, 'dns-sd': false }), false);
    assert.is(dnsSdEnabled({ autodiscover: false }), false);
    assert.is(dnsSdEnabled({ autodiscover: false, 'dns-sd': true }), true);
    assert.is(hostLabel('Node_1.example'), 'imnode-node-1-example');
  });

  test('a client given only alice@pool.local finds a node by mDNS and logs in there', async () => {
    // node4 is in the pool but with --no-dns-sd: it must not answer. The fifth
    // namespace is the client's; no node is started in it.
    const lab = await PoolLab.start({ nodes: [{}, {}, {}, { args: ['--no-dns-sd'] }, { start: false }], domain: DOMAIN, users: { alice: 'alice pw' } });
    const slixes: Slix[] = [];
    try {
      const nodes = lab.nodes.slice(0, 3);
      const client = lab.lab.hosts[4];
      await lab.waitMembers(lab.nodes.slice(0, 4), ['node1', 'node2', 'node3', 'node4'], 30_000);
      assert.not.match(lab.nodes[3].output(), /DNS-SD/, 'node4 runs without DNS-SD');
      const ips = nodes.map((n) => n.host.ip);
      const run = (args: string[]): string => lab.lab.exec(client, process.execPath, [SELF, ...args]);

      const found = JSON.parse(run(['resolve', `alice@${DOMAIN}`])) as {
        srv: { target: string; port: number; from: string }[]; targets: Record<string, string[]>; domainA: string[];
        browse: { instance: string; srv?: { port: number; target: string }; txt?: string[] }[];
        connected: { address: string; port: number; features: string } | null;
      };
      // SRV _xmpp-client._tcp.pool.local: every node answers for itself (node4 not: --no-dns-sd).
      assert.equal([...new Set(found.srv.map((s) => s.target))].sort(), ['imnode-node1.local', 'imnode-node2.local', 'imnode-node3.local'], JSON.stringify(found));
      for (const s of found.srv) {
        assert.is(s.port, 5222);
        const i = Number(/node(\d)/.exec(s.target)![1]) - 1;
        assert.equal(found.targets[s.target], [ips[i]], `${s.target} resolves to its node's address only`);
      }
      // A pool.local: the address of every node that announces.
      assert.equal([...found.domainA].sort(), [...ips].sort());
      // DNS-SD browsing: one instance per node, with the domain in TXT and both services.
      assert.equal(found.browse.map((b) => b.instance).sort(), ['node1', 'node2', 'node3'].map((n) => `${n}._xmpp-client._tcp.local`));
      for (const b of found.browse) {
        assert.ok(b.txt?.includes(`domain=${DOMAIN}`), JSON.stringify(b));
        assert.is(b.srv?.port, 5222);
      }
      // The stream it opened is an XMPP server's, offering STARTTLS.
      assert.ok(found.connected, 'connected to a node found by DNS-SD');
      assert.ok(ips.includes(found.connected!.address));
      assert.match(found.connected!.features, /urn:ietf:params:xml:ns:xmpp-tls/);

      // And a real client logs in at that address (certificate verified against pool.local).
      const alice = await Slix.start({ name: 'alice' });
      slixes.push(alice);
      const jid = await alice.connect({ jid: `alice@${DOMAIN}/lan`, password: 'alice pw', host: found.connected!.address, port: found.connected!.port,
        cafile: path.join(nodes[0].dataDir, 'tls', 'cert.pem') }, 20_000);
      assert.is(jid, `alice@${DOMAIN}/lan`);

      // A legacy unicast resolver gets a plain DNS answer: its id, its question, short TTLs, no cache-flush bit.
      const legacy = JSON.parse(run(['legacy', DOMAIN, 'A'])) as { id: number; questions: { name: string }[]; answers: { type: string; data: string; ttl: number; flush: boolean }[] }[];
      assert.ok(legacy.length >= 1, 'legacy unicast answered');
      for (const r of legacy) {
        assert.is(r.id, 4242);
        assert.is(r.questions[0]?.name, DOMAIN);
        for (const a of r.answers) {
          assert.ok(a.ttl <= 10, `ttl ${a.ttl}`);
          assert.is(a.flush, false);
          if (a.type === 'A') assert.ok(ips.includes(a.data));
        }
      }
      assert.equal([...new Set(legacy.flatMap((r) => r.answers.map((a) => a.data)))].sort(), [...ips].sort());

      // A node that stops says goodbye (TTL 0), and stops answering.
      const watcher = lab.lab.spawn(client, process.execPath, [SELF, 'watch', '8']);
      let watched = '';
      watcher.stdout!.on('data', (d: Buffer) => (watched += d.toString()));
      const watchDone = new Promise<void>((r) => watcher.on('exit', () => r()));
      for (let i = 0; i < 50 && !watched.includes('watching'); i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(watched.includes('watching'), 'the watcher started');
      assert.is(await nodes[2].stop(), 0);
      await watchDone;
      const byes = watched.trim().split('\n').slice(1).map((l) => JSON.parse(l) as { name: string; type: string; ttl: number });
      assert.ok(byes.some((b) => b.name === 'node3._xmpp-client._tcp.local' && b.type === 'SRV' && b.ttl === 0), `goodbye seen: ${watched}`);
      assert.ok(byes.some((b) => b.name === DOMAIN && b.type === 'A' && b.ttl === 0), 'goodbye for the domain address');
      const after = JSON.parse(run(['resolve', `alice@${DOMAIN}`])) as { domainA: string[] };
      assert.equal([...after.domainA].sort(), [ips[0], ips[1]].sort(), 'the stopped node no longer answers');

      // The system resolver path (nss-mdns via avahi) is checked only where it exists.
      const avahi = spawnSync('sh', ['-c', 'command -v avahi-daemon && grep -q mdns /etc/nsswitch.conf'], { encoding: 'utf8' });
      if (avahi.status !== 0) process.stdout.write('\n  (avahi-daemon / nss-mdns not installed here: `getent hosts pool.local` not checked)\n');
    } finally {
      for (const s of slixes) await s.stop();
      await lab.cleanup();
    }
    assert.equal(lab.leftovers(), { ns: [], links: [] });
  });

  test.run();
}
