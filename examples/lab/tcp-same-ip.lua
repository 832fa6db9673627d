-- Two servers with the same IP, TCP mode: four long streams go through a
-- `mode = "tcp"` listener to the one address A and B share (A holds it
-- at the start). At 2s B announces itself (a gratuitous ARP): the next
-- packets of the four streams, all open with A, reach B, which knows
-- nothing of them and answers with a reset. Watch: the four streams are
-- cut at once and Pocket's log says the server broke them; their clients
-- open new ones, which reach B. Pocket knew one server all along.
return {
  name = "TCP: two servers with the same IP",
  mode = "real",
  duration = "5s",
  origins = { "A", "B" },
  same_ip = { "A", "B" },
  policy = [[
    return {
      listeners = { { name = "echo", bind = "{{listen}}", mode = "tcp", pool = "echo" } },
      pools = { echo = { mode = "tcp", servers = { "{{A}}" } } },
    }
  ]],
  load = { streams = 4, chunk = 4096, timeout = "2s" },
  faults = { { at = "2s", server = "B", fault = "announce" } },
  -- The four streams on A are cut (at least and at most four); their new
  -- ones go to B.
  expect = { answered_by = { "A", "B" }, failed_connections = 0,
             cut_connections_min = 4, cut_connections = 4 },
}
