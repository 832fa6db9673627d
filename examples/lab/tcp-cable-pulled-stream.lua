-- What if the cable is pulled in the middle of long TCP streams? Four
-- clients each keep one stream through a `mode = "tcp"` listener to an
-- echo server, bytes flowing both ways for the whole run; round robin
-- puts two on A and two on B. At 2s B's wire drops everything (`drop`: no
-- RST, open connections go silent, new connects get no answer). Watch:
-- the two streams on B stall; after the pool's idle timeout (1s) Pocket
-- closes them and their clients count them cut, then open new streams.
-- A new stream Pocket tries on B times out at connect (300 ms) and is
-- taken to A; the connect check marks B down; the streams on A never
-- notice, and bytes keep flowing.
return {
  name = "TCP: cable pulled mid-stream",
  duration = "6s",
  origins = { "A", "B" },
  policy = [[
    return {
      listeners = { { name = "echo", bind = "{{listen}}", mode = "tcp", pool = "echo" } },
      pools = { echo = { mode = "tcp", servers = { "{{A}}", "{{B}}" }, balance = "round_robin",
                         timeouts = { connect = "300ms", idle = "1s" },
                         check = { tcp = true, interval = "200ms", timeout = "150ms", fall = 2 } } },
    }
  ]],
  load = { streams = 4, chunk = 4096, timeout = "3s" },
  faults = { { at = "2s", server = "B", fault = "drop" } },
  expect = {
    detected_within = "1s",
    failed_connections = 0,   -- no stream fails to open: B is skipped
    cut_connections = 2,      -- only the two streams open on B are cut
    bytes_after_fault = 1000000,
  },
}
