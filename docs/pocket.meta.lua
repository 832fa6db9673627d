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

---@alias pocket.Duration string|number A duration: "250ms", "2s", "1.5s", "1m", "1h", or a number of seconds (not negative, at most a day; timeouts must be > 0).

---@class pocket.Policy
---@field listeners pocket.Listener[] At least one listener.
---@field pools? table<string, pocket.Pool> Pools by name.
---@field on_connect? fun(conn: pocket.Conn): pocket.Rejection|nil Each accepted connection, before a byte is read. Return pocket.reject(...) to close it.
---@field on_request? fun(req: pocket.Request): string|pocket.Response|nil Each request: a pool name, a local response, or nil for the listener's pool.
---@field on_response? fun(req: pocket.Request, res: pocket.ServerResponse) Each response from a server, before its body is sent. The return value is ignored.
---@field on_health? fun(server: pocket.HealthServer, up: boolean, why: string) A server went down or came back up (check, passive check or cool-down). Runs on the control thread; the return value is ignored.
---@field on_check? pocket.CheckFunction The scripted check of pools with check = { script = true }.
---@field tests? pocket.TestCase[] Cases that `pocket test POLICY` runs without a network; serving ignores them (docs/testing-policies.md).
---@field admin? pocket.Admin The admin listener: stats page, JSON API and /metrics (docs/observability.md).
---@field log? pocket.LogSettings The access log: one line per request (docs/observability.md).
---@field stores? table<string, pocket.SharedStore> Stores kept in Redis, by name: pocket.store(name) of one is shared by every Pocket that names the same Redis (docs/several-pockets.md).
---@field resolvers? string|string[] DNS servers that resolve server names ("127.0.0.1:5353", port 53 unless written; IP addresses only, up to 8); default the system's (/etc/resolv.conf).

---A store kept in Redis (`stores = { sessions = { redis = "127.0.0.1:6379" } }`).
---@class pocket.SharedStore
---@field redis string "host:port" of the Redis server; checked at load, reached later (a Redis that is away makes the store local until it answers).
---@field prefix? string Put before every key in Redis. Default "pocket:NAME:".
---@field timeout? string|number The longest a request waits on Redis for one call, 1ms to 5s; past it the store serves from local state. Default "50ms".
---@field password_env? string The environment variable that holds Redis's password (read at load; refused when not set).
---@field user? string A Redis 6 ACL user (AUTH user password); default "default".

---The admin listener (docs/observability.md, "The admin listener, stats page and API").
---@class pocket.Admin
---@field bind string "ip:port" it listens on, like "127.0.0.1:8404"; an address that is not loopback needs a token.
---@field token? string Every request must carry it: `Authorization: Bearer TOKEN`, or (a browser) open /?token=TOKEN once.
---@field explain_from? string[] Client IP addresses whose `X-Pocket-Explain: 1` requests get the decision trace back.

---The access log (`log = { access = "-", format = "text" }`).
---@class pocket.LogSettings
---@field access string "-" for standard error, or a file path (relative: to the policy's folder); opened at load, reopened on SIGUSR1.
---@field format? "text"|"json" One readable line, or one JSON object per line. Default "text".

---A `pocket test` case: a request, server states for it, and what it should get.
---@class pocket.TestCase
---@field name? string Shown in failures; also finds the case's line.
---@field req? pocket.TestRequest Default: GET / on example.com from 127.0.0.1.
---@field conn? pocket.TestConn A connection on a tcp listener instead of a request: on_connect runs (docs/testing-policies.md).
---@field health? table<string, "up"|"down"|"drain"|"maint"|"ready"> Server states ("ip:port" as in the pool) for this case.
---@field pool? string The pool that would serve it (after bypass and fallback).
---@field server? string The "ip:port" that would get it.
---@field status? integer The answer's status (200 when a server is picked, 503 when none is up).
---@field header? table<string, string|boolean> A value, true (present) or false (absent): the answer's headers, or the request's as on_request left them.
---@field body? string The answer's body contains this text.
---@field rejected? boolean|string A connection case: on_connect rejected it (true), did not (false), or with a reason containing this text.

---@class pocket.TestRequest
---@field method? string Default "GET".
---@field path? string Default "/"; must start with "/".
---@field query? string Without "?".
---@field host? string Default "example.com".
---@field headers? table<string, string>
---@field peer_ip? string Default "127.0.0.1".
---@field listener? string Default "": the first listener's pool.

---A `pocket test` connection case's connection, as on_connect reads it.
---@class pocket.TestConn
---@field listener? string A tcp listener; default: the policy's first tcp listener.
---@field sni? string The TLS ClientHello's server name; without sni and alpn, no ClientHello (conn.sni nil).
---@field alpn? string[] The ClientHello's ALPN protocols, { "h2", "http/1.1" }.
---@field peer_ip? string Default "127.0.0.1".
---@field peer_port? integer Default 40000.

---@class pocket.Listener
---@field bind string "ip:port", "[v6]:port", "localhost:port", "*:port" or ":port".
---@field name? string Unique name (default "listener<N>"), seen as conn.listener / req.listener.
---@field pool? string Pool for requests on_request leaves undecided; without it they get a 503.
---@field mode? "http"|"tcp" Default "http". "tcp": each connection goes whole to one server of a tcp pool, chosen by on_connect or pool (docs/tcp.md).
---@field keepalive? string|number How long an idle keep-alive client connection stays open, HTTP/1 or HTTP/2 (default "75s").
---@field timeouts? pocket.ClientTimeouts The client side's timeouts.
---@field max_connections? integer At most this many client connections open at once on this listener, over all workers (at least 1); at the cap new connections wait in the kernel's accept queue.
---@field head_size? integer The most bytes a request head may take (request line through the empty line), 1024..1048576, default 32768; over it a 414 (request line) or 431. On HTTP/2, the header list.
---@field accept_proxy? boolean Default false: every connection starts with a PROXY protocol header (v1 or v2) naming the real client (HAProxy's accept-proxy); a connection without one is closed.
---@field tls? pocket.ListenerTls TLS on this listener (docs/tls.md).

---@class pocket.ListenerTls
---@field cert? string Certificate chain file (PEM), relative to the policy's folder; with key.
---@field key? string Private key file (PEM) of cert.
---@field certs? pocket.CertPair[] Several certificates, chosen by the client's SNI; the first is the default.
---@field strict_sni? boolean Default false: refuse a handshake whose SNI no certificate names (or that has none) instead of serving the first.

---@class pocket.CertPair
---@field cert string Certificate chain file (PEM).
---@field key string Its private key file (PEM).

---@class pocket.ClientTimeouts
---@field head? pocket.Duration A request head must arrive whole within this (a new connection: from the accept; HTTP/2: its first stream) (default "30s").
---@field body? pocket.Duration Longest client silence mid request body; then 408 (default "60s").
---@field send? pocket.Duration Longest a write to a client that does not read may stay blocked; then the connection closes (default "60s").
---@field client_hello? pocket.Duration tcp listeners: longest wait for the TLS ClientHello when on_connect reads conn.sni or conn.alpn; then the connection closes (default "5s").

---@class pocket.Pool
---@field servers (string|pocket.Server)[] "ip:port" (or "name:port") strings or server tables; at least one non-backup.
---@field balance? pocket.Balance|pocket.BalanceFunction Default "round_robin".
---@field hash_key? pocket.HashKey|fun(req: pocket.Request): string|number|nil Only with balance = "hash" (default "source"). nil from the function: no key, round robin. In a tcp pool: "source" or a function of the connection (pocket.Conn).
---@field hash_balance_factor? integer 101..1000, only with balance = "hash": no server takes a key while it carries factor% of the average load or more.
---@field retries? integer 0..10, default 3: extra servers to try when one cannot be reached.
---@field timeouts? pocket.Timeouts
---@field check? pocket.Check|pocket.CheckFunction An active health check; a function is a scripted check with every setting at its default.
---@field passive? pocket.Passive|false Passive checking of live traffic (default { after = 3, on_5xx = false, cooldown = "10s" }); false: off.
---@field slow_start? pocket.Duration A server that comes back up is skipped with probability 1 - max(t/slow_start, 0.1); 0 or absent: off.
---@field fallback? string A pool that gets the request when this pool can pick no server (the hash key and balance choice are dropped).
---@field rehash? boolean Hash pools, default true: a key whose server cannot take it moves along the ring; false: to the backups, then to fallback.
---@field bypass? fun(req: pocket.Request): any A true result sends the request to fallback (required) instead of this pool.
---@field own_health? boolean Default false: a server address listed in several pools has one health, checked once; true gives this pool its own checks and verdicts for its servers.
---@field send_proxy? "v1"|"v2" Each new connection to the servers starts with a PROXY protocol header naming the client (HAProxy's send-proxy / send-proxy-v2); checks send one naming no client.
---@field tls? boolean|pocket.UpstreamTls TLS to the servers (and their checks); true: verified against the system's CA store, SNI the server's host name.
---@field protocol? "http1"|"h2" Default "http1". "h2": HTTP/2 to the servers (h2c with prior knowledge, or ALPN h2 with tls), streams multiplexed on shared connections.
---@field mode? "http"|"tcp" Default "http". "tcp": the pool takes whole TCP connections from tcp listeners (docs/tcp.md).
---@field resolve? pocket.Duration At least "1s": the servers written as names (and SRV names) are resolved again this often, and a change is applied like a reload; absent: at load only.

---@class pocket.UpstreamTls
---@field sni? string The name sent as SNI and verified; default the server's host name (none for an IP: the IP is verified).
---@field ca? string PEM file of the CAs to trust instead of the system store; relative to the policy's folder.
---@field verify? boolean Default true; false takes any certificate (no ca needed).

---@alias pocket.Balance
---| "round_robin" # Smooth weighted round robin (default; also "roundrobin").
---| "roundrobin"
---| "least_conn" # Fewest requests in flight per unit of weight (also "leastconn").
---| "leastconn"
---| "p2c" # Two random servers, the less loaded per weight wins.
---| "random" # Weighted random.
---| "first" # The first server in list order that can take the request; weights ignored.
---| "hash" # Consistent hashing on hash_key.

---A balance function: return a 1-based index into `servers` or an "ip:port"; nil lets round robin decide.
---@alias pocket.BalanceFunction fun(servers: pocket.BalanceServer[], req: pocket.Request): integer|string|nil

---@alias pocket.HashKey
---| "source" # The client's IP address (default).
---| "uri" # Path and query.
---| "path" # Path without the query.
---| "host" # Host, lowercased, without the port.
---| string # "header:NAME" or "cookie:NAME".

---A server as a balance function sees it (only servers that take traffic now).
---@class pocket.BalanceServer
---@field addr string "ip:port".
---@field weight integer
---@field backup boolean
---@field active integer Requests in flight on it, all workers.
---@field requests integer Responses it has given.

---An active health check: exactly one of tcp, http, run or script; in a tcp pool also a line check (send, expect or pattern, no http).
---@class pocket.Check
---@field tcp? true Passes when a TCP connection opens.
---@field http? string "GET /health", "HEAD /ping" or "/health" (GET).
---@field host? string Host header of an http check (default: the server's "ip:port").
---@field expect? integer|string|integer[] Good statuses of an http check: 200, "2xx", or { 200, 399 } (default). In a tcp pool's line check: text the server's first line contains ("220", "+PONG").
---@field body? string The response body must contain this text.
---@field pattern? string The response body must match this Rust regex. In a tcp pool's line check: a regex the server's first line matches.
---@field send? string Tcp pools: bytes written before the first line is read ("PING\r\n"); needs expect or pattern.
---@field run? pocket.CheckFunction A scripted check.
---@field script? true Use the policy's on_check.
---@field interval? pocket.Duration Between the starts of two checks; at least 10ms; default "2s".
---@field timeout? pocket.Duration A check not finished by then fails; at least 10ms; default "1s". Also a scripted check's Lua budget.
---@field rise? integer 1..100, default 2: passes in a row that bring a down server up.
---@field fall? integer 1..100, default 3: failures in a row that take an up server down.
---@field start? "up"|"down" A new server's state before its first verdict (default "up").

---A scripted check: return a true value to pass, false or nil to fail; the optional second value is the reason for the log. Runs on the control thread as a coroutine.
---@alias pocket.CheckFunction fun(server: pocket.HealthServer, http: pocket.CheckHttp): any, string?

---@class pocket.Passive
---@field after? integer 0..1000, default 3: failures in a row on live traffic that take a server down (0: never).
---@field on_5xx? boolean Default false: count a 5xx response as a failure.
---@field cooldown? pocket.Duration Default "10s": in a pool without check, how long a server taken down by traffic rests (0 allowed).

---The server a check or on_health is about.
---@class pocket.HealthServer
---@field addr string "ip:port".
---@field pool string The pool's name.

---What a scripted check can do with its server. Every call opens a new connection.
---@class pocket.CheckHttp
local CheckHttp = {}

---One HTTP/1.1 GET with Connection: close. Raises an error when the server cannot be reached or does not answer HTTP.
---@param path string
---@param host? string Host header (default: the server's "ip:port").
---@return pocket.CheckAnswer
function CheckHttp.get(path, host) end

---One HTTP/1.1 request with Connection: close.
---@param method string
---@param path string
---@param host? string
---@return pocket.CheckAnswer
function CheckHttp.request(method, path, host) end

---Connects, writes `send` (if any), and returns the first bytes the server sends (one read, at most 8 KiB: a banner or a reply; "" if it closes without a word). A server that sends nothing makes the check time out.
---@param send? string
---@return string
function CheckHttp.tcp(send) end

---@class pocket.CheckAnswer
---@field status integer
---@field headers table<string, string> Lowercase names; the last value of a repeated header.
---@field body string As received (at most 64 KiB; chunked framing not removed).

---@class pocket.Server
---@field addr? string "ip:port", or "name:port" (every address the name resolves to); required unless srv is given.
---@field srv? string An SRV name ("_http._tcp.app.internal") instead of addr: a server per record's target address, with the record's port and weight (lowest priority: primaries; others: backups).
---@field weight? integer 1..256, default 1.
---@field backup? boolean Default false: used only when no primary is left for the request.

---@class pocket.Timeouts
---@field connect? pocket.Duration TCP connect to a server (default "3s").
---@field response? pocket.Duration From the request sent whole to the response headers (default "60s"); then 504. A slow upload does not count.
---@field idle? pocket.Duration Longest server silence mid response body (the client connection is then closed), or while it takes no request body (504); also TCP_USER_TIMEOUT (default "60s").
---@field keepalive? pocket.Duration How long an idle server connection is kept for reuse (default "30s").
---@field total? pocket.Duration Optional limit on the whole exchange, routing to the response's last byte (default: none).
---@field tunnel? pocket.Duration Longest silence both ways of a WebSocket / Upgrade tunnel before it is closed (default "1h").

------------------------------------------------------------------------
-- Objects the hooks receive
------------------------------------------------------------------------

---@class pocket.Headers
local Headers = {}

---A header's value (case-insensitive name), or nil. Several lines are one list, joined
---with ", " ("; " for Cookie); Set-Cookie gives its first line (use header_all).
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

---Replaces every value of a header; a nil value removes it. Framing and connection headers
---(content-length, transfer-encoding, connection, keep-alive, te, trailer, upgrade,
---proxy-connection) are Pocket's: setting, adding or removing them is an error.
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
---@field path string The normalised path, without the query: "/static/../%61dmin" is "/admin".
---@field query string|nil The query without "?", or nil.
---@field uri string Normalised path and query: "/a/b?x=1".
---@field target string Path and query exactly as the client sent them, before normalising.
---@field host string|nil Host (or HTTP/2 :authority), lowercase, without the port; nil for HTTP/1.0 without Host.
---@field version "HTTP/1.0"|"HTTP/1.1"|"HTTP/2"|string
---@field scheme "http"|"https" "https" on a TLS listener.
---@field tls boolean The request came over TLS.
---@field sni string|nil The TLS SNI the client sent, lowercase; nil on plain HTTP or without one.
---@field alpn string|nil "h2", "http/1.1" or "http/1.0" as agreed by ALPN; nil on plain HTTP or without ALPN.
---@field tls_version "TLSv1.3"|"TLSv1.2"|nil nil on plain HTTP.
---@field peer_ip string The client's IP address (on an accept_proxy listener, the one the PROXY header names).
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

---Replaces the method, e.g. "POST". CONNECT, and HEAD for a request that was not one, are errors.
---@param method string
function Request:set_method(method) end

---Adds a field to this request's access log line (JSON: under "fields"; text: name="value" at the end). Again with the same name: replaces the value.
---Name: 1 to 64 letters, digits, "_", "-" or "."; value: a string, number or boolean, at most 512 bytes; at most 16 fields per request.
---@param name string
---@param value string|number|boolean
function Request:log_field(name, value) end

---A server's response (on_response).
---@class pocket.ServerResponse: pocket.Headers
---@field status integer The status the server sent.
---@field pool string The pool that answered.
---@field server string The server that answered, "ip:port".
local ServerResponse = {}

---Changes the status sent to the client (200 to 599); a 204 or 205 goes without a body.
---@param code integer
function ServerResponse:set_status(code) end

---An accepted connection (on_connect). Fields are read-only.
---@class pocket.Conn
---@field peer_ip string
---@field peer_port integer
---@field local_ip string
---@field local_port integer
---@field listener string The listener's name.
---@field tls boolean The listener is a TLS one (on_connect runs before the handshake).
---@field sni string|nil On a tcp listener: the server name of the client's TLS ClientHello (lower case; the first read waits for it, at most timeouts.client_hello); nil when not TLS or no SNI. Always nil on http listeners (see req.sni).
---@field alpn string[]|nil On a tcp listener: the ClientHello's ALPN protocols, in the client's order (waits as sni does). Always nil on http listeners (see req.alpn).
---@field tls_version nil Always nil in on_connect; see req.tls_version.

---A response made by the script (pocket.respond / pocket.redirect); return it from on_request.
---@class pocket.Response

---A connection rejection (pocket.reject); return it from on_connect.
---@class pocket.Rejection

---A named key-value store (pocket.store), shared by every worker and kept
---across reloads (not across restarts); one declared in the policy's `stores`
---is kept in Redis and shared by several Pockets.
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

---A token bucket under `key` (`rate` tokens a second, at most `burst`):
---takes one token if there is one and returns true; else false and the
---seconds until a token is back. Atomic, also at Redis.
---@param key string|number
---@param rate number Above 0.
---@param burst number At least 1.
---@return boolean ok
---@return number? wait_seconds
function Store:take(key, rate, burst) end

---The store's name.
---@return string
function Store:name() end

---A handle on one server of one pool in the running Pocket (pocket.server).
---@class pocket.ServerHandle
local ServerHandle = {}

---Sets the admin state: "ready", "drain" or "maint" ("maintenance"). Drain and maint both stop new requests; in-flight ones finish. Shared by every worker, kept across reloads. True if it changed.
---@param state "ready"|"drain"|"maint"|"maintenance"
---@return boolean
function ServerHandle:set_state(state) end

---The server's live state. Raises an error when the pool has no such server.
---@return pocket.ServerState
function ServerHandle:state() end

---@class pocket.ServerState
---@field up boolean Its health.
---@field admin "ready"|"drain"|"maint"
---@field active integer Requests in flight on it, all workers.
---@field requests integer Responses it has given.
---@field failures integer Requests that failed on it on live traffic.

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

---A set of compiled Rust regexes matched in one pass (pocket.regex_set).
---Says which patterns match, not where; no captures.
---@class pocket.RegexSet
local RegexSet = {}

---True when any pattern matches somewhere in `text`.
---@param text string
---@return boolean
function RegexSet:is_match(text) end

---The 1-based indices of every pattern that matches, ascending ({} when none).
---@param text string
---@return integer[]
function RegexSet:matches(text) end

---The lowest index of a matching pattern (the first in the list, not the
---leftmost match), or nil.
---@param text string
---@return integer|nil
function RegexSet:first(text) end

---The number of patterns.
---@return integer
function RegexSet:len() end

------------------------------------------------------------------------
-- Sub-requests: the http global (docs/lua-api.md "Sub-requests")
------------------------------------------------------------------------

---Sub-requests from on_request: each call waits without holding the worker.
---Elsewhere (other hooks, pocket test, pocket explain) they return nil, "not run: ...".
---Also `require("pocket.http")`.
---@class http
http = {}

---@class pocket.HttpOptions
---@field timeout? number Seconds for the whole exchange (default 1, at most 60).
---@field headers? table<string, string|number> Added to the request; Host defaults to the URL's host.
---@field pool? string Ask a server of this pool (its balancing and health apply); the url is then a path.

---@class pocket.HttpRequest: pocket.HttpOptions
---@field method? string Default "GET".
---@field url string "http://host:port/path", or a path with pool.
---@field body? string

---@class pocket.TcpOptions
---@field timeout? number Seconds (default 1, at most 60).
---@field pool? string Connect to a server of this pool (addr nil).
---@field all? boolean Read until the peer closes (default: the first bytes that arrive).

---@class pocket.HttpAnswer
---@field status integer
---@field headers table<string, string> Lowercase names; repeated values joined with ", ".
---@field body string At most 1 MiB, chunked framing removed.

---One GET. On failure (connect, timeout, resolve, body over 1 MiB): nil and why.
---@param url string "http://host[:port]/path" (https is not supported yet), or a path with opts.pool
---@param opts? pocket.HttpOptions
---@return pocket.HttpAnswer|nil res
---@return string|nil err
function http.get(url, opts) end

---Any method, with a body. Failures as http.get.
---@param request pocket.HttpRequest
---@return pocket.HttpAnswer|nil res
---@return string|nil err
function http.request(request) end

---Sends bytes, returns what the peer answers (the first bytes, or all until it closes with opts.all; at most 1 MiB).
---@param addr string|nil "host:port", or nil with opts.pool
---@param bytes? string
---@param opts? pocket.TcpOptions
---@return string|nil data
---@return string|nil err
function http.tcp(addr, bytes, opts) end

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

---Compiles a list of Rust regexes into one set matched in a single pass.
---Do it at load. A pattern that does not compile raises `bad regex "...": ...`;
---an empty list matches nothing.
---@param patterns string[]
---@return pocket.RegexSet
function pocket.regex_set(patterns) end

---A stable hash of a string (the same in every worker, run and machine):
---the hash `balance = "hash"` uses, shifted right one bit. `pocket.hash(id) % 100`
---buckets clients.
---@param text string
---@return integer Not negative.
function pocket.hash(text) end

---Says that code compiled at load routes requests to the pool `name`: once the
---policy's pools are known, the load refuses a name they do not define, at the
---line of the caller `level` frames up (1, the default: the line calling it).
---Does nothing when called from a hook.
---@param name string
---@param level? integer
function pocket.uses_pool(name, level) end

---Seconds on a monotonic clock (a float, millisecond steps) from early in
---the process's life; only differences mean anything.
---@return number
function pocket.now() end

---Wall-clock seconds since 1970-01-01 UTC (a float); it jumps when the
---system clock is set. The sandbox has no `os`.
---@return number
function pocket.time() end

---The store of that name, created on first use. Every worker and every
---policy version reaching the same name share its data. Call it once, at load.
---A store has a size (default 8 MiB); writes past it evict the least recently
---used keys. At most 64 stores per process.
---@param name string Not empty.
---@param options? { size?: integer|string } Bytes, or a text such as "64 MiB" (64 KiB to 1 GiB).
---@return pocket.Store
function pocket.store(name, options) end

---A handle on a server of a pool, looked up when a method is called (so it
---can be made at the top level). Call its methods from hooks.
---@param pool string
---@param addr string "ip:port"; a bad address raises an error.
---@return pocket.ServerHandle
function pocket.server(pool, addr) end

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
-- Embedded stdlib (docs/stdlib.md): require "pocket.util", "pocket.match",
-- "pocket.canary", "pocket.sticky", "pocket.ratelimit", "pocket.cdn".
-- Misuse is an error at load, at the caller's path:line.
------------------------------------------------------------------------

---@class pocket.util
---@field split fun(text: string, sep?: string): string[] Split on separator characters (default ","), trimmed, empties dropped.
---@field set fun(list: any[]): table<any, true> A set from a list.
---@field cookie fun(header: string|nil, name: string): string|nil One cookie's value from a Cookie header.
---@field shown fun(value: any): string A value as a load error shows it: 'a number (5)', 'a string ("x")', 'a table'.

---A route table (docs/stdlib.md, "pocket.match").
---@class pocket.match
---@field routes fun(rules: pocket.match.Rule[]|{ default?: string|pocket.Response }): pocket.match.Routes Checks and compiles the rules once, at load; first rule whose conditions all hold wins.

---One rule: conditions (all must hold; none: always holds) and one outcome.
---@class pocket.match.Rule
---@field host? string Exact host, or "*.example.com" for its subdomains.
---@field path? string Exact path.
---@field prefix? string Path prefix.
---@field regex? string A Rust regex on the path.
---@field method? string|string[] Methods the rule applies to.
---@field header? { [1]: string, [2]?: string } A header present, or with that value.
---@field cookie? { [1]: string, [2]?: string } A cookie present, or with that value.
---@field pool? string The pool to use.
---@field respond? { [1]: integer, [2]?: string, [3]?: table<string, string|number> } A local response, built once.
---@field redirect? { [1]: integer|string, [2]?: string } A redirect, built once: { status, location } or { location } (302).

---@class pocket.match.Routes
local Routes = {}

---The winning rule's pool name or response, or the table's default.
---@param req pocket.Request
---@return string|pocket.Response|nil
function Routes:route(req) end

---A fixed share of clients on a new version, each client always on the same side.
---@class pocket.canary
---@field split fun(opts: { stable: string, canary: string, weight: integer, cookie?: string, header?: string, force_header?: string }): fun(req: pocket.Request): string Returns a function that gives each request its pool.

---Sessions kept on one server, remembered in pocket.store.
---@class pocket.sticky
---@field balance fun(opts?: { cookie?: string, ttl?: integer, store?: string }): pocket.BalanceFunction A pool's balance function (cookie default "sid", ttl 3600 s, store "sticky").

---A token bucket per key in pocket.store; over the limit, a 429 with Retry-After.
---@class pocket.ratelimit
---@field new fun(opts: { rate: number, burst?: number, key?: fun(req: pocket.Request): string|number|nil, store?: string }): pocket.ratelimit.Limiter

---@class pocket.ratelimit.Limiter
local Limiter = {}

---nil when the request may pass (it takes a token), else the 429 response to return.
---@param req pocket.Request
---@return pocket.Response|nil
function Limiter:check(req) end

---A tier of caches in front of an origin pool: each URL on one cache.
---@class pocket.cdn
---@field tier fun(opts: { servers: (string|pocket.Server)[], fallback: string, key?: fun(req: pocket.Request): string, cacheable?: fun(req: pocket.Request): boolean, bypass?: fun(req: pocket.Request): any, balance_factor?: integer, check?: pocket.Check, retries?: integer, timeouts?: pocket.Timeouts }): pocket.Pool A plain pool table.
---@field cacheable fun(req: pocket.Request): boolean False for methods other than GET/HEAD, Authorization, or a session cookie.
---@field key fun(req: pocket.Request): string (req.host or "") .. req.uri.
