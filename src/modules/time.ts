// XEP-0202 Entity Time §3-§4: the server's UTC time (XEP-0082 DateTime, with
// milliseconds) and its offset from UTC.
import { x } from '../xmpp/element.ts';
import { NS } from '../xmpp/ns.ts';
import type { Module } from './api.ts';

export const time: Module = {
  name: 'time',
  load(m) {
    m.feature(NS.time);
    m.iq('get', 'host', NS.time, () => {
      const now = new Date();
      return x('time', { xmlns: NS.time }, x('tzo', null, tzo(now)), x('utc', null, now.toISOString()));
    });
  },
};

/** The local offset as XEP-0082 TZD: '+02:00', '-05:30', '+00:00' for UTC. */
export function tzo(d: Date): string {
  // getTimezoneOffset is UTC minus local time, in minutes.
  const off = -d.getTimezoneOffset();
  const abs = Math.abs(off);
  const hh = String(Math.floor(abs / 60)).padStart(2, '0');
  const mm = String(abs % 60).padStart(2, '0');
  return `${off < 0 ? '-' : '+'}${hh}:${mm}`;
}
