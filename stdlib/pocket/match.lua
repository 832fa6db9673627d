-- pocket.match: route tables, compiled once when the policy loads.
--
--   local match = require "pocket.match"
--   local routes = match.routes {
--     { host = "admin.example.com", pool = "admin" },
--     { prefix = "/static/", pool = "static" },
--     { regex = [[^/api/v\d+/]], method = "POST", pool = "api_write" },
--     { path = "/ping", respond = { 200, "pong\n" } },
--     { path = "/old", redirect = { 301, "/new" } },
--     { header = { "x-debug", "1" }, pool = "debug" },
--     { cookie = { "beta", "yes" }, pool = "beta" },
--     default = "app",                 -- when nothing matches (nil: listener's pool)
--   }
--   on_request = function(req) return routes:route(req) end
--
-- Rules are tried in order; the first whose conditions all hold wins. All
-- path conditions (prefix, path, regex) go into one Rust RegexSet, matched
-- once per request; hosts, methods, headers and cookies are plain lookups.
local util = require "pocket.util"
-- Set only under `pocket explain` (which route matched, at which line),
-- and in the proxy for a policy with admin.explain_from, where the gate
-- is open only while an explained request is decided; nil otherwise, where
-- it costs one test per lookup.
local explain = pocket.explain_route
local gate = pocket.explain_gate

local match = {}
local Routes = {}
Routes.__index = Routes

local KNOWN = { host = true, prefix = true, path = true, regex = true, method = true,
                header = true, cookie = true, pool = true, respond = true, redirect = true }
local KNOWN_LIST = "prefix, path, regex, host, method, header, cookie, pool, respond, redirect"

local function escape(text)
  return (text:gsub("[%.%+%*%?%^%$%(%)%[%]%{%}%|\\]", "\\%0"))
end

-- Raised with no place: match.routes catches it and raises it again at
-- the line of its call (Pocket then moves an unknown key to its own line).
local function fail(i, msg)
  msg = tostring(msg):gsub("^runtime error: ", "")
  error(string.format("route %d: %s", i, msg), 0)
end

local function compile_rule(i, rule, patterns)
  if type(rule) ~= "table" then fail(i, "must be a table, not " .. util.shown(rule)) end
  for k in pairs(rule) do
    if not KNOWN[k] then
      fail(i, string.format('unknown key "%s" (known: %s)', tostring(k), KNOWN_LIST))
    end
  end
  if rule.pool ~= nil and type(rule.pool) ~= "string" then
    fail(i, "pool must be a pool name (a string), not " .. util.shown(rule.pool))
  end
  local r = { pool = rule.pool }
  local targets = (rule.pool and 1 or 0) + (rule.respond and 1 or 0) + (rule.redirect and 1 or 0)
  if targets ~= 1 then fail(i, "needs exactly one of pool, respond, redirect") end
  if rule.respond then
    local ok, resp = pcall(pocket.respond, rule.respond[1], rule.respond[2], rule.respond[3])
    if not ok then fail(i, tostring(resp)) end
    r.answer = resp
  elseif rule.redirect then
    local ok, resp = pcall(pocket.redirect, rule.redirect[1], rule.redirect[2])
    if not ok then fail(i, tostring(resp)) end
    r.answer = resp
  end
  local conditions = (rule.prefix and 1 or 0) + (rule.path and 1 or 0) + (rule.regex and 1 or 0)
  if conditions > 1 then fail(i, "use one of prefix, path, regex") end
  local pattern
  if rule.prefix then pattern = "^" .. escape(rule.prefix)
  elseif rule.path then pattern = "^" .. escape(rule.path) .. "$"
  elseif rule.regex then
    local ok, err = pcall(pocket.regex, rule.regex)
    if not ok then fail(i, tostring(err)) end
    pattern = rule.regex
  end
  if pattern then
    patterns[#patterns + 1] = pattern
    r.pattern = #patterns
  end
  if rule.host then
    local host = rule.host:lower()
    if host:sub(1, 2) == "*." then r.host_suffix = host:sub(2) else r.host = host end
  end
  if rule.method then
    r.methods = type(rule.method) == "table" and util.set(rule.method) or { [rule.method] = true }
  end
  if rule.header then
    if type(rule.header) ~= "table" or type(rule.header[1]) ~= "string" then
      fail(i, "header must be { name } or { name, value }")
    end
    r.header = rule.header
  end
  if rule.cookie then
    if type(rule.cookie) ~= "table" or type(rule.cookie[1]) ~= "string" then
      fail(i, "cookie must be { name } or { name, value }")
    end
    r.cookie = rule.cookie
  end
  return r
end

-- Builds a route table. Errors point at the line of the call.
function match.routes(rules)
  if type(rules) ~= "table" then
    error("match.routes takes a list of rules, not " .. util.shown(rules), 2)
  end
  local compiled, patterns = {}, {}
  local first_error
  for i, rule in ipairs(rules) do
    local ok, r = pcall(compile_rule, i, rule, patterns)
    if ok then
      compiled[i] = r
    else
      first_error = first_error or r
    end
    -- The load refuses a pool the policy does not define, at this line;
    -- said even when another rule is wrong, so both mistakes show.
    if type(rule) == "table" and type(rule.pool) == "string" then
      pocket.uses_pool(rule.pool, 2)
    end
  end
  if type(rules.default) == "string" then pocket.uses_pool(rules.default, 2) end
  if first_error then error(first_error, 2) end
  local set
  if #patterns > 0 then
    local ok, s = pcall(pocket.regex_set, patterns)
    if not ok then error(s, 2) end
    set = s
  end
  local places = explain and explain("places", #rules) or nil
  return setmetatable({ rules = compiled, set = set, default = rules.default, places = places },
    Routes)
end

local function holds(r, req, hits)
  if r.pattern and not hits[r.pattern] then return false end
  if r.host or r.host_suffix then
    local host = req.host
    if not host then return false end
    if r.host and host ~= r.host then return false end
    if r.host_suffix and host:sub(-#r.host_suffix) ~= r.host_suffix then return false end
  end
  if r.methods and not r.methods[req.method] then return false end
  if r.header then
    local v = req:header(r.header[1])
    if v == nil or (r.header[2] ~= nil and v ~= r.header[2]) then return false end
  end
  if r.cookie then
    local v = util.cookie(req:header("cookie"), r.cookie[1])
    if v == nil or (r.cookie[2] ~= nil and v ~= r.cookie[2]) then return false end
  end
  return true
end

-- The pool name or response for `req`, or the default.
function Routes:route(req)
  -- routes.route(req) with a dot: say so, not "attempt to index" inside.
  if getmetatable(self) ~= Routes then
    error("route is a method of a route table: call it with a colon (routes:route(req))", 2)
  end
  local hits = {}
  if self.set then
    for _, i in ipairs(self.set:matches(req.path)) do hits[i] = true end
  end
  for i, r in ipairs(self.rules) do
    if holds(r, req, hits) then
      if explain and gate.on then
        explain("matched", i, self.places)
        explain("gave", r.answer or r.pool)
      end
      return r.answer or r.pool
    end
  end
  if explain and gate.on then
    explain("matched", nil, self.places)
    explain("gave", self.default)
  end
  return self.default
end

return match
