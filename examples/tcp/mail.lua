-- mail: one address for two SMTP servers. Pocket takes each client's
-- connection whole (TCP mode: the SMTP conversation passes untouched),
-- gives it to the server with the fewest open connections, and stops
-- sending to a server whose "220" banner no longer comes.
--
--   mail client -> Pocket :2525 -> mail1 :2601
--                               -> mail2 :2602
--
-- Try it (from the repository's top folder; the test SMTP server needs
-- Python's aiosmtpd: pip install aiosmtpd):
--
--   python3 tests/clients/smtp_server.py mail1 2601 &
--   python3 tests/clients/smtp_server.py mail2 2602 &
--   target/release/pocket run examples/tcp/mail.lua &
--   python3 tests/clients/smtp_send.py 127.0.0.1 2525 hello
--     -> banner 220 mail1 ESMTP pocket-test
--     -> sent 250 delivered to mail1     (send again: mail2 takes its turn)
--
-- Stop mail2 (kill %2): within 3 checks (about 6 s) the log says
-- "server 127.0.0.1:2602 of pool mail is DOWN: 3 checks failed:
-- connect: Connection refused", and every mail goes to mail1. Start it
-- again and 2 passed checks bring it back ("is UP: 2 checks passed:
-- answered "220 mail2 ESMTP pocket-test""). Even before the checks
-- notice, a refused connect is not lost: Pocket tries the other server.
-- kill %1 %3 stops the rest. (The binary is cargo's release build:
-- cargo build --release; with CARGO_TARGET_DIR set, it is in there.)
--
-- Real servers: put your Postfix (or Exim) addresses in `servers`. Behind
-- Pocket a mail server sees every client as Pocket's own address, and
-- Postfix trusts 127.0.0.1 (mynetworks): it would relay anyone's mail.
-- Give it the client's address with the PROXY protocol: uncomment
-- send_proxy below and set `smtpd_upstream_proxy_protocol = haproxy` on
-- the Postfix smtpd that Pocket connects to (HAProxy's `send-proxy`).
-- See docs/tcp.md.
--
-- No `tests` here: with one pool and no on_connect there is nothing to
-- decide (`pocket test` takes `conn` cases where there is: see
-- sni-passthrough.lua); tests/tcp_examples.rs runs this file with two real
-- SMTP servers.

return {
  listeners = {
    -- mode = "tcp": bytes, not HTTP; every connection goes to pool "mail"
    -- (no on_connect: nothing to decide). In production, bind :25.
    { name = "smtp", bind = "127.0.0.1:2525", mode = "tcp", pool = "mail" },
  },
  pools = {
    mail = {
      mode = "tcp",                                    -- a pool of TCP servers
      servers = { "127.0.0.1:2601", "127.0.0.1:2602" },
      -- The server with the fewest connections open through Pocket: an
      -- SMTP session lasts as long as its client keeps sending, so
      -- counting open sessions spreads the work better than taking turns.
      balance = "least_conn",
      timeouts = {
        connect = "2s",   -- a server that has not accepted by then: try the other
        -- Nothing moved either way for this long: close both sides. SMTP
        -- clients wait up to 10 minutes for the answer to a mail's data
        -- (RFC 5321 §4.5.3.2.6), so no shorter.
        idle = "10m",
      },
      -- The health check: connect, read the first line, pass when it
      -- starts with the greeting's code 220 (RFC 5321 §3.1; "220-" begins
      -- a greeting of several lines). A server that greets with 421 or 554
      -- (busy, refusing) fails, even if "220" is in its name. Nothing is
      -- sent: a server that speaks first is judged on its banner (Postfix
      -- takes bytes sent before it as improper pipelining). Every 2 s, 1 s
      -- to answer; 3 failed checks in a row take a server down, 2 passed
      -- bring it back.
      check = { pattern = "^220[ -]", interval = "2s", timeout = "1s", fall = 3, rise = 2 },
      -- send_proxy = "v1",   -- Postfix: smtpd_upstream_proxy_protocol = haproxy
    },
  },
}
