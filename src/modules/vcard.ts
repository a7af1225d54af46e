// XEP-0054 vcard-temp.
//   §3.1 retrieving one's vCard: the stored one, or an empty <vCard/> when there is
//        none (one of the two answers the section allows; clients then publish one).
//   §3.2 updating one's vCard: whole-vCard replace, on disk before the result; a set
//        on someone else's vCard is forbidden.
//   §3.3 viewing another user's vCard: answered by the server on behalf of the
//        account; no vCard and no account give the same error, service-unavailable,
//        so that the answer does not tell which accounts exist.
// The vCard is kept as the client sent it (base64 photos included).
// With a directory that keeps profiles (LDAP), FN, EMAIL and PHOTO come from the
// directory's attributes (--ldap-name-attribute, ...) and win over what the user
// stored, which keeps the other fields; a user of the directory with no stored
// vCard gets one made of the attributes alone.
import { parseElement } from '../xmpp/parser.ts';
import { NS } from '../xmpp/ns.ts';
import { x, type Element } from '../xmpp/element.ts';
import { StanzaError } from '../xmpp/errors.ts';
import { declareOptions } from '../admin/options.ts';
import { VCardStore } from '../store/vcard.ts';
import type { DirectoryProfile } from '../store/directory.ts';
// Declares the --ldap-* options (the attribute mapping read here among them).
import '../store/ldap/options.ts';
import type { Module } from './api.ts';
import type { AccountRemovedEvent } from './register.ts';

declareOptions([
  { name: 'max-vcard-size', type: 'int', default: 65536, min: 0, group: 'vcard', placeholder: 'BYTES',
    description: 'Largest vCard (XEP-0054) a user may store, in bytes of XML; a larger one is refused with not-acceptable.' },
]);

export const vcard: Module = {
  name: 'vcard',
  load(m) {
    const store = new VCardStore(m.kv);
    const maxSize = Number(m.config['max-vcard-size'] ?? 65536);
    m.feature(NS.vcard);
    m.info.accountFeatures.add(NS.vcard);

    const directory = m.directory;
    m.iq('get', 'bare', NS.vcard, async (ev) => {
      const own = ev.from.local === ev.to.local && ev.from.domain === ev.to.domain;
      const stored = await store.get(ev.to.local);
      if (directory.profile) {
        // null: not a user of the directory, whatever may be stored.
        const profile = await directory.profile(ev.to.local);
        if (profile) return withProfile(stored !== undefined ? parseElement(stored) : x('vCard', { xmlns: NS.vcard }), profile);
        throw new StanzaError('service-unavailable');
      }
      if (stored !== undefined) return parseElement(stored);
      if (own) return x('vCard', { xmlns: NS.vcard });
      throw new StanzaError('service-unavailable');
    });

    m.iq('set', 'bare', NS.vcard, async (ev) => {
      if (ev.from.local !== ev.to.local || ev.from.domain !== ev.to.domain) {
        throw new StanzaError('forbidden', "only the owner may change a vCard");
      }
      const el = ev.stanza.elements[0];
      if (!el.is('vCard')) throw new StanzaError('bad-request', 'expected a vCard element');
      const copy = el.clone();
      // The namespace may have come from the iq or the stream; the stored copy must carry it.
      copy.attrs.xmlns = NS.vcard;
      const xml = copy.toString();
      const size = Buffer.byteLength(xml);
      if (size > maxSize) {
        // RFC 6120 §8.3.3.12: not-acceptable is the condition for content over a size policy.
        throw new StanzaError('not-acceptable', `the vCard is ${size} bytes; the limit is ${maxSize}`);
      }
      await store.set(ev.from.local, xml);
      m.log.debug(`vCard of ${ev.from.local} stored (${size} bytes)`);
      return null;
    });

    m.hook<AccountRemovedEvent>('account-removed', async ({ username }) => {
      await store.delete(username);
    });
  },
};

/** XEP-0054 §7 fields from the directory replace the user's own. */
export function withProfile(vcard: Element, p: DirectoryProfile): Element {
  const out = vcard.clone();
  out.attrs.xmlns = NS.vcard;
  const replace = (name: string, el: Element | null): void => {
    for (const old of out.getChildren(name)) out.remove(old);
    if (el) out.append(el);
  };
  if (p.name) replace('FN', x('FN', null, p.name));
  if (p.email) replace('EMAIL', x('EMAIL', null, x('INTERNET'), x('PREF'), x('USERID', null, p.email)));
  if (p.photo) replace('PHOTO', x('PHOTO', null, x('TYPE', null, 'image/jpeg'), x('BINVAL', null, p.photo)));
  return out;
}
