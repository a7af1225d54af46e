// RFC 6121 Appendix A: the subscription state tables, row by row, as the RFC
// prints them; then §3.4 pre-approval, the roster set checks of §2.3.3, the
// priority rules of §4.7.2.3, and the roster store's versions (§2.6).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  inbound, outbound, stateName, itemFor, parseRosterSet, type SubState, type SubscriptionType,
} from '../../src/modules/roster.ts';
import { parsePriority } from '../../src/modules/presence.ts';
import { StanzaError } from '../../src/xmpp/errors.ts';
import { parseElement } from '../../src/xmpp/parser.ts';
import { Store } from '../../src/store/db.ts';
import { RosterStore } from '../../src/store/roster.ts';

const STATES: Record<string, SubState> = {
  'None': { subscription: 'none', pendingOut: false, pendingIn: false, approved: false },
  'None + Pending Out': { subscription: 'none', pendingOut: true, pendingIn: false, approved: false },
  'None + Pending In': { subscription: 'none', pendingOut: false, pendingIn: true, approved: false },
  'None + Pending Out/In': { subscription: 'none', pendingOut: true, pendingIn: true, approved: false },
  'To': { subscription: 'to', pendingOut: false, pendingIn: false, approved: false },
  'To + Pending In': { subscription: 'to', pendingOut: false, pendingIn: true, approved: false },
  'From': { subscription: 'from', pendingOut: false, pendingIn: false, approved: false },
  'From + Pending Out': { subscription: 'from', pendingOut: true, pendingIn: false, approved: false },
  'Both': { subscription: 'both', pendingOut: false, pendingIn: false, approved: false },
};

// Each table: EXISTING STATE | ROUTE?/DELIVER? | NEW STATE, as in the RFC.
const TABLES: Record<string, string> = {
  'A.2.1 outbound subscribe': `
    None                  | yes | None + Pending Out
    None + Pending Out    | yes | no state change
    None + Pending In     | yes | None + Pending Out/In
    None + Pending Out/In | yes | no state change
    To                    | yes | no state change
    To + Pending In       | yes | no state change
    From                  | yes | From + Pending Out
    From + Pending Out    | yes | no state change
    Both                  | yes | no state change`,
  'A.2.2 outbound unsubscribe': `
    None                  | yes | no state change
    None + Pending Out    | yes | None
    None + Pending In     | yes | no state change
    None + Pending Out/In | yes | None + Pending In
    To                    | yes | None
    To + Pending In       | yes | None + Pending In
    From                  | yes | no state change
    From + Pending Out    | yes | From
    Both                  | yes | From`,
  'A.2.3 outbound subscribed': `
    None                  | no  | pre-approved
    None + Pending Out    | no  | pre-approved
    None + Pending In     | yes | From
    None + Pending Out/In | yes | From + Pending Out
    To                    | no  | pre-approved
    To + Pending In       | yes | Both
    From                  | no  | no state change
    From + Pending Out    | no  | no state change
    Both                  | no  | no state change`,
  'A.2.4 outbound unsubscribed': `
    None                  | no  | no state change
    None + Pending Out    | no  | no state change
    None + Pending In     | yes | None
    None + Pending Out/In | yes | None + Pending Out
    To                    | no  | no state change
    To + Pending In       | yes | To
    From                  | yes | None
    From + Pending Out    | yes | None + Pending Out
    Both                  | yes | To`,
  'A.3.1 inbound subscribe': `
    None                  | yes | None + Pending In
    None + Pending Out    | yes | None + Pending Out/In
    None + Pending In     | no  | no state change
    None + Pending Out/In | no  | no state change
    To                    | yes | To + Pending In
    To + Pending In       | no  | no state change
    From                  | no* | no state change
    From + Pending Out    | no* | no state change
    Both                  | no* | no state change`,
  'A.3.2 inbound unsubscribe': `
    None                  | no  | no state change
    None + Pending Out    | no  | no state change
    None + Pending In     | yes | None
    None + Pending Out/In | yes | None + Pending Out
    To                    | no  | no state change
    To + Pending In       | yes | To
    From                  | yes | None
    From + Pending Out    | yes | None + Pending Out
    Both                  | yes | To`,
  'A.3.3 inbound subscribed': `
    None                  | no  | no state change
    None + Pending Out    | yes | To
    None + Pending In     | no  | no state change
    None + Pending Out/In | yes | To + Pending In
    To                    | no  | no state change
    To + Pending In       | no  | no state change
    From                  | no  | no state change
    From + Pending Out    | yes | Both
    Both                  | no  | no state change`,
  'A.3.4 inbound unsubscribed': `
    None                  | no  | no state change
    None + Pending Out    | yes | None
    None + Pending In     | no  | no state change
    None + Pending Out/In | yes | None + Pending In
    To                    | yes | None
    To + Pending In       | yes | None + Pending In
    From                  | no  | no state change
    From + Pending Out    | yes | From
    Both                  | yes | From`,
};

for (const [title, table] of Object.entries(TABLES)) {
  const [, dir, type] = /^\S+ (outbound|inbound) (\w+)$/.exec(title)!;
  const fn = dir === 'outbound' ? outbound : inbound;
  test(`${title}: every row`, () => {
    const rows = table.trim().split('\n').map((l) => l.split('|').map((c) => c.trim()));
    assert.is(rows.length, 9);
    for (const [existing, forward, next] of rows) {
      const before = STATES[existing];
      assert.ok(before, existing);
      const t = fn(type as SubscriptionType, before);
      assert.is(t.forward, forward === 'yes', `${title}, ${existing}: route/deliver`);
      // "no*": the server answers "subscribed" itself (A.3.1 footnote).
      assert.is(t.autoReply, forward === 'no*', `${title}, ${existing}: auto-reply`);
      if (next === 'pre-approved') {
        assert.is(stateName(t.state), existing, `${title}, ${existing}: subscription unchanged`);
        assert.is(t.state.approved, true, `${title}, ${existing}: approved`);
      } else {
        assert.is(stateName(t.state), next === 'no state change' ? existing : next, `${title}, ${existing}`);
        assert.is(t.state.approved, false);
      }
    }
  });
}

const approved = (name: string): SubState => ({ ...STATES[name], approved: true });

test('§3.4.2: a pre-approved subscribe is approved at once, without reaching the user', () => {
  for (const [from, to] of [['None', 'From'], ['None + Pending Out', 'From + Pending Out'], ['To', 'Both']]) {
    const t = inbound('subscribe', approved(from));
    assert.is(t.forward, false, from);
    assert.is(t.autoReply, true, from);
    assert.is(stateName(t.state), to, from);
    assert.is(t.state.approved, false, 'the approval is used up');
  }
});

test('§3.4.1: outbound unsubscribed cancels a pre-approval without being routed', () => {
  for (const s of ['None', 'None + Pending Out', 'To']) {
    const t = outbound('unsubscribed', approved(s));
    assert.is(t.forward, false);
    assert.is(t.state.approved, false);
    assert.is(stateName(t.state), s);
  }
});

test('a pre-approval survives unrelated traffic and ends once the contact is subscribed', () => {
  assert.is(outbound('subscribe', approved('None')).state.approved, true);
  assert.is(inbound('subscribed', approved('None + Pending Out')).state.approved, true);
  assert.is(outbound('subscribed', approved('None + Pending In')).state.approved, false);
});

test('a request only pending in makes no roster item; anything else keeps or makes one', () => {
  assert.is(itemFor('b@x', undefined, STATES['None + Pending In']), undefined);
  assert.is(itemFor('b@x', undefined, STATES['None']), undefined);
  const pre = itemFor('b@x', undefined, approved('None'))!;
  assert.equal(pre, { jid: 'b@x', subscription: 'none', groups: [], approved: true });
  const out = itemFor('b@x', { jid: 'b@x', name: 'B', subscription: 'from', groups: ['g'] }, STATES['From + Pending Out'])!;
  assert.equal(out, { jid: 'b@x', name: 'B', subscription: 'from', ask: 'subscribe', groups: ['g'] });
  const kept = itemFor('b@x', { jid: 'b@x', subscription: 'to', ask: 'subscribe', groups: [] }, STATES['None'])!;
  assert.equal(kept, { jid: 'b@x', subscription: 'none', groups: [] });
});

// ---- §2.3.3 roster set checks --------------------------------------------------------

function setError(xml: string): string {
  try {
    parseRosterSet(parseElement(xml));
  } catch (e) {
    if (e instanceof StanzaError) return e.condition;
    throw e;
  }
  return 'ok';
}

const Q = (inner: string) => `<query xmlns='jabber:iq:roster'>${inner}</query>`;

test('§2.3.3: roster set errors', () => {
  assert.is(setError(Q(`<item jid='a@x'/><item jid='b@x'/>`)), 'bad-request');
  assert.is(setError(Q('')), 'bad-request');
  assert.is(setError(Q(`<item/>`)), 'bad-request');
  assert.is(setError(Q(`<item jid='a@x'><group>g</group><group>g</group></item>`)), 'bad-request');
  assert.is(setError(Q(`<item jid='a@x'><group></group></item>`)), 'not-acceptable');
  assert.is(setError(Q(`<item jid='a@x'><group>${'g'.repeat(1025)}</group></item>`)), 'not-acceptable');
  assert.is(setError(Q(`<item jid='a@x' name='${'n'.repeat(1025)}'/>`)), 'not-acceptable');
  assert.is(setError(Q(`<item jid='@x'/>`)), 'jid-malformed');
  assert.is(setError(Q(`<item jid='a@x/r'/>`)), 'ok', 'not forbidden by §2.1.2.3');
  assert.is(setError(Q(`<item jid='a@x' subscription='both' ask='subscribe' approved='true'><group>g</group><group>h</group></item>`)), 'ok');
});

test('§2.1.5: subscription other than remove, ask and approved are ignored', () => {
  const s = parseRosterSet(parseElement(Q(`<item jid='A@X' name='Al' subscription='both' ask='subscribe'><group>g</group></item>`)));
  assert.is(s.jid.toString(), 'a@x');
  assert.is(s.remove, false);
  assert.is(s.name, 'Al');
  assert.equal(s.groups, ['g']);
  assert.is(parseRosterSet(parseElement(Q(`<item jid='a@x' subscription='remove'/>`))).remove, true);
});

// ---- §4.7.2.3 priority ------------------------------------------------------------------

function priority(xml: string): number | string {
  try {
    return parsePriority(parseElement(xml));
  } catch (e) {
    if (e instanceof StanzaError) return e.condition;
    throw e;
  }
}

test('§4.7.2.3: priority defaults to 0, is an integer in -128..127, else bad-request', () => {
  assert.is(priority('<presence/>'), 0);
  assert.is(priority('<presence><priority>5</priority></presence>'), 5);
  assert.is(priority('<presence><priority> -128 </priority></presence>'), -128);
  assert.is(priority('<presence><priority>127</priority></presence>'), 127);
  assert.is(priority('<presence><priority>128</priority></presence>'), 'bad-request');
  assert.is(priority('<presence><priority>-129</priority></presence>'), 'bad-request');
  assert.is(priority('<presence><priority>high</priority></presence>'), 'bad-request');
  assert.is(priority('<presence><priority>1.5</priority></presence>'), 'bad-request');
  assert.is(priority('<presence><priority></priority></presence>'), 'bad-request');
  assert.is(priority('<presence><priority>1</priority><priority>2</priority></presence>'), 'bad-request');
  assert.is(priority('<presence><show>away</show></presence>'), 0);
  assert.is(priority('<presence><show>busy</show></presence>'), 'bad-request');
});

// ---- the store: versions and deltas (§2.6) -------------------------------------------------

test('roster store: versions, deltas with removals, pending requests, atomic failure', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'imnode-roster-'));
  let store = await Store.open(dir);
  try {
    let rs = new RosterStore(store);
    const empty = await rs.get('alice');
    assert.is(empty.version, '0');
    assert.equal(empty.changesSince('0'), []);
    const r1 = await rs.update('alice', (tx) => {
      tx.put({ jid: 'bob@x', subscription: 'none', groups: ['Friends'] });
      tx.put({ jid: 'carol@x', subscription: 'both', groups: [] });
    });
    assert.is(r1.changes.length, 2);
    const v1 = r1.roster.version;
    assert.is.not(v1, '0');
    assert.is(r1.changes[1].ver, v1);
    assert.is(r1.roster.changesSince('0'), null, 'a version from before the roster existed is foreign');
    assert.equal(r1.roster.changesSince(v1), []);

    // Writing an identical item is no change.
    const same = await rs.update('alice', (tx) => tx.put({ jid: 'bob@x', subscription: 'none', groups: ['Friends'] }));
    assert.is(same.changes.length, 0);
    assert.is(same.roster.version, v1);

    const r2 = await rs.update('alice', (tx) => {
      tx.remove('bob@x');
      tx.setPending({ jid: 'dave@x', stanza: "<presence type='subscribe'/>", time: 1 });
    });
    const delta = r2.roster.changesSince(v1)!;
    assert.equal(delta.map((c) => [c.jid, c.item === null]), [['bob@x', true]]);
    assert.is(delta[0].ver, r2.roster.version);

    // A failing update writes nothing.
    try {
      await rs.update('alice', (tx) => {
        tx.put({ jid: 'eve@x', subscription: 'none', groups: [] });
        throw new Error('boom');
      });
      assert.unreachable();
    } catch (e) {
      assert.is((e as Error).message, 'boom');
    }

    // Everything survives a restart, read from disk.
    await store.close();
    store = await Store.open(dir);
    rs = new RosterStore(store);
    const back = await rs.get('alice');
    assert.is(back.version, r2.roster.version);
    assert.equal(back.items().map((i) => i.jid), ['carol@x']);
    assert.is(back.pending('dave@x')?.stanza, "<presence type='subscribe'/>");
    assert.equal(back.changesSince(v1)!.map((c) => c.jid), ['bob@x']);
    assert.is((await rs.get('bob')).size, 0, 'rosters are per user');
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('roster store: concurrent updates of one roster are serialised', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'imnode-roster-'));
  const store = await Store.open(dir);
  try {
    const rs = new RosterStore(store);
    await Promise.all(Array.from({ length: 20 }, (_, i) => rs.update('alice', async (tx) => {
      const n = tx.size;
      await new Promise((r) => setTimeout(r, 1));
      tx.put({ jid: `c${n}@x`, subscription: 'none', groups: [] });
    })));
    assert.is((await rs.get('alice')).size, 20);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test.run();
