-- sticky-sessions: a client with a session keeps talking to one server.
--
--   client -> Pocket :8083 -> app-1 :9301, app-2 :9302, app-3 :9303
--
-- pocket.sticky remembers "session id -> server" in pocket.store, which
-- every worker shares and which survives reloads. No cookie: round robin.
-- A known session goes back to its server while that server is up; if it
-- goes down, the session moves to another server once, and stays there.
--
-- The built-in origins set no cookies, so Pocket plays the app's login
-- here: a response to a request without a session gets a `sid` cookie, and
-- the session is pinned to the server that answered it.
local sticky = require "pocket.sticky"
local util = require "pocket.util"

local TTL = 1800                               -- seconds a session is remembered
local sessions = pocket.store("sessions")      -- sid -> "ip:port"

local function new_sid(req)
  return string.format("%x", pocket.hash(req.id .. ":" .. req.peer_port .. ":" .. pocket.time()))
end

return {
  listeners = {
    { name = "web", bind = "127.0.0.1:8083", pool = "app" },
  },

  pools = {
    app = {
      servers = { "127.0.0.1:9301", "127.0.0.1:9302", "127.0.0.1:9303" },
      balance = sticky.balance { cookie = "sid", ttl = TTL, store = "sessions" },
      check = { http = "GET /health", interval = "1s", fall = 2, rise = 2 },
    },
  },

  on_request = function(req)
    if req.path == "/logout" then
      local sid = util.cookie(req:header("cookie"), "sid")
      if sid then sessions:delete(sid) end
      return pocket.respond(200, "logged out\n",
        { ["set-cookie"] = "sid=; Path=/; Max-Age=0", ["content-type"] = "text/plain" })
    end
  end,

  on_response = function(req, res)
    res:set_header("x-pocket-server", res.server)
    local cookies = req:header("cookie") or ""
    if not cookies:find("sid=", 1, true) then
      local sid = new_sid(req)
      sessions:set(sid, res.server, TTL)       -- the session starts where it was served
      res:add_header("set-cookie", "sid=" .. sid .. "; Path=/; HttpOnly; Max-Age=" .. TTL)
    end
  end,

  -- `pocket test examples/sticky-sessions/policy.lua`. Cases run in order
  -- and share pocket.store, like requests do.
  tests = {
    { name = "a new session gets a server", req = { headers = { cookie = "sid=alice" } },
      pool = "app", server = "127.0.0.1:9301" },
    { name = "and keeps it", req = { headers = { cookie = "sid=alice" } }, server = "127.0.0.1:9301" },
    { name = "other cookies do not matter", req = { headers = { cookie = "theme=dark; sid=alice" } },
      server = "127.0.0.1:9301" },
    { name = "its server is down: the session moves",
      req = { headers = { cookie = "sid=alice" } }, health = { ["127.0.0.1:9301"] = "down" },
      server = "127.0.0.1:9302" },
    { name = "and stays where it moved", req = { headers = { cookie = "sid=alice" } }, server = "127.0.0.1:9302" },
    { name = "a drained server keeps no sessions either",
      req = { headers = { cookie = "sid=alice" } }, health = { ["127.0.0.1:9302"] = "drain" },
      server = "127.0.0.1:9301" },
    { name = "no session: round robin", req = { path = "/" }, pool = "app" },
    { name = "logout forgets the session", req = { path = "/logout", headers = { cookie = "sid=alice" } },
      status = 200, body = "logged out", header = { ["set-cookie"] = "sid=; Path=/; Max-Age=0" } },
    { name = "logout without a session", req = { path = "/logout" }, status = 200, body = "logged out" },
  },
}
