// A small XML element tree for stanzas. Namespaces resolve through the parent
// chain (as in ltx), so a parsed stanza keeps the bytes the client sent and
// re-serialises without adding redundant xmlns attributes.

export type Node = Element | string;
export type Attrs = Record<string, string>;

export class Element {
  name: string;
  attrs: Attrs;
  children: Node[];
  parent: Element | null = null;

  constructor(name: string, attrs?: Attrs | null, children?: Node[]) {
    this.name = name;
    this.attrs = attrs ?? {};
    this.children = [];
    if (children) for (const c of children) this.append(c);
  }

  /** Namespace of this element, inherited from ancestors; '' when none is declared. */
  getNS(): string {
    const colon = this.name.indexOf(':');
    const key = colon === -1 ? 'xmlns' : 'xmlns:' + this.name.slice(0, colon);
    for (let e: Element | null = this; e; e = e.parent) {
      const v = e.attrs[key];
      if (v !== undefined) return v;
    }
    return '';
  }

  /** Local name without prefix. */
  getName(): string {
    const colon = this.name.indexOf(':');
    return colon === -1 ? this.name : this.name.slice(colon + 1);
  }

  is(name: string, xmlns?: string): boolean {
    return this.getName() === name && (xmlns === undefined || this.getNS() === xmlns);
  }

  append(...nodes: Node[]): this {
    for (const n of nodes) {
      if (typeof n !== 'string') {
        if (n.parent) n.parent.remove(n);
        n.parent = this;
      }
      this.children.push(n);
    }
    return this;
  }

  /** Builder: appends a new child and returns it (ltx style). */
  c(name: string, attrs?: Attrs | null): Element {
    const child = new Element(name, attrs);
    this.append(child);
    return child;
  }

  /** Builder: appends text and returns this. */
  t(text: string): this {
    this.children.push(text);
    return this;
  }

  remove(node: Element): this {
    const i = this.children.indexOf(node);
    if (i !== -1) this.children.splice(i, 1);
    node.parent = null;
    return this;
  }

  get elements(): Element[] {
    const out: Element[] = [];
    for (const c of this.children) if (typeof c !== 'string') out.push(c);
    return out;
  }

  getChild(name: string, xmlns?: string): Element | undefined {
    for (const c of this.children) if (typeof c !== 'string' && c.is(name, xmlns)) return c;
    return undefined;
  }

  getChildren(name: string, xmlns?: string): Element[] {
    const out: Element[] = [];
    for (const c of this.children) if (typeof c !== 'string' && c.is(name, xmlns)) out.push(c);
    return out;
  }

  /** First child element in the given namespace (the payload of an IQ, for example). */
  getChildByNS(xmlns: string): Element | undefined {
    for (const c of this.children) if (typeof c !== 'string' && c.getNS() === xmlns) return c;
    return undefined;
  }

  text(): string {
    let s = '';
    for (const c of this.children) if (typeof c === 'string') s += c;
    return s;
  }

  getChildText(name: string, xmlns?: string): string | undefined {
    return this.getChild(name, xmlns)?.text();
  }

  /** Deep copy, detached from any parent. Namespaces inherited from the old parent are made explicit. */
  clone(): Element {
    const attrs = { ...this.attrs };
    const copy = new Element(this.name, attrs);
    for (const c of this.children) copy.append(typeof c === 'string' ? c : c.clone());
    return copy;
  }

  toString(): string {
    let s = '<' + this.name;
    for (const k in this.attrs) {
      const v = this.attrs[k];
      if (v !== undefined && v !== null) s += ' ' + k + '="' + escapeAttr(String(v)) + '"';
    }
    if (this.children.length === 0) return s + '/>';
    s += '>';
    for (const c of this.children) s += typeof c === 'string' ? escapeText(c) : c.toString();
    return s + '</' + this.name + '>';
  }
}

/** Hyperscript-style builder: x('iq', {type: 'result'}, x('query', {xmlns})). */
export function x(name: string, attrs?: Attrs | null, ...children: Array<Node | Node[] | null | undefined | false>): Element {
  const el = new Element(name, attrs);
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) el.append(...c);
    else el.append(c);
  }
  return el;
}

const TEXT_RE = /[&<>]/;
const ATTR_RE = /[&<>"']/;

export function escapeText(s: string): string {
  if (!TEXT_RE.test(s)) return s;
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function escapeAttr(s: string): string {
  if (!ATTR_RE.test(s)) return s;
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}
