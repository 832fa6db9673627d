-- What if a server swallows connections (firewall drop) before any
-- traffic? New connections to B hang; with a short connect timeout and a
-- check, B is skipped and GETs are retried on A.
return {
  name = "blackhole before connect",
  duration = "5s",
  origins = { "A", "B" },
  policy = [[
    return {
      listeners = { { name = "web", bind = "{{listen}}", pool = "app" } },
      pools = { app = { servers = { "{{A}}", "{{B}}" },
                        timeouts = { connect = "300ms", response = "500ms", keepalive = "200ms" },
                        check = { http = "GET /health", interval = "200ms", timeout = "150ms", fall = 2 } } },
    }
  ]],
  load = { concurrency = 4, rate = 100, keepalive = false },
  faults = { { at = "1.5s", server = "B", fault = "blackhole" } },
  expect = { detected_within = "1s", ok_min = 300 },
}
