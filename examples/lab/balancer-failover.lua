-- What if the balancer itself fails? Two Pockets, L1 and L2, each in its
-- own network namespace with keepalived, share a virtual address by VRRP;
-- the clients know only that address. L1 fails three ways in turn, and
-- each time comes back and takes the address back (it has the higher
-- priority):
--   3s  its Pocket is killed: keepalived's check (does my Pocket accept a
--       connection?) fails within a second, L1 gives the address up, L2
--       takes it and announces it by gratuitous ARP;
--   13s its cable is pulled: L1 cannot say anything, so L2 waits for three
--       missed advertisements (about 3.5 s) before it takes over;
--   24s its keepalived is stopped: it gives the address up as it goes, L2
--       takes it at once.
-- Watch which balancer answered each moment ("A via L1", "A via L2"), the
-- requests that failed during each switch (refused while a dead Pocket's
-- address still answers, timeouts while a pulled cable swallows them,
-- resets on connections that cannot follow the address), and each
-- take-over time. Real mode only: root, network namespaces, keepalived.
return {
  name = "balancer failover",
  mode = "real",
  duration = "32s",
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
    { at = "3s", balancer = "L1", fault = "kill" },
    { at = "6s", balancer = "L1", fault = "restart" },
    { at = "13s", balancer = "L1", fault = "blackhole" },
    { at = "17s", balancer = "L1", fault = "heal" },
    { at = "24s", balancer = "L1", fault = "stop_keepalived" },
    { at = "27s", balancer = "L1", fault = "start_keepalived" },
  },
  expect = { failover_within = "5s", ok_min = 1500 },
}
