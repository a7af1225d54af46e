// XEP-0199 XMPP Ping §4.2 (client-to-server ping): answer with an empty result.
import { NS } from '../xmpp/ns.ts';
import type { Module } from './api.ts';

export const ping: Module = {
  name: 'ping',
  load(m) {
    m.feature(NS.ping);
    m.iq('get', 'host', NS.ping, () => null);
  },
};
