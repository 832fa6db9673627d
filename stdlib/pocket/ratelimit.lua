-- pocket.ratelimit: a token bucket per key, shared by all workers through
-- pocket.store; over the limit, a 429 with Retry-After.
--
--   local ratelimit = require "pocket.ratelimit"
--   local limit = ratelimit.new { rate = 10, burst = 20 }   -- per client IP
--   on_request = function(req)
--     local refused = limit:check(req)
--     if refused then return refused end
--   end
--
-- `key = function(req)` chooses what is limited (nil: not limited).
-- Each check is one store:take, atomic: workers (and, with a store kept in
-- Redis, several Pockets) never let more through than the bucket holds.
local util = require "pocket.util"

local ratelimit = {}
local Limiter = {}
Limiter.__index = Limiter

function ratelimit.new(opts)
  if type(opts) ~= "table" then error("ratelimit.new takes a table", 2) end
  local rate, burst = opts.rate, opts.burst or opts.rate
  if type(rate) ~= "number" or rate <= 0 then error("ratelimit rate must be a positive number per second, not " .. util.shown(rate), 2) end
  if type(burst) ~= "number" or burst < 1 then error("ratelimit burst must be a number of at least 1, not " .. util.shown(burst), 2) end
  return setmetatable({
    rate = rate,
    burst = burst,
    key = opts.key or function(req) return req.peer_ip end,
    store = pocket.store(opts.store or "ratelimit"),
  }, Limiter)
end

-- nil when the request may pass, else the 429 response to return.
function Limiter:check(req)
  -- limiter.check(req) with a dot: say so, not "attempt to call" inside.
  if getmetatable(self) ~= Limiter then
    error("check is a method of a rate limiter: call it with a colon (limiter:check(req))", 2)
  end
  local key = self.key(req)
  if key == nil then return nil end
  local ok, wait = self.store:take(key, self.rate, self.burst)
  if ok then return nil end
  return pocket.respond(429, "Too Many Requests\n", { ["retry-after"] = tostring(math.ceil(wait)) })
end

return ratelimit
