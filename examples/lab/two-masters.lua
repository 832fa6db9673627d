-- What if the balancers stop hearing each other while clients still reach
-- both? At 2s firewall rules in L2's namespace drop VRRP (IP protocol 112)
-- in and out: L1 and L2 no longer hear each other. After three missed
-- advertisements L2 decides the master is gone and takes the virtual
-- address too: two masters. Both announce it by gratuitous ARP (every 2 s
-- here), so the clients' ARP entry follows whichever spoke last. Watch:
-- answers through L1, then L2, then L1 again, about every second, and
-- connection resets at each switch (a connection cannot follow the
-- address; the other balancer does not know it). At 12s the rules go: L2
-- hears L1 (the higher priority), steps back, and one master remains.
return {
  name = "two masters (VRRP cut)",
  mode = "real",
  duration = "18s",
  origins = { "A" },
  balancers = { "L1", "L2" },
  -- Each master repeats its gratuitous ARP every 2 s (keepalived's
  -- garp_master_refresh), as many sites configure it.
  vrrp = { garp_refresh = 2 },
  policy = [[
    return {
      listeners = { { name = "web", bind = "{{listen}}", pool = "app" } },
      pools = { app = { servers = { "{{A}}" } } },
    }
  ]],
  load = { concurrency = 4, rate = 100, timeout = "2s" },
  faults = {
    { at = "2s", balancer = "L2", fault = "drop_vrrp" },
    { at = "12s", balancer = "L2", fault = "heal" },
  },
  expect = { two_masters = true, ok_min = 1000 },
}
