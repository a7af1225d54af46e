// JIDs: RFC 7622 §3.1 (structure), §3.2 (domainpart), §3.3 (localpart), §3.4
// (resourcepart), with the PRECIS framework of RFC 8264 (§9 derived property
// values, Appendix of RFC 5892 for the context rules) and the UsernameCaseMapped
// and OpaqueString profiles of RFC 8265 (§3.3, §4.2). The Bidi Rule is RFC 5893 §2.
//
// JavaScript exposes no Bidi_Class, Hangul_Syllable_Type or derived PRECIS table,
// so the code point classes below are built from Unicode property escapes and a
// few explicit ranges; each place that approximates the RFC says so. ASCII input,
// which is nearly all real traffic, takes fast paths that are exact.
import { domainToASCII, domainToUnicode } from 'node:url';
import { isIPv6 } from 'node:net';

export class InvalidJIDError extends Error {
  readonly input: string;
  constructor(input: string, reason: string) {
    const shown = input.length > 100 ? `${input.slice(0, 100)}…` : input;
    super(`invalid JID ${JSON.stringify(shown)}: ${reason}`);
    this.name = 'InvalidJIDError';
    this.input = input;
  }
}

export class JID {
  readonly local: string;
  readonly domain: string;
  readonly resource: string;
  #full: string | undefined;
  #bareString: string | undefined;
  #bare: JID | undefined;

  /** Parts must already be prepared: no checks here, this is the internal fast path. */
  constructor(local: string, domain: string, resource = '') {
    this.local = local;
    this.domain = domain;
    this.resource = resource;
  }

  get bare(): JID {
    if (this.resource === '') return this;
    return (this.#bare ??= new JID(this.local, this.domain));
  }

  get isBare(): boolean {
    return this.resource === '';
  }

  get isDomain(): boolean {
    return this.local === '' && this.resource === '';
  }

  toString(): string {
    if (this.#full === undefined) {
      this.#full = this.resource === '' ? this.toBareString() : `${this.toBareString()}/${this.resource}`;
    }
    return this.#full;
  }

  toBareString(): string {
    if (this.#bareString === undefined) {
      this.#bareString = this.local === '' ? this.domain : `${this.local}@${this.domain}`;
    }
    return this.#bareString;
  }

  equals(other: JID): boolean {
    return this === other || (other != null && this.local === other.local &&
      this.domain === other.domain && this.resource === other.resource);
  }

  withResource(resource: string): JID {
    return new JID(this.local, this.domain, resourcepart(resource, resource));
  }
}

// ---------------------------------------------------------------- parsing

const MAX_PART_BYTES = 1023;
// No valid JID is longer than 3 × 1023 bytes plus two separators; preparation can
// shrink a string (NFC composition, width mapping) but not by more than a factor of four,
// so anything longer is rejected before paying for normalization.
const MAX_INPUT_UNITS = 4 * (3 * MAX_PART_BYTES + 2);

// Every stanza carries to/from, and the same few JIDs recur, so parsed results are
// kept in a Map used as an LRU (insertion order = recency). JIDs are immutable,
// so handing the same object to every caller is safe. Failures are not cached:
// a peer could otherwise fill the cache with garbage at no cost to itself.
const CACHE_MAX = 10_000;
const cache = new Map<string, JID>();

export function parseJID(s: string): JID {
  const hit = cache.get(s);
  if (hit !== undefined) {
    cache.delete(s);
    cache.set(s, hit);
    return hit;
  }
  const jid = parseUncached(s);
  if (cache.size >= CACHE_MAX) evictOldest();
  cache.set(s, jid);
  return jid;
}

// Evicting one entry per insert makes V8 rescan the deleted slots at the head of
// the table on every call (measured: ~7 µs per insert at 10,000 entries), so the
// oldest tenth goes in one pass.
function evictOldest(): void {
  let n = CACHE_MAX / 10;
  for (const key of cache.keys()) {
    cache.delete(key);
    if (--n === 0) break;
  }
}

export function tryParseJID(s: string | undefined | null): JID | null {
  if (s == null || s === '') return null;
  try {
    return parseJID(s);
  } catch (err) {
    if (err instanceof InvalidJIDError) return null;
    throw err;
  }
}

function parseUncached(s: string): JID {
  if (typeof s !== 'string') throw new InvalidJIDError(String(s), 'not a string');
  if (s.length > MAX_INPUT_UNITS) throw new InvalidJIDError(s, 'too long');
  // §3.1: the resourcepart is everything after the first '/', so it may itself
  // contain '/' and '@'; the localpart ends at the first '@' before that.
  const slash = s.indexOf('/');
  const head = slash === -1 ? s : s.slice(0, slash);
  const at = head.indexOf('@');
  const local = at === -1 ? '' : head.slice(0, at);
  const domain = at === -1 ? head : head.slice(at + 1);
  if (at !== -1 && local === '') throw new InvalidJIDError(s, 'empty localpart');
  if (domain === '') throw new InvalidJIDError(s, 'empty domainpart');
  if (slash !== -1 && slash === s.length - 1) throw new InvalidJIDError(s, 'empty resourcepart');
  return new JID(
    at === -1 ? '' : localpart(local, s),
    domainpart(domain, s),
    slash === -1 ? '' : resourcepart(s.slice(slash + 1), s),
  );
}

// ---------------------------------------------------------------- the three parts

export function prepLocal(s: string): string {
  return localpart(s, s);
}

export function prepDomain(s: string): string {
  return domainpart(s, s);
}

export function prepResource(s: string): string {
  return resourcepart(s, s);
}

/** RFC 8265 §4: OpaqueString for passwords. The error never echoes the password. */
export function prepPassword(s: string): string {
  if (s.length === 0) throw new InvalidJIDError('', 'empty password');
  if (PRINTABLE_ASCII_SP.test(s)) return s;
  const out = opaqueString(s);
  const bad = checkClass(out, true);
  if (bad !== null) throw new InvalidJIDError('', `password: ${bad}`);
  return out;
}

const PRINTABLE_ASCII = /^[\x21-\x7e]+$/;
const PRINTABLE_ASCII_SP = /^[\x20-\x7e]+$/;
// RFC 7622 §3.3.1: excluded on top of the IdentifierClass for compatibility with
// the old nodeprep profile, and because they are JID or XML delimiters.
const LOCAL_EXCLUDED = /["&'/:<>@]/;

function localpart(s: string, input: string): string {
  if (s.length === 0) throw new InvalidJIDError(input, 'empty localpart');
  let out: string;
  if (PRINTABLE_ASCII.test(s)) {
    out = s.toLowerCase();
  } else {
    out = usernameCaseMapped(s, input);
  }
  const excluded = LOCAL_EXCLUDED.exec(out);
  if (excluded) throw new InvalidJIDError(input, `character ${JSON.stringify(excluded[0])} not allowed in localpart`);
  if (!fitsBytes(out)) throw new InvalidJIDError(input, 'localpart longer than 1023 bytes');
  return out;
}

function resourcepart(s: string, input: string): string {
  if (s.length === 0) throw new InvalidJIDError(input, 'empty resourcepart');
  let out = s;
  if (!PRINTABLE_ASCII_SP.test(s)) {
    out = opaqueString(s);
    if (out.length === 0) throw new InvalidJIDError(input, 'empty resourcepart');
    const bad = checkClass(out, true);
    if (bad !== null) throw new InvalidJIDError(input, `resourcepart: ${bad}`);
  }
  if (!fitsBytes(out)) throw new InvalidJIDError(input, 'resourcepart longer than 1023 bytes');
  return out;
}

// RFC 8265 §3.3.3 (enforcement), in its order: width mapping, case mapping, NFC,
// then the IdentifierClass and the Bidi Rule. RFC 8264 §7 wants the result to be
// stable under reapplication; odd case/normalization interactions can need a
// second pass, and a string that never settles is rejected.
function usernameCaseMapped(s: string, input: string): string {
  let out = mapUsername(s);
  for (let pass = 0; ; pass++) {
    const again = mapUsername(out);
    if (again === out) break;
    if (pass === 3) throw new InvalidJIDError(input, 'localpart is not stable under preparation');
    out = again;
  }
  if (out.length === 0) throw new InvalidJIDError(input, 'empty localpart');
  const bad = checkClass(out, false) ?? bidiRule(out);
  if (bad !== null) throw new InvalidJIDError(input, `localpart: ${bad}`);
  return out;
}

// String.prototype.toLowerCase is Unicode's full, locale-independent toLowerCase()
// (with SpecialCasing, e.g. final sigma), which is what RFC 8264 §5.2.3 names.
function mapUsername(s: string): string {
  return widthMap(s).toLowerCase().normalize('NFC');
}

// RFC 8265 §4.2.2: non-ASCII spaces become U+0020, then NFC; no case or width mapping.
function opaqueString(s: string): string {
  return s.replace(/\p{Zs}/gu, ' ').normalize('NFC');
}

// RFC 8265 §3.3.2 step 1: fullwidth and halfwidth characters map to their
// decomposition. The characters whose compatibility decomposition is tagged
// <wide> or <narrow> are U+3000 and U+FF01–U+FFEE, so NFKC is applied to those
// alone (not to the whole string, which would also fold ℃, ﬁ, ² and the like).
function widthMap(s: string): string {
  return s.replace(/[\u3000\uFF01-\uFFEE]/g, (c) => c.normalize('NFKC'));
}

function fitsBytes(s: string): boolean {
  // A UTF-16 code unit is at most 3 UTF-8 bytes, so short strings need no count.
  return s.length * 3 <= MAX_PART_BYTES || Buffer.byteLength(s, 'utf8') <= MAX_PART_BYTES;
}

// ---------------------------------------------------------------- domainpart

const IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
// NR-LDH labels (RFC 5890 §2.3.1), lower-cased. Underscore is tolerated because
// container and internal host names use it, though DNS host names may not.
const LDH_LABEL = /^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$/;
const ASCII_DOMAIN = /^[\x21-\x7e]+$/;

function domainpart(s: string, input: string): string {
  let d = s;
  if (!ASCII_DOMAIN.test(d)) {
    // Same width mapping as usernames (RFC 7622 §3.2.2 defers to RFC 5892's
    // mappings); the ideographic full stop is a label separator as in UTS #46.
    d = widthMap(d).replace(/\u3002/g, '.').toLowerCase().normalize('NFC');
  }
  // §3.2: one final dot is stripped so that "example.com." and "example.com" match.
  if (d.endsWith('.')) d = d.slice(0, -1);
  if (d === '') throw new InvalidJIDError(input, 'empty domainpart');

  if (d.startsWith('[')) {
    const inner = d.slice(1, -1);
    if (!d.endsWith(']') || inner.includes('%') || !isIPv6(inner)) {
      throw new InvalidJIDError(input, 'invalid IPv6 literal');
    }
    return d.toLowerCase();
  }
  if (IPV4.test(d)) return d;

  d = d.toLowerCase();
  const labels = d.split('.');
  let changed = false;
  for (let i = 0; i < labels.length; i++) {
    const label = labels[i];
    const prepared = domainLabel(label, input);
    if (prepared !== label) {
      labels[i] = prepared;
      changed = true;
    }
  }
  // A numeric top-level label would make the name read as an (invalid) IPv4 address.
  if (/^\d+$/.test(labels[labels.length - 1])) {
    throw new InvalidJIDError(input, 'domainpart is neither a host name nor an IPv4 address');
  }
  const out = changed ? labels.join('.') : d;
  if (!fitsBytes(out)) throw new InvalidJIDError(input, 'domainpart longer than 1023 bytes');
  return out;
}

// Returns the label in its Unicode form: RFC 7622 §3.2.1 turns A-labels into U-labels.
function domainLabel(label: string, input: string): string {
  if (label === '') throw new InvalidJIDError(input, 'empty label in domainpart');
  if (PRINTABLE_ASCII.test(label)) {
    if (label.length > 63 || !LDH_LABEL.test(label)) {
      throw new InvalidJIDError(input, `invalid domain label ${JSON.stringify(label)}`);
    }
    if (label[2] === '-' && label[3] === '-') {
      if (!label.startsWith('xn--')) throw new InvalidJIDError(input, `reserved domain label ${JSON.stringify(label)}`);
      const unicode = domainToUnicode(label);
      if (unicode === '' || unicode.startsWith('xn--')) {
        throw new InvalidJIDError(input, `invalid A-label ${JSON.stringify(label)}`);
      }
      checkULabel(unicode, label, input);
      return unicode;
    }
    return label;
  }
  // node:url implements UTS #46 (with the ContextJ and Bidi checks). A label it
  // would map to something else (symbols folded, digits that read as IPv4) does not
  // survive the round trip and is rejected rather than silently rewritten.
  const ascii = domainToASCII(label);
  if (ascii === '' || !ascii.startsWith('xn--') || ascii.includes('.')) {
    throw new InvalidJIDError(input, `invalid domain label ${JSON.stringify(label)}`);
  }
  checkULabel(label, ascii, input);
  return label;
}

function checkULabel(unicode: string, ascii: string, input: string): void {
  if (ascii.length > 63) throw new InvalidJIDError(input, 'domain label longer than 63 octets');
  if (domainToUnicode(ascii) !== unicode || domainToASCII(unicode) !== ascii) {
    throw new InvalidJIDError(input, `invalid domain label ${JSON.stringify(unicode)}`);
  }
  // IDNA2008 (RFC 5892) disallows what UTS #46 lets through (symbols, emoji).
  // Its derived property is close to PRECIS IdentifierClass minus ASCII punctuation.
  const bad = /[^a-z0-9_\-\x80-\u{10ffff}]/u.exec(unicode)?.[0];
  if (bad !== undefined) throw new InvalidJIDError(input, `character ${JSON.stringify(bad)} not allowed in domainpart`);
  const why = checkClass(unicode, false);
  if (why !== null) throw new InvalidJIDError(input, `domainpart: ${why}`);
}

// ---------------------------------------------------------------- PRECIS classes

// RFC 5892 §2.6 exceptions, which RFC 8264 §9 evaluates before anything else.
const EXCEPTION_PVALID = new Set([0x00df, 0x03c2, 0x06fd, 0x06fe, 0x0f0b, 0x3007]);
const EXCEPTION_DISALLOWED = new Set([0x0640, 0x07fa, 0x302e, 0x302f, 0x3031, 0x3032, 0x3033, 0x3034, 0x3035, 0x303b]);

const RE_UNASSIGNED = /\p{Cn}/u;
const RE_IGNORABLE = /\p{Default_Ignorable_Code_Point}/u;
const RE_CONTROL = /\p{Cc}/u;
const RE_LETTER_DIGIT = /[\p{Ll}\p{Lu}\p{Lo}\p{Nd}\p{Lm}\p{Mn}\p{Mc}]/u;
const RE_FREE_ONLY = /[\p{Lt}\p{Nl}\p{No}\p{Me}\p{Zs}\p{S}\p{P}]/u;

/**
 * Checks every code point against the IdentifierClass (freeform = false) or the
 * FreeformClass (RFC 8264 §9, steps in its order). Returns why the string fails,
 * or null.
 *
 * Approximations of the derived property table: "Unassigned" uses \p{Cn} of the
 * Unicode version built into Node; "OldHangulJamo" uses the conjoining jamo
 * blocks; the ContextJ joining-type rule uses script membership instead of the
 * Joining_Type property. HasCompat (toNFKC(cp) ≠ cp) is computed exactly.
 */
function checkClass(s: string, freeform: boolean): string | null {
  const cps = Array.from(s, (c) => c.codePointAt(0)!);
  for (let i = 0; i < cps.length; i++) {
    const cp = cps[i];
    if (cp >= 0x21 && cp <= 0x7e) continue; // ASCII7: always PVALID
    if (cp === 0x20 && freeform) continue;
    const why = classify(cp, cps, i, freeform);
    if (why !== null) return `${why} U+${hex(cp)}`;
  }
  return null;
}

function classify(cp: number, cps: number[], i: number, freeform: boolean): string | null {
  if (EXCEPTION_PVALID.has(cp)) return null;
  if (EXCEPTION_DISALLOWED.has(cp)) return 'disallowed character';
  const contextO = contextORule(cp, cps, i);
  if (contextO !== undefined) return contextO ? null : 'character out of its required context';
  const ch = String.fromCodePoint(cp);
  if (RE_UNASSIGNED.test(ch)) return 'unassigned code point';
  if (cp === 0x200c || cp === 0x200d) return contextJRule(cp, cps, i) ? null : 'joiner out of its required context';
  if ((cp >= 0x1100 && cp <= 0x11ff) || (cp >= 0xa960 && cp <= 0xa97f) || (cp >= 0xd7b0 && cp <= 0xd7ff)) {
    return 'old Hangul jamo';
  }
  if (RE_IGNORABLE.test(ch) || isNoncharacter(cp)) return 'ignorable code point';
  if (RE_CONTROL.test(ch)) return 'control character';
  if (ch.normalize('NFKC') !== ch) return freeform ? null : 'character with a compatibility equivalent';
  if (RE_LETTER_DIGIT.test(ch)) return null;
  if (RE_FREE_ONLY.test(ch)) return freeform ? null : 'space, symbol or punctuation';
  return 'disallowed character';
}

function isNoncharacter(cp: number): boolean {
  return (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe;
}

const RE_GREEK = /\p{sc=Greek}/u;
const RE_HEBREW = /\p{sc=Hebrew}/u;
const RE_KANA_HAN = /[\p{sc=Hiragana}\p{sc=Katakana}\p{sc=Han}]/u;

/** RFC 5892 Appendix A.3–A.9; undefined when cp is not a CONTEXTO character. */
function contextORule(cp: number, cps: number[], i: number): boolean | undefined {
  const at = (j: number) => (j >= 0 && j < cps.length ? String.fromCodePoint(cps[j]) : '');
  switch (cp) {
    case 0x00b7: return cps[i - 1] === 0x6c && cps[i + 1] === 0x6c; // Catalan l·l
    case 0x0375: return RE_GREEK.test(at(i + 1));
    case 0x05f3:
    case 0x05f4: return RE_HEBREW.test(at(i - 1));
    case 0x30fb: return cps.some((c) => c !== 0x30fb && RE_KANA_HAN.test(String.fromCodePoint(c)));
  }
  if (cp >= 0x0660 && cp <= 0x0669) return !cps.some((c) => c >= 0x06f0 && c <= 0x06f9);
  if (cp >= 0x06f0 && cp <= 0x06f9) return !cps.some((c) => c >= 0x0660 && c <= 0x0669);
  return undefined;
}

// Scripts whose letters join (Joining_Type D/L/R), for the ZWNJ rule of A.1.
const RE_JOINING = /[\p{sc=Arabic}\p{sc=Syriac}\p{sc=Nko}\p{sc=Mongolian}\p{sc=Mandaic}\p{sc=Manichaean}\p{sc=Psalter_Pahlavi}\p{sc=Adlam}\p{sc=Hanifi_Rohingya}\p{sc=Sogdian}\p{sc=Phags_Pa}]/u;
const RE_TRANSPARENT = /[\p{Mn}\p{Me}\p{Cf}]/u;

/** RFC 5892 Appendix A.1 (ZWNJ) and A.2 (ZWJ). */
function contextJRule(cp: number, cps: number[], i: number): boolean {
  if (i > 0 && isVirama(cps[i - 1])) return true;
  if (cp === 0x200d) return false;
  const isT = (c: number) => RE_TRANSPARENT.test(String.fromCodePoint(c));
  let before = i - 1;
  while (before >= 0 && isT(cps[before])) before--;
  let after = i + 1;
  while (after < cps.length && isT(cps[after])) after++;
  return before >= 0 && after < cps.length &&
    RE_JOINING.test(String.fromCodePoint(cps[before])) && RE_JOINING.test(String.fromCodePoint(cps[after]));
}

// Canonical_Combining_Class = 9 (Virama), which JavaScript cannot query directly.
// Canonical reordering sorts adjacent marks by class, so a mark with class 9 is
// moved in front of U+3099 (class 8) and behind U+05B0 (class 10): exact, and only
// reached for strings that contain a joiner.
function isVirama(cp: number): boolean {
  const m = String.fromCodePoint(cp);
  const a = `a${m}\u3099`;
  const b = `a\u05b0${m}`;
  return a.normalize('NFD') !== a && b.normalize('NFD') !== b;
}

// ---------------------------------------------------------------- Bidi Rule

type Bidi = 'L' | 'R' | 'AN' | 'EN' | 'NSM' | 'ON';

// Approximate Bidi_Class: blocks whose default class is R or AL count as R (the
// rule treats both alike); Arabic-Indic digits are AN; European digits, Extended
// Arabic-Indic digits and superscripts are EN; other letters, digits and spacing
// marks are L; non-spacing and enclosing marks are NSM; the rest is neutral. The
// neutrals the rule distinguishes (ES, CS, ET, ON, BN) are allowed and forbidden
// in the same places, so one bucket serves them all.
function bidiOf(cp: number): Bidi {
  const ch = String.fromCodePoint(cp);
  if (/[\p{Mn}\p{Me}]/u.test(ch)) return 'NSM';
  if ((cp >= 0x30 && cp <= 0x39) || (cp >= 0x06f0 && cp <= 0x06f9) || cp === 0xb2 || cp === 0xb3 ||
    cp === 0xb9 || (cp >= 0x2070 && cp <= 0x2089) || (cp >= 0xff10 && cp <= 0xff19)) return 'EN';
  if ((cp >= 0x0600 && cp <= 0x0605) || (cp >= 0x0660 && cp <= 0x0669) || cp === 0x066b || cp === 0x066c ||
    cp === 0x06dd || cp === 0x0890 || cp === 0x0891 || cp === 0x08e2 ||
    (cp >= 0x10d30 && cp <= 0x10d39) || (cp >= 0x10e60 && cp <= 0x10e7e)) return 'AN';
  if ((cp >= 0x0590 && cp <= 0x08ff) || (cp >= 0xfb1d && cp <= 0xfdff) || (cp >= 0xfe70 && cp <= 0xfefe) ||
    (cp >= 0x10800 && cp <= 0x10fff) || (cp >= 0x1e800 && cp <= 0x1efff)) return 'R';
  if (/[\p{L}\p{Mc}\p{N}]/u.test(ch)) return 'L';
  return 'ON';
}

/** RFC 5893 §2, applied only to strings with right-to-left characters (RFC 8265 §3.3.3). */
function bidiRule(s: string): string | null {
  const classes = Array.from(s, (c) => bidiOf(c.codePointAt(0)!));
  if (!classes.some((c) => c === 'R' || c === 'AN')) return null;
  // Conditions 1 and 5 together: a string holding RTL characters must open with
  // one, since a left-to-right opening would forbid the RTL characters.
  if (classes[0] !== 'R') return 'right-to-left string must start with a right-to-left letter';
  if (classes.includes('L')) return 'right-to-left string contains left-to-right characters';
  let last = classes.length - 1;
  while (last > 0 && classes[last] === 'NSM') last--;
  if (classes[last] === 'ON') return 'right-to-left string must end with a letter or digit';
  if (classes.includes('EN') && classes.includes('AN')) return 'right-to-left string mixes European and Arabic-Indic digits';
  return null;
}

function hex(cp: number): string {
  return cp.toString(16).toUpperCase().padStart(4, '0');
}
