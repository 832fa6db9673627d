-- redis: Redis behind Pocket. Clients connect to Pocket's address; each
-- connection goes whole to the Redis server (TCP mode: commands and
-- answers pass untouched, pipelines and pub/sub included), and Pocket
-- asks the server PING every 2 s to know it answers.
--
--   redis-cli -> Pocket :6380 -> redis-server :6379
--
-- Try it (Debian: apt-get install redis-server redis-tools):
--
--   redis-server --port 6379 --save "" &
--   target/release/pocket run examples/tcp/redis.lua &
--   redis-cli -p 6380 SET greeting hello     -> OK
--   redis-cli -p 6380 GET greeting           -> "hello"
--
-- Stop the server (redis-cli -p 6379 shutdown nosave): 3 failed checks
-- later (about 6 s) the log says "server 127.0.0.1:6379 of pool redis is
-- DOWN", and a client connecting then is closed at once (no server to
-- take it). Start it again: 2 passed checks bring it back, "is UP: 2
-- checks passed: answered "+PONG"".
-- (The binary is cargo's release build: cargo build --release; with
-- CARGO_TARGET_DIR set, it is in there.)
--
-- A Redis with a password (requirepass, or ACL users) answers PING from
-- a client that has not logged in with "-NOAUTH Authentication
-- required.": the check fails, and the log, the stats page and
-- /api/status say so, quoting that answer:
--
--   server 127.0.0.1:6379 of pool redis is DOWN: 3 checks failed:
--   expected "+PONG", got "-NOAUTH Authentication required."
--
-- (Clients through Pocket log in as they would without it: AUTH passes
-- through.) Give the check a user of its own that may run no command, so
-- its password in this file opens nothing, and check that it logs in:
--
--   redis-cli ACL SETUSER pocket-check on '>checkpw' -@all
--   check = { send = "AUTH pocket-check checkpw\r\n", expect = "+OK" },
--
-- Or check only that the server accepts connections: check = { tcp = true }.
--
-- No `tests` here: with one pool and no on_connect there is nothing to
-- decide (`pocket test` takes `conn` cases where there is: see
-- sni-passthrough.lua); tests/tcp_examples.rs runs this file with a real
-- redis-server.

return {
  listeners = {
    -- mode = "tcp": bytes, not HTTP; every connection goes to pool "redis".
    { name = "redis", bind = "127.0.0.1:6380", mode = "tcp", pool = "redis" },
  },
  pools = {
    redis = {
      mode = "tcp",
      -- One server: writes must go to the primary. (Replicas behind a
      -- second pool would answer writes with -READONLY.)
      servers = { "127.0.0.1:6379" },
      timeouts = {
        connect = "1s",   -- Redis accepts at once; a slower one is in trouble
        -- Nothing moved either way for this long: close both sides. Client
        -- libraries keep pooled connections open, and BLPOP or SUBSCRIBE
        -- wait in silence, so this is longer than the tcp default (10m).
        -- Keep it above your longest blocking command's timeout.
        idle = "1h",
      },
      -- HAProxy's `tcp-check send PING` / `tcp-check expect string +PONG`:
      -- send PING, pass when the first line of the answer holds "+PONG".
      -- Every 2 s, 1 s to answer; 3 failed in a row take the server down,
      -- 2 passed bring it back.
      check = { send = "PING\r\n", expect = "+PONG", interval = "2s", timeout = "1s" },
    },
  },
}
