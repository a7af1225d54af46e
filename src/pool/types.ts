// The pool as the rest of the server sees it (DESIGN.md "Shoal, mapped"): a
// membership view with events, group messaging (gossipsub topics) and
// point-to-point messaging (libp2p streams). It moves bytes and state and knows
// nothing of XMPP stanzas.

export type MemberState = 'alive' | 'suspected' | 'failed' | 'left';

export interface MemberInfo {
  /** Configured unique id of the node (--server-id). */
  serverId: string;
  /** libp2p peer id (string form). */
  peerId: string;
  /** Multiaddrs the member announced. */
  addresses: string[];
  state: MemberState;
  /** Client sessions on that node (its load). */
  sessions: number;
  /** When the member started (ms since epoch, its own clock). */
  startedAt: number;
  /** When we last heard from it (ms, our clock). */
  lastSeen: number;
}

export type MembershipEvent = 'joined' | 'left' | 'suspected' | 'failed' | 'updated';

/** Handler of a point-to-point request: returns the response bytes (or nothing for one-way messages). */
export type PeerHandler = (data: Uint8Array, fromPeer: string) => Promise<Uint8Array | void> | Uint8Array | void;

export interface Pool {
  readonly serverId: string;
  readonly peerId: string;
  start(): Promise<void>;
  /** Planned leave: announces 'left' to the others, then stops. */
  stop(): Promise<void>;

  /** Every member known, this node included, in a stable order (by serverId). */
  members(): MemberInfo[];
  member(peerId: string): MemberInfo | undefined;
  on(event: MembershipEvent, fn: (m: MemberInfo) => void): () => void;
  /** Published with the membership heartbeat. */
  setLoad(sessions: number): void;

  /** Group messaging: every alive member subscribed to the topic receives it (not the sender). */
  publish(topic: string, data: Uint8Array): Promise<void>;
  subscribe(topic: string, handler: (data: Uint8Array, fromPeer: string) => void): () => void;

  /** Point to point, ordered per (peer, protocol): one-way message. Rejects if the peer is unreachable. */
  send(peerId: string, protocol: string, data: Uint8Array): Promise<void>;
  /** Point to point request/response with a timeout. */
  request(peerId: string, protocol: string, data: Uint8Array, timeoutMs?: number): Promise<Uint8Array>;
  /** Registers the handler for a point-to-point protocol name (e.g. 'route', 'sync'). */
  handle(protocol: string, handler: PeerHandler): void;
}
