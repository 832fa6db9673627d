-- canary: send 20% of clients to v2, the same clients every time.
--
--   client -> Pocket :8082 -> stable: v1-a :9201, v1-b :9202
--                          -> canary: v2 :9203 (falls back to stable when down)
--
-- pocket.canary buckets each client by a stable hash of its id: the
-- `canary_id` cookie, else the `x-client-id` header, else its IP. A client
-- with no id gets one here, and a cookie with it, so a browser stays on its
-- side. `x-canary: 1` or `0` forces a side (for testers). Change `weight`
-- and save: the next request follows the new share.
local canary = require "pocket.canary"

local split = canary.split { stable = "stable", canary = "canary", weight = 20 }

local function new_id(req)
  return string.format("%x", pocket.hash(req.id .. ":" .. req.peer_port .. ":" .. pocket.time()))
end

return {
  listeners = {
    { name = "web", bind = "127.0.0.1:8082", pool = "stable" },
  },

  pools = {
    stable = { servers = { "127.0.0.1:9201", "127.0.0.1:9202" } },
    canary = {
      servers = { "127.0.0.1:9203" },
      check = { http = "GET /health", interval = "1s", fall = 2, rise = 2 },
      fallback = "stable",     -- a dead canary sends its clients back to v1
    },
  },

  on_request = function(req)
    local cookies = req:header("cookie") or ""
    if not cookies:find("canary_id=", 1, true) and not req:header("x-client-id") then
      -- First visit: pick an id now, so this request and the next ones
      -- (with the cookie set below) land in the same bucket.
      req:set_header("x-client-id", new_id(req))
      req:set_header("x-new-client", "1")
    end
    return split(req)
  end,

  on_response = function(req, res)
    res:set_header("x-pocket-pool", res.pool)
    if req:header("x-new-client") then
      res:add_header("set-cookie",
        "canary_id=" .. req:header("x-client-id") .. "; Path=/; Max-Age=2592000; HttpOnly")
    end
  end,

  -- `pocket test examples/canary/policy.lua`. With weight 20, user7 and
  -- user10 are in the canary share, user1 and user2 are not.
  tests = {
    { name = "user7 is in the canary share", req = { headers = { cookie = "canary_id=user7" } }, pool = "canary" },
    { name = "and stays there", req = { headers = { cookie = "canary_id=user7" } }, pool = "canary" },
    { name = "user10 too", req = { headers = { cookie = "canary_id=user10" } }, pool = "canary" },
    { name = "user1 is not", req = { headers = { cookie = "canary_id=user1" } }, pool = "stable" },
    { name = "user2 is not", req = { headers = { cookie = "canary_id=user2" } }, pool = "stable" },
    { name = "an API client by header", req = { headers = { ["x-client-id"] = "user7" } }, pool = "canary" },
    { name = "a tester forces v2", req = { headers = { cookie = "canary_id=user1", ["x-canary"] = "1" } },
      pool = "canary", server = "127.0.0.1:9203" },
    { name = "and forces v1", req = { headers = { cookie = "canary_id=user7", ["x-canary"] = "0" } }, pool = "stable" },
    { name = "a new client gets an id", req = { path = "/" },
      header = { ["x-client-id"] = true, ["x-new-client"] = "1" } },
    { name = "a known client does not", req = { headers = { cookie = "canary_id=user1" } },
      header = { ["x-new-client"] = false } },
    { name = "the canary is down: its clients go back to v1",
      req = { headers = { cookie = "canary_id=user7" } }, health = { ["127.0.0.1:9203"] = "down" },
      pool = "stable" },
  },
}
