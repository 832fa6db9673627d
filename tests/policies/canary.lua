-- pocket.canary, tested through `pocket test`.
local canary = require "pocket.canary"

local split = canary.split { stable = "app", canary = "app_v2", weight = 30 }
local all_in = canary.split { stable = "app", canary = "app_v2", weight = 100 }

return {
  listeners = { { name = "web", bind = "127.0.0.1:8080" } },
  pools = {
    app = { servers = { "127.0.0.1:9001" } },
    app_v2 = { servers = { "127.0.0.1:9002" } },
  },
  on_request = function(req)
    if req.path == "/all" then return all_in(req) end
    return split(req)
  end,
  tests = {
    -- Buckets are pocket.hash(id) % 100, stable across runs and workers.
    { name = "a client in the canary share", req = { headers = { cookie = "canary_id=u4" } }, pool = "app_v2" },
    { name = "the same client again", req = { headers = { cookie = "canary_id=u4" } }, pool = "app_v2" },
    { name = "a client outside it", req = { headers = { cookie = "canary_id=u2" } }, pool = "app" },
    { name = "by header", req = { headers = { ["x-client-id"] = "u4" } }, pool = "app_v2" },
    { name = "forced in", req = { headers = { cookie = "canary_id=u2", ["x-canary"] = "1" } }, pool = "app_v2" },
    { name = "forced out", req = { headers = { cookie = "canary_id=u4", ["x-canary"] = "0" } }, pool = "app" },
    { name = "weight 100", req = { path = "/all", headers = { cookie = "canary_id=u2" } }, pool = "app_v2" },
  },
}
