-- pocket.cdn: a tier of caches (Varnish, nginx, another Pocket) in front of
-- an origin pool, decided entirely here.
--
--   local cdn = require "pocket.cdn"
--   pools = {
--     origin = { servers = { "127.0.0.1:8001" } },
--     cache  = cdn.tier { servers = { "127.0.0.1:6081", "127.0.0.1:6082" },
--                         fallback = "origin" },
--   }
--
-- Cacheable requests (GET/HEAD without Authorization or a session cookie,
-- unless you pass your own `bypass`) go to the cache that owns their key,
-- chosen by consistent hashing with bounded load: each URL lives in one
-- cache. Everything else goes straight to `fallback`, and so do the keys of
-- a cache that is down (the other caches keep their own keys warm).
local util = require "pocket.util"

local cdn = {}

local SESSION = { "session", "sess", "sid", "phpsessid", "jsessionid", "connect.sid" }

-- The default: what a shared cache may store.
function cdn.cacheable(req)
  if req.method ~= "GET" and req.method ~= "HEAD" then return false end
  if req:header("authorization") then return false end
  local cookies = req:header("cookie")
  if cookies then
    for _, name in ipairs(SESSION) do
      if util.cookie(cookies:lower(), name) then return false end
    end
  end
  return true
end

-- The default key: host and URI.
function cdn.key(req)
  return (req.host or "") .. req.uri
end

function cdn.tier(opts)
  if type(opts) ~= "table" then error("cdn.tier takes a table", 2) end
  if type(opts.servers) ~= "table" or #opts.servers == 0 then
    error("cdn.tier: servers must list the caches", 2)
  end
  if type(opts.fallback) ~= "string" then
    if opts.fallback == nil then
      error("cdn.tier: fallback must name the origin pool (it is missing)", 2)
    end
    error("cdn.tier: fallback must name the origin pool, not " .. util.shown(opts.fallback), 2)
  end
  local cacheable = opts.cacheable or cdn.cacheable
  local factor = opts.balance_factor or 150
  if type(factor) ~= "number" or factor <= 100 or factor > 1000 then
    error("cdn.tier: balance_factor must be a percentage from 101 to 1000, not " .. util.shown(factor), 2)
  end
  return {
    servers = opts.servers,
    balance = "hash",
    hash_key = opts.key or cdn.key,
    hash_balance_factor = factor,
    rehash = false,
    fallback = opts.fallback,
    bypass = opts.bypass or function(req) return not cacheable(req) end,
    check = opts.check or { tcp = true, interval = "1s", rise = 2, fall = 2 },
    retries = opts.retries or 1,
    timeouts = opts.timeouts,
  }
end

return cdn
