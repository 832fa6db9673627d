-- What if the policy changes while traffic flows? Pocket reloads in place:
-- twice, to move all traffic to B and back. Nothing fails.
local function policy(pool)
  return [[
    return {
      listeners = { { name = "web", bind = "{{listen}}", pool = "]] .. pool .. [[" } },
      pools = { a = { servers = { "{{A}}" } }, b = { servers = { "{{B}}" } } },
    }
  ]]
end
return {
  name = "hot reload under load",
  duration = "5s",
  origins = { "A", "B" },
  policy = policy("a"),
  policies = { to_b = policy("b"), to_a = policy("a") },
  load = { concurrency = 8 },
  faults = {
    { at = "1.5s", target = "balancer", fault = "reload", policy = "to_b" },
    { at = "3s", target = "balancer", fault = "reload", policy = "to_a" },
  },
  expect = { failed = 0 },
}
