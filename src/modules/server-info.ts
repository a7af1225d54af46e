// What the server says about itself: disco identities, features and items, and
// the stream features modules add. Built from module declarations, never by hand.
import type { Element } from '../xmpp/element.ts';

export interface Identity { category: string; type: string; name?: string }
/** An entry of the server's disco#items (XEP-0030 §4): a component, a MUC service, ... */
export interface DiscoItem { jid: string; name?: string; node?: string }
export type StreamFeatureProvider = (state: { authenticated: boolean; secure: boolean; loopback?: boolean }) => Element | null;

export class ServerInfo {
  readonly identities: Identity[] = [{ category: 'server', type: 'im', name: 'imnode' }];
  readonly features = new Set<string>();
  readonly streamFeatures: StreamFeatureProvider[] = [];
  /** Account-level features (disco#info to a bare JID, XEP-0030 §3.1 on behalf of the account). */
  readonly accountFeatures = new Set<string>();
  /** The server's disco#items; modules that host services (MUC, upload, ...) add theirs. */
  readonly items: DiscoItem[] = [];

  addItem(item: DiscoItem): void {
    if (!this.items.some((i) => i.jid === item.jid && i.node === item.node)) this.items.push(item);
  }

  removeItem(jid: string, node?: string): void {
    const i = this.items.findIndex((it) => it.jid === jid && it.node === node);
    if (i !== -1) this.items.splice(i, 1);
  }
}
