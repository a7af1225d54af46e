// Slows down password guessing (RFC 6120 §6.4.5 leaves the policy to the
// server): every failure costs a delay, and repeated failures from one address
// double it, up to a ceiling. Memory is bounded by forgetting old entries.

interface Entry { failures: number; last: number }

export class AuthThrottle {
  readonly #base: number;
  readonly #max: number;
  readonly #window: number;
  readonly #entries = new Map<string, Entry>();

  constructor(opts: { baseDelayMs: number; maxDelayMs?: number; windowMs?: number }) {
    this.#base = opts.baseDelayMs;
    this.#max = opts.maxDelayMs ?? 30_000;
    this.#window = opts.windowMs ?? 300_000;
  }

  /** Records a failure; returns how long to wait before answering it. */
  fail(address: string, now = Date.now()): number {
    let e = this.#entries.get(address);
    if (!e || now - e.last > this.#window) e = { failures: 0, last: now };
    e.failures++;
    e.last = now;
    this.#entries.delete(address);
    this.#entries.set(address, e);
    if (this.#entries.size > 10_000) {
      const oldest = this.#entries.keys().next().value;
      if (oldest !== undefined) this.#entries.delete(oldest);
    }
    // The first three failures cost the base delay: people mistype.
    const extra = Math.max(0, e.failures - 3);
    return Math.min(this.#max, this.#base * 2 ** extra);
  }

  succeed(address: string): void {
    this.#entries.delete(address);
  }

  failures(address: string): number {
    return this.#entries.get(address)?.failures ?? 0;
  }
}
