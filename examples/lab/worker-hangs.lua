-- What if a worker hangs? Pocket runs two workers; at 1.5s the lab makes
-- the next hook call hang its worker for good (the hang_worker fault:
-- what a script or native call that escaped its time budget would do).
-- Watch: within about a second the watchdog names the hook, its line and
-- the request in the log, takes the stuck worker's sockets out of the
-- rotation and starts a worker in its place. Only the requests the stuck
-- worker held are lost (its kept-alive clients time out, then reconnect
-- to a live worker); every other request is answered.
return {
  name = "worker hangs",
  duration = "6s",
  workers = 2,
  origins = { "A" },
  policy = [[
    return {
      listeners = { { name = "web", bind = "{{listen}}", pool = "app" } },
      pools = { app = { servers = { "{{A}}" } } },
      on_request = function(req)
        req:set_header("x-lab", "1")
      end,
    }
  ]],
  load = { concurrency = 4, rate = 200, paths = { "/" }, timeout = "2s" },
  faults = { { at = "1.5s", target = "balancer", fault = "hang_worker" } },
  -- At most the 4 clients' requests in flight on the stuck worker.
  expect = { failed = 4, ok_min = 500 },
}
