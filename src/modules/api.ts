// The small, stable API every feature module is written against (after
// Prosody's module API): hook events, answer IQs, declare disco features and
// stream features. Modules never touch sockets; they see sessions through the
// Session type and send stanzas through the router.
import type { Element } from '../xmpp/element.ts';
import type { Router, StanzaEvent, Scope } from '../router/router.ts';
import type { Handler } from '../router/hooks.ts';
import type { Store } from '../store/db.ts';
import type { UserDirectory } from '../store/directory.ts';
import type { KVProvider } from '../store/kv.ts';
import type { Logger } from '../admin/log.ts';
import type { Session } from '../c2s/session.ts';
import type { ServerInfo } from './server-info.ts';
import type { Pool } from '../pool/types.ts';

export type Config = Record<string, unknown>;

export type IqHandler = (ev: StanzaEvent<Session>) => Element | null | void | Promise<Element | null | void>;

/** Everything a module may use. One instance per module, so logs are per component. */
export interface ModuleContext {
  readonly name: string;
  readonly domain: string;
  readonly router: Router;
  /** The node's LevelDB: for data that stays on this node. */
  readonly store: Store;
  /**
   * Keyspaces for user data (rosters, vCards, blocklists, offline messages):
   * plain LevelDB on one node, replicated to every node in a pool without
   * LDAP. Stores of user data are built on this, never on `store`.
   */
  readonly kv: KVProvider;
  readonly directory: UserDirectory;
  readonly config: Config;
  readonly log: Logger;
  readonly info: ServerInfo;
  /**
   * The pool this node is a member of (membership events, group and
   * point-to-point messaging); null on a single node.
   */
  readonly pool: Pool | null;
  /** Subscribe to a router or session event; higher priority runs first, returning true stops the chain. */
  hook<E = StanzaEvent<Session>>(event: string, handler: Handler<E>, priority?: number): void;
  /**
   * Answers IQ requests of `type` for payload namespace `ns` addressed at `scope`.
   * The handler returns the result payload (or null for an empty result) or
   * throws a StanzaError; the reply is sent for it.
   */
  iq(type: 'get' | 'set', scope: Scope, ns: string, handler: IqHandler): void;
  /** Declares a disco#info feature of the server (XEP-0030). */
  feature(ns: string): void;
  /** Adds a stream feature offered after authentication (RFC 6120 §4.3.2). */
  streamFeature(provider: (session: { authenticated: boolean; secure: boolean }) => Element | null): void;
  /** Runs on shutdown, before storage closes. */
  onStop(fn: () => void | Promise<void>): void;
}

export interface Module {
  readonly name: string;
  load(ctx: ModuleContext): void | Promise<void>;
}
