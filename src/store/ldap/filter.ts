// LDAP search filters from templates: RFC 4515 §3 string filters, with every
// value that comes from outside (a client's localpart, a DN read back from the
// directory) escaped, so that a localpart like "*)(uid=*" is one literal
// assertion value that matches nobody instead of a wildcard that matches all.
//
// Templates are the operator's: "(&(objectClass=inetOrgPerson)(uid=%u))".
//   %u  the prepared localpart
//   %d  the user's DN (group filters)
//   %%  a literal %
// Anything else after % is a configuration error, found at start-up.

/**
 * RFC 4515 §3 assertion-value escaping: "*", "(", ")", "\" and NUL always; the
 * rest of the value is UTF-8 (the RFC allows UTF-8 as is, but bytes that are not
 * valid UTF-8 are escaped too, which a JS string cannot hold anyway).
 */
export function escapeFilterValue(value: string): string {
  let out = '';
  for (const ch of value) {
    switch (ch) {
      case '*': out += '\\2a'; break;
      case '(': out += '\\28'; break;
      case ')': out += '\\29'; break;
      case '\\': out += '\\5c'; break;
      case '\0': out += '\\00'; break;
      default: out += ch;
    }
  }
  return out;
}

export class FilterTemplateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FilterTemplateError';
  }
}

export interface FilterValues {
  u?: string;
  d?: string;
}

/** Checks a template once (at start-up): balanced parentheses, known placeholders, the ones `needs`. */
export function checkFilterTemplate(template: string, needs: ReadonlyArray<'u' | 'd'>, allowed: ReadonlyArray<'u' | 'd'> = needs): void {
  const t = template.trim();
  if (!t.startsWith('(') || !t.endsWith(')')) throw new FilterTemplateError('a filter must be enclosed in parentheses');
  let depth = 0;
  const seen = new Set<string>();
  for (let i = 0; i < t.length; i++) {
    const c = t[i];
    if (c === '(') depth++;
    else if (c === ')') {
      depth--;
      if (depth < 0) throw new FilterTemplateError('unbalanced parentheses');
    } else if (c === '%') {
      const p = t[i + 1];
      if (p === '%') { i++; continue; }
      if (p !== 'u' && p !== 'd') throw new FilterTemplateError(`unknown placeholder %${p ?? ''} (use %u, %d or %%)`);
      if (!allowed.includes(p)) throw new FilterTemplateError(`%${p} cannot be used in this filter`);
      seen.add(p);
      i++;
    }
  }
  if (depth !== 0) throw new FilterTemplateError('unbalanced parentheses');
  for (const n of needs) if (!seen.has(n)) throw new FilterTemplateError(`the filter must contain %${n}`);
}

/** The template with its placeholders replaced by escaped values. */
export function renderFilter(template: string, values: FilterValues): string {
  return template.trim().replace(/%([%ud])/g, (_, p: string) => {
    if (p === '%') return '%';
    const v = values[p as 'u' | 'd'];
    // Misuse: checkFilterTemplate rejects templates whose placeholders the caller cannot fill.
    if (v === undefined) throw new TypeError(`no value for %${p}`);
    return escapeFilterValue(v);
  });
}
