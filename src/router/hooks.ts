// An event bus with priorities, after Prosody's hooks: handlers run from the
// highest priority down until one returns true. Handlers may be async; the
// dispatcher stays synchronous while they are, so the common path allocates no
// promise.

export type HookResult = boolean | void | undefined;
export type Handler<E> = (event: E) => HookResult | Promise<HookResult>;

interface Entry<E> { handler: Handler<E>; priority: number }

export class Hooks {
  #handlers = new Map<string, Entry<any>[]>();

  on<E>(name: string, handler: Handler<E>, priority = 0): () => void {
    let list = this.#handlers.get(name);
    if (!list) this.#handlers.set(name, (list = []));
    const entry = { handler, priority };
    list.push(entry);
    list.sort((a, b) => b.priority - a.priority);
    return () => {
      const l = this.#handlers.get(name);
      if (l) l.splice(l.indexOf(entry), 1);
    };
  }

  has(name: string): boolean {
    return (this.#handlers.get(name)?.length ?? 0) > 0;
  }

  /**
   * Runs handlers until one returns true. Returns true/false, or a promise of it
   * once a handler has gone async.
   */
  fire<E>(name: string, event: E): boolean | Promise<boolean> {
    const list = this.#handlers.get(name);
    if (!list || list.length === 0) return false;
    return runFrom(list, 0, event);
  }

  /** Runs every handler (notifications: session-bound, session-closed, ...), awaiting async ones in order. */
  async emit<E>(name: string, event: E): Promise<void> {
    const list = this.#handlers.get(name);
    if (!list) return;
    for (const { handler } of [...list]) await handler(event);
  }
}

function runFrom<E>(list: Entry<E>[], start: number, event: E): boolean | Promise<boolean> {
  for (let i = start; i < list.length; i++) {
    const r = list[i].handler(event);
    if (r === true) return true;
    if (r instanceof Promise) return r.then((v) => (v === true ? true : runFrom(list, i + 1, event)));
  }
  return false;
}
