-- What if a TCP server dies under open connections? Four long streams
-- and two clients of short connections (connect, 100 bytes each way,
-- close) go through a `mode = "tcp"` listener to two echo servers. At 2s
-- B is killed: its open connections are reset, so the streams on it (and
-- a short connection caught in flight) are cut and open again; a connect
-- B refuses is retried on A, so no connection fails; refused connects
-- take B out at once. At 4s B starts again and comes back after two
-- passing checks; until then it gets no new connection.
return {
  name = "TCP: server dies under open connections",
  duration = "6s",
  origins = { "A", "B" },
  policy = [[
    return {
      listeners = { { name = "echo", bind = "{{listen}}", mode = "tcp", pool = "echo" } },
      pools = { echo = { mode = "tcp", servers = { "{{A}}", "{{B}}" }, balance = "round_robin",
                         timeouts = { connect = "300ms" },
                         check = { tcp = true, interval = "250ms", timeout = "200ms", rise = 2, fall = 2 } } },
    }
  ]],
  load = { streams = 4, connections = 2, rate = 50, bytes = 100, chunk = 4096, timeout = "2s" },
  faults = {
    { at = "2s", server = "B", fault = "kill" },
    { at = "4s", server = "B", fault = "restart" },
  },
  expect = {
    detected_within = "1s",
    recovered_within = "1.5s",
    failed_connections = 0,
    cut_connections = 4,      -- at most what was open on B: 2 streams, 2 short connections
    connections_to_down = 0,  -- none while B is marked down, even once it runs again
    bytes_after_fault = 1000000,
  },
}
