// The set-up the LdapDirectory unit tests share: a real slapd (test/helpers/slapd.ts),
// a LevelDB store of their own in a temp dir for the directory's caches, and
// directories built from imnode's own LDAP options, each one stopped at cleanup.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../../src/store/db.ts';
import { LdapDirectory } from '../../src/store/ldap/directory.ts';
import { ldapConfig, type LdapConfig } from '../../src/store/ldap/options.ts';
import { loadConfig } from '../../src/admin/options.ts';
import { createLogger, type Logger } from '../../src/admin/log.ts';
import '../../src/admin/core-options.ts';
import '../../src/modules/index.ts';
import { startSlapd, type Slapd, type SlapdOptions } from './slapd.ts';

export class LdapUnit {
  readonly slapd: Slapd;
  /** The temp dir of the store (tests may put files there). */
  readonly dir: string;
  readonly store: Store;
  readonly log: Logger = createLogger('error');
  readonly #opened: LdapDirectory[] = [];

  private constructor(slapd: Slapd, dir: string, store: Store) {
    this.slapd = slapd;
    this.dir = dir;
    this.store = store;
  }

  /** Starts slapd with `opts` and opens a store in a new temp dir named after `prefix`. */
  static async start(opts: SlapdOptions, prefix: string): Promise<LdapUnit> {
    const slapd = await startSlapd(opts);
    let dir: string | undefined;
    try {
      dir = await mkdtemp(join(tmpdir(), prefix));
      return new LdapUnit(slapd, dir, await Store.open(dir));
    } catch (e) {
      if (dir) await rm(dir, { recursive: true, force: true });
      await slapd.cleanup();
      throw e;
    }
  }

  /** The LDAP configuration imnode would take from these arguments. */
  async config(args: string[]): Promise<LdapConfig> {
    const { config } = await loadConfig(args, {});
    return (await ldapConfig(config))!;
  }

  /** A directory on this store, stopped at cleanup (not started, its cache not flushed). */
  open(config: LdapConfig, now?: () => number): LdapDirectory {
    const d = new LdapDirectory({ config, store: this.store, log: this.log, ...(now ? { now } : {}) });
    this.#opened.push(d);
    return d;
  }

  /** A directory from imnode arguments with an empty cache (what a previous test cached is flushed). */
  async directory(args: string[], now?: () => number): Promise<LdapDirectory> {
    const d = this.open(await this.config(args), now);
    await d.flushCache();
    return d;
  }

  async cleanup(): Promise<void> {
    for (const d of this.#opened) await d.stop();
    await this.store.close();
    await rm(this.dir, { recursive: true, force: true });
    await this.slapd.cleanup();
  }
}
