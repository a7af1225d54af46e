// XEP-0045 client steps shared by the MUC tests (one node, a pool, across relays):
// the namespaces, entering a room (§7.2: self-presence with status 110 or an error,
// then the subject that ends the join, §7.2.16), instant rooms (§10.1.2) and
// groupchat (§7.4), driven by xmpp.js (test/helpers/xmppjs.ts).
import * as assert from 'uvu/assert';
import { xml, type TestClient, type XmlEl } from './xmppjs.ts';

export const MUC = 'http://jabber.org/protocol/muc';
export const MUC_USER = 'http://jabber.org/protocol/muc#user';
export const MUC_ADMIN = 'http://jabber.org/protocol/muc#admin';
export const MUC_OWNER = 'http://jabber.org/protocol/muc#owner';
export const DATA = 'jabber:x:data';

/** The status codes of a MUC presence (§7.2.2 and the registry in §15.6), sorted. */
export const codes = (p: XmlEl): string[] => (p.getChild('x', MUC_USER)?.getChildren('status') ?? []).map((s) => s.attrs.code).sort();

/** The room subject message (§8.1): a subject and no body. */
export const isSubject = (room: string) => (s: XmlEl): boolean =>
  s.name === 'message' && !!s.attrs.from?.startsWith(room) && s.getChild('subject') !== undefined && !s.getChild('body');

/** The defined condition of a stanza error (RFC 6120 §8.3.3), '' when there is none. */
export const condition = (s: XmlEl): string => s.getChild('error')?.children
  .find((c): c is XmlEl => typeof c !== 'string' && c.attrs.xmlns === 'urn:ietf:params:xml:ns:xmpp-stanzas' && c.name !== 'text')?.name ?? '';

export function joinPresence(room: string, nick: string, extra: XmlEl[] = []): XmlEl {
  return xml('presence', { to: `${room}/${nick}` }, xml('x', { xmlns: MUC }, ...extra));
}

export interface JoinOptions {
  /** More children of the join's <x/> (password, history). */
  extra?: XmlEl[];
  /** For the self-presence and for the subject, each. Default 10 s. */
  timeoutMs?: number;
}

/**
 * Sends the join presence and resolves with the self-presence (status 110) or the
 * error presence; after a self-presence it also waits for the subject.
 */
export async function join(c: TestClient, room: string, nick: string, opts: JoinOptions = {}): Promise<XmlEl> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  await c.send(joinPresence(room, nick, opts.extra));
  const self = await c.waitFor((s) => s.name === 'presence' && s.attrs.from === `${room}/${nick}` &&
    (codes(s).includes('110') || s.attrs.type === 'error'), timeoutMs, `self-presence in ${room}`);
  if (self.attrs.type !== 'error') await c.waitFor(isSubject(room), timeoutMs, `subject of ${room}`);
  return self;
}

/** Accepts the default configuration of a room just created (§10.1.2). */
export async function acceptDefaultConfig(c: TestClient, room: string, timeoutMs = 10_000): Promise<void> {
  await c.iq(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: MUC_OWNER }, xml('x', { xmlns: DATA, type: 'submit' }))), timeoutMs);
}

/**
 * A join that must succeed (it fails the test with the error presence otherwise);
 * a room it creates (status 201) is made an instant room.
 */
export async function enterRoom(c: TestClient, room: string, nick: string, opts: JoinOptions = {}): Promise<XmlEl> {
  const self = await join(c, room, nick, opts);
  assert.is.not(self.attrs.type, 'error', `${c.jid} could not join: ${self.toString()}`);
  if (codes(self).includes('201')) await acceptDefaultConfig(c, room, opts.timeoutMs);
  return self;
}

/** Creates an instant room: the join must create it (110 and 201), then the default configuration is accepted. */
export async function instantRoom(c: TestClient, room: string, nick: string, timeoutMs = 10_000): Promise<void> {
  const self = await join(c, room, nick, { timeoutMs });
  assert.equal(codes(self), ['110', '201']);
  await acceptDefaultConfig(c, room, timeoutMs);
}

/** `from` says `body` in the room; resolves when `to` has it from `fromNick`. */
export async function groupchat(room: string, from: TestClient, fromNick: string, to: TestClient, body: string, timeoutMs = 10_000): Promise<void> {
  await from.send(xml('message', { to: room, type: 'groupchat' }, xml('body', {}, body)));
  await to.waitFor((s) => s.name === 'message' && s.attrs.type === 'groupchat' && s.attrs.from === `${room}/${fromNick}` && s.getChildText('body') === body,
    timeoutMs, `groupchat '${body}' at ${to.jid}`);
}
