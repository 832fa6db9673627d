-- websocket: WebSockets and plain pages on one address.
--
--   client -> Pocket :8086 -> chat :9601  (WebSocket upgrades on /chat/)
--                          -> web  :9602  (everything else)
--
-- An upgrade request goes through on_request like any other (the script
-- sees its Upgrade header); when the chat server answers 101, the
-- connection becomes a tunnel: messages flow both ways until either side
-- closes, or nothing moves for the pool's timeouts.tunnel.
return {
  -- One line per exchange on standard error; a tunnel's when it ends.
  log = { access = "-" },

  listeners = {
    { name = "web", bind = "127.0.0.1:8086", pool = "web" },
  },

  pools = {
    web = { servers = { "127.0.0.1:9602" } },
    chat = {
      servers = { "127.0.0.1:9601" },
      -- An open WebSocket counts as in flight on its server until it ends.
      balance = "least_conn",
      -- A chat silent both ways for 10 minutes is closed (default 1h).
      timeouts = { tunnel = "10m" },
    },
  },

  on_request = function(req)
    if req.path:sub(1, 6) == "/chat/" then
      if req:header("upgrade") ~= "websocket" then
        return pocket.respond(400, "/chat/ is a WebSocket endpoint\n")
      end
      return "chat"
    end
  end,

  -- `pocket test examples/websocket/policy.lua`
  tests = {
    { name = "a WebSocket on /chat/ goes to chat",
      req = { path = "/chat/lobby", headers = { connection = "Upgrade", upgrade = "websocket" } },
      pool = "chat", server = "127.0.0.1:9601" },
    { name = "a plain request on /chat/ is refused", req = { path = "/chat/lobby" }, status = 400 },
    { name = "pages go to web", req = { path = "/" }, pool = "web" },
  },
}
