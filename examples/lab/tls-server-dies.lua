-- What if a server dies behind a TLS listener? As server-dies.lua, with
-- the clients speaking TLS to Pocket on kept-alive connections (the lab
-- makes a throwaway certificate for the run, site.pem and site.key next
-- to the policy). Watch: the clients' TLS connections to Pocket never
-- notice: B's refused connects are retried on A, three in a row take B
-- out, and the check brings it back after the restart. Nothing fails.
return {
  name = "server dies behind TLS",
  duration = "6s",
  tls = true,
  origins = { "A", "B" },
  policy = [[
    return {
      listeners = { { name = "web", bind = "{{listen}}", pool = "app",
                      tls = { cert = "site.pem", key = "site.key" } } },
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
