-- auth-request: ask an auth service before proxying, as nginx's
-- auth_request does. Every request but /public/ is checked with a
-- sub-request carrying the client's Authorization header; 2xx lets it
-- through to the app, 401/403 is passed on to the client, and an auth
-- service that cannot answer in time gets a 503 that says why.
--
--   client -> Pocket :8087 -> app:  app  :9701
--                  (sub-request) -> auth: auth :9702  GET /auth
--
-- The worker serves other requests while one waits for the auth service
-- (on_request runs as a coroutine because this policy uses `http.`).
local AUTH_POOL = "auth"
local AUTH_TIMEOUT = 0.5 -- seconds; the sub-request's deadline

local function text(status, body, headers)
  headers = headers or {}
  headers["content-type"] = "text/plain"
  headers["cache-control"] = "no-store"
  return pocket.respond(status, body, headers)
end

-- nil when the auth service allows the request, else the answer.
local function check(req)
  local res, err = http.get("/auth", {
    pool = AUTH_POOL,
    timeout = AUTH_TIMEOUT,
    headers = {
      authorization = req:header("authorization") or "",
      ["x-original-uri"] = req.uri,
      ["x-original-method"] = req.method,
    },
  })
  if not res then
    pocket.log.warn("auth service: " .. err)
    return text(503, "auth service unavailable: " .. err .. "\n")
  end
  if res.status >= 200 and res.status < 300 then return nil end
  if res.status == 401 or res.status == 403 then
    return text(res.status, "not allowed\n",
      { ["www-authenticate"] = res.headers["www-authenticate"] or 'Bearer realm="app"' })
  end
  pocket.log.warn("auth service answered " .. res.status)
  return text(503, "auth service answered " .. res.status .. "\n")
end

return {
  listeners = {
    { name = "web", bind = "127.0.0.1:8087" },
  },

  pools = {
    app = { servers = { "127.0.0.1:9701" } },
    auth = { servers = { "127.0.0.1:9702" } },
  },

  on_request = function(req)
    if not req.path:find("^/public/") then
      local denied = check(req)
      if denied then return denied end
    end
    return "app"
  end,

  -- `pocket test examples/auth-request/policy.lua`. pocket test makes no
  -- sub-requests: http.get returns nil, "not run: ...", which this policy
  -- turns into its 503, as it would for an auth service that is down.
  tests = {
    { name = "public pages need no auth", req = { path = "/public/index.html" }, pool = "app" },
    { name = "the rest asks the auth service (not run by pocket test)",
      req = { path = "/account", headers = { authorization = "Bearer x" } },
      status = 503, body = "auth service unavailable: not run" },
  },
}
