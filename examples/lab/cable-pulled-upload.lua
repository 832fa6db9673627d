-- What if the cable is pulled while an upload is moving? Clients POST
-- 2 MB bodies; B goes silent. Watch: uploads to B cannot finish; Pocket
-- answers them with an error within the response timeout (they are POSTs:
-- never retried, they may have had an effect); B is marked down.
return {
  name = "cable pulled mid-upload",
  duration = "6s",
  origins = { "A", "B" },
  policy = [[
    return {
      listeners = { { name = "web", bind = "{{listen}}", pool = "app" } },
      pools = { app = { servers = { "{{A}}", "{{B}}" },
                        timeouts = { idle = "1s", response = "1500ms" },
                        check = { http = "GET /health", interval = "250ms", timeout = "200ms", fall = 2 } } },
    }
  ]],
  load = { concurrency = 4, method = "POST", body_bytes = 2000000, paths = { "/upload" }, timeout = "10s" },
  faults = { { at = "2s", server = "B", fault = "blackhole" }, { at = "4.5s", server = "B", fault = "heal" } },
  expect = { detected_within = "1.5s", ok_min = 20 },
}
