-- What if one node of a consistent-hash cache tier is lost? Each URL lives
-- on one cache (pocket.cdn). When C2 is killed, only its URLs go to the
-- origin; C1 keeps serving its own. (The "caches" here are plain origins
-- named C1 and C2; examples/cdn-varnish does it with real Varnish.)
return {
  name = "cache node lost",
  duration = "5s",
  origins = { "C1", "C2", "ORIGIN" },
  policy = [[
    local cdn = require "pocket.cdn"
    return {
      listeners = { { name = "web", bind = "{{listen}}", pool = "cache" } },
      pools = {
        origin = { servers = { "{{ORIGIN}}" } },
        cache = cdn.tier { servers = { "{{C1}}", "{{C2}}" }, fallback = "origin",
                           check = { tcp = true, interval = "200ms", fall = 1, rise = 2 } },
      },
    }
  ]],
  load = { concurrency = 4, rate = 200, paths = { "/a", "/b", "/c", "/d", "/e", "/f", "/g", "/h" } },
  faults = { { at = "2s", server = "C2", fault = "kill" } },
  expect = { failed = 0, detected_within = "1s" },
}
