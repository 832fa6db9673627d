-- cdn-varnish: Pocket in front of two Varnish caches in front of one origin.
--
--   client -> Pocket :8081 -> varnish A :9111 -+
--                          -> varnish B :9112 -+-> origin :9101
--                          -> origin :9101 (bypass and fallback)
--
-- pocket.cdn hashes each URL to one cache, so every URL is stored once and
-- the two caches add up to one big cache. Requests a shared cache must not
-- store go straight to the origin, and so do the URLs of a cache that is
-- down: the other cache keeps its own URLs warm.
local cdn = require "pocket.cdn"

-- What may be cached: the stdlib default (GET/HEAD without Authorization or
-- a session cookie), and nothing under /api/.
local function cacheable(req)
  return cdn.cacheable(req) and not req.path:find("^/api/")
end

return {
  listeners = {
    { name = "web", bind = "127.0.0.1:8081", pool = "cache" },
  },

  pools = {
    origin = { servers = { "127.0.0.1:9101" } },
    cache = cdn.tier {
      servers = { "127.0.0.1:9111", "127.0.0.1:9112" },
      fallback = "origin",              -- bypassed requests, and a dead cache's URLs
      cacheable = cacheable,
      check = { tcp = true, interval = "500ms", fall = 1, rise = 2 },
    },
  },

  on_request = function(req)
    if req.path == "/ping" then return pocket.respond(200, "pong\n") end
    -- nothing returned: the listener's pool, "cache"
  end,

  -- Say who answered, and whether Varnish had it: X-Varnish holds two
  -- transaction ids on a hit (this one and the one that filled the cache).
  on_response = function(req, res)
    res:set_header("x-pocket-server", res.server)
    local xv = res:header("x-varnish")
    if not xv then
      res:set_header("x-cache", "BYPASS")
    elseif xv:find(" ") then
      res:set_header("x-cache", "HIT")
    else
      res:set_header("x-cache", "MISS")
    end
  end,

  -- `pocket test examples/cdn-varnish/policy.lua`. The key is host + URI;
  -- curl to 127.0.0.1:8081 sends the host 127.0.0.1, so the tests do too.
  tests = {
    { name = "/b.css lives in cache B", req = { host = "127.0.0.1", path = "/b.css" },
      pool = "cache", server = "127.0.0.1:9112" },
    { name = "/a.css lives in cache A", req = { host = "127.0.0.1", path = "/a.css" },
      pool = "cache", server = "127.0.0.1:9111" },
    { name = "the same URL, the same cache", req = { host = "127.0.0.1", path = "/b.css" },
      server = "127.0.0.1:9112" },
    { name = "POST bypasses the caches", req = { method = "POST", host = "127.0.0.1", path = "/b.css" },
      pool = "origin", server = "127.0.0.1:9101" },
    { name = "a session cookie bypasses", req = { host = "127.0.0.1", path = "/b.css", headers = { cookie = "sid=42" } },
      pool = "origin" },
    { name = "other cookies do not", req = { host = "127.0.0.1", path = "/b.css", headers = { cookie = "theme=dark" } },
      pool = "cache" },
    { name = "/api/ is never cached", req = { host = "127.0.0.1", path = "/api/items" }, pool = "origin" },
    { name = "cache B down: its URLs go to the origin, not to A",
      req = { host = "127.0.0.1", path = "/b.css" }, health = { ["127.0.0.1:9112"] = "down" },
      pool = "origin", server = "127.0.0.1:9101" },
    { name = "cache B down: A keeps its own URLs",
      req = { host = "127.0.0.1", path = "/a.css" }, health = { ["127.0.0.1:9112"] = "down" },
      server = "127.0.0.1:9111" },
    { name = "both caches down: the origin serves everything",
      req = { host = "127.0.0.1", path = "/a.css" },
      health = { ["127.0.0.1:9111"] = "down", ["127.0.0.1:9112"] = "down" }, pool = "origin" },
    { name = "ping is answered by Pocket", req = { path = "/ping" }, status = 200, body = "pong" },
  },
}
