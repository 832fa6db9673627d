-- pocket.match, tested through `pocket test`.
local match = require "pocket.match"

local routes = match.routes {
  { host = "admin.example.com", pool = "admin" },
  { host = "*.cdn.example.com", pool = "static" },
  { prefix = "/static/", pool = "static" },
  { regex = [[^/api/v\d+/]], method = "POST", pool = "api_write" },
  { regex = [[^/api/v\d+/]], pool = "api" },
  { path = "/ping", respond = { 200, "pong\n" } },
  { path = "/old", redirect = { 301, "/new" } },
  { header = { "x-debug", "1" }, pool = "admin" },
  { cookie = { "beta", "yes" }, pool = "api" },
  default = "app",
}

local function pool(addr) return { servers = { addr } } end

return {
  listeners = { { name = "web", bind = "127.0.0.1:8080" } },
  pools = {
    app = pool "127.0.0.1:9001", admin = pool "127.0.0.1:9002", static = pool "127.0.0.1:9003",
    api = pool "127.0.0.1:9004", api_write = pool "127.0.0.1:9005",
  },
  on_request = function(req) return routes:route(req) end,
  tests = {
    { name = "host", req = { host = "admin.example.com", path = "/x" }, pool = "admin" },
    { name = "wildcard host", req = { host = "img.cdn.example.com" }, pool = "static" },
    { name = "prefix", req = { path = "/static/app.css" }, pool = "static" },
    { name = "prefix is not a substring", req = { path = "/x/static/app.css" }, pool = "app" },
    { name = "regex and method", req = { method = "POST", path = "/api/v2/items" }, pool = "api_write" },
    { name = "regex only", req = { path = "/api/v1/items" }, pool = "api" },
    { name = "exact path", req = { path = "/ping" }, status = 200, body = "pong" },
    { name = "exact path only", req = { path = "/ping/more" }, pool = "app" },
    { name = "redirect", req = { path = "/old" }, status = 301, header = { location = "/new" } },
    { name = "header", req = { headers = { ["x-debug"] = "1" } }, pool = "admin" },
    { name = "cookie", req = { headers = { cookie = "a=b; beta=yes" } }, pool = "api" },
    { name = "default", req = { path = "/anything" }, pool = "app", server = "127.0.0.1:9001" },
  },
}
