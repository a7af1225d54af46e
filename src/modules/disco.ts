// XEP-0030 Service Discovery.
//   §3.1 disco#info of the server: its identities and the features modules declared.
//   §4   disco#items of the server: the items modules registered on ServerInfo.
//   §3.1/§4.1 with a 'node' the server does not know: item-not-found (§7).
//   Queries to a user's bare JID are answered by the server on behalf of the
//   account (RFC 6120 §10.3.3, RFC 6121 §8.5.1): identity account/registered.
//   Queries to a full JID are the client's to answer (router default).
import { x } from '../xmpp/element.ts';
import type { Element } from '../xmpp/element.ts';
import { NS } from '../xmpp/ns.ts';
import { StanzaError } from '../xmpp/errors.ts';
import type { JID } from '../xmpp/jid.ts';
import type { Module, ModuleContext } from './api.ts';

export const disco: Module = {
  name: 'disco',
  load(m) {
    m.feature(NS.discoInfo);
    m.feature(NS.discoItems);
    m.info.accountFeatures.add(NS.discoInfo);
    m.info.accountFeatures.add(NS.discoItems);

    m.iq('get', 'host', NS.discoInfo, (ev) => {
      const query = ev.stanza.elements[0];
      refuseNode(query);
      return serverInfo(m);
    });

    m.iq('get', 'host', NS.discoItems, (ev) => {
      refuseNode(ev.stanza.elements[0]);
      const result = x('query', { xmlns: NS.discoItems });
      for (const item of m.info.items) {
        const attrs: Record<string, string> = { jid: item.jid };
        if (item.name !== undefined) attrs.name = item.name;
        if (item.node !== undefined) attrs.node = item.node;
        result.c('item', attrs);
      }
      return result;
    });

    // Anyone may learn that an existing account is an account: the same answer a
    // presence probe or a vCard request would give away, and what clients need to
    // tell a user from a service. A query for an account that does not exist gets
    // the error any IQ to it would get (RFC 6121 §8.5.1).
    m.iq('get', 'bare', NS.discoInfo, async (ev) => {
      await checkAccount(m, ev.from, ev.to);
      refuseNode(ev.stanza.elements[0]);
      const result = x('query', { xmlns: NS.discoInfo }, x('identity', { category: 'account', type: 'registered' }));
      for (const f of [...m.info.accountFeatures].sort()) result.c('feature', { var: f });
      return result;
    });

    m.iq('get', 'bare', NS.discoItems, async (ev) => {
      await checkAccount(m, ev.from, ev.to);
      refuseNode(ev.stanza.elements[0]);
      // No account-level items yet (PEP nodes would go here).
      return x('query', { xmlns: NS.discoItems });
    });
  },
};

/** The server's disco#info result; exported for XEP-0115 hashing later. */
export function serverInfo(m: Pick<ModuleContext, 'info'>): Element {
  const result = x('query', { xmlns: NS.discoInfo });
  for (const id of m.info.identities) {
    const attrs: Record<string, string> = { category: id.category, type: id.type };
    if (id.name !== undefined) attrs.name = id.name;
    result.c('identity', attrs);
  }
  for (const f of [...m.info.features].sort()) result.c('feature', { var: f });
  return result;
}

function refuseNode(query: Element | undefined): void {
  // No module publishes nodes yet, so every node is unknown (§3.1, §7).
  if (query?.attrs.node !== undefined) throw new StanzaError('item-not-found', 'unknown node');
}

async function checkAccount(m: ModuleContext, from: JID, to: JID): Promise<void> {
  if (from.local === to.local && from.domain === to.domain) return;
  if (!(await m.directory.exists(to.local))) throw new StanzaError('service-unavailable');
}
