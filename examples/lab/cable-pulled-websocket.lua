-- What if the cable is pulled under open WebSocket tunnels? Each client
-- keeps one tunnel (an HTTP/1.1 upgrade to the origin's /echo) and sends
-- a message through it per request, waiting for the echo. B goes silent
-- in both directions (no RST, like a pulled cable). Watch: the tunnels
-- on B get no echo, each of their clients gives up after its timeout
-- (1s) and opens a new tunnel, which goes to A once the check has marked
-- B down; the tunnels on A never notice.
return {
  name = "cable pulled under WebSocket tunnels",
  duration = "6s",
  origins = { "A", "B" },
  policy = [[
    return {
      listeners = { { name = "web", bind = "{{listen}}", pool = "app" } },
      pools = { app = { servers = { "{{A}}", "{{B}}" }, balance = "least_conn",
                        timeouts = { tunnel = "3s" },
                        check = { http = "GET /health", interval = "250ms", timeout = "200ms", fall = 2 } } },
    }
  ]],
  load = { concurrency = 4, rate = 40, paths = { "/echo" }, websocket = true, timeout = "1s" },
  faults = { { at = "2s", server = "B", fault = "blackhole" }, { at = "4.5s", server = "B", fault = "heal" } },
  expect = { detected_within = "1.5s", ok_min = 100 },
}
