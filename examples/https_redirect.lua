-- https_redirect: the site over HTTPS on :8443, and every plain HTTP
-- request on :8080 answered with a 301 to the same URL over https (what
-- nginx's `return 301 https://$host$request_uri;` server block does).
--
--   client -> Pocket :8443 (TLS) -> app :9001
--   client -> Pocket :8080       -> 301 https://host:8443/path?query
--
-- The certificate and key sit beside this file (paths are relative to the
-- policy's folder). For a try on your machine, a self-signed pair:
--
--   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
--     -keyout site.key -out site.pem -days 30 -subj /CN=localhost \
--     -addext subjectAltName=DNS:localhost
--   pocket run https_redirect.lua
--   curl -i http://localhost:8080/a?b=1              -> 301, Location: https://localhost:8443/a?b=1
--   curl --cacert site.pem https://localhost:8443/   -> the app
--
-- Replacing site.pem and site.key (certbot, acme.sh) reloads the policy
-- by itself: Pocket watches them. In production, bind :443 and :80 and
-- set HTTPS_PORT to "".
-- A `pocket test` case on the "https" listener runs as over TLS
-- (req.scheme "https").

local HTTPS_PORT = ":8443"

return {
  listeners = {
    { name = "https", bind = "127.0.0.1:8443", pool = "app",
      tls = { cert = "site.pem", key = "site.key" } },
    -- No pool: every request on it is answered by on_request.
    { name = "http", bind = "127.0.0.1:8080" },
  },
  pools = {
    app = { servers = { "127.0.0.1:9001" } },
  },
  on_request = function(req)
    if req.scheme == "http" then
      -- req.host is lowercase and has no port; req.uri is path and query.
      return pocket.redirect(301, "https://" .. (req.host or "localhost") .. HTTPS_PORT .. req.uri)
    end
    -- Over TLS (req.scheme == "https"): the listener's pool, "app".
  end,
  -- No `tests` here: `pocket test` loads the policy, which needs the
  -- certificate files; tests/tls.rs runs this file with certificates it
  -- makes, and its cases.
}
