// A bound client resource (RFC 6120 §7). It outlives its connection while
// stream management keeps it resumable (XEP-0198 §5), so the connection is a
// field that may be null; everything addressed to the session goes through
// send(), which queues while the session is detached.
import type { Element } from '../xmpp/element.ts';
import type { JID } from '../xmpp/jid.ts';
import type { Routable } from '../router/router.ts';
import type { Connection } from './connection.ts';
import { SmState } from './stream-management.ts';

let nextId = 1;

/** Stanzas kept for a detached session before it is ended (and they go offline). */
const MAX_DETACHED_QUEUE = 10_000;

export class Session implements Routable {
  readonly id = (nextId++).toString(36);
  readonly jid: JID;
  readonly username: string;
  connection: Connection | null;
  #presence: Element | null = null;
  #priority: number | null = null;
  #interested = false;
  #carbons = false;
  #updateScheduled = false;
  /**
   * Told (once per tick) when a field that other nodes see through Routable
   * changes, so the pool can republish the route. Set by the c2s server.
   */
  onUpdate: ((s: Session) => void) | null = null;
  /** Anything a module keeps per session. */
  readonly data = new Map<string, unknown>();
  readonly sm = new SmState();
  closed = false;
  readonly created = Date.now();
  /** Called when a detached session's queue is full; set by the c2s server. */
  onOverflow: ((s: Session) => void) | null = null;

  constructor(jid: JID, connection: Connection) {
    this.jid = jid;
    this.username = jid.local;
    this.connection = connection;
  }

  /** Last available presence broadcast by this resource; null while unavailable. */
  get presence(): Element | null { return this.#presence; }
  set presence(p: Element | null) { this.#presence = p; this.#changed(); }

  get priority(): number | null { return this.#priority; }
  set priority(p: number | null) { this.#priority = p; this.#changed(); }

  /** RFC 6121 §2.1.6: a resource that asked for the roster gets pushes and is "interested". */
  get interested(): boolean { return this.#interested; }
  set interested(v: boolean) { if (v !== this.#interested) { this.#interested = v; this.#changed(); } }

  /** XEP-0280. */
  get carbons(): boolean { return this.#carbons; }
  set carbons(v: boolean) { if (v !== this.#carbons) { this.#carbons = v; this.#changed(); } }

  #changed(): void {
    if (this.#updateScheduled || !this.onUpdate) return;
    this.#updateScheduled = true;
    queueMicrotask(() => {
      this.#updateScheduled = false;
      if (!this.closed) this.onUpdate?.(this);
    });
  }

  /** Available for delivery: has sent initial presence and not gone unavailable. */
  get available(): boolean {
    return this.priority !== null;
  }

  send(stanza: Element): void {
    if (this.closed) return;
    if (this.sm.enabled) this.sm.queue(stanza);
    const c = this.connection;
    if (c) {
      c.writeStanza(stanza);
      if (this.sm.enabled) c.maybeRequestAck();
    } else if (this.sm.unacked.length > MAX_DETACHED_QUEUE && this.onOverflow) {
      this.onOverflow(this);
    }
  }
}
