---@meta
-- Type definitions for Pocket policy scripts (Pocket 0.1.0), for the Lua
-- language server (LuaLS / sumneko). This file is never run.
--
-- Use: add this folder (and stdlib/, so `require "pocket.util"` resolves) to
-- your workspace library, e.g. in .luarc.json:
--   { "runtime.version": "Lua 5.4",
--     "workspace.library": ["path/to/pocket/docs", "path/to/pocket/stdlib"] }
-- then annotate your policy's return value:
--   ---@type pocket.Policy
--   local policy = { ... }
--   return policy
-- Hook parameters get their types from the pocket.Policy fields.
--
-- Only what this version implements is typed here; see docs/lua-api.md.

------------------------------------------------------------------------
-- The policy table
------------------------------------------------------------------------

---@alias pocket.Duration string|number A duration: "250ms", "2s", "1.5s", "1m", "1h", or a number of seconds (> 0, at most a day).

---@class pocket.Policy
---@field listeners pocket.Listener[] At least one listener.
---@field pools? table<string, pocket.Pool> Pools by name.
---@field on_connect? fun(conn: pocket.Conn): pocket.Rejection|nil Each accepted connection, before a byte is read. Return pocket.reject(...) to close it.
---@field on_request? fun(req: pocket.Request): string|pocket.Response|nil Each request: a pool name, a local response, or nil for the listener's pool.
---@field on_response? fun(req: pocket.Request, res: pocket.ServerResponse) Each response from a server, before its body is sent. The return value is ignored.
---@field tests? table Accepted and ignored: `pocket test` is not in this version.

---@class pocket.Listener
---@field bind string "ip:port", "[v6]:port", "localhost:port", "*:port" or ":port".
---@field name? string Unique name (default "listener<N>"), seen as conn.listener / req.listener.
---@field pool? string Pool for requests on_request leaves undecided; without it they get a 503.
---@field mode? "http" Only "http" in this version.

---@class pocket.Pool
---@field servers (string|pocket.Server)[] "ip:port" strings or server tables; at least one non-backup.
---@field balance? "round_robin" The only algorithm in this version (the default): smooth weighted round robin.
---@field retries? integer 0..10, default 3: extra servers to try when one cannot be reached.
---@field timeouts? pocket.Timeouts

---@class pocket.Server
---@field addr string "ip:port".
---@field weight? integer 1..256, default 1.
---@field backup? boolean Default false: used only when no primary is left for the request.

---@class pocket.Timeouts
---@field connect? pocket.Duration TCP connect to a server (default "3s").
---@field response? pocket.Duration From sending the request to the response headers (default "60s").
---@field keepalive? pocket.Duration How long an idle server connection is kept for reuse (default "30s").

------------------------------------------------------------------------
-- Objects the hooks receive
------------------------------------------------------------------------

---@class pocket.Headers
local Headers = {}

---The first value of a header (case-insensitive name), or nil.
---@param name string
---@return string|nil
function Headers:header(name) end

---Every value of a header, in order; empty when absent.
---@param name string
---@return string[]
function Headers:header_all(name) end

---Iterates over all headers: `for name, value in x:headers() do ... end`.
---Names are lowercase; a header with several values appears once per value.
---@return fun(): string|nil, string|nil
function Headers:headers() end

---Replaces every value of a header; a nil value removes it.
---@param name string
---@param value string|number|nil
function Headers:set_header(name, value) end

---Appends one more value to a header.
---@param name string
---@param value string|number
function Headers:add_header(name, value) end

---Removes a header; true if it was present.
---@param name string
---@return boolean
function Headers:remove_header(name) end

---A client request (on_request, on_response). Fields are read-only.
---@class pocket.Request: pocket.Headers
---@field method string "GET", "POST", ...
---@field path string The path, without the query.
---@field query string|nil The query without "?", or nil.
---@field uri string Path and query: "/a/b?x=1".
---@field host string|nil Host (or HTTP/2 :authority), lowercase, without the port.
---@field version "HTTP/1.0"|"HTTP/1.1"|"HTTP/2"|string
---@field scheme "http" Always "http" in this version.
---@field peer_ip string The client's IP address.
---@field peer_port integer The client's port.
---@field listener string The listener's name.
---@field id string Request id "<worker>-<hex seq>", as in error responses and the log.
local Request = {}

---Replaces the path (must start with "/"); the query is kept unless `path` has its own "?".
---@param path string
function Request:set_path(path) end

---Replaces the query (without "?"); nil or "" removes it.
---@param query string|nil
function Request:set_query(query) end

---Replaces the method, e.g. "POST".
---@param method string
function Request:set_method(method) end

---A server's response (on_response).
---@class pocket.ServerResponse: pocket.Headers
---@field status integer The status the server sent.
---@field pool string The pool that answered.
---@field server string The server that answered, "ip:port".
local ServerResponse = {}

---Changes the status sent to the client (200 or more).
---@param code integer
function ServerResponse:set_status(code) end

---An accepted connection (on_connect). Fields are read-only.
---@class pocket.Conn
---@field peer_ip string
---@field peer_port integer
---@field local_ip string
---@field local_port integer
---@field listener string The listener's name.

---A response made by the script (pocket.respond / pocket.redirect); return it from on_request.
---@class pocket.Response

---A connection rejection (pocket.reject); return it from on_connect.
---@class pocket.Rejection

---A named key-value store (pocket.store), shared by every worker and kept
---across reloads (not across restarts).
---@class pocket.Store
local Store = {}

---The value, or nil when the key is absent or expired.
---@param key string|number
---@return string|number|boolean|nil
function Store:get(key) end

---Stores a value (a string of at most 64 KiB, a number or a boolean),
---replacing any earlier value and expiry. A nil value deletes the key.
---@param key string|number
---@param value string|number|boolean|nil
---@param ttl_seconds? number More than 0, at most 86400; omitted: no expiry.
function Store:set(key, value, ttl_seconds) end

---Adds `by` (default 1) to an integer and returns the new value. A missing
---or expired key counts as 0 and gets `ttl_seconds` when it is created;
---later calls do not move its expiry. Error if the key holds a non-integer.
---@param key string|number
---@param by? integer
---@param ttl_seconds? number More than 0, at most 86400.
---@return integer
function Store:incr(key, by, ttl_seconds) end

---Removes a key; true if it was there.
---@param key string|number
---@return boolean
function Store:delete(key) end

---The store's name.
---@return string
function Store:name() end

---A compiled Rust regex (pocket.regex).
---@class pocket.Regex
local Regex = {}

---True when the pattern matches somewhere in `text`.
---@param text string
---@return boolean
function Regex:is_match(text) end

---Like string.match: the groups as values (the whole match if there are no groups), or nil.
---@param text string
---@return string|nil ...
function Regex:match(text) end

---[0] the whole match, [1].. the groups, named groups by name; nil when no match.
---@param text string
---@return table<integer|string, string>|nil
function Regex:captures(text) end

---Replaces every match; "$1", "${1}" and "${name}" refer to groups.
---@param text string
---@param with string
---@return string
function Regex:replace(text, with) end

------------------------------------------------------------------------
-- The pocket global
------------------------------------------------------------------------

---@class pocket
pocket = {}

---The Pocket version, e.g. "0.1.0".
---@type string
pocket.version = ""

---A local response: on_request returns it and no server is asked.
---Reusable: build it once at load and return it on every request.
---@param status integer 200..599
---@param body? string
---@param headers? table<string, string|number>
---@return pocket.Response
function pocket.respond(status, body, headers) end

---A redirect with a Location header and an empty body.
---`pocket.redirect(location)` (302) or `pocket.redirect(status, location)`
---with status 301, 302, 303, 307 or 308.
---@param status_or_location integer|string
---@param location? string
---@return pocket.Response
function pocket.redirect(status_or_location, location) end

---Closes the connection when returned from on_connect.
---@param reason? string Logged; default "rejected".
---@return pocket.Rejection
function pocket.reject(reason) end

---Compiles a Rust regex (https://docs.rs/regex). Do it at load, not per request.
---@param pattern string
---@return pocket.Regex
function pocket.regex(pattern) end

---The store of that name, created on first use. Every worker and every
---policy version reaching the same name share its data. Call it once, at load.
---@param name string Not empty.
---@return pocket.Store
function pocket.store(name) end

---Script messages in Pocket's log (target "script"). Arguments are joined
---with spaces; non-strings are written as tostring writes them.
---@class pocket.log
pocket.log = {}

---@param ... any
function pocket.log.info(...) end

---@param ... any
function pocket.log.warn(...) end

---@param ... any
function pocket.log.error(...) end

------------------------------------------------------------------------
-- Embedded stdlib: require "pocket.util"
------------------------------------------------------------------------

---@class pocket.util
---@field split fun(text: string, sep?: string): string[] Split on separator characters (default ","), trimmed, empties dropped.
---@field set fun(list: any[]): table<any, true> A set from a list.
---@field cookie fun(header: string|nil, name: string): string|nil One cookie's value from a Cookie header.
