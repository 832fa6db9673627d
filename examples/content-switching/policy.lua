-- content-switching: one address, four pools, chosen by host and path.
--
--   client -> Pocket :8084 -> web    :9401  (everything else)
--                          -> static :9402  (/static/, images, css, js; static.example.com)
--                          -> api    :9403  (/api/..., with /api stripped)
--                          -> admin  :9404  (admin.example.com, local clients only)
--
-- pocket.match compiles the rules once, at load: all path conditions go into
-- one Rust RegexSet, matched once per request; the first rule that holds
-- wins. Add a rule and save: the next request follows it.
local match = require "pocket.match"

local routes = match.routes {
  { path = "/healthz", respond = { 200, "ok\n", { ["content-type"] = "text/plain" } } },
  { host = "admin.example.com", pool = "admin" },
  { prefix = "/admin", redirect = { 301, "http://admin.example.com:8084/" } },
  { host = "static.example.com", pool = "static" },
  { prefix = "/api/", pool = "api" },
  { prefix = "/static/", pool = "static" },
  { regex = [[\.(css|js|png|jpe?g|gif|svg|ico|woff2?)$]], pool = "static" },
  default = "web",
}

local LOCAL = { ["127.0.0.1"] = true, ["::1"] = true }
local forbidden = pocket.respond(403, "admin is for local clients only\n",
  { ["content-type"] = "text/plain" })

return {
  listeners = {
    { name = "web", bind = "127.0.0.1:8084", pool = "web" },
  },

  pools = {
    web    = { servers = { "127.0.0.1:9401" } },
    static = { servers = { "127.0.0.1:9402" } },
    api    = { servers = { "127.0.0.1:9403" } },
    admin  = { servers = { "127.0.0.1:9404" } },
  },

  on_request = function(req)
    local to = routes:route(req)
    if to == "admin" and not LOCAL[req.peer_ip] then return forbidden end
    if to == "api" then
      -- The API servers know /users, not /api/users; the query is kept.
      req:set_path(req.path:sub(5))
      req:set_header("x-forwarded-prefix", "/api")
    end
    return to
  end,

  on_response = function(req, res)
    res:set_header("x-pocket-pool", res.pool)
  end,

  -- `pocket test examples/content-switching/policy.lua`
  tests = {
    { name = "a page goes to web", req = { path = "/products/42" }, pool = "web", server = "127.0.0.1:9401" },
    { name = "the home page too", req = { path = "/" }, pool = "web" },
    { name = "/static/ goes to static", req = { path = "/static/app.css" }, pool = "static" },
    { name = "so does an image anywhere", req = { path = "/products/42/photo.jpg" }, pool = "static" },
    { name = "and the static host", req = { host = "static.example.com", path = "/logo" }, pool = "static" },
    { name = "/api/ goes to api, prefix noted", req = { path = "/api/users", query = "page=2" },
      pool = "api", header = { ["x-forwarded-prefix"] = "/api" } },
    { name = "an API path ending in .png is still the API", req = { path = "/api/users/7/avatar.png" }, pool = "api" },
    { name = "/apiary is not the API", req = { path = "/apiary" }, pool = "web" },
    { name = "the admin host", req = { host = "admin.example.com", path = "/users" }, pool = "admin" },
    { name = "admin from outside: 403",
      req = { host = "admin.example.com", path = "/users", peer_ip = "203.0.113.9" }, status = 403 },
    { name = "/admin on the main host: redirect", req = { path = "/admin/users" },
      status = 301, header = { location = "http://admin.example.com:8084/" } },
    { name = "health answered by Pocket", req = { path = "/healthz" }, status = 200, body = "ok" },
  },
}
