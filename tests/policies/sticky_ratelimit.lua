-- pocket.sticky and pocket.ratelimit, tested through `pocket test`.
local sticky = require "pocket.sticky"
local ratelimit = require "pocket.ratelimit"

local limit = ratelimit.new { rate = 1, burst = 2, key = function(req) return req:header("x-user") end }

return {
  listeners = { { name = "web", bind = "127.0.0.1:8080", pool = "app" } },
  pools = {
    app = { servers = { "127.0.0.1:9001", "127.0.0.1:9002" }, balance = sticky.balance { cookie = "sid" } },
  },
  on_request = function(req)
    local refused = limit:check(req)
    if refused then return refused end
  end,
  tests = {
    { name = "a new session gets a server", req = { headers = { cookie = "sid=s1" } }, server = "127.0.0.1:9001" },
    { name = "and keeps it", req = { headers = { cookie = "sid=s1" } }, server = "127.0.0.1:9001" },
    { name = "its server down: another one",
      req = { headers = { cookie = "sid=s1" } }, health = { ["127.0.0.1:9001"] = "down" }, server = "127.0.0.1:9002" },
    { name = "which it then keeps", req = { headers = { cookie = "sid=s1" } }, server = "127.0.0.1:9002" },
    { name = "burst 1 of 2", req = { headers = { ["x-user"] = "u" } }, pool = "app" },
    { name = "burst 2 of 2", req = { headers = { ["x-user"] = "u" } }, pool = "app" },
    { name = "over the limit", req = { headers = { ["x-user"] = "u" } }, status = 429, header = { ["retry-after"] = "1" } },
    { name = "another user is not limited", req = { headers = { ["x-user"] = "v" } }, pool = "app" },
  },
}
