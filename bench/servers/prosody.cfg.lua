-- Prosody 0.12 for the imnode bench (bench/servers/prosody.ts fills in the
-- {{...}} fields): one VirtualHost on loopback, its MUC component, a
-- self-signed certificate for the STARTTLS login run, everything it writes in
-- the bench's temp dir. Started in the foreground by the bench as its own
-- process (`prosody --config`), never as the system service, and stopped by PID.
-- Features close to imnode's default set, so that neither does more work per
-- stanza for lack of a module; no rate limits (mod_limits is not loaded).

run_as_root = true -- the bench may run as root; Prosody otherwise tries to switch users
daemonize = false
pidfile = "{{DIR}}/prosody.pid"
data_path = "{{DIR}}/data"
log = { { levels = { min = "error" }, to = "file", filename = "{{DIR}}/prosody.log" } }
network_backend = "epoll" -- the 0.12 default, stated because the figures depend on it
-- Nagle's algorithm off, as imnode, ejabberd and the load generator have it:
-- with it on, small stanzas wait for the peer's delayed ACK (up to 40 ms).
network_settings = { nagle = false }

interfaces = { "127.0.0.1" }
c2s_ports = { {{PORT}} }
c2s_direct_tls_ports = { }
s2s_ports = { }
http_ports = { }
https_ports = { }
component_ports = { }

admins = { }
modules_enabled = {
  "roster"; "saslauth"; "tls"; "disco"; "ping"; "presence"; "message"; "iq";
  "carbons"; "blocklist"; "vcard_legacy"; "version"; "uptime"; "time"; "offline";
}
modules_disabled = { "s2s"; "admin_shell"; }

authentication = "internal_hashed" -- SCRAM-SHA-1 credentials in the data files the bench writes
default_iteration_count = 4096     -- as imnode's and ejabberd's
c2s_require_encryption = false     -- plain TCP on loopback, as the other servers get it
allow_unencrypted_plain_auth = false
storage = "internal"

ssl = { certificate = "{{CERT}}"; key = "{{KEY}}"; }

VirtualHost "{{DOMAIN}}"

Component "conference.{{DOMAIN}}" "muc"
  muc_room_locking = false        -- rooms open at once; the bench also submits the instant-room form
  muc_room_default_history_length = 0
  max_history_messages = 0
  muc_tombstones = false
  restrict_room_creation = false
