// Streaming XML parser for XMPP streams.
//   RFC 6120 §4.2-§4.4 (stream header and closing tag), §4.9.3 (stream error conditions),
//   §11.1 (restrictions: no comments, processing instructions, DTDs, or entity references
//   other than the predefined ones), §11.2 (namespace prefixes), §11.3 (well-formedness),
//   §11.5 (XML declaration), §11.6 (UTF-8 only), §11.7 (whitespace between stanzas).
//   XML 1.0 §2.2 (allowed characters), §2.11 (line ends), §3.3.3 (attribute value
//   normalization), §4.1 and §4.6 (character references, predefined entities).
//
// This is the server's hot path, so it is a hand-written state machine over the decoded
// string: token ends are found with indexOf and charCodeAt, names, values and text are
// sliced out, and Elements are built directly. Between writes only the unfinished token
// (and the tree of the unfinished stanza) is kept; everything before it is dropped, so
// memory per connection is bounded by maxStanzaSize whatever the peer sends.

import { Element } from './element.ts';
import type { Attrs } from './element.ts';
import { StreamError } from './errors.ts';
import type { StreamCondition } from './errors.ts';

export interface ParserHandlers {
  onStreamStart(name: string, attrs: Attrs): void; // name as written ('stream:stream'); attrs include xmlns declarations
  onStanza(el: Element): void; // each complete child of the stream (depth 1), with parent = null
  onStreamEnd(): void;
  onError(err: StreamError): void; // once; all input is then ignored until reset()
}

export interface ParserOptions {
  /** Largest stanza in UTF-8 bytes (also bounds the header and the whitespace between stanzas). Default 262144. */
  maxStanzaSize?: number;
}

const DEFAULT_MAX = 262144;
// XMPP payloads nest a handful of levels; unbounded depth would let one stanza overflow
// the call stack of every recursive walk of the tree (toString, clone) later on.
const MAX_DEPTH = 256;

const TAB = 9, LF = 10, CR = 13, SP = 32, BANG = 33, DQ = 34, HASH = 35, AMP = 38, SQ = 39;
const DASH = 45, SLASH = 47, COLON = 58, SEMI = 59, LT = 60, EQ = 61, GT = 62, QM = 63;
const LSQB = 91, RSQB = 93, LOWER_X = 120;

const PROLOG = 0, OPEN = 1, ENDED = 2;

// XML 1.0 §2.2: code units that may not appear anywhere. Lone surrogates cannot come out
// of the UTF-8 decoder and are checked separately for string input.
const BAD_CHAR = /[\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]/;
const EOL = /\r\n?/g;
const S = '[ \\t\\r\\n]';
const XML_DECL = new RegExp(`^${S}+version${S}*=${S}*(["'])1\\.[0-9]+\\1` +
  `(?:${S}+encoding${S}*=${S}*(["'])([A-Za-z][A-Za-z0-9._-]*)\\2)?(?:${S}+standalone${S}*=${S}*(["'])(?:yes|no)\\4)?${S}*$`);
const CDATA_OPEN = '<![CDATA[';
const DEC_DIGITS = /^[0-9]+$/;
const HEX_DIGITS = /^[0-9a-fA-F]+$/;
const PREDEFINED = new Map([['lt', '<'], ['gt', '>'], ['amp', '&'], ['quot', '"'], ['apos', "'"]]);

/** Unwinds from deep inside the parser to write(); a class of its own so that
 *  exceptions thrown by handlers are never mistaken for parse errors. */
class Abort {
  readonly error: StreamError;
  constructor(error: StreamError) {
    this.error = error;
  }
}

function fail(condition: StreamCondition, text: string): never {
  throw new Abort(new StreamError(condition, text));
}

// ASCII name characters: bit 1 may start a name, bit 2 may continue one.
const NAME = new Uint8Array(128);
for (let c = 0; c < 128; c++) {
  if ((c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x5f || c === COLON) NAME[c] = 3;
  else if ((c >= 0x30 && c <= 0x39) || c === DASH || c === 0x2e) NAME[c] = 2;
}

// XML 1.0 §2.3 NameStartChar above ASCII; 0xD800-0xDB7F are the high surrogates of
// U+10000-U+EFFFF (the decoder guarantees a low surrogate follows).
function nameStartHi(c: number): boolean {
  return (c >= 0xc0 && c <= 0xd6) || (c >= 0xd8 && c <= 0xf6) || (c >= 0xf8 && c <= 0x2ff) ||
    (c >= 0x370 && c <= 0x37d) || (c >= 0x37f && c <= 0x1fff) || c === 0x200c || c === 0x200d ||
    (c >= 0x2070 && c <= 0x218f) || (c >= 0x2c00 && c <= 0x2fef) || (c >= 0x3001 && c <= 0xdb7f) ||
    (c >= 0xf900 && c <= 0xfdcf) || (c >= 0xfdf0 && c <= 0xfffd);
}

function nameCharHi(c: number): boolean {
  return nameStartHi(c) || c === 0xb7 || (c >= 0x300 && c <= 0x36f) || c === 0x203f || c === 0x2040 ||
    (c >= 0xdc00 && c <= 0xdfff);
}

function isNameStart(c: number): boolean {
  return c < 128 ? (NAME[c] & 1) !== 0 && c !== COLON : nameStartHi(c);
}

/** Where the last scanName found its colon, -1 if none (an out-parameter, to allocate nothing). */
let colonAt = -1;

/**
 * End of the QName starting at i: -1 if the input ends inside it, -2 if it is not a
 * QName (bad character, empty prefix or local part, two colons). Does not look at the
 * character that ends it.
 */
function scanName(s: string, i: number, len: number): number {
  if (i >= len) return -1;
  if (!isNameStart(s.charCodeAt(i))) return -2;
  colonAt = -1;
  for (let k = i + 1; k < len; k++) {
    const c = s.charCodeAt(k);
    if (c < 128 ? NAME[c] === 0 : !nameCharHi(c)) return colonAt === k - 1 ? -2 : k;
    if (colonAt === k - 1 && colonAt !== -1 && !isNameStart(c)) return -2;
    if (c === COLON) {
      if (colonAt !== -1) return -2;
      colonAt = k;
    }
  }
  return -1;
}

function isXmlChar(cp: number): boolean {
  return cp === TAB || cp === LF || cp === CR || (cp >= 0x20 && cp <= 0xd7ff) ||
    (cp >= 0xe000 && cp <= 0xfffd) || (cp >= 0x10000 && cp <= 0x10ffff);
}

/** Replacement text of the reference s[a..b), between '&' and ';'. */
function decodeRef(s: string, a: number, b: number): string {
  if (b === a) fail('not-well-formed', 'empty entity reference');
  if (s.charCodeAt(a) === HASH) {
    const hex = s.charCodeAt(a + 1) === LOWER_X;
    const digits = s.slice(hex ? a + 2 : a + 1, b);
    if (!(hex ? HEX_DIGITS : DEC_DIGITS).test(digits)) fail('not-well-formed', 'malformed character reference');
    const cp = parseInt(digits, hex ? 16 : 10);
    if (!isXmlChar(cp)) fail('not-well-formed', 'character reference to a character XML does not allow');
    return String.fromCodePoint(cp);
  }
  const name = s.slice(a, b);
  const predefined = PREDEFINED.get(name);
  if (predefined !== undefined) return predefined;
  if (scanName(name, 0, name.length) === -1) fail('restricted-xml', `entity reference &${name}; (only predefined ones)`);
  fail('not-well-formed', 'malformed entity reference');
}

/** Index of the ';' ending the reference that starts at p ('&'); -1 if the input ends first. */
function refEnd(s: string, p: number, len: number): number {
  // The longest useful reference is far shorter; the bound stops a peer parking a huge one.
  const limit = p + 64;
  for (let q = p + 1; q < len; q++) {
    const c = s.charCodeAt(q);
    if (c === SEMI) return q;
    const ok = c === HASH || (c < 128 ? NAME[c] !== 0 : nameCharHi(c));
    if (q >= limit || !ok) fail('not-well-formed', "'&' without a reference");
  }
  return -1;
}

/** Slow path of an attribute value: references, '<', and whitespace normalization. */
function attrValue(s: string, a: number, b: number): string {
  let out = '', from = a;
  for (let k = a; k < b; k++) {
    const c = s.charCodeAt(k);
    if (c === LT) fail('not-well-formed', "'<' in an attribute value");
    if (c === AMP) {
      let q = k + 1;
      while (q < b && s.charCodeAt(q) !== SEMI) q++;
      if (q === b) fail('not-well-formed', "'&' that does not start a reference");
      out += s.slice(from, k) + decodeRef(s, k + 1, q);
      k = q;
      from = q + 1;
    } else if (c === TAB || c === LF || c === CR) {
      out += s.slice(from, k) + ' ';
      if (c === CR && k + 1 < b && s.charCodeAt(k + 1) === LF) k++;
      from = k + 1;
    }
  }
  return out + s.slice(from, b);
}

/** Index of the next ch at or after i; s.length when none. */
function next(s: string, ch: string, i: number): number {
  const k = s.indexOf(ch, i);
  return k === -1 ? s.length : k;
}

function isWS(c: number): boolean {
  return c === SP || c === LF || c === TAB || c === CR;
}

function skipWS(s: string, i: number, len: number): number {
  while (i < len && isWS(s.charCodeAt(i))) i++;
  return i;
}

/** Index after the end tag at p, which must close `name`; -1 if the input ends first. */
function endTag(s: string, p: number, len: number, name: string): number {
  const k = p + 2 + name.length;
  if (k < len && s.charCodeAt(k) === GT && s.startsWith(name, p + 2)) return k + 1;
  const ne = scanName(s, p + 2, len);
  if (ne === -1) return -1;
  if (ne === -2) fail('not-well-formed', 'malformed end tag');
  const i = skipWS(s, ne, len);
  if (i >= len) return -1;
  if (s.charCodeAt(i) !== GT) fail('not-well-formed', 'malformed end tag');
  if (ne - p - 2 !== name.length || !s.startsWith(name, p + 2)) {
    fail('not-well-formed', `</${s.slice(p + 2, ne)}> does not close <${name}>`);
  }
  return i + 1;
}

/** True when a unit of `carried` earlier bytes plus s[a..b) exceeds max UTF-8 bytes. */
function tooBig(s: string, a: number, b: number, carried: number, max: number): boolean {
  // A UTF-16 code unit is 1 to 3 UTF-8 bytes: count exactly only when the bounds disagree.
  const units = b - a;
  if (carried + units > max) return true;
  if (carried + units * 3 <= max) return false;
  return carried + Buffer.byteLength(s.slice(a, b)) > max;
}

const FRAGMENT = Symbol('fragment');
interface InternalOptions extends ParserOptions { [FRAGMENT]?: boolean }

export class StreamParser {
  readonly #h: ParserHandlers;
  readonly #max: number;
  /** parseElement mode: no header, exactly one element. */
  readonly #fragment: boolean;
  #decoder = new TextDecoder('utf-8', { fatal: true });
  /** Unconsumed input: the start of an unfinished token, rescanned with the next chunk. */
  #buf = '';
  #phase = PROLOG;
  #failed = false;
  /** Bumped by reset() and errors, so that a loop interrupted by a handler knows to stop. */
  #gen = 0;
  #headerName = '';
  /** Header attributes: their xmlns:* declarations are in scope for every stanza. */
  #header: Attrs = {};
  #sawDecl = false;
  #fresh = true;
  /** Open elements of the unfinished stanza; [0] is the stanza. */
  #stack: Element[] = [];
  /** Text not yet appended to the innermost open element (joined across references, CDATA and chunks). */
  #text = '';
  #cdata = false;
  /** A stanza (or the header, or the XML declaration) is unfinished; #carried of its bytes precede #buf. */
  #inUnit = false;
  #carried = 0;
  /** Whitespace since the last stanza. */
  #idle = 0;
  /** High surrogate that ended the last string chunk. */
  #hi = '';
  #busy = false;
  #queue: Array<Buffer | string> = [];
  // Next '<', '&', LF, TAB and CR at or after the current attribute value (length when none).
  #aLt = -1; #aAmp = -1; #aLf = -1; #aTab = -1; #aCr = -1;
  // Out-parameters of #startTag.
  #tagEnd = 0; #selfClose = false; #prefixed = false;

  constructor(handlers: ParserHandlers, opts: ParserOptions = {}) {
    this.#h = handlers;
    const max = opts.maxStanzaSize ?? DEFAULT_MAX;
    if (!(max > 0)) throw new RangeError('maxStanzaSize must be positive');
    this.#max = max;
    this.#fragment = (opts as InternalOptions)[FRAGMENT] === true;
    if (this.#fragment) this.#phase = OPEN;
  }

  get bytesInStanza(): number {
    return this.#inUnit ? this.#carried + Buffer.byteLength(this.#buf) : 0;
  }

  write(chunk: Buffer | string): void {
    if (this.#failed) return;
    // A handler may write (or reset) re-entrantly: queue, so input stays in order.
    if (this.#busy) return void this.#queue.push(chunk);
    this.#busy = true;
    try {
      if (this.#queue.length > 0) this.#queue.push(chunk);
      else this.#feed(chunk);
      while (this.#queue.length > 0 && !this.#failed) this.#feed(this.#queue.shift()!);
    } finally {
      this.#busy = false;
    }
  }

  reset(): void {
    // Anything after the element that caused the reset (STARTTLS, SASL success) was sent
    // before the restart and must not be parsed as part of the new stream.
    this.#drop();
    this.#decoder = new TextDecoder('utf-8', { fatal: true });
    this.#phase = this.#fragment ? OPEN : PROLOG;
    this.#failed = false;
    this.#headerName = '';
    this.#header = {};
    this.#sawDecl = false;
    this.#fresh = true;
    this.#idle = 0;
    this.#hi = '';
  }

  #drop(): void {
    this.#gen++;
    this.#buf = '';
    this.#stack = [];
    this.#text = '';
    this.#cdata = false;
    this.#inUnit = false;
    this.#carried = 0;
    this.#queue = [];
  }

  #fail(err: StreamError): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#drop();
    this.#h.onError(err);
  }

  #feed(chunk: Buffer | string): void {
    let str: string;
    if (typeof chunk === 'string') {
      str = this.#hi === '' ? chunk : this.#hi + chunk;
      this.#hi = '';
      const last = str.charCodeAt(str.length - 1);
      if (last >= 0xd800 && last <= 0xdbff) [str, this.#hi] = [str.slice(0, -1), str.slice(-1)];
      if (!str.isWellFormed()) return this.#fail(new StreamError('not-well-formed', 'lone surrogate'));
      if (this.#fresh && str.charCodeAt(0) === 0xfeff) str = str.slice(1);
    } else {
      try {
        str = this.#decoder.decode(chunk, { stream: true });
      } catch {
        return this.#fail(new StreamError('unsupported-encoding', 'invalid UTF-8'));
      }
    }
    if (str.length === 0) return;
    this.#fresh = false;
    if (BAD_CHAR.test(str)) return this.#fail(new StreamError('not-well-formed', 'character not allowed in XML'));
    try {
      this.#parse(this.#buf === '' ? str : this.#buf + str);
    } catch (e) {
      if (!(e instanceof Abort)) throw e;
      this.#fail(e.error);
    }
  }

  #parse(s: string): void {
    const len = s.length, gen = this.#gen, h = this.#h, max = this.#max, stack = this.#stack;
    let top: Element | null = stack.length > 0 ? stack[stack.length - 1] : null;
    let text = this.#text, cdata = this.#cdata, carried = this.#carried;
    // Where the unfinished stanza (or header) starts in s; -1 between stanzas.
    let unitStart = this.#inUnit ? 0 : -1;
    let p = 0;
    // Next '<', '&', ']]>' and CR at or after p (len when none), searched once per buffer
    // rather than once per text run.
    let nLt = -1, nAmp = -1, nCd = -1, nCr = -1;
    this.#aLt = this.#aAmp = this.#aLf = this.#aTab = this.#aCr = -1;
    try {
      while (p < len) {
        let done: Element | null = null;
        if (cdata) {
          const k = s.indexOf(']]>', p);
          let end = k;
          if (k === -1) {
            // Keep a possibly split ']]>' (and a split surrogate pair) for the next chunk.
            end = len - 2;
            const c = s.charCodeAt(end - 1);
            if (c >= 0xd800 && c <= 0xdbff) end--;
          }
          if (end > p) {
            let piece = s.slice(p, end);
            if (piece.indexOf('\r') !== -1) piece = piece.replace(EOL, '\n');
            text = text === '' ? piece : text + piece;
            p = end;
          }
          if (k === -1) break;
          p = k + 3;
          cdata = false;
          continue;
        }
        const c = s.charCodeAt(p);
        if (c !== LT) {
          if (top !== null) {
            if (c === AMP) {
              const q = refEnd(s, p, len);
              if (q === -1) break;
              const piece = decodeRef(s, p + 1, q);
              text = text === '' ? piece : text + piece;
              p = q + 1;
              continue;
            }
            if (nLt < p) nLt = next(s, '<', p);
            if (nAmp < p) nAmp = next(s, '&', p);
            let end = nLt < nAmp ? nLt : nAmp;
            if (end === len) {
              // Keep a trailing CR (of a split CRLF) or ']' (of a split ']]>') for the next chunk.
              const last = s.charCodeAt(len - 1);
              if (last === CR) end = len - 1;
              else if (last === RSQB) end = s.charCodeAt(len - 2) === RSQB ? len - 2 : len - 1;
              if (end <= p) break;
            }
            if (nCd < p) nCd = next(s, ']]>', p);
            if (nCd < end) fail('not-well-formed', "']]>' in text");
            let piece = s.slice(p, end);
            if (nCr < p) nCr = next(s, '\r', p);
            if (nCr < end) piece = piece.replace(EOL, '\n');
            text = text === '' ? piece : text + piece;
            p = end;
            if (carried + (p - unitStart) > max) fail('policy-violation', 'stanza too large');
            continue;
          }
          if (!isWS(c)) fail('not-well-formed', this.#phase === PROLOG ? 'text before the header' : 'text outside stanzas');
          const q = skipWS(s, p, len);
          this.#idle += q - p;
          if (this.#idle > max) fail('policy-violation', 'too much whitespace between stanzas');
          p = q;
          continue;
        }

        if (top === null) {
          if (this.#phase === ENDED) fail('not-well-formed', 'content after the end of the stream');
          unitStart = p;
          this.#idle = 0;
        }
        if (p + 1 >= len) break;
        const c2 = s.charCodeAt(p + 1);
        if (c2 === SLASH) {
          if (top === null) {
            if (this.#phase !== OPEN || this.#fragment) fail('not-well-formed', 'end tag without a start tag');
            const end = endTag(s, p, len, this.#headerName);
            if (end === -1) break;
            p = end;
            unitStart = -1;
            this.#phase = ENDED;
            h.onStreamEnd();
            if (this.#gen !== gen) return;
            continue;
          }
          const end = endTag(s, p, len, top.name);
          if (end === -1) break;
          if (text !== '') { top.children.push(text); text = ''; }
          stack.pop();
          p = end;
          if (stack.length > 0) {
            top = stack[stack.length - 1];
            continue;
          }
          done = top;
          top = null;
        } else if (c2 === BANG) {
          if (p + 2 >= len) break;
          const c3 = s.charCodeAt(p + 2);
          if (c3 === DASH) fail('restricted-xml', 'comments are not allowed');
          if (c3 >= 0x41 && c3 <= 0x5a) fail('restricted-xml', 'DTDs and markup declarations are not allowed');
          if (c3 !== LSQB || top === null) fail('not-well-formed', "unexpected '<!'");
          if (len - p < CDATA_OPEN.length) {
            if (!CDATA_OPEN.startsWith(s.slice(p))) fail('not-well-formed', 'malformed CDATA section');
            break;
          }
          if (!s.startsWith(CDATA_OPEN, p)) fail('not-well-formed', 'malformed CDATA section');
          p += CDATA_OPEN.length;
          cdata = true;
          continue;
        } else if (c2 === QM) {
          if (top !== null || this.#phase !== PROLOG || this.#sawDecl) fail('restricted-xml', 'processing instruction');
          const end = xmlDecl(s, p, len);
          if (end === -1) break;
          this.#sawDecl = true;
          p = end;
          unitStart = -1;
          continue;
        } else {
          const el = this.#startTag(s, p, len);
          if (el === null) break;
          p = this.#tagEnd;
          if (top !== null) {
            if (text !== '') { top.children.push(text); text = ''; }
            if (this.#prefixed) this.#checkPrefixes(el, stack);
            el.parent = top;
            top.children.push(el);
            if (carried + (p - unitStart) > max) fail('policy-violation', 'stanza too large');
            if (!this.#selfClose) {
              if (stack.length >= MAX_DEPTH) fail('policy-violation', 'elements nested too deeply');
              stack.push(el);
              top = el;
            }
            continue;
          }
          if (this.#phase === PROLOG) {
            if (tooBig(s, unitStart, p, carried, max)) fail('policy-violation', 'stream header too large');
            const selfClose = this.#selfClose;
            this.#openStream(el);
            unitStart = -1;
            carried = 0;
            h.onStreamStart(el.name, el.attrs);
            if (this.#gen !== gen) return;
            if (selfClose) {
              this.#phase = ENDED;
              h.onStreamEnd();
              if (this.#gen !== gen) return;
            }
            continue;
          }
          if (this.#prefixed) this.#checkPrefixes(el, stack);
          if (!this.#selfClose) {
            stack.push(el);
            top = el;
            continue;
          }
          done = el;
        }
        // A stanza is complete (state is settled first, in case the handler throws or resets).
        if (tooBig(s, unitStart, p, carried, max)) fail('policy-violation', 'stanza too large');
        unitStart = -1;
        carried = 0;
        if (this.#fragment) this.#phase = ENDED;
        h.onStanza(done);
        if (this.#gen !== gen) return;
      }
    } catch (e) {
      // A handler threw: keep what was consumed before it, so the next write resumes after it.
      if (!(e instanceof Abort) && this.#gen === gen) {
        try {
          this.#save(s, p, text, cdata, carried, unitStart);
        } catch (e2) {
          if (e2 instanceof Abort) this.#fail(e2.error);
        }
      }
      throw e;
    }
    this.#save(s, p, text, cdata, carried, unitStart);
  }

  #save(s: string, p: number, text: string, cdata: boolean, carried: number, unitStart: number): void {
    this.#buf = p < s.length ? s.slice(p) : '';
    this.#text = text;
    this.#cdata = cdata;
    this.#inUnit = unitStart >= 0;
    if (unitStart < 0) return void (this.#carried = 0);
    if (p > unitStart) carried += Buffer.byteLength(unitStart === 0 && p === s.length ? s : s.slice(unitStart, p));
    this.#carried = carried;
    if (carried + Buffer.byteLength(this.#buf) > this.#max) fail('policy-violation', 'stanza too large');
  }

  /** The start tag at p, or null if the input ends first; sets #tagEnd, #selfClose, #prefixed. */
  #startTag(s: string, p: number, len: number): Element | null {
    let i = scanName(s, p + 1, len);
    if (i === -1) return null;
    if (i === -2) fail('not-well-formed', 'invalid element name');
    let prefixed = colonAt !== -1;
    const name = s.slice(p + 1, i);
    const attrs: Attrs = {};
    for (;;) {
      const start = i;
      i = skipWS(s, i, len);
      if (i >= len) return null;
      let c = s.charCodeAt(i);
      if (c === GT || c === SLASH) {
        const self = c === SLASH;
        if (self && i + 1 >= len) return null;
        if (self && s.charCodeAt(i + 1) !== GT) fail('not-well-formed', `'/' not followed by '>' in <${name}>`);
        this.#selfClose = self;
        this.#tagEnd = self ? i + 2 : i + 1;
        break;
      }
      if (i === start) fail('not-well-formed', `unexpected character in <${name}>`);
      const ne = scanName(s, i, len);
      if (ne === -1) return null;
      if (ne === -2) fail('not-well-formed', `invalid attribute name in <${name}>`);
      if (colonAt !== -1) prefixed = true;
      const an = s.slice(i, ne);
      i = ne;
      i = skipWS(s, i, len);
      if (i >= len) return null;
      if (s.charCodeAt(i) !== EQ) fail('not-well-formed', `attribute ${an} has no value`);
      i++;
      i = skipWS(s, i, len);
      if (i >= len) return null;
      c = s.charCodeAt(i);
      if (c !== DQ && c !== SQ) fail('not-well-formed', `unquoted value for attribute ${an}`);
      const vs = i + 1;
      const ve = s.indexOf(c === DQ ? '"' : "'", vs);
      if (ve === -1) return null;
      // Values needing work (references, whitespace to normalize, a stray '<') are rare:
      // test for them with per-buffer cached positions instead of scanning every value.
      if (this.#aLt < vs) this.#aLt = next(s, '<', vs);
      if (this.#aAmp < vs) this.#aAmp = next(s, '&', vs);
      if (this.#aLf < vs) this.#aLf = next(s, '\n', vs);
      if (this.#aTab < vs) this.#aTab = next(s, '\t', vs);
      if (this.#aCr < vs) this.#aCr = next(s, '\r', vs);
      const v = this.#aLt < ve || this.#aAmp < ve || this.#aLf < ve || this.#aTab < ve || this.#aCr < ve
        ? attrValue(s, vs, ve)
        : s.slice(vs, ve);
      if (attrs[an] !== undefined && Object.hasOwn(attrs, an)) fail('not-well-formed', `duplicate attribute ${an}`);
      // Assigning '__proto__' would set the prototype instead of an attribute.
      if (an === '__proto__') Object.defineProperty(attrs, an, { value: v, enumerable: true, writable: true, configurable: true });
      else attrs[an] = v;
      i = ve + 1;
    }
    this.#prefixed = prefixed;
    return new Element(name, attrs);
  }

  #openStream(el: Element): void {
    const colon = el.name.indexOf(':');
    if (el.name.slice(colon + 1) !== 'stream') fail('not-well-formed', `<${el.name}> where the stream header was expected`);
    this.#header = {};
    if (this.#prefixed) this.#checkPrefixes(el, []);
    this.#header = el.attrs;
    this.#headerName = el.name;
    this.#phase = OPEN;
  }

  /** RFC 6120 §11.2: every prefix used must be declared on the element, an ancestor, or the stream header. */
  #checkPrefixes(el: Element, stack: Element[]): void {
    const colon = el.name.indexOf(':');
    if (colon !== -1) this.#needPrefix(el.name.slice(0, colon), el, stack);
    for (const k in el.attrs) {
      const c = k.indexOf(':');
      if (c !== -1 && !k.startsWith('xmlns:')) this.#needPrefix(k.slice(0, c), el, stack);
    }
  }

  #needPrefix(prefix: string, el: Element, stack: Element[]): void {
    if (prefix === 'xml') return;
    if (prefix === 'xmlns') fail('bad-namespace-prefix', "the prefix 'xmlns' is reserved");
    const key = 'xmlns:' + prefix;
    let uri = el.attrs[key];
    for (let i = stack.length - 1; uri === undefined && i >= 0; i--) uri = stack[i].attrs[key];
    if (uri === undefined) uri = this.#header[key];
    // An empty value would undeclare the prefix, which XML Namespaces 1.0 forbids.
    if (uri === undefined || uri === '') fail('bad-namespace-prefix', `undeclared namespace prefix '${prefix}'`);
  }
}

/** Index after the XML declaration at p; -1 if the input ends first. Other PIs are restricted. */
function xmlDecl(s: string, p: number, len: number): number {
  const n = Math.min(len - p, 6);
  for (let k = 2; k < n; k++) {
    const c = s.charCodeAt(p + k);
    if (k < 5 ? c !== 'xml'.charCodeAt(k - 2) : !isWS(c)) fail('restricted-xml', 'processing instructions are not allowed');
  }
  if (n < 6) return -1;
  const q = s.indexOf('?>', p + 5);
  if (q === -1) return -1;
  const m = XML_DECL.exec(s.slice(p + 5, q));
  if (m === null) fail('not-well-formed', 'malformed XML declaration');
  if (m[3] !== undefined && m[3].toLowerCase() !== 'utf-8') fail('unsupported-encoding', `encoding ${m[3]}, not UTF-8`);
  return q + 2;
}

/** Parses one standalone element (surrounding whitespace allowed); throws StreamError on bad input. */
export function parseElement(xml: string): Element {
  const out: { el?: Element; err?: StreamError } = {};
  const opts: InternalOptions = { maxStanzaSize: Infinity, [FRAGMENT]: true };
  const parser = new StreamParser({
    onStreamStart() {},
    onStreamEnd() {},
    onStanza: (el) => void (out.el = el),
    onError: (err) => void (out.err = err),
  }, opts);
  if (!xml.isWellFormed()) throw new StreamError('not-well-formed', 'lone surrogate');
  parser.write(xml);
  if (out.err) throw out.err;
  if (!out.el || parser.bytesInStanza > 0) throw new StreamError('not-well-formed', 'incomplete element');
  return out.el;
}
