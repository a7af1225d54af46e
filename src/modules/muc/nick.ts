// RFC 8266 (PRECIS Nickname profile) for room nicknames, XEP-0045 §7.2.1:
//   §2.2 enforcement: non-ASCII spaces mapped to U+0020, leading and trailing
//        spaces removed, runs of spaces collapsed (additional mapping rule),
//        NFKC (normalization rule), then the FreeformClass (RFC 8264 §4.3).
//   §2.4 comparison: the enforced forms case-folded (toLowerCase) are equal.
// One deliberate deviation: RFC 8264 lets U+200D ZERO WIDTH JOINER through only
// after a virama (CONTEXTJ, RFC 5892 A.2), which refuses every emoji ZWJ
// sequence (👨‍👩‍👧); users pick those as nicknames and every other server accepts
// them, so a ZWJ between two pictographs (UTS #51 §2.3) is allowed too.

export class InvalidNickError extends Error {
  constructor(reason: string) {
    super(`invalid nickname: ${reason}`);
    this.name = 'InvalidNickError';
  }
}

const MAX_BYTES = 1023;
const SPACE = /[\u00A0\u1680\u2000-\u200A\u202F\u205F\u3000]/gu;
// FreeformClass DISALLOWED: controls, unassigned, surrogates, non-characters, private use (RFC 8264 §9.11-9.14).
const DISALLOWED = /[\p{Cc}\p{Cn}\p{Cs}\p{Co}]/u;
const PICTO = /\p{Extended_Pictographic}/u;
// Emoji modifiers, variation selector 16 and tags may sit between a pictograph and the ZWJ.
const EMOJI_TAIL = /[\u{1F3FB}-\u{1F3FF}\uFE0F\u{E0020}-\u{E007F}]/u;
const VIRAMA = /[\u094D\u09CD\u0A4D\u0ACD\u0B4D\u0BCD\u0C4D\u0CCD\u0D4D\u0DCA\u0E3A\u0F84\u1039\u103A\u17D2\u1B44\u1BAA\uA8C4\uA953\uABED\u{11046}\u{110B9}\u{111C0}]/u;

/** The enforced form of a nickname (RFC 8266 §2.2); throws InvalidNickError. */
export function prepNick(input: string): string {
  let s = input.replace(SPACE, ' ').normalize('NFKC');
  s = s.replace(/ +/g, ' ').trim();
  if (s === '') throw new InvalidNickError('empty');
  const cps = [...s];
  for (let i = 0; i < cps.length; i++) {
    const cp = cps[i];
    if (DISALLOWED.test(cp)) throw new InvalidNickError(`U+${cp.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')} is not allowed`);
    if (cp === '\u200D' && !joinerAllowed(cps, i)) throw new InvalidNickError('joiner out of context');
    if (cp === '\u200C' && !(i > 0 && VIRAMA.test(cps[i - 1]))) throw new InvalidNickError('non-joiner out of context');
  }
  if (Buffer.byteLength(s) > MAX_BYTES) throw new InvalidNickError('too long');
  return s;
}

/** The form two nicknames are compared in (RFC 8266 §2.4). */
export function nickKey(enforced: string): string {
  return enforced.toLowerCase().normalize('NFKC');
}

function joinerAllowed(cps: string[], i: number): boolean {
  if (i > 0 && VIRAMA.test(cps[i - 1])) return true;
  let j = i - 1;
  while (j >= 0 && EMOJI_TAIL.test(cps[j])) j--;
  return j >= 0 && PICTO.test(cps[j]) && i + 1 < cps.length && PICTO.test(cps[i + 1]);
}
