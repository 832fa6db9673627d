-- What if someone configures two servers with the same IP address? A and
-- B both hold one address on one segment (a bridge); Pocket's pool has
-- one server there ({{A}} and {{B}} are the same address). Pocket cannot
-- tell them apart: which one a packet reaches is decided by the
-- balancer's ARP entry, and the lab starts with A holding it.
-- Watch: at 2s B announces itself (a gratuitous ARP, as a host does when
-- it boots): answers now say B. Pocket's idle connections to A reach B,
-- which resets them; Pocket resends a request that meets such a reset on
-- a new connection, so no client notices (tcp-same-ip.lua shows what the
-- switch does to open streams). At 3.5s B's service stops
-- while B still holds the address: the one server is marked DOWN and
-- clients get 503s, though A is fine. At 5s A announces itself: UP again,
-- answers from A. At 6.5s the balancer's ARP entry is flushed: both
-- answer the next ARP request and the first answer wins. Pocket's access
-- log names one server all along; the `origin` field the policy logs
-- from x-origin shows two.
return {
  name = "two servers with the same IP",
  mode = "real",
  duration = "8s",
  origins = { "A", "B" },
  same_ip = { "A", "B" },
  policy = [[
    return {
      listeners = { { name = "web", bind = "{{listen}}", pool = "app" } },
      pools = { app = { servers = { "{{A}}" },
                        check = { http = "GET /health", interval = "250ms", timeout = "200ms", rise = 2, fall = 2 } } },
      log = { access = "access.log" },
      on_response = function(req, res)
        req:log_field("origin", res:header("x-origin") or "-")
      end,
    }
  ]],
  load = { concurrency = 4, rate = 100, paths = { "/" } },
  faults = {
    { at = "2s", server = "B", fault = "announce" },
    { at = "3.5s", server = "B", fault = "refuse" },
    { at = "5s", server = "A", fault = "announce" },
    { at = "6s", server = "B", fault = "heal" },
    { at = "6.5s", target = "balancer", fault = "flush_arp" },
  },
  expect = { answered_by = { "A", "B" }, access_log_servers = 1 },
}
