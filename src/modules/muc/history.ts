// XEP-0045 §7.2.15 discussion history: what a joiner asked for with <history
// maxchars maxstanzas seconds since/>, and §17.2 the room's own limit
// (muc#maxhistoryfetch). Replayed messages carry a XEP-0203 delay stamped
// with the time the room got them, so the replay is identical on every node.
import { Element } from '../../xmpp/element.ts';
import { parseElement } from '../../xmpp/parser.ts';
import { NS } from '../../xmpp/ns.ts';
import type { HistoryEntry, RoomState } from './state.ts';

export interface HistoryRequest {
  maxchars?: number;
  maxstanzas?: number;
  seconds?: number;
  since?: number;
}

/** Reads <history/> from the join presence's <x xmlns='…muc'/>; absent or unreadable attributes are no limit. */
export function historyRequest(x: Element | undefined): HistoryRequest {
  const h = x?.getChild('history');
  if (!h) return {};
  const int = (v: string | undefined): number | undefined => {
    if (v === undefined || !/^\d+$/.test(v.trim())) return undefined;
    return Number(v.trim());
  };
  const req: HistoryRequest = { maxchars: int(h.attrs.maxchars), maxstanzas: int(h.attrs.maxstanzas), seconds: int(h.attrs.seconds) };
  if (h.attrs.since !== undefined) {
    const t = Date.parse(h.attrs.since);
    if (Number.isFinite(t)) req.since = t;
  }
  return req;
}

export function addHistory(s: RoomState, xml: string, stamp: number): void {
  s.history.push({ xml, stamp });
  const max = s.config.maxHistory;
  if (s.history.length > max) s.history.splice(0, s.history.length - max);
}

/** The entries to replay, oldest first, within every limit given (§7.2.15: the limits combine). */
export function selectHistory(entries: readonly HistoryEntry[], req: HistoryRequest, now: number): HistoryEntry[] {
  let out = entries.slice();
  if (req.seconds !== undefined) out = out.filter((e) => e.stamp >= now - req.seconds! * 1000);
  if (req.since !== undefined) out = out.filter((e) => e.stamp > req.since!);
  if (req.maxstanzas !== undefined) out = req.maxstanzas === 0 ? [] : out.slice(-req.maxstanzas);
  if (req.maxchars !== undefined) {
    let budget = req.maxchars;
    const kept: HistoryEntry[] = [];
    for (let i = out.length - 1; i >= 0; i--) {
      budget -= out[i].xml.length;
      if (budget < 0) break;
      kept.unshift(out[i]);
    }
    out = kept;
  }
  return out;
}

/** A history entry as sent to `to`: the stored message with the room's delay stamp. */
export function historyStanza(e: HistoryEntry, room: string, to: string): Element {
  const msg = parseElement(e.xml);
  msg.attrs.to = to;
  msg.append(new Element('delay', { xmlns: NS.delay, from: room, stamp: new Date(e.stamp).toISOString() }));
  return msg;
}
