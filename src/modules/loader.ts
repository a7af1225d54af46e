// Builds each module's context and loads the modules in order. The context is
// the only way a module reaches the rest of the server.
import type { Element } from '../xmpp/element.ts';
import type { Router, Scope } from '../router/router.ts';
import type { Store } from '../store/db.ts';
import type { UserDirectory } from '../store/directory.ts';
import { kvProvider, type KVProvider } from '../store/kv.ts';
import type { Logger } from '../admin/log.ts';
import type { Session } from '../c2s/session.ts';
import type { StanzaEvent } from '../router/router.ts';
import type { Config, IqHandler, Module, ModuleContext } from './api.ts';
import type { ServerInfo } from './server-info.ts';
import type { Pool } from '../pool/types.ts';

export interface LoaderDeps {
  domain: string;
  router: Router;
  store: Store;
  /** User-data keyspaces (createUserData in src/store/user-data.ts). Default: plain keyspaces of `store`. */
  kv?: KVProvider;
  directory: UserDirectory;
  config: Config;
  log: Logger;
  info: ServerInfo;
  /** The pool, when this node is a member of one. Default null. */
  pool?: Pool | null;
}

export interface LoadedModules {
  names: string[];
  stop(): Promise<void>;
}

export async function loadModules(modules: Module[], deps: LoaderDeps): Promise<LoadedModules> {
  const stoppers: Array<() => void | Promise<void>> = [];
  // One provider for every module: the roster and presence modules share one RosterStore through it.
  const kv = deps.kv ?? kvProvider(deps.store);
  for (const mod of modules) {
    const ctx = createContext(mod.name, deps, kv, stoppers);
    await mod.load(ctx);
  }
  return {
    names: modules.map((m) => m.name),
    async stop() {
      for (const fn of stoppers.reverse()) {
        try {
          await fn();
        } catch (e) {
          deps.log.error('module stop failed:', e);
        }
      }
    },
  };
}

function createContext(name: string, deps: LoaderDeps, kv: KVProvider, stoppers: Array<() => void | Promise<void>>): ModuleContext {
  const { router } = deps;
  return {
    name,
    domain: deps.domain,
    router,
    store: deps.store,
    kv,
    directory: deps.directory,
    config: deps.config,
    log: deps.log.child(name),
    info: deps.info,
    pool: deps.pool ?? null,
    hook(event, handler, priority) {
      router.hooks.on(event, handler, priority);
    },
    iq(type: 'get' | 'set', scope: Scope, ns: string, handler: IqHandler) {
      router.hooks.on<StanzaEvent<Session>>(`iq-${type}/${scope}/${ns}`, (ev) => {
        const r = handler(ev);
        if (r instanceof Promise) {
          return r.then((payload) => {
            router.sendResult(ev.stanza, payload ?? null);
            return true;
          });
        }
        router.sendResult(ev.stanza, (r as Element | null | undefined) ?? null);
        return true;
      });
    },
    feature(ns: string) {
      deps.info.features.add(ns);
    },
    streamFeature(provider) {
      deps.info.streamFeatures.push(provider);
    },
    onStop(fn) {
      stoppers.push(fn);
    },
  };
}
