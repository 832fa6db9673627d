-- What if the balancer itself is restarted? Pocket drains (SIGTERM) and a
-- new one starts on the same port. Watch the gap: requests that arrive
-- while no Pocket listens are refused. That is why the binary-upgrade way
-- is to start the new one first (SO_REUSEPORT), then stop the old.
return {
  name = "balancer restarted",
  duration = "5s",
  origins = { "A", "B" },
  policy = [[
    return {
      listeners = { { name = "web", bind = "{{listen}}", pool = "app" } },
      pools = { app = { servers = { "{{A}}", "{{B}}" } } },
    }
  ]],
  load = { concurrency = 4, rate = 200 },
  faults = { { at = "2s", target = "balancer", fault = "restart" } },
  expect = { ok_min = 500 },
}
