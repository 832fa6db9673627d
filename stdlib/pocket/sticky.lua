-- pocket.sticky: a client with a session cookie keeps its server, even
-- across reloads and pool changes, remembered in pocket.store (and across
-- several Pockets when the store is declared in the policy's `stores`:
-- kept in Redis, looked up there by every Pocket).
--
--   local sticky = require "pocket.sticky"
--   pools = { app = { servers = { ... },
--                     balance = sticky.balance { cookie = "sid", ttl = 3600 } } }
--
-- No cookie yet: round robin. A known session whose server is still up goes
-- back to it; a new one (or one whose server is gone) gets the least busy
-- server, which is remembered for `ttl` seconds.
local util = require "pocket.util"

local sticky = {}

function sticky.balance(opts)
  opts = opts or {}
  local cookie = opts.cookie or "sid"
  local ttl = opts.ttl or 3600
  if type(ttl) ~= "number" or ttl <= 0 or ttl > 86400 then
    error("sticky ttl must be seconds from 1 to 86400, not " .. util.shown(ttl), 2)
  end
  local store = pocket.store(opts.store or "sticky")
  return function(servers, req)
    local sid = util.cookie(req:header("cookie"), cookie)
    if not sid then return nil end
    local addr = store:get(sid)
    if addr then
      for i, s in ipairs(servers) do
        if s.addr == addr then return i end
      end
    end
    local best = 1
    for i, s in ipairs(servers) do
      if s.active < servers[best].active then best = i end
    end
    store:set(sid, servers[best].addr, ttl)
    return best
  end
end

return sticky
