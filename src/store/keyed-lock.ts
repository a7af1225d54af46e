// Runs async operations one at a time per key (a user's roster, account,
// block list or offline queue), in call order, while different keys run
// concurrently. The queue holds a promise that never rejects, so a failed
// operation neither stops the next one nor surfaces as an unhandled rejection.
// A key's entry is dropped once its last operation is done.
export class KeyedLock {
  readonly #tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(key) ?? Promise.resolve();
    const run = prev.then(fn);
    const tail = run.then(() => undefined, () => undefined);
    this.#tails.set(key, tail);
    try {
      return await run;
    } finally {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }
}
