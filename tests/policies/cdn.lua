-- pocket.cdn, tested through `pocket test`.
local cdn = require "pocket.cdn"

return {
  listeners = { { name = "web", bind = "127.0.0.1:8080", pool = "cache" } },
  pools = {
    origin = { servers = { "127.0.0.1:8001" } },
    cache = cdn.tier { servers = { "127.0.0.1:6081", "127.0.0.1:6082" }, fallback = "origin" },
  },
  tests = {
    -- These two URLs hash to different caches (checked once, kept here).
    { name = "a GET goes to its cache", req = { path = "/a.css" }, pool = "cache", server = "127.0.0.1:6082" },
    { name = "same URL, same cache", req = { path = "/a.css" }, server = "127.0.0.1:6082" },
    { name = "another URL", req = { path = "/d.css" }, server = "127.0.0.1:6081" },
    { name = "POST bypasses", req = { method = "POST", path = "/a.css" }, pool = "origin" },
    { name = "Authorization bypasses", req = { path = "/a.css", headers = { authorization = "Basic x" } }, pool = "origin" },
    { name = "a session cookie bypasses", req = { path = "/a.css", headers = { cookie = "SID=42" } }, pool = "origin" },
    { name = "other cookies do not", req = { path = "/a.css", headers = { cookie = "theme=dark" } }, pool = "cache" },
    { name = "its cache down: the origin, not the other cache",
      req = { path = "/a.css" }, health = { ["127.0.0.1:6082"] = "down" }, pool = "origin", server = "127.0.0.1:8001" },
    { name = "other keys stay on their cache",
      req = { path = "/d.css" }, health = { ["127.0.0.1:6082"] = "down" }, server = "127.0.0.1:6081" },
    { name = "both down: the site stays up",
      req = { path = "/d.css" }, health = { ["127.0.0.1:6081"] = "down", ["127.0.0.1:6082"] = "down" }, pool = "origin" },
  },
}
