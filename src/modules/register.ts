// XEP-0077 In-Band Registration.
//   §3.1   registration before authentication (only with --allow-registration):
//          fields form, account creation; conflict for a taken name, not-acceptable
//          for missing, empty or invalid fields; service-unavailable when registration
//          is off. §3.1.1: not-acceptable (type wait) for too many registrations.
//   §3.2   cancelling the registration: the account is deleted, the result sent,
//          then every session of the account ends with a not-authorized stream error.
//   §3.3   password change by an authenticated user, allowed whether or not
//          registration is open (--allow-registration governs account creation only).
//   §8     the iq-register stream feature, offered only where the password would
//          not cross the network in clear (encrypted or loopback, when TLS is required).
//   §11    security: the same channel rule for password changes (not-authorized).
import { x } from '../xmpp/element.ts';
import type { Element } from '../xmpp/element.ts';
import { NS } from '../xmpp/ns.ts';
import { StanzaError, StreamError, errorReply } from '../xmpp/errors.ts';
import { InvalidJIDError, prepLocal, prepPassword } from '../xmpp/jid.ts';
import type { JID } from '../xmpp/jid.ts';
import { UnknownUserError, UserExistsError } from '../store/directory.ts';
import { declareOptions } from '../admin/options.ts';
import type { Connection } from '../c2s/connection.ts';
import type { Session } from '../c2s/session.ts';
import type { StanzaEvent } from '../router/router.ts';
import type { Module, ModuleContext } from './api.ts';

declareOptions([
  { name: 'registration-throttle', type: 'duration', default: '60s', min: 0, group: 'register',
    description: 'With --allow-registration: least time between two accounts created in-band from the same IP address; 0 turns the limit off.' },
]);

/** Fired (hooks.emit) after an account was deleted in-band; modules drop the account's data. */
export interface AccountRemovedEvent { username: string }
/** The c2s 'preauth-iq' hook argument: an IQ on a stream that has not authenticated. */
export interface PreauthIqEvent { connection: Connection; stanza: Element }

const INSTRUCTIONS = 'Choose a username and password for use with this server.';

export const register: Module = {
  name: 'register',
  load(m) {
    const allow = m.config['allow-registration'] === true;
    const requireTls = m.config['require-tls'] !== false;
    const throttle = new RegistrationThrottle(Number(m.config['registration-throttle'] ?? 60_000));
    // §3.1.1: one account per stream; a second attempt is not-acceptable.
    const registeredOn = new WeakSet<Connection>();
    const channelOk = (c: { secure: boolean; loopback?: boolean }) => c.secure || c.loopback === true || !requireTls;

    m.feature(NS.register);
    m.streamFeature((s) => (allow && !s.authenticated && channelOk(s) ? x('register', { xmlns: NS.registerFeature }) : null));

    // ---- before authentication (§3.1) ----------------------------------------

    m.hook<PreauthIqEvent>('preauth-iq', (ev) => {
      const { connection: c, stanza } = ev;
      const type = stanza.attrs.type;
      const query = stanza.elements[0];
      if ((type !== 'get' && type !== 'set') || stanza.elements.length !== 1 || !query.is('query', NS.register)) return false;
      const reply = (payload: Element | null) => {
        const iq = x('iq', { type: 'result', id: stanza.attrs.id ?? '' });
        if (payload) iq.append(payload);
        c.write(iq.toString());
      };
      const fail = (err: StanzaError) => c.write(errorReply(stanza, err).toString());
      if (!allow) {
        fail(new StanzaError('service-unavailable', 'in-band registration is disabled'));
        return true;
      }
      if (!channelOk(c)) {
        fail(new StanzaError('not-authorized', 'encrypt the stream (STARTTLS) before registering'));
        return true;
      }
      if (type === 'get') {
        reply(x('query', { xmlns: NS.register }, x('instructions', null, INSTRUCTIONS), x('username'), x('password')));
        return true;
      }
      return createAccount(m, c, query, throttle, registeredOn).then(
        () => { reply(null); return true; },
        (e: unknown) => {
          if (!(e instanceof StanzaError)) m.log.error('registration failed:', e);
          fail(e instanceof StanzaError ? e : new StanzaError('internal-server-error'));
          return true;
        },
      );
    });

    // ---- after authentication (§3.2, §3.3) -------------------------------------

    const own = (ev: StanzaEvent<Session>) => ev.scope === 'host' || sameAccount(ev.from, ev.to);

    for (const scope of ['host', 'bare'] as const) {
      m.iq('get', scope, NS.register, (ev) => {
        if (!own(ev)) throw new StanzaError('service-unavailable');
        return x('query', { xmlns: NS.register },
          x('registered'),
          x('instructions', null, 'You are registered. Send a new password to change it, or <remove/> to delete the account.'),
          x('username', null, ev.from.local),
          x('password'));
      });

      m.hook<StanzaEvent<Session>>(`iq-set/${scope}/${NS.register}`, async (ev) => {
        if (!own(ev) || !ev.origin) throw new StanzaError('service-unavailable');
        const query = ev.stanza.elements[0];
        if (query.getChild('remove')) {
          if (query.elements.length !== 1) throw new StanzaError('bad-request', '<remove/> must be the only child');
          await removeAccount(m, ev.origin, ev.stanza);
          return true;
        }
        if (!channelOk({ secure: ev.origin.connection?.secure ?? false, loopback: ev.origin.connection?.loopback })) {
          throw new StanzaError('not-authorized', 'the stream is not encrypted');
        }
        await changePassword(m, ev.from, query);
        m.router.sendResult(ev.stanza, null);
        return true;
      });
    }
  },
};

async function createAccount(m: ModuleContext, c: Connection, query: Element, throttle: RegistrationThrottle, registeredOn: WeakSet<Connection>): Promise<void> {
  if (query.getChild('remove')) throw new StanzaError('unexpected-request', 'not registered: nothing to remove');
  const rawUser = query.getChildText('username')?.trim() ?? '';
  const password = query.getChildText('password') ?? '';
  if (rawUser === '' || password === '') throw new StanzaError('not-acceptable', 'a username and a password are required');
  let username: string;
  try {
    username = prepLocal(rawUser);
    prepPassword(password);
  } catch (e) {
    if (!(e instanceof InvalidJIDError)) throw e;
    throw new StanzaError('not-acceptable', e.input === '' ? 'the password is not allowed' : 'the username is not allowed');
  }
  if (registeredOn.has(c)) throw new StanzaError('not-acceptable', 'one account per connection');
  const release = throttle.take(c.loopback ? 'loopback' : c.remoteAddress);
  if (!release) throw new StanzaError('not-acceptable', 'too many registrations from this address; try again later', { type: 'wait' });
  try {
    await m.directory.create(username, password);
  } catch (e) {
    release();
    if (e instanceof UserExistsError) throw new StanzaError('conflict', 'that username is taken');
    throw e;
  }
  registeredOn.add(c);
  m.log.info(`account ${username} registered in-band from ${c.remoteAddress}`);
}

async function changePassword(m: ModuleContext, from: JID, query: Element): Promise<void> {
  const given = query.getChildText('username')?.trim();
  if (given === undefined || given === '') throw new StanzaError('bad-request', 'the username is required');
  let name = given;
  // Some clients send the bare JID rather than the localpart.
  if (given.includes('@')) {
    if (given.slice(given.indexOf('@') + 1) !== from.domain) throw new StanzaError('forbidden', 'not your account');
    name = given.slice(0, given.indexOf('@'));
  }
  let prepared: string;
  try { prepared = prepLocal(name); } catch { throw new StanzaError('forbidden', 'not your account'); }
  if (prepared !== from.local) throw new StanzaError('forbidden', 'not your account');
  const password = query.getChildText('password') ?? '';
  // §3.3: an empty password never replaces the current one.
  if (password === '') throw new StanzaError('not-acceptable', 'the new password is empty');
  try {
    prepPassword(password);
  } catch {
    throw new StanzaError('not-acceptable', 'the password is not allowed');
  }
  try {
    await m.directory.setPassword(from.local, password);
  } catch (e) {
    if (e instanceof UnknownUserError) throw new StanzaError('registration-required');
    throw e;
  }
  m.log.info(`password of ${from.local} changed in-band`);
}

async function removeAccount(m: ModuleContext, origin: Session, request: Element): Promise<void> {
  const username = origin.jid.local;
  try {
    await m.directory.delete(username);
  } catch (e) {
    if (e instanceof UnknownUserError) throw new StanzaError('registration-required');
    throw e;
  }
  m.log.info(`account ${username} removed in-band`);
  // Straight to the requesting session, so the result is written before the stream error.
  const result = x('iq', { type: 'result', id: request.attrs.id ?? '', to: origin.jid.toString() });
  origin.send(result);
  // §3.2: the server ends every session of the account with not-authorized. Modules
  // reach sessions only through Routable, which cannot end one, so this goes through
  // the c2s server that owns the requesting connection.
  const c2s = origin.connection?.server;
  for (const r of m.router.localSessionsOf(origin.jid.bare)) {
    const s = r as Session;
    s.sm.resumable = false;
    s.connection?.close(new StreamError('not-authorized', 'the account was removed'));
    if (c2s) await c2s.endSession(s, 'account removed');
  }
  // Modules drop the account's data last, once its sessions have gone offline normally.
  await m.router.hooks.emit<AccountRemovedEvent>('account-removed', { username });
}

function sameAccount(a: JID, b: JID): boolean {
  return a.local === b.local && a.domain === b.domain;
}

/** At most one account per address per interval (§3.1.1 leaves the policy to the server). */
export class RegistrationThrottle {
  readonly intervalMs: number;
  /** Address -> time of its last registration, oldest first. */
  readonly #last = new Map<string, number>();

  constructor(intervalMs: number) {
    this.intervalMs = intervalMs;
  }

  /** Reserves a registration for `address`; null when it must wait. The returned function gives the slot back. */
  take(address: string, now = Date.now()): (() => void) | null {
    if (this.intervalMs <= 0) return () => undefined;
    for (const [addr, t] of this.#last) {
      if (now - t < this.intervalMs) break;
      this.#last.delete(addr);
    }
    const prev = this.#last.get(address);
    if (prev !== undefined) return null;
    this.#last.set(address, now);
    return () => {
      if (this.#last.get(address) === now) this.#last.delete(address);
    };
  }
}
