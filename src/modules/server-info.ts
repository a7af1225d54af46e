// What the server says about itself: disco identities and features, and the
// stream features modules add. Built from module declarations, never by hand.
import type { Element } from '../xmpp/element.ts';

export interface Identity { category: string; type: string; name?: string }
export type StreamFeatureProvider = (state: { authenticated: boolean; secure: boolean }) => Element | null;

export class ServerInfo {
  readonly identities: Identity[] = [{ category: 'server', type: 'im', name: 'imnode' }];
  readonly features = new Set<string>();
  readonly streamFeatures: StreamFeatureProvider[] = [];
  /** Account-level features (disco#info to a bare JID, XEP-0030 §3.1 on behalf of the account). */
  readonly accountFeatures = new Set<string>();
}
