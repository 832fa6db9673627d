-- pocket.canary: send a share of clients to a new version, the same
-- clients every time.
--
--   local canary = require "pocket.canary"
--   local split = canary.split { stable = "app", canary = "app_v2", weight = 10 }
--   on_request = function(req) return split(req) end
--
-- A client is its cookie (`cookie`, default "canary_id"), else its
-- `header` (default "x-client-id"), else its IP; its bucket is a stable
-- hash, so it stays on one side until the weight changes (edit, reload).
-- `force_header` (default "x-canary") lets a tester pick: "1" or "0".
local util = require "pocket.util"

local canary = {}

function canary.split(opts)
  if type(opts) ~= "table" then error("canary.split takes a table", 2) end
  local w = opts.weight
  if type(w) ~= "number" or w < 0 or w > 100 or w ~= math.floor(w) then
    error("canary weight must be a whole number from 0 to 100, not " .. util.shown(w), 2)
  end
  if type(opts.stable) ~= "string" or type(opts.canary) ~= "string" then
    error("canary.split needs stable and canary pool names", 2)
  end
  -- The load refuses a pool the policy does not define, at this line.
  pocket.uses_pool(opts.stable, 2)
  pocket.uses_pool(opts.canary, 2)
  local cookie = opts.cookie or "canary_id"
  local header = opts.header or "x-client-id"
  local force = opts.force_header or "x-canary"
  return function(req)
    local forced = req:header(force)
    if forced == "1" then return opts.canary end
    if forced == "0" then return opts.stable end
    local id = util.cookie(req:header("cookie"), cookie) or req:header(header) or req.peer_ip
    if pocket.hash(id) % 100 < w then return opts.canary end
    return opts.stable
  end
end

return canary
