-- What if a server flaps, down and up every 400 ms? rise/fall keep its
-- state from flapping as fast: it needs 3 good checks in a row to come
-- back, so it mostly stays out; GETs refused by it are retried.
return {
  name = "flapping server",
  duration = "6s",
  origins = { "A", "B" },
  policy = [[
    return {
      listeners = { { name = "web", bind = "{{listen}}", pool = "app" } },
      pools = { app = { servers = { "{{A}}", "{{B}}" },
                        check = { tcp = true, interval = "100ms", timeout = "100ms", rise = 3, fall = 1 } } },
    }
  ]],
  load = { concurrency = 4, rate = 200 },
  faults = { { at = "1.5s", server = "B", fault = "flap", period = "400ms" }, { at = "4.5s", server = "B", fault = "heal" } },
  expect = { failed = 0, detected_within = "1s" },
}
