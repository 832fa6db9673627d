-- What if a check script is wrong? L2 runs a script meant to take over
-- when L1's Pocket stops answering: it asks L1 on port 8080 and, when no
-- answer comes, takes the virtual address itself and announces it
-- (gratuitous ARP). The mistake: Pocket listens on port 80. So to L2 the
-- master always looks gone, while L1, the VRRP master, holds the address
-- too: two masters from the start, without any VRRP advertisement lost.
-- Watch: the clients' ARP entry goes back and forth between L1's
-- announcements and L2's (every second), answers come through both, and
-- each switch resets the kept-alive connections the other balancer held.
return {
  name = "two masters (wrong check script)",
  mode = "real",
  duration = "12s",
  origins = { "A" },
  balancers = { "L1", "L2" },
  vrrp = {
    -- Each master repeats its gratuitous ARP every 2 s (keepalived's
    -- garp_master_refresh), as many sites configure it.
    garp_refresh = 2,
    checks = {
      -- Runs every second in L2's namespace, as root (keepalived's
      -- track_script); {{L1}}, {{vip}}, {{dev}} are filled in.
      L2 = [[
        if ! (exec 3<>/dev/tcp/{{L1}}/8080) 2>/dev/null; then
          ip addr replace {{vip}}/24 dev {{dev}}
          arping -q -U -c 1 -I {{dev}} {{vip}}
        fi
        exit 0
      ]],
    },
  },
  policy = [[
    return {
      listeners = { { name = "web", bind = "{{listen}}", pool = "app" } },
      pools = { app = { servers = { "{{A}}" } } },
    }
  ]],
  load = { concurrency = 4, rate = 100, timeout = "2s" },
  expect = { two_masters = true, ok_min = 600 },
}
