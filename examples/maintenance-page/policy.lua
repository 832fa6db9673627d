-- maintenance-page: drain the app servers from a URL, and answer a local
-- 503 page with Retry-After while none of them is ready. Static files are
-- still served.
--
--   client -> Pocket :8085 -> app:    app-1 :9501, app-2 :9502
--                          -> static: static :9503
--
--   curl -X POST 127.0.0.1:8085/admin/maintenance/on    every app server: drain
--   curl -X POST 127.0.0.1:8085/admin/maintenance/off   every app server: ready
--   curl 127.0.0.1:8085/admin/maintenance               the servers' states
--
-- Drain means: no new requests, the ones in flight finish. The state lives
-- with the server, outside the policy, so it survives a reload. The page is
-- shown whenever no app server can take a request: drained by the switch,
-- set to drain or maint some other way, or down by the health check.
local APP = { "127.0.0.1:9501", "127.0.0.1:9502" }
local RETRY_AFTER = 300

local app = {}
for i, addr in ipairs(APP) do app[i] = { addr = addr, handle = pocket.server("app", addr) } end

-- The switch, kept in pocket.store (shared by every worker, kept across
-- reloads) for the state page, and for when no app server can be found:
-- pocket.server(...) raises "no server ... in pool" for an address the
-- pool does not list (APP edited, the pool not), hence the pcalls.
local switch = pocket.store("maintenance")

local function state_of(s)
  local ok, st = pcall(s.handle.state, s.handle)
  if ok then return st end
  return nil
end

local function set_all(state)
  for _, s in ipairs(app) do pcall(s.handle.set_state, s.handle, state) end
end

-- Can any app server take a request?
local function app_ready()
  local live = false
  for _, s in ipairs(app) do
    local st = state_of(s)
    if st then
      live = true
      if st.up and st.admin == "ready" then return true end
    end
  end
  if not live then return not switch:get("on") end   -- none found: the switch decides
  return false
end

local page = pocket.respond(503, [[
<!doctype html>
<html><head><meta charset="utf-8"><title>Back soon</title>
<link rel="stylesheet" href="/static/site.css"></head>
<body><h1>Down for maintenance</h1>
<p>We are upgrading the site. Please try again in a few minutes.</p></body></html>
]], {
  ["content-type"] = "text/html; charset=utf-8",
  ["retry-after"] = RETRY_AFTER,
  ["cache-control"] = "no-store",
})

local text = function(status, body)
  return pocket.respond(status, body, { ["content-type"] = "text/plain", ["cache-control"] = "no-store" })
end

local LOCAL = { ["127.0.0.1"] = true, ["::1"] = true }

local function admin(req)
  if not LOCAL[req.peer_ip] then return text(403, "local clients only\n") end
  if req.path == "/admin/maintenance" then
    local lines = { "maintenance switch: " .. (switch:get("on") and "on" or "off") }
    for _, s in ipairs(app) do
      local st = state_of(s)
      lines[#lines + 1] = s.addr .. ": " .. (st and ((st.up and "up" or "down") .. ", " .. st.admin
        .. ", " .. st.active .. " in flight") or "unknown")
    end
    return text(200, table.concat(lines, "\n") .. "\n")
  end
  if req.method ~= "POST" then return text(405, "use POST\n") end
  if req.path == "/admin/maintenance/on" then
    set_all("drain")
    switch:set("on", true)
    pocket.log.warn("maintenance on: app servers draining")
    return text(200, "maintenance on: app servers draining\n")
  end
  if req.path == "/admin/maintenance/off" then
    set_all("ready")
    switch:delete("on")
    pocket.log.warn("maintenance off: app servers ready")
    return text(200, "maintenance off: app servers ready\n")
  end
  return text(404, "unknown admin path\n")
end

return {
  listeners = {
    { name = "web", bind = "127.0.0.1:8085", pool = "app" },
  },

  pools = {
    app = {
      servers = APP,
      check = { http = "GET /health", interval = "1s", fall = 2, rise = 2 },
    },
    static = { servers = { "127.0.0.1:9503" } },
  },

  on_request = function(req)
    if req.path:find("^/admin/maintenance") then return admin(req) end
    if req.path:find("^/static/") or req.path == "/favicon.ico" then return "static" end
    if not app_ready() then return page end
    -- nothing returned: the listener's pool, "app"
  end,

  on_response = function(req, res)
    res:set_header("x-pocket-server", res.server)
  end,

  -- `pocket test examples/maintenance-page/policy.lua`. Cases run in order
  -- and share pocket.store: the switch turned on in one case is on in the
  -- next ones.
  tests = {
    { name = "normally the app serves", req = { path = "/" }, pool = "app" },
    { name = "static files come from static", req = { path = "/static/site.css" }, pool = "static" },
    { name = "so does the favicon", req = { path = "/favicon.ico" }, pool = "static" },
    { name = "the switch wants a POST", req = { path = "/admin/maintenance/on" }, status = 405 },
    { name = "and a local client",
      req = { method = "POST", path = "/admin/maintenance/on", peer_ip = "203.0.113.9" }, status = 403 },
    { name = "maintenance on", req = { method = "POST", path = "/admin/maintenance/on" },
      status = 200, body = "maintenance on" },
    { name = "pages get the maintenance page", req = { path = "/checkout" },
      status = 503, body = "Down for maintenance",
      header = { ["retry-after"] = "300", ["content-type"] = "text/html; charset=utf-8" } },
    { name = "static files are still served", req = { path = "/static/site.css" }, pool = "static" },
    { name = "the state page", req = { path = "/admin/maintenance" }, status = 200, body = "switch: on" },
    { name = "an unknown admin path", req = { method = "POST", path = "/admin/maintenance/maybe" }, status = 404 },
    { name = "maintenance off", req = { method = "POST", path = "/admin/maintenance/off" },
      status = 200, body = "maintenance off" },
    { name = "the app serves again", req = { path = "/checkout" }, pool = "app" },
    { name = "one app server drained: the other serves",
      req = { path = "/" }, health = { ["127.0.0.1:9501"] = "drain" }, server = "127.0.0.1:9502" },
  },
}
