// XEP-0198 Stream Management end to end: §3 enabling (<enabled/> with id,
// resume and max), §4 acks (<r/> and <a h/>, requests from the server, an h
// too high), §5 resumption (<resume previd h/>: <resumed/> and the unacked
// stanzas again, exactly those) and its failures (unknown id, timeout), and
// the hand-off of what a dead session never acknowledged to offline storage
// (XEP-0160). Counting is done by hand with a raw client; xmpp.js shows a real
// client resuming by itself.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { TestServer } from '../helpers/imnode.ts';
import { connect, xml, type TestClient, type XmlEl } from '../helpers/xmppjs.ts';
import { RawClient, withServer, NS_SM, NS_BIND, NS_STANZAS } from '../helpers/raw.ts';
import { slixLogin, type Slix } from '../helpers/slix.ts';
import type { Element } from '../../src/xmpp/element.ts';

const USERS = { alice: 'wonderland', bob: 'builder' };

const isStanza = (el: Element) => el.name === 'message' || el.name === 'presence' || el.name === 'iq';

/** Stanzas the client received after `marker` (<enabled/> or <resumed/>): what its h counts. */
function stanzasAfter(c: RawClient, marker: Element): Element[] {
  const i = c.all.indexOf(marker);
  assert.ok(i !== -1, 'marker element not received');
  return c.all.slice(i + 1).filter(isStanza);
}

/** Logs in, sends initial presence, enables SM with resumption. */
async function smSession(server: TestServer, user: 'alice' | 'bob', resource: string): Promise<{ c: RawClient; jid: string; enabled: Element }> {
  const c = await RawClient.to(server);
  const jid = await c.login(user, USERS[user], resource);
  c.send('<presence/>');
  c.send(`<enable xmlns='${NS_SM}' resume='true'/>`);
  const enabled = await c.next((el) => el.getNS() === NS_SM && (el.name === 'enabled' || el.name === 'failed'), 5000, '<enabled/>');
  assert.is(enabled.name, 'enabled', enabled.toString());
  return { c, jid, enabled };
}

/** Sends <r/> and returns the h of the server's answer. */
async function ask(c: RawClient): Promise<number> {
  c.send(`<r xmlns='${NS_SM}'/>`);
  const a = await c.next((el) => el.is('a', NS_SM), 5000, '<a/>');
  return Number(a.attrs.h);
}

/** A plain logged-in raw client that sends messages. */
async function sender(server: TestServer, resource = 'sender'): Promise<RawClient> {
  const c = await RawClient.to(server);
  await c.login('bob', USERS.bob, resource);
  return c;
}

/** Sends messages and waits until the server has routed them (a ping behind them comes back). */
async function sendAll(from: RawClient, to: string, ids: string[]): Promise<void> {
  for (const id of ids) from.send(`<message to='${to}' type='chat' id='${id}'><body>${id}</body></message>`);
  const pid = 'sync-' + ids.join('-');
  from.send(`<iq type='get' to='localhost' id='${pid}'><ping xmlns='urn:xmpp:ping'/></iq>`);
  await from.next((el) => el.name === 'iq' && el.attrs.id === pid, 5000, 'the ping after the messages');
}

function messageIds(els: Element[]): string[] {
  return els.filter((e) => e.name === 'message' && e.attrs.type !== 'error').map((e) => e.getChildText('body') ?? '?');
}

/** Waits until the client has received a message with each of these bodies. */
async function receive(c: RawClient, bodies: string[], ms = 5000): Promise<void> {
  for (const b of bodies) await c.next((el) => el.name === 'message' && el.getChildText('body') === b, ms, `message ${b}`);
}

// ---- enabling ---------------------------------------------------------------------------

test('enable: <enabled/> with an id, resume and max; not twice; not before binding', () => withServer(USERS, {}, async (server) => {
  const c = await RawClient.to(server);
  try {
    await c.hello();
    assert.is((await c.authPlain('alice', USERS.alice)).name, 'success');
    c.open();
    const f = await c.features();
    assert.ok(f.getChild('sm', NS_SM), 'no <sm/> stream feature after authentication: ' + f.toString());
    // §3: before resource binding, enabling is refused.
    c.send(`<enable xmlns='${NS_SM}' resume='true'/>`);
    const early = await c.next((el) => el.getNS() === NS_SM);
    assert.is(early.name, 'failed', 'SM enabled before binding: ' + early.toString());
    c.send(`<iq type='set' id='b'><bind xmlns='${NS_BIND}'/></iq>`);
    await c.next((el) => el.attrs.id === 'b');
    c.send(`<enable xmlns='${NS_SM}' resume='true'/>`);
    const en = await c.next((el) => el.getNS() === NS_SM);
    assert.is(en.name, 'enabled', en.toString());
    assert.ok((en.attrs.id ?? '').length >= 16, 'the resumption id should be long and random: ' + en.attrs.id);
    assert.ok(en.attrs.resume === 'true' || en.attrs.resume === '1');
    assert.is(en.attrs.max, '300', 'max should be the default --sm-resume-timeout in seconds');
    c.send(`<enable xmlns='${NS_SM}'/>`);
    const again = await c.next((el) => el.getNS() === NS_SM);
    assert.is(again.name, 'failed', 'enabled twice: ' + again.toString());
    assert.not.ok(c.all.some((e) => e.name === 'stream:error'));
  } finally {
    c.destroy();
  }
  // Without resume='true' there is no id to resume with.
  const d = await RawClient.to(server);
  try {
    await d.login('bob', USERS.bob, 'nores');
    d.send(`<enable xmlns='${NS_SM}'/>`);
    const en = await d.next((el) => el.getNS() === NS_SM);
    assert.is(en.name, 'enabled');
    assert.is(en.attrs.id, undefined, 'an id without resumption: ' + en.toString());
  } finally {
    d.destroy();
  }
}));

// ---- acknowledgements ---------------------------------------------------------------------

test('<r/> is answered with the number of stanzas handled since <enable/>', () => withServer(USERS, {}, async (server) => {
  const { c, jid } = await smSession(server, 'alice', 'counter');
  try {
    // The presence sent before <enable/> does not count.
    assert.is(await ask(c), 0);
    c.send(`<message to='${jid}' type='chat' id='x1'><body>x1</body></message>`);
    c.send(`<message to='bob@localhost' type='chat' id='x2'><body>x2</body></message>`);
    c.send(`<iq type='get' to='localhost' id='x3'><ping xmlns='urn:xmpp:ping'/></iq>`);
    assert.is(await ask(c), 3);
    // A stanza the server refuses (a stanza error, not a stream error) is still handled.
    c.send(`<iq type='get' to='localhost' id='x4'><ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/></iq>`);
    assert.is(await ask(c), 4);
  } finally {
    c.destroy();
  }
}));

test('the server asks for acks, and an h higher than what was sent ends the stream', () => withServer(USERS, {}, async (server) => {
  const { c, jid, enabled } = await smSession(server, 'alice', 'acked');
  const b = await sender(server);
  try {
    const ids = Array.from({ length: 8 }, (_, i) => 'q' + i);
    await sendAll(b, jid, ids);
    await receive(c, ids);
    const r = await c.next((el) => el.is('r', NS_SM), 3000, 'an <r/> from the server after several unacknowledged stanzas');
    assert.ok(r);
    const handled = stanzasAfter(c, enabled).length;
    assert.ok(handled >= 8, `only ${handled} stanzas counted`);
    c.send(`<a xmlns='${NS_SM}' h='${handled}'/>`);
    assert.is(await ask(c), 0, 'alice sent nothing since <enable/>');
    // §4: acknowledging stanzas never sent is an error.
    c.send(`<a xmlns='${NS_SM}' h='${handled + 10}'/>`);
    const cond = await c.streamError();
    assert.is(cond, 'undefined-condition');
  } finally {
    c.destroy();
    b.destroy();
  }
}));

// ---- resumption -----------------------------------------------------------------------------

test('resume after the TCP connection is cut: unacked and queued stanzas again, exactly once', () => withServer(USERS, {}, async (server) => {
  const first = await smSession(server, 'alice', 'sm');
  const b = await sender(server);
  let second: RawClient | null = null;
  try {
    const { c, jid, enabled } = first;
    const smId = first.enabled.attrs.id;
    await sendAll(b, jid, ['m1', 'm2', 'm3']);
    await receive(c, ['m1', 'm2', 'm3']);
    // alice sends one message of her own, and acknowledges up to m2 only.
    c.send(`<message to='bob@localhost/sender' type='chat' id='a1'><body>a1</body></message>`);
    await b.next((el) => el.name === 'message' && el.attrs.id === 'a1');
    const got = stanzasAfter(c, enabled);
    const ackH = got.findIndex((el) => el.getChildText('body') === 'm2') + 1;
    assert.ok(ackH > 0);
    c.send(`<a xmlns='${NS_SM}' h='${ackH}'/>`);
    assert.is(await ask(c), 1, 'the server handled one stanza of alice');
    // The network goes away: no closing tag, no FIN the server would see as a clean end.
    c.destroy();
    await sendAll(b, jid, ['m4', 'm5']);

    second = await RawClient.to(server);
    await second.hello();
    assert.is((await second.authPlain('alice', USERS.alice)).name, 'success');
    second.open();
    const f = await second.features();
    assert.ok(f.getChild('sm', NS_SM));
    second.send(`<resume xmlns='${NS_SM}' previd='${smId}' h='${ackH}'/>`);
    const resumed = await second.next((el) => el.getNS() === NS_SM && (el.name === 'resumed' || el.name === 'failed'), 5000, '<resumed/>');
    assert.is(resumed.name, 'resumed', resumed.toString());
    assert.is(resumed.attrs.previd, smId);
    assert.is(resumed.attrs.h, '1', 'h in <resumed/> must count the stanzas alice sent');
    // Everything after m2, in order: what was sent and never acknowledged, then what was queued.
    await receive(second, ['m5']);
    const resent = stanzasAfter(second, resumed);
    const bodies = messageIds(resent);
    assert.equal(bodies, ['m3', 'm4', 'm5'], 're-sent: ' + resent.map(String).join(' '));
    for (const m of resent.filter((e) => e.name === 'message')) {
      assert.is(m.attrs.to, jid, 'the resumed session keeps its full JID');
    }
    // The client acknowledges everything; the stream carries on as the same session.
    second.send(`<a xmlns='${NS_SM}' h='${ackH + resent.length}'/>`);
    second.send(`<message to='bob@localhost/sender' type='chat' id='a2'><body>a2</body></message>`);
    const a2 = await b.next((el) => el.name === 'message' && el.attrs.id === 'a2');
    assert.is(a2.attrs.from, jid);
    assert.is(await ask(second), 2);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(messageIds(stanzasAfter(second, resumed)), ['m3', 'm4', 'm5'], 'duplicates after resumption');
    assert.not.ok(second.all.some((e) => e.name === 'stream:error'));
  } finally {
    first.c.destroy();
    second?.destroy();
    b.destroy();
  }
}));

test('resume while the old connection still looks alive: the old one is dropped', () => withServer(USERS, {}, async (server) => {
  const first = await smSession(server, 'alice', 'twice');
  const second = await RawClient.to(server);
  try {
    await second.hello();
    assert.is((await second.authPlain('alice', USERS.alice)).name, 'success');
    second.open();
    await second.features();
    second.send(`<resume xmlns='${NS_SM}' previd='${first.enabled.attrs.id}' h='0'/>`);
    const resumed = await second.next((el) => el.getNS() === NS_SM);
    assert.is(resumed.name, 'resumed', resumed.toString());
    await first.c.waitClosed(3000);
    second.send(`<message to='${first.jid}' type='chat' id='self'><body>self</body></message>`);
    await receive(second, ['self']);
  } finally {
    first.c.destroy();
    second.destroy();
  }
}));

test('resume with an unknown id: <failed><item-not-found/>, and binding still works', () => withServer(USERS, {}, async (server) => {
  const first = await smSession(server, 'alice', 'real');
  const c = await RawClient.to(server);
  try {
    await c.hello();
    assert.is((await c.authPlain('alice', USERS.alice)).name, 'success');
    c.open();
    await c.features();
    c.send(`<resume xmlns='${NS_SM}' previd='not-${first.enabled.attrs.id}' h='0'/>`);
    const failed = await c.next((el) => el.getNS() === NS_SM);
    assert.is(failed.name, 'failed', failed.toString());
    assert.ok(failed.getChild('item-not-found', NS_STANZAS), failed.toString());
    c.send(`<iq type='set' id='b'><bind xmlns='${NS_BIND}'><resource>after</resource></bind></iq>`);
    const iq = await c.next((el) => el.attrs.id === 'b');
    assert.is(iq.attrs.type, 'result', iq.toString());
    // Another user cannot take over alice's session with her id either.
    const bob = await RawClient.to(server);
    try {
      await bob.hello();
      assert.is((await bob.authPlain('bob', USERS.bob)).name, 'success');
      bob.open();
      await bob.features();
      bob.send(`<resume xmlns='${NS_SM}' previd='${first.enabled.attrs.id}' h='0'/>`);
      const f2 = await bob.next((el) => el.getNS() === NS_SM);
      assert.is(f2.name, 'failed', 'bob resumed alice\'s session: ' + f2.toString());
    } finally {
      bob.destroy();
    }
  } finally {
    first.c.destroy();
    c.destroy();
  }
}));

test('after --sm-resume-timeout, resumption fails and the unacknowledged messages go offline', () => withServer(USERS, { args: ['--sm-resume-timeout', '1s'] }, async (server) => {
  const first = await smSession(server, 'alice', 'gone');
  assert.is(first.enabled.attrs.max, '1');
  const b = await sender(server);
  let later: RawClient | null = null;
  try {
    const { c, jid, enabled } = first;
    await sendAll(b, jid, ['o1', 'o2']);
    await receive(c, ['o1', 'o2']);
    // o1 is acknowledged: it must not come back. o2 is not.
    const h = stanzasAfter(c, enabled).findIndex((el) => el.getChildText('body') === 'o1') + 1;
    c.send(`<a xmlns='${NS_SM}' h='${h}'/>`);
    await ask(c);
    c.destroy();
    await sendAll(b, jid, ['o3']);
    await new Promise((r) => setTimeout(r, 1600));

    later = await RawClient.to(server);
    await later.hello();
    assert.is((await later.authPlain('alice', USERS.alice)).name, 'success');
    later.open();
    await later.features();
    later.send(`<resume xmlns='${NS_SM}' previd='${first.enabled.attrs.id}' h='${h}'/>`);
    const failed = await later.next((el) => el.getNS() === NS_SM);
    assert.is(failed.name, 'failed', 'resumed after the timeout: ' + failed.toString());
    assert.ok(failed.getChild('item-not-found', NS_STANZAS), failed.toString());
    // A new session with initial presence gets what the old one never acknowledged.
    later.send(`<iq type='set' id='b'><bind xmlns='${NS_BIND}'><resource>back</resource></bind></iq>`);
    assert.is((await later.next((el) => el.attrs.id === 'b')).attrs.type, 'result');
    later.send('<presence/>');
    await receive(later, ['o2', 'o3']);
    await new Promise((r) => setTimeout(r, 300));
    const bodies = messageIds(later.all);
    assert.equal(bodies.filter((x) => x.startsWith('o')).sort(), ['o2', 'o3'], 'offline delivery: ' + bodies);
    const o2 = later.all.find((e) => e.name === 'message' && e.getChildText('body') === 'o2')!;
    assert.ok(o2.getChild('delay', 'urn:xmpp:delay'), 'an offline message carries a XEP-0203 delay: ' + o2.toString());
    // The sender never got an error for them: they were not lost.
    assert.not.ok(b.all.some((e) => e.name === 'message' && e.attrs.type === 'error'), 'the sender got an error');
  } finally {
    first.c.destroy();
    later?.destroy();
    b.destroy();
  }
}));

// ---- a real client -----------------------------------------------------------------------------

test('xmpp.js enables SM and resumes by itself after its connection is cut', () => withServer(USERS, {}, async (server) => {
  let alice: TestClient | null = null;
  const b = await sender(server);
  try {
    alice = await connect(server, { username: 'alice', password: USERS.alice, resource: 'js', reconnect: true, mechanism: 'PLAIN' });
    const sm = alice.xmpp.streamManagement;
    assert.ok(sm.enabled, 'xmpp.js did not enable stream management');
    assert.ok(sm.id, 'no resumption id');
    const bodies: string[] = [];
    alice.xmpp.on('stanza', (s: XmlEl) => { if (s.name === 'message' && s.attrs.type !== 'error') bodies.push(s.getChildText('body') ?? ''); });
    await sendAll(b, alice.jid, ['j1', 'j2', 'j3']);
    await alice.waitFor((s) => s.getChildText('body') === 'j3', 3000, 'j3');
    const resumed = new Promise<void>((r) => sm.once('resumed', () => r()));
    // Cut the TCP connection under xmpp.js: it sees a drop, not a closed stream.
    alice.xmpp.socket.socket.destroy();
    await sendAll(b, alice.jid, ['j4', 'j5', 'j6', 'j7', 'j8', 'j9']);
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([resumed, new Promise((_, rej) => { timer = setTimeout(() => rej(new Error('xmpp.js did not resume within 8 s')), 8000); })]);
    } finally {
      clearTimeout(timer);
    }
    await alice.waitFor((s) => s.getChildText('body') === 'j9', 5000, 'j9');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(bodies, ['j1', 'j2', 'j3', 'j4', 'j5', 'j6', 'j7', 'j8', 'j9']);
    assert.is(alice.jid, 'alice@localhost/js');
  } finally {
    await alice?.stop();
    b.destroy();
  }
}));

test('slixmpp (xep_0198) resumes after its connection is cut', () => withServer(USERS, {}, async (server) => {
  let alice: Slix | null = null;
  const b = await sender(server);
  try {
    alice = await slixLogin(server, { username: 'alice', password: USERS.alice, resource: 'py', plugins: ['xep_0198'] });
    const enabled = await alice.waitFor((e) => e.ev === 'sm_enabled', 3000, 'sm_enabled');
    assert.match(String(enabled.xml), /resume="(true|1)"/);
    await sendAll(b, 'alice@localhost/py', ['p1', 'p2']);
    await alice.waitFor((e) => e.ev === 'message' && e.body === 'p2', 3000, 'p2');
    await alice.command('abort');
    await alice.waitFor((e) => e.ev === 'disconnected', 3000, 'the disconnection');
    await sendAll(b, 'alice@localhost/py', ['p3', 'p4']);
    await alice.command('reconnect');
    const ev = await alice.waitFor((e) => e.ev === 'session_resumed' || e.ev === 'session_start' || e.ev === 'sm_failed', 5000, 'the resumption');
    assert.is(ev.ev, 'session_resumed', JSON.stringify(ev));
    await alice.waitFor((e) => e.ev === 'message' && e.body === 'p4', 3000, 'p4');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(alice.history.filter((e) => e.ev === 'message').map((e) => e.body), ['p1', 'p2', 'p3', 'p4']);
  } finally {
    await alice?.stop();
    b.destroy();
  }
}));

test.run();
