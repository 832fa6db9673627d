-- The demo policy: one listener, two origins, round robin.
-- `pocket demo` starts origins A (127.0.0.1:9001) and B (127.0.0.1:9002)
-- and serves this on http://127.0.0.1:8080/. Reload the page: A, B, A, B.
-- The stats page on http://127.0.0.1:8404/ shows it happen.
-- `pocket demo` wrote this file as pocket-demo/demo.lua in the folder it
-- was started in, and keeps your edits: save a change and the next
-- request follows it. Delete the file to get the original back.

return {
  listeners = {
    { name = "web", bind = "127.0.0.1:8080", pool = "demo" },
  },

  pools = {
    demo = {
      servers = { "127.0.0.1:9001", "127.0.0.1:9002" },
      balance = "round_robin",
    },
  },

  -- Every request comes through here first. Return a pool name, a local
  -- response, or nothing (the listener's default pool).
  on_request = function(req)
    if req.path == "/ping" then
      return pocket.respond(200, "pong\n", { ["content-type"] = "text/plain" })
    end
    if req.path == "/old" then
      return pocket.redirect(301, "/")
    end
    -- A browser asks for /favicon.ico after each page it loads. Answered
    -- here (204: no icon), so only page loads take turns on A and B; sent
    -- to the pool, the icon would take every other turn and each reload
    -- would show the same server.
    if req.path == "/favicon.ico" then
      return pocket.respond(204)
    end
  end,

  -- Every response from a server passes here: say who answered.
  on_response = function(req, res)
    res:set_header("x-served-by", res.server)
  end,

  -- One line per request on standard error, after Pocket's own log: who
  -- asked, which server answered, how long it took, who ended it (`--`:
  -- normal). access = "access.log" writes a file instead (reopened on
  -- SIGUSR1), format = "json" one JSON object per line.
  log = { access = "-", format = "text" },

  -- The stats page, the admin API and /metrics: open
  -- http://127.0.0.1:8404/ and watch the requests go to A and B, one
  -- server after the other. On a loopback address it needs no token.
  admin = { bind = "127.0.0.1:8404" },

  -- `pocket test pocket-demo/demo.lua` runs these without any network.
  tests = {
    { req = { path = "/ping" }, status = 200, body = "pong" },
    { req = { path = "/old" }, status = 301, header = { location = "/" } },
    { req = { path = "/favicon.ico" }, status = 204 },
    { req = { path = "/" }, pool = "demo" },
    { name = "A is down: B serves", req = { path = "/" },
      health = { ["127.0.0.1:9001"] = "down" }, server = "127.0.0.1:9002" },
  },
}
