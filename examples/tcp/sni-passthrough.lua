-- sni-passthrough: two HTTPS sites on one address, each served by its own
-- origin, which keeps its certificate and key: Pocket never decrypts.
-- It reads the name the client asks for (the SNI of the TLS ClientHello,
-- as nginx's ssl_preread and HAProxy's req.ssl_sni do) and passes the
-- whole connection, handshake included, to that name's origin. A name it
-- does not know is refused.
--
--   client --TLS for a.example--> Pocket :8443 --> origin A :9443 (a.example's certificate)
--   client --TLS for b.example--> Pocket :8443 --> origin B :9444 (b.example's certificate)
--
-- Try it: two origins with a self-signed certificate each (openssl's
-- s_server; -www answers a page naming the connection):
--
--   for n in a b; do
--     openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
--       -subj /CN=$n.example -addext subjectAltName=DNS:$n.example -keyout $n.key -out $n.pem
--   done
--   openssl s_server -accept 9443 -cert a.pem -key a.key -www &
--   openssl s_server -accept 9444 -cert b.pem -key b.key -www &
--   target/release/pocket run examples/tcp/sni-passthrough.lua &
--   openssl s_client -connect 127.0.0.1:8443 -servername b.example </dev/null | grep subject
--     -> subject=CN = b.example        (origin B's own certificate)
--   curl --cacert a.pem --resolve a.example:8443:127.0.0.1 https://a.example:8443/
--     -> origin A's page
--   openssl s_client -connect 127.0.0.1:8443 -servername c.example </dev/null
--     -> no certificate: Pocket closed the connection; its log says
--        "connection rejected: unknown name c.example"
--
-- (The binary is cargo's release build: cargo build --release; with
-- CARGO_TARGET_DIR set, it is in there.) Real sites: bind 0.0.0.0:443 and
-- put the origins' addresses in the pools. The origins see Pocket's
-- address as the client's; to give them the client's, add send_proxy =
-- "v2" to their pools and accept the PROXY protocol there (nginx:
-- listen 443 ssl proxy_protocol). See docs/tcp.md.
--
-- `pocket test examples/tcp/sni-passthrough.lua` runs the `tests` below
-- offline (on_connect with the SNI each case gives); tests/tcp_examples.rs
-- runs this file with two real TLS origins.

-- Which pool serves each name. Names in lower case: conn.sni always is.
local sites = {
  ["a.example"] = "site_a",
  ["b.example"] = "site_b",
}

return {
  listeners = {
    -- mode = "tcp": no TLS here (no certificate, no tls key); on_connect
    -- picks each connection's pool. client_hello: how long a client may
    -- take to send its ClientHello before it is closed (5 s is the default).
    { name = "tls", bind = "127.0.0.1:8443", mode = "tcp",
      timeouts = { client_hello = "5s" } },
  },
  pools = {
    -- A connect check: an origin that no longer accepts is taken down
    -- after 3 failed checks (2 s apart); the log and the stats page say
    -- so, and its name's clients are closed at once instead of waiting
    -- out timeouts.connect on an origin that does not answer.
    site_a = { mode = "tcp", servers = { "127.0.0.1:9443" }, check = { tcp = true } },
    site_b = { mode = "tcp", servers = { "127.0.0.1:9444" }, check = { tcp = true } },
  },
  on_connect = function(conn)
    -- Reading conn.sni waits for the client's ClientHello (at most
    -- client_hello) and reads it without taking it: the origin gets it
    -- whole. nil: no name in it (a client connecting by IP address), or
    -- not TLS at all.
    local name = conn.sni
    local pool = sites[name or ""]
    if pool then return pool end
    -- Anything else is closed before any origin is connected to, and
    -- logged as "connection rejected: unknown name c.example".
    return pocket.reject("unknown name " .. (name or "(none)"))
  end,
  tests = {
    { name = "a.example to its origin", conn = { listener = "tls", sni = "a.example" }, pool = "site_a" },
    { name = "b.example to its origin", conn = { listener = "tls", sni = "b.example" }, pool = "site_b" },
    { name = "an unknown name is refused", conn = { listener = "tls", sni = "c.example" },
      rejected = "unknown name c.example" },
    { name = "no name is refused", conn = { listener = "tls" }, rejected = true },
  },
}
