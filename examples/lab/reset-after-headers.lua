-- What if a server resets the connection after sending the headers? The
-- client already has a 200 and part of nothing: Pocket cannot retry (the
-- answer started), so the client sees its connection closed, promptly.
-- Passive checks take B out after 3 failures in a row.
return {
  name = "reset after headers",
  duration = "5s",
  origins = { "A", "B" },
  policy = [[
    return {
      listeners = { { name = "web", bind = "{{listen}}", pool = "app" } },
      pools = { app = { servers = { "{{A}}", "{{B}}" }, passive = { after = 3, cooldown = "30s" } } },
    }
  ]],
  load = { concurrency = 4, rate = 200, paths = { "/bytes/100000" } },
  faults = { { at = "1.5s", server = "B", fault = "reset_after_headers" } },
  expect = { failed = 8, detected_within = "1s" },
}
