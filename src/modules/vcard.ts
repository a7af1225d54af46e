// XEP-0054 vcard-temp.
//   §3.1 retrieving one's vCard: the stored one, or an empty <vCard/> when there is
//        none (one of the two answers the section allows; clients then publish one).
//   §3.2 updating one's vCard: whole-vCard replace, on disk before the result; a set
//        on someone else's vCard is forbidden.
//   §3.3 viewing another user's vCard: answered by the server on behalf of the
//        account; no vCard and no account give the same error, service-unavailable,
//        so that the answer does not tell which accounts exist.
// The vCard is kept as the client sent it (base64 photos included).
import { parseElement } from '../xmpp/parser.ts';
import { NS } from '../xmpp/ns.ts';
import { x } from '../xmpp/element.ts';
import { StanzaError } from '../xmpp/errors.ts';
import { declareOptions } from '../admin/options.ts';
import { VCardStore } from '../store/vcard.ts';
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

    m.iq('get', 'bare', NS.vcard, async (ev) => {
      const own = ev.from.local === ev.to.local && ev.from.domain === ev.to.domain;
      const stored = await store.get(ev.to.local);
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
