-- What if a server dies? B is killed while traffic flows, then restarted.
-- Watch: live traffic takes B down at once (three refused connects in a
-- row, the passive check), before the active check's fall x interval;
-- requests refused by B are retried on A (nothing fails); B comes back
-- after rise checks pass.
return {
  name = "server dies",
  duration = "6s",
  origins = { "A", "B" },
  policy = [[
    return {
      listeners = { { name = "web", bind = "{{listen}}", pool = "app" } },
      pools = { app = { servers = { "{{A}}", "{{B}}" },
                        check = { http = "GET /health", interval = "250ms", timeout = "200ms", rise = 2, fall = 2 } } },
    }
  ]],
  load = { concurrency = 4, rate = 200, paths = { "/" } },
  faults = {
    { at = "2s", server = "B", fault = "kill" },
    { at = "4s", server = "B", fault = "restart" },
  },
  expect = { failed = 0, detected_within = "1s", recovered_within = "1.5s" },
}
