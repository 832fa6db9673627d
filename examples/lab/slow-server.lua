-- What if a server gets slow? B adds 300 ms to every answer. Watch p99
-- climb while B is in rotation; least_conn sends fewer requests to the
-- slow server because its requests stay in flight longer.
return {
  name = "slow server",
  duration = "5s",
  origins = { "A", "B" },
  policy = [[
    return {
      listeners = { { name = "web", bind = "{{listen}}", pool = "app" } },
      pools = { app = { servers = { "{{A}}", "{{B}}" }, balance = "least_conn" } },
    }
  ]],
  load = { concurrency = 8 },
  faults = { { at = "1.5s", server = "B", fault = "slow", latency = "300ms" }, { at = "3.5s", server = "B", fault = "heal" } },
  expect = { failed = 0 },
}
