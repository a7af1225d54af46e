// Stanza errors (RFC 6120 §8.3) and stream errors (RFC 6120 §4.9) as values.
// Modules throw or return these; the router turns them into error stanzas,
// and any other throw becomes internal-server-error.
import { Element, x } from './element.ts';
import { NS } from './ns.ts';

export type ErrorType = 'auth' | 'cancel' | 'continue' | 'modify' | 'wait';

/** RFC 6120 §8.3.3: each defined condition with its usual type. */
export const STANZA_CONDITIONS = {
  'bad-request': 'modify',
  'conflict': 'cancel',
  'feature-not-implemented': 'cancel',
  'forbidden': 'auth',
  'gone': 'cancel',
  'internal-server-error': 'cancel',
  'item-not-found': 'cancel',
  'jid-malformed': 'modify',
  'not-acceptable': 'modify',
  'not-allowed': 'cancel',
  'not-authorized': 'auth',
  'policy-violation': 'modify',
  'recipient-unavailable': 'wait',
  'redirect': 'modify',
  'registration-required': 'auth',
  'remote-server-not-found': 'cancel',
  'remote-server-timeout': 'wait',
  'resource-constraint': 'wait',
  'service-unavailable': 'cancel',
  'subscription-required': 'auth',
  'undefined-condition': 'cancel',
  'unexpected-request': 'wait',
} as const satisfies Record<string, ErrorType>;

export type StanzaCondition = keyof typeof STANZA_CONDITIONS;

export type StreamCondition =
  | 'bad-format' | 'bad-namespace-prefix' | 'conflict' | 'connection-timeout' | 'host-gone'
  | 'host-unknown' | 'improper-addressing' | 'internal-server-error' | 'invalid-from'
  | 'invalid-namespace' | 'invalid-xml' | 'not-authorized' | 'not-well-formed' | 'policy-violation'
  | 'remote-connection-failed' | 'reset' | 'resource-constraint' | 'restricted-xml' | 'see-other-host'
  | 'system-shutdown' | 'undefined-condition' | 'unsupported-encoding' | 'unsupported-feature'
  | 'unsupported-stanza-type' | 'unsupported-version';

export class StanzaError extends Error {
  readonly condition: StanzaCondition;
  readonly type: ErrorType;
  readonly text: string | undefined;
  readonly appCondition: Element | undefined;

  constructor(condition: StanzaCondition, text?: string, opts: { type?: ErrorType; app?: Element } = {}) {
    super(text ? `${condition}: ${text}` : condition);
    this.name = 'StanzaError';
    this.condition = condition;
    this.type = opts.type ?? STANZA_CONDITIONS[condition];
    this.text = text;
    this.appCondition = opts.app;
  }

  toElement(by?: string): Element {
    const err = x('error', by ? { type: this.type, by } : { type: this.type },
      x(this.condition, { xmlns: NS.stanzas }));
    if (this.text) err.append(x('text', { xmlns: NS.stanzas, 'xml:lang': 'en' }, this.text));
    if (this.appCondition) err.append(this.appCondition.clone());
    return err;
  }
}

export class StreamError extends Error {
  readonly condition: StreamCondition;
  readonly text: string | undefined;
  /** Extra payload inside the condition element (the host for see-other-host). */
  readonly content: string | undefined;

  constructor(condition: StreamCondition, text?: string, content?: string) {
    super(text ? `${condition}: ${text}` : condition);
    this.name = 'StreamError';
    this.condition = condition;
    this.text = text;
    this.content = content;
  }

  toElement(): Element {
    const cond = x(this.condition, { xmlns: NS.streams });
    if (this.content) cond.t(this.content);
    const el = x('stream:error', null, cond);
    if (this.text) el.append(x('text', { xmlns: NS.streams, 'xml:lang': 'en' }, this.text));
    return el;
  }
}

/**
 * The error reply to a stanza (RFC 6120 §8.3.1): addresses swapped, type="error",
 * original payload kept so the sender can tell which request failed.
 */
export function errorReply(stanza: Element, err: StanzaError, by?: string): Element {
  const attrs: Record<string, string> = { type: 'error' };
  if (stanza.attrs.id !== undefined) attrs.id = stanza.attrs.id;
  if (stanza.attrs.from) attrs.to = stanza.attrs.from;
  if (stanza.attrs.to) attrs.from = stanza.attrs.to;
  const reply = new Element(stanza.name, attrs);
  if (stanza.name !== 'iq') for (const c of stanza.elements) if (!c.is('error')) reply.append(c.clone());
  reply.append(err.toElement(by));
  return reply;
}

/** Turns anything thrown by a handler into a StanzaError. */
export function toStanzaError(e: unknown): StanzaError {
  if (e instanceof StanzaError) return e;
  return new StanzaError('internal-server-error');
}
