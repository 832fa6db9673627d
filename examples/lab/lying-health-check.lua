-- What if the health check lies? B's /health says ok while every real
-- page answers 500. The active check keeps it up; passive checking on
-- 5xx catches it after 3 errors in a row.
return {
  name = "lying health check",
  duration = "5s",
  origins = { "A", "B" },
  policy = [[
    return {
      listeners = { { name = "web", bind = "{{listen}}", pool = "app" } },
      pools = { app = { servers = { "{{A}}", "{{B}}" },
                        check = { http = "GET /health", interval = "250ms", rise = 100, fall = 2 },
                        passive = { after = 3, on_5xx = true } } },
    }
  ]],
  load = { concurrency = 2, rate = 100 },
  faults = { { at = "1.5s", server = "B", fault = "lie", status = 500 } },
  expect = { failed = 3, detected_within = "1s" },
}
