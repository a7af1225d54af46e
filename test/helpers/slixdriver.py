#!/usr/bin/python3
# Drives one slixmpp client (a client library written by others) for the
# end-to-end tests: JSON commands, one per line, on stdin; JSON events, one per
# line, on stdout. Every command may carry an "id"; it is answered with
# {"ev":"result","id":...} or {"ev":"error","id":...,"error":...}. Everything
# the server sends is reported as {"ev":"stanza","xml":...}, and the common
# stanzas once more as typed events (message, presence, roster_update, ...),
# so that tests can wait either for a protocol fact or for what slixmpp made
# of it.
#
# Commands ("op"): connect {jid, password, host, port, direct_tls, mechanism
# (SCRAM-SHA-256 | SCRAM-SHA-1 | PLAIN | null), cafile, tls_name (default: the
# JID's domain), plugins [...], auto_authorize, auto_subscribe, no_tls};
# send_raw {xml}; message {to, body, type, msg_id}; presence {to, type, show,
# status, priority}; subscribe / subscribed / unsubscribe / unsubscribed / probe
# {to}; roster_get; roster_set {jid, name, groups, subscription}; roster_remove
# {jid}; iq {xml} (answered with the response IQ, error or not);
# enable_carbons / disable_carbons (plugin xep_0280); request_ack / sm_state
# (plugin xep_0198); disconnect (closes the stream); abort (drops the TCP
# connection); reconnect (after abort: resumes if xep_0198 can); muc_join {room,
# nick, password, maxstanzas, seconds, maxchars} (plugin xep_0045: answered
# with codes, role, affiliation, subject, occupants, history bodies, or error);
# muc_message {room, body}; muc_leave {room, nick}; muc_roster {room}; exit.
# Events ("ev"): ready, connected, connection_failed, auth_success {mechanism},
# session_start {jid, tls, mechanism}, failed_auth {condition}, failed_all_auth,
# stream_error {condition, text}, disconnected, stanza, message, presence,
# roster_update {items}, carbon_received, carbon_sent, sm_enabled,
# session_resumed, sm_failed; result / error answer commands.
#
# Run with the Debian interpreter (/usr/bin/python3), which has python3-slixmpp.
import asyncio
import json
import logging
import sys
import xml.etree.ElementTree as ET

try:
    import slixmpp
    from slixmpp.exceptions import IqError, IqTimeout
except ImportError as e:  # the test must fail loudly, never skip
    sys.stdout.write(json.dumps({'ev': 'fatal', 'error': 'python3-slixmpp is missing (%s); install the Debian package python3-slixmpp' % e}) + '\n')
    sys.stdout.flush()
    sys.exit(3)


def emit(ev, **fields):
    fields['ev'] = ev
    sys.stdout.write(json.dumps(fields) + '\n')
    sys.stdout.flush()


def xml_of(stanza):
    try:
        return str(stanza)
    except Exception:  # a stanza slixmpp cannot serialise is still worth a line
        return ET.tostring(stanza.xml, encoding='unicode')


class Client(slixmpp.ClientXMPP):
    """Connects to exactly the given host and port (no SRV or A lookups), and
    verifies the certificate against the XMPP domain, as a real client does."""

    def __init__(self, jid, password, target, tls_name, mechanism):
        super().__init__(jid, password, sasl_mech=mechanism)
        self.target = target
        self.tls_name = tls_name

    async def get_dns_records(self, domain, port=None):
        return [(self.tls_name, self.target[0], self.target[1])]


class Driver:
    def __init__(self):
        self.client = None
        self.loop = asyncio.get_event_loop()

    # ---- connection ---------------------------------------------------------

    def connect(self, cmd):
        if self.client is not None:
            raise RuntimeError('already connected; one client per driver process')
        jid = slixmpp.JID(cmd['jid'])
        host = cmd.get('host', '127.0.0.1')
        port = int(cmd['port'])
        tls_name = cmd.get('tls_name') or jid.domain
        c = Client(cmd['jid'], cmd['password'], (host, port), tls_name, cmd.get('mechanism'))
        self.client = c
        # slixmpp answers subscription requests by itself (True: approve, False:
        # deny) unless this is None; by default the tests drive the handshake.
        c.auto_authorize = cmd.get('auto_authorize', None)
        c.auto_subscribe = cmd.get('auto_subscribe', False)
        if cmd.get('cafile'):
            c.ca_certs = cmd['cafile']
        if cmd.get('plain_without_tls'):
            c['feature_mechanisms'].unencrypted_plain = True
        for p in cmd.get('plugins') or []:
            c.register_plugin(p)
        if 'xep_0198' in (cmd.get('plugins') or []):
            sm = c['xep_0198']
            if 'sm_window' in cmd:
                sm.window = int(cmd['sm_window'])
        self._wire(c)
        c.connect((host, port), use_ssl=bool(cmd.get('direct_tls')),
                  force_starttls=not cmd.get('no_tls', False),
                  disable_starttls=bool(cmd.get('no_tls', False)))
        # connect() only learns a name to verify the certificate against from a
        # host name; we connect to an address, so give it the XMPP domain.
        c.default_domain = tls_name
        return {}

    def _wire(self, c):
        def on(name, fn):
            c.add_event_handler(name, fn)

        def incoming(stanza):
            emit('stanza', xml=xml_of(stanza), name=stanza.name if hasattr(stanza, 'name') else '')
            return stanza
        c.add_filter('in', incoming)

        on('connected', lambda _e: emit('connected'))
        on('connection_failed', lambda e: emit('connection_failed', error=str(e)))
        on('session_start', lambda _e: emit('session_start', jid=str(c.boundjid), tls=self.tls_version(),
                                             mechanism=self.mechanism()))
        on('auth_success', lambda _s: emit('auth_success', mechanism=self.mechanism()))
        on('session_resumed', lambda s: emit('session_resumed', xml=xml_of(s)))
        on('sm_enabled', lambda s: emit('sm_enabled', xml=xml_of(s)))
        on('sm_failed', lambda s: emit('sm_failed', xml=xml_of(s)))
        on('failed_auth', lambda s: emit('failed_auth', condition=s['condition'], xml=xml_of(s)))
        on('failed_all_auth', lambda _e: emit('failed_all_auth'))
        on('stream_error', lambda s: emit('stream_error', condition=s['condition'], text=s['text'], xml=xml_of(s)))
        on('disconnected', lambda reason: emit('disconnected', reason=str(reason) if reason is not None else None))
        on('message', lambda m: emit('message', xml=xml_of(m), **{
            'from': str(m['from']), 'to': str(m['to']), 'type': m['type'], 'body': m['body'], 'id': m['id']}))
        on('presence', lambda p: emit('presence', xml=xml_of(p), **{
            'from': str(p['from']), 'to': str(p['to']), 'type': p['type'], 'status': p['status'], 'priority': p['priority']}))
        on('roster_update', lambda iq: emit('roster_update', xml=xml_of(iq), items=roster_items(iq)))
        on('carbon_received', lambda m: emit('carbon_received', xml=xml_of(m)))
        on('carbon_sent', lambda m: emit('carbon_sent', xml=xml_of(m)))

    def tls_version(self):
        t = self.client.transport if self.client else None
        ssl_object = t.get_extra_info('ssl_object') if t is not None else None
        return ssl_object.version() if ssl_object is not None else None

    def mechanism(self):
        mech = self.client['feature_mechanisms'].mech if self.client else None
        return mech.name if mech is not None else None

    def need(self):
        if self.client is None:
            raise RuntimeError('not connected')
        return self.client

    # ---- commands -----------------------------------------------------------

    async def run(self, cmd):
        op = cmd.get('op')
        if op == 'connect':
            return self.connect(cmd)
        if op == 'exit':
            emit('result', id=cmd.get('id'))
            sys.stdout.flush()
            # Skip interpreter teardown: asyncio transports may still be open.
            import os
            os._exit(0)
        c = self.need()
        if op == 'send_raw':
            c.send_raw(cmd['xml'])
            return {}
        if op == 'message':
            m = c.make_message(mto=cmd['to'], mbody=cmd.get('body'), mtype=cmd.get('type', 'chat'))
            if cmd.get('msg_id'):
                m['id'] = cmd['msg_id']
            m.send()
            return {'msg_id': m['id']}
        if op == 'presence':
            c.send_presence(pto=cmd.get('to'), ptype=cmd.get('type'), pshow=cmd.get('show'),
                            pstatus=cmd.get('status'), ppriority=cmd.get('priority'))
            return {}
        if op in ('subscribe', 'subscribed', 'unsubscribe', 'unsubscribed', 'probe'):
            c.send_presence(pto=cmd['to'], ptype=op)
            return {}
        if op == 'roster_get':
            iq = c.Iq()
            iq['type'] = 'get'
            iq.enable('roster')
            resp = await self._request(iq, cmd)
            return {'xml': xml_of(resp), 'type': resp['type'], 'items': roster_items(resp)}
        if op == 'roster_set':
            iq = c.Iq()
            iq['type'] = 'set'
            item = {'name': cmd.get('name') or '', 'groups': cmd.get('groups') or []}
            if cmd.get('subscription'):
                item['subscription'] = cmd['subscription']
            iq['roster']['items'] = {cmd['jid']: item}
            resp = await self._request(iq, cmd)
            return {'xml': xml_of(resp), 'type': resp['type']}
        if op == 'roster_remove':
            iq = c.Iq()
            iq['type'] = 'set'
            iq['roster']['items'] = {cmd['jid']: {'subscription': 'remove'}}
            resp = await self._request(iq, cmd)
            return {'xml': xml_of(resp), 'type': resp['type']}
        if op == 'iq':
            iq = c.Iq()
            el = ET.fromstring(cmd['xml'])
            for k, v in el.attrib.items():
                if k != 'xmlns':
                    iq.xml.set(k, v)
            if not iq['id']:
                iq['id'] = c.new_id()
            for child in list(el):
                iq.xml.append(child)
            resp = await self._request(iq, cmd)
            return {'xml': xml_of(resp), 'type': resp['type']}
        if op == 'enable_carbons':
            resp = await c['xep_0280'].enable(timeout=cmd.get('timeout', 5))
            return {'xml': xml_of(resp)}
        if op == 'disable_carbons':
            resp = await c['xep_0280'].disable(timeout=cmd.get('timeout', 5))
            return {'xml': xml_of(resp)}
        if op == 'request_ack':
            c['xep_0198'].request_ack()
            return {}
        if op == 'sm_state':
            sm = c['xep_0198']
            return {'handled': sm.handled, 'seq': sm.seq, 'last_ack': sm.last_ack, 'sm_id': sm.sm_id,
                    'unacked': len(sm.unacked_queue)}
        if op == 'muc_join':
            # Plugin xep_0045 (slixmpp >= 1.8): waits for the self-presence and the subject.
            from slixmpp.exceptions import PresenceError
            kw = {}
            for k in ('password', 'maxstanzas', 'seconds', 'maxchars'):
                if cmd.get(k) is not None:
                    kw[k] = cmd[k]
            try:
                pres, subject, occupants, history = await c['xep_0045'].join_muc_wait(
                    slixmpp.JID(cmd['room']), cmd['nick'], timeout=cmd.get('timeout', 10), **kw)
            except PresenceError as e:
                return {'error': e.condition, 'xml': xml_of(e.presence)}
            codes = sorted(int(x) for x in pres['muc']['status_codes'])
            return {'nick': pres['from'].resource, 'codes': codes, 'role': pres['muc']['role'],
                    'affiliation': pres['muc']['affiliation'], 'subject': subject['subject'],
                    'occupants': sorted(p['from'].resource for p in occupants),
                    'history': [m['body'] for m in history]}
        if op == 'muc_message':
            c.send_message(mto=cmd['room'], mbody=cmd['body'], mtype='groupchat')
            return {}
        if op == 'muc_leave':
            c['xep_0045'].leave_muc(slixmpp.JID(cmd['room']), cmd['nick'], cmd.get('status', ''))
            return {}
        if op == 'muc_roster':
            return {'nicks': sorted(c['xep_0045'].get_roster(slixmpp.JID(cmd['room'])))}
        if op == 'disconnect':
            if c.transport is None:
                return {'already': True}
            await c.disconnect(wait=cmd.get('wait', 2.0))
            return {}
        if op == 'abort':
            # Cuts the TCP connection without closing the stream (a lost network).
            c.abort()
            return {}
        if op == 'reconnect':
            c.connect(c.target, use_ssl=c.use_ssl)
            c.default_domain = c.tls_name
            return {}
        raise RuntimeError('unknown op %r' % op)

    async def _request(self, iq, cmd):
        try:
            return await iq.send(timeout=cmd.get('timeout', 5))
        except IqError as e:
            return e.iq
        except IqTimeout:
            raise RuntimeError('no answer to the IQ within %ss' % cmd.get('timeout', 5))

    async def handle(self, line):
        try:
            cmd = json.loads(line)
        except ValueError as e:
            emit('error', id=None, error='bad JSON: %s' % e)
            return
        try:
            result = await self.run(cmd)
            emit('result', id=cmd.get('id'), **(result or {}))
        except Exception as e:
            emit('error', id=cmd.get('id'), error='%s: %s' % (type(e).__name__, e))


def roster_items(iq):
    try:
        items = iq['roster']['items']
    except Exception:
        return {}
    out = {}
    for jid, item in items.items():
        out[str(jid)] = {
            'name': item.get('name', ''),
            'subscription': item.get('subscription', ''),
            'ask': item.get('ask', ''),
            'groups': sorted(item.get('groups', [])),
        }
    return out


async def main():
    level = logging.DEBUG if '--debug' in sys.argv else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr, format='%(levelname)s %(name)s %(message)s')
    loop = asyncio.get_event_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    driver = Driver()
    emit('ready', slixmpp=slixmpp.__version__)
    # Commands run in order, one at a time, so "message then disconnect" keeps its order.
    while True:
        line = await reader.readline()
        if not line:
            break
        line = line.decode('utf-8').strip()
        if line:
            await driver.handle(line)
    c = driver.client
    if c is not None and c.transport is not None:
        c.abort()


if __name__ == '__main__':
    asyncio.run(main())
