// XEP-0198 Stream Management v3: counters, the unacknowledged queue and
// resumption state of one session. The wire handling lives in connection.ts;
// this file keeps the arithmetic in one place (h wraps at 2^32, §4).
import type { Element } from '../xmpp/element.ts';

const MOD = 2 ** 32;

export class SmState {
  enabled = false;
  resumable = false;
  /** Resumption id (random, unguessable). */
  id = '';
  /** Inbound stanzas handled (the h we report). */
  inbound = 0;
  /** Outbound stanzas sent in total (sequence number of the last queued one). */
  outbound = 0;
  /** Stanzas sent but not yet acknowledged, oldest first. */
  unacked: Element[] = [];
  /** When the client last asked for or gave an ack; used to pace <r/>. */
  ackRequested = false;
  /** Detached: the timer that ends the session if the client does not resume. */
  hibernateTimer: NodeJS.Timeout | null = null;
  /** Latest stanza count acknowledged by the client. */
  acked = 0;

  queue(stanza: Element): void {
    this.unacked.push(stanza);
    this.outbound = (this.outbound + 1) % MOD;
  }

  /**
   * Processes the client's h. Returns false if h acknowledges more than was sent
   * (§4: the server then closes with undefined-condition... handled by caller).
   */
  ack(h: number): boolean {
    const count = (h - this.acked + MOD) % MOD;
    if (count > this.unacked.length) return false;
    this.unacked.splice(0, count);
    this.acked = h % MOD;
    this.ackRequested = false;
    return true;
  }

  countInbound(): void {
    this.inbound = (this.inbound + 1) % MOD;
  }
}
