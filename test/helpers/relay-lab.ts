// What the relay tests (test/e2e/pool-relay*.test.ts) share on top of
// test/helpers/subnets.ts: one pool domain and password across routed subnets,
// the nodes and clients made for it, one teardown that ends them all and checks
// that no namespace or link is left, and the waits on the pool's view of itself
// (members, connections from `pool status`).
import { C2S_PORT, createSubnets, leftovers, NodeDirs, SubnetNode, until, type Subnet, type SubnetSpec, type Subnets } from './subnets.ts';
import type { NetnsHost } from './netns.ts';
import { connect, xml, type TestClient, type XmlEl } from './xmppjs.ts';

export class RelayLab<U extends string = string> {
  readonly nets: Subnets;
  readonly domain: string;
  readonly password: string;
  readonly users: Record<U, string>;
  /** Every node made, in the order made. */
  readonly nodes: SubnetNode[] = [];
  /** Every client logged in, stopped at cleanup. */
  readonly clients: TestClient[] = [];
  readonly #dirs = new NodeDirs();
  #cleaned = false;

  private constructor(nets: Subnets, domain: string, password: string, users: Record<U, string>) {
    this.nets = nets;
    this.domain = domain;
    this.password = password;
    this.users = users;
  }

  /** Creates the subnets (fails loudly without root, or without nft for a NAT subnet). */
  static create<U extends string>(specs: SubnetSpec[], opts: { domain: string; password: string; users: Record<U, string> }): RelayLab<U> {
    return new RelayLab(createSubnets(specs), opts.domain, opts.password, opts.users);
  }

  subnet(name: string): Subnet {
    return this.nets.subnet(name);
  }

  /** A relay-only node (empty data dir); `args` come after `--relay-only` and the pool's domain and password. */
  async relayNode(subnet: Subnet, host: NetnsHost, serverId: string, args: string[]): Promise<SubnetNode> {
    const n = new SubnetNode(this.nets, subnet, host, serverId, await this.#dirs.make(null, this.domain),
      ['--relay-only', '--domain', this.domain, '--pool-password', this.password, ...args], true);
    this.nodes.push(n);
    return n;
  }

  /** A full node with the lab's accounts; `args` come after the pool's domain and password. */
  async fullNode(subnet: Subnet, host: NetnsHost, serverId: string, args: string[]): Promise<SubnetNode> {
    const n = new SubnetNode(this.nets, subnet, host, serverId, await this.#dirs.make(this.users, this.domain),
      ['--domain', this.domain, '--pool-password', this.password, ...args], false);
    this.nodes.push(n);
    return n;
  }

  /** Logs `user` in on a full node and sends initial presence. */
  async login(node: SubnetNode, user: U, resource: string): Promise<TestClient> {
    const c = await connect(node.server!, { username: user, password: this.users[user], resource });
    this.clients.push(c);
    await c.send(xml('presence'));
    return c;
  }

  /** Stops the clients, kills the nodes and closes their forwards, removes the subnets and the data dirs; throws if a namespace or link is left. */
  async cleanup(): Promise<void> {
    if (this.#cleaned) return;
    this.#cleaned = true;
    for (const c of this.clients.splice(0)) await c.stop().catch(() => undefined);
    for (const n of this.nodes) {
      await n.kill().catch(() => undefined);
      await n.closeForward().catch(() => undefined);
    }
    this.nets.cleanup();
    this.#dirs.cleanup();
    const left = leftovers(this.nets.id);
    if (left.ns.length || left.links.length) throw new Error(`the subnets left ${JSON.stringify(left)}`);
  }
}

/** Full-node arguments for a host: its address and the standard client ports. */
export function clientPorts(ip: string): string[] {
  return ['--bind', ip, '--c2s-port', String(C2S_PORT), '--c2s-tls-port', '5223', '--auth-fail-delay', '50ms'];
}

export const isChat = (from: string, body: string) => (s: XmlEl): boolean =>
  s.name === 'message' && s.attrs.from === from && s.getChildText('body') === body;

/** A one-to-one message (RFC 6121 §5) from `from` that `to` must receive. */
export async function chat(from: TestClient, to: TestClient, body: string, timeoutMs = 5000): Promise<void> {
  await from.send(xml('message', { to: to.jid, type: 'chat' }, xml('body', {}, body)));
  await to.waitFor(isChat(from.jid, body), timeoutMs, `'${body.slice(0, 40)}' from ${from.jid} at ${to.jid}`);
}

/** The connections a node reports (pool status). */
export async function connectionsOf(n: SubnetNode): Promise<Array<Record<string, unknown>>> {
  const s = await n.status();
  return Array.isArray(s?.connections) ? s.connections as Array<Record<string, unknown>> : [];
}

/** Waits until every node sees exactly `want` alive; returns the time it took. On a timeout: every node's view and its last log lines. */
export async function waitMembers(nodes: SubnetNode[], want: string[], timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  const key = [...want].sort().join(',');
  await until(async () => {
    for (const n of nodes) if ((await n.alive_()).join(',') !== key) return false;
    return true;
  }, timeoutMs, `[${key}] alive on ${nodes.map((n) => n.serverId).join(', ')}`).catch(async (e: Error) => {
    const views = await Promise.all(nodes.map(async (n) => `${n.serverId}: ${(await n.alive_().catch(() => [])).join(',')}`));
    throw new Error(`${e.message}; views: ${views.join('; ')}\n${nodes.map((n) => `--- ${n.serverId}\n${n.tail(15)}`).join('\n')}`);
  });
  return Date.now() - t0;
}
