-- What if the balancers stop hearing each other while clients still reach
-- both? A firewall rule on L2 drops the VRRP advertisements (IP protocol
-- 112) that come to it: L2 no longer hears L1, decides the master is gone
-- after three missed advertisements, and takes the virtual address too.
-- Two masters: both hold the address and both announce it by gratuitous
-- ARP, so the clients' ARP entry follows whichever spoke last (L1 still
-- hears L2's lower-priority advertisements and answers each with its own
-- announcement). Watch: answers through L1, then L2, then L1 again, and
-- connection resets at each switch (a connection cannot follow the
-- address; the other balancer does not know it). At 12s the rule goes:
-- L2 hears L1 again, steps back, and one master remains.
return {
  name = "two masters (VRRP cut)",
  mode = "real",
  duration = "18s",
  origins = { "A" },
  balancers = { "L1", "L2" },
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
