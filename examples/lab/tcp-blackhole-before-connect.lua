-- What if a TCP server's connects go unanswered (a firewall dropping
-- SYNs, or a pulled cable) while clients come and go? Four clients open
-- short connections (connect, 100 bytes each way, close), 100 a second.
-- At 1.5s B drops everything (`drop`: no SYN-ACK, no RST). Watch: a
-- connection Pocket sends to B waits for its connect timeout (300 ms),
-- then Pocket takes A for it: the client sees a slower connection, not
-- a failed one; the connect check marks B down within a second and
-- connections stop waiting.
return {
  name = "TCP: blackhole before connect",
  duration = "5s",
  origins = { "A", "B" },
  policy = [[
    return {
      listeners = { { name = "echo", bind = "{{listen}}", mode = "tcp", pool = "echo" } },
      pools = { echo = { mode = "tcp", servers = { "{{A}}", "{{B}}" },
                         timeouts = { connect = "300ms" },
                         check = { tcp = true, interval = "200ms", timeout = "150ms", fall = 2 } } },
    }
  ]],
  load = { connections = 4, rate = 100, bytes = 100, timeout = "2s" },
  faults = { { at = "1.5s", server = "B", fault = "drop" } },
  expect = {
    detected_within = "1s",
    failed_connections = 0,   -- every connection caught by B is taken to A
    cut_connections = 4,      -- at most one in flight on B per client at the drop
    bytes_after_fault = 20000,
  },
}
