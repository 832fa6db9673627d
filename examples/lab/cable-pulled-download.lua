-- What if the cable is pulled while a download is moving? B goes silent
-- in both directions (no RST, like a pulled cable). Watch: the downloads
-- that were on B stall, and Pocket closes those clients' connections once
-- nothing has come for the idle timeout (1s) instead of leaving them
-- hanging; the check marks B down; new downloads go to A.
return {
  name = "cable pulled mid-download",
  duration = "6s",
  origins = { "A", "B" },
  policy = [[
    return {
      listeners = { { name = "web", bind = "{{listen}}", pool = "app" } },
      pools = { app = { servers = { "{{A}}", "{{B}}" },
                        timeouts = { idle = "1s", response = "2s" },
                        check = { http = "GET /health", interval = "250ms", timeout = "200ms", fall = 2 } } },
    }
  ]],
  load = { concurrency = 4, paths = { "/bytes/20000000" }, timeout = "10s" },
  -- Pulled once 60 MB have come through: mid-transfer, whatever the speed.
  faults = { { after_bytes = 60000000, server = "B", fault = "blackhole" }, { at = "4.5s", server = "B", fault = "heal" } },
  expect = { detected_within = "1.5s", ok_min = 10 },
}
