//! A store kept in Redis (`stores = { NAME = { redis = "host:port" } }`),
//! shared by every Pocket that names the same Redis and prefix. The
//! design (docs/several-pockets.md, "Shared state on Redis"):
//!
//! - A call made where the hook may wait (`on_request` and a pool's
//!   `balance`/`hash_key` function, run as coroutines in a policy with
//!   Redis stores) waits on Redis, at most the store's `timeout`, as
//!   OpenResty's resty.redis does; the worker serves other requests
//!   meanwhile. Elsewhere (`on_connect`, `on_response`, health hooks, the
//!   main chunk) a read is served from the local copy and a write goes to
//!   the local copy and to Redis without waiting.
//! - A circuit breaker: a call that times out or finds the connection
//!   refused (or broken, and not made again within the timeout) turns the
//!   store local at once (no later call waits on a Redis that is away),
//!   with a WARN line and
//!   `pocket_store_redis_up 0`. Writes made meanwhile go to the local copy
//!   and to a journal. A probe on the store's own thread reconnects and
//!   PINGs every [`PROBE_EVERY`]; once Redis answers within the timeout,
//!   the journal is replayed (increments as deltas, so counts made by
//!   other Pockets meanwhile add up) and the store is back on Redis.
//! - An error Redis answers (about the data: INCRBY on text, WRONGTYPE)
//!   is the call's Lua error; the breaker is left alone.
//! - Every answer from Redis is copied to the local copy, so a fallback
//!   starts from what Redis last said, not from nothing.
//!
//! Connections live on one thread of their own (`pocket-redis`, a
//! current-thread runtime): the `redis` crate's multiplexed connection
//! runs its driver there and is used from every worker's runtime through
//! its channel; a worker only awaits the answer (and its own timeout).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::{Store, Stored};
use crate::config::{RedisSpec, StoreSpec};
use crate::observe::metrics::RedisStore as Counters;

/// How often a store that fell back tries Redis again.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);
/// The most writes a store keeps to replay; past it the oldest go (and
/// are counted in `pocket_store_redis_dropped_writes_total`).
pub const JOURNAL_MAX: usize = 100_000;
/// Connecting (off the request path) may take longer than a call.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Writes replayed per pipeline.
const REPLAY_BATCH: usize = 256;

/// A store call, as Redis and the journal see it.
#[derive(Debug, Clone)]
pub(super) enum Op {
    Get(String),
    Set(String, Stored, Option<Duration>),
    Incr(String, i64, Option<Duration>),
    Delete(String),
    /// A token bucket: `rate` per second, `burst` at most; one token.
    Take(String, f64, f64),
}

impl Op {
    fn key(&self) -> &str {
        match self {
            Op::Get(k) | Op::Set(k, ..) | Op::Incr(k, ..) | Op::Delete(k) | Op::Take(k, ..) => k,
        }
    }

    fn is_write(&self) -> bool {
        !matches!(self, Op::Get(_) | Op::Take(..))
    }
}

/// What Redis answered.
#[derive(Debug)]
pub(super) enum Reply {
    Value(Option<Stored>, Option<Duration>),
    Int(i64),
    Done,
    Deleted(bool),
    /// Allowed, and the tokens left.
    Taken(bool, f64),
}

/// Why a call at Redis did not give a reply.
#[derive(Debug)]
pub(super) enum Fault {
    /// Redis is away: no connection, refused, broken, or not answering.
    /// Opens the breaker.
    Away(String),
    /// Redis answered with an error about the data (`INCRBY` on text, a
    /// key holding a list, an overflow): the script's, raised for that
    /// call; the breaker stays closed.
    Answered(String),
    /// The connection was found broken on use (closed by Redis's idle
    /// `timeout`, a restart): worth one reconnect and retry.
    Broken(String),
}

impl Fault {
    fn of(e: &redis::RedisError) -> Fault {
        use redis::ErrorKind as K;
        if e.is_connection_dropped() {
            return Fault::Broken(e.to_string());
        }
        match e.kind() {
            K::ResponseError
            | K::ExtensionError
            | K::TypeError
            | K::ExecAbortError
            | K::NoScriptError => Fault::Answered(e.to_string()),
            _ => Fault::Away(e.to_string()),
        }
    }
}

/// A write made locally while Redis was away, to replay.
#[derive(Debug)]
struct Pending {
    op: Op,
    /// When a `Set`'s TTL ends (replayed with what is left).
    expires: Option<Instant>,
}

struct Journal {
    ops: VecDeque<Pending>,
}

/// One store's link to Redis: its settings, the breaker, the journal.
pub struct Link {
    pub spec: RedisSpec,
    store: String,
    /// On Redis now: calls may go there. False: local state (the breaker
    /// is open, or Redis has not answered yet).
    up: AtomicBool,
    /// The connection, and its number (a call that found it broken
    /// reconnects only when no other call did so meanwhile).
    conn: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// Made from `spec` once; `None` when the address cannot make one.
    client: Option<redis::Client>,
    journal: Mutex<Journal>,
    /// A reload dropped or changed this store's Redis: the probe ends.
    retired: AtomicBool,
    wake: tokio::sync::Notify,
    pub counters: Arc<Counters>,
}

/// The token bucket at Redis, atomic there (a get-then-set from two
/// Pockets would lose updates). Time is Redis's own (`TIME`), so Pockets
/// on machines with different clocks agree. Returns `{allowed, tokens}`.
static TAKE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local rate, burst, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens, last = burst, now
local saved = redis.call('GET', KEYS[1])
if saved then
  local a, b = string.match(saved, '^([^:]+):([^:]+)$')
  tokens, last = tonumber(a) or burst, tonumber(b) or now
end
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local allowed = 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 end
redis.call('SET', KEYS[1], string.format('%.6f:%.6f', tokens, now), 'PX', ttl)
return {allowed, string.format('%.6f', tokens)}
",
    )
});

/// The thread Redis connections run on (started with the first Redis
/// store).
fn runtime() -> &'static tokio::runtime::Handle {
    static HANDLE: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("pocket-redis".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("the Redis thread could not start its runtime: {e}");
                        return;
                    }
                };
                let _ = tx.send(rt.handle().clone());
                rt.block_on(std::future::pending::<()>());
            });
        match spawned.ok().and_then(|_| rx.recv().ok()) {
            Some(h) => h,
            // No thread: a runtime of the caller's, never driven; every
            // store stays local (its probe never runs), which the log says.
            None => {
                tracing::error!(
                    "the Redis thread did not start: Redis-backed stores serve from local state"
                );
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .map(|rt| {
                        let h = rt.handle().clone();
                        std::mem::forget(rt);
                        h
                    })
                    .unwrap_or_else(|_| std::process::abort())
            }
        }
    })
}

/// Gives each declared store its link to Redis, as the live policy says:
/// at start, before the workers, and after each reload goes live. A store
/// whose settings did not change keeps its link (and connection); one no
/// longer declared goes back to local state only.
pub fn apply(specs: &[StoreSpec]) {
    for spec in specs {
        let store = match super::store(&spec.name, None) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("store \"{}\": {e}", spec.name);
                continue;
            }
        };
        let mut slot = store.redis.write().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|l| l.spec == spec.redis) {
            continue;
        }
        // Writes the old settings' Redis has not had yet go to the new
        // one when it answers (a reload while Redis is down loses none).
        let mut carried = VecDeque::new();
        if let Some(old) = slot.take() {
            old.retire();
            carried =
                std::mem::take(&mut old.journal.lock().unwrap_or_else(|e| e.into_inner()).ops);
            old.counters.pending.store(0, Ordering::Relaxed);
        }
        let client = match client_of(&spec.redis) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(
                    "store \"{}\": Redis at {}: {e}: serving from local state",
                    spec.name,
                    spec.redis.addr()
                );
                None
            }
        };
        let link = Arc::new(Link {
            spec: spec.redis.clone(),
            store: spec.name.clone(),
            up: AtomicBool::new(false),
            conn: Mutex::new(None),
            client,
            journal: Mutex::new(Journal { ops: carried }),
            retired: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            counters: crate::observe::metrics::redis_store(&spec.name),
        });
        link.counters.up.store(false, Ordering::Relaxed);
        link.counters.declared.store(true, Ordering::Relaxed);
        let pending = link
            .journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ops
            .len();
        link.counters
            .pending
            .store(pending as u64, Ordering::Relaxed);
        *slot = Some(link.clone());
        drop(slot);
        runtime().spawn(probe(link, store.clone()));
    }
    for store in super::all_stores() {
        if specs.iter().any(|s| s.name == store.name) {
            continue;
        }
        let mut slot = store.redis.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = slot.take() {
            // Off /metrics before the log says so.
            old.retire();
            old.counters.declared.store(false, Ordering::Relaxed);
            tracing::info!(
                "store \"{}\": no longer on Redis ({}): local to this Pocket from now on",
                store.name,
                old.spec.addr()
            );
            let lost =
                std::mem::take(&mut old.journal.lock().unwrap_or_else(|e| e.into_inner()).ops);
            if !lost.is_empty() {
                old.counters
                    .dropped
                    .fetch_add(lost.len() as u64, Ordering::Relaxed);
                old.counters.pending.store(0, Ordering::Relaxed);
                tracing::warn!(
                    "store \"{}\": {} writes made while Redis was away are not replayed: the store is no longer on Redis",
                    store.name,
                    lost.len()
                );
            }
        }
    }
}

impl Link {
    fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.up.store(false, Ordering::Relaxed);
        self.counters.up.store(false, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// On Redis now (one relaxed load).
    #[inline]
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.spec.prefix.len() + key.len());
        k.push_str(&self.spec.prefix);
        k.push_str(key);
        k
    }

    /// Runs `op` at Redis (no timeout of its own: the caller's). A
    /// connection found broken on use (Redis closed it while idle, or
    /// restarted) is made again and `op` sent once more before Redis is
    /// called away.
    async fn exec(self: &Arc<Self>, op: &Op) -> Result<Reply, Fault> {
        let current = self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some((number, conn)) = current else {
            return Err(Fault::Away("not connected".into()));
        };
        match self.exec_on(conn, op).await {
            Err(Fault::Broken(why)) => {
                let conn = self
                    .connect_again(number)
                    .await
                    .map_err(|again| Fault::Away(format!("{why}; connecting again: {again}")))?;
                match self.exec_on(conn, op).await {
                    Err(Fault::Broken(why)) => Err(Fault::Away(why)),
                    other => other,
                }
            }
            other => other,
        }
    }

    /// A new connection in place of number `broken` (on the Redis thread,
    /// where connections run), or the one another call made meanwhile.
    async fn connect_again(self: &Arc<Self>, broken: u64) -> Result<MultiplexedConnection, String> {
        let link = self.clone();
        runtime()
            .spawn(async move {
                {
                    let conn = link.conn.lock().unwrap_or_else(|e| e.into_inner());
                    match conn.as_ref() {
                        Some((n, c)) if *n != broken => return Ok(c.clone()),
                        None => return Err("not connected".to_string()),
                        _ => {}
                    }
                }
                let client = link.client.as_ref().ok_or("no client")?;
                let fresh = reconnect(client, &link).await?;
                let mut conn = link.conn.lock().unwrap_or_else(|e| e.into_inner());
                match conn.as_ref() {
                    Some((n, c)) if *n != broken => Ok(c.clone()),
                    _ => {
                        *conn = Some((next_number(), fresh.clone()));
                        Ok(fresh)
                    }
                }
            })
            .await
            .map_err(|e| e.to_string())?
    }

    async fn exec_on(&self, mut conn: MultiplexedConnection, op: &Op) -> Result<Reply, Fault> {
        let e = |e: redis::RedisError| Fault::of(&e);
        match op {
            Op::Get(key) => {
                let (v, ttl): (Option<Vec<u8>>, i64) = redis::pipe()
                    .get(self.key(key))
                    .pttl(self.key(key))
                    .query_async(&mut conn)
                    .await
                    .map_err(e)?;
                let ttl = u64::try_from(ttl).ok().map(Duration::from_millis);
                Ok(Reply::Value(v.map(from_redis), ttl))
            }
            Op::Set(key, value, ttl) => {
                let mut c = redis::cmd("SET");
                c.arg(self.key(key)).arg(to_redis(value));
                if let Some(t) = ttl {
                    c.arg("PX").arg(t.as_millis().max(1) as u64);
                }
                c.query_async::<()>(&mut conn).await.map_err(e)?;
                Ok(Reply::Done)
            }
            Op::Incr(key, by, ttl) => Ok(Reply::Int(
                incr(&mut conn, &self.key(key), *by, *ttl)
                    .await
                    .map_err(e)?,
            )),
            Op::Delete(key) => {
                let n: i64 = redis::cmd("DEL")
                    .arg(self.key(key))
                    .query_async(&mut conn)
                    .await
                    .map_err(e)?;
                Ok(Reply::Deleted(n > 0))
            }
            Op::Take(key, rate, burst) => {
                let (allowed, tokens): (i64, String) = TAKE
                    .key(self.key(key))
                    .arg(*rate)
                    .arg(*burst)
                    .arg(bucket_ttl(*rate, *burst).as_millis() as u64)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(e)?;
                Ok(Reply::Taken(allowed == 1, tokens.parse().unwrap_or(0.0)))
            }
        }
    }

    /// A call failed or timed out: local state from now on, until the
    /// probe finds Redis again. Logged and counted once per outage.
    fn fell_back(&self, why: &str) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if self.up.swap(false, Ordering::Relaxed) {
            self.counters.up.store(false, Ordering::Relaxed);
            self.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                store = %self.store,
                "store \"{}\": Redis at {} {why}: serving from local state; writes made meanwhile are replayed when it answers",
                self.store,
                self.spec.addr()
            );
            self.wake.notify_one();
        }
    }

    /// Keeps a write made locally to replay. When the store went back to
    /// Redis meanwhile, sends it there instead.
    fn journal(self: &Arc<Self>, op: Op, expires: Option<Instant>) {
        if !op.is_write() {
            return;
        }
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        if self.up() {
            drop(j);
            self.send(op);
            return;
        }
        if j.ops.len() >= JOURNAL_MAX {
            j.ops.pop_front();
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        j.ops.push_back(Pending { op, expires });
        self.counters
            .pending
            .store(j.ops.len() as u64, Ordering::Relaxed);
    }

    /// Sends a write to Redis without waiting for it (from a hook that
    /// cannot wait); a failure falls back and journals it.
    pub(super) fn send(self: &Arc<Self>, op: Op) {
        let link = self.clone();
        runtime().spawn(async move {
            let timeout = link.spec.timeout;
            let expires = expiry_of(&op);
            match tokio::time::timeout(timeout, link.exec(&op)).await {
                Ok(Ok(_)) => {}
                Ok(Err(Fault::Answered(why))) => {
                    // Redis is there; the write is the script's mistake
                    // (the local copy took it, Redis did not).
                    tracing::warn!(
                        store = %link.store,
                        "store \"{}\": key {:?}: Redis refused a write sent without waiting: {why}",
                        link.store,
                        op.key()
                    );
                }
                Ok(Err(Fault::Away(why) | Fault::Broken(why))) => {
                    link.fell_back(&format!("failed ({why})"));
                    link.journal(op, expires);
                }
                Err(_) => {
                    link.fell_back(&format!("did not answer within {}", ms(timeout)));
                    link.journal(op, expires);
                }
            }
        });
    }
}

/// Connections are numbered across every store, so a number is never
/// reused.
fn next_number() -> u64 {
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    MADE.fetch_add(1, Ordering::Relaxed)
}

/// The client for `spec`: its address, and its user and password when it
/// has them (Redis's `AUTH`, sent on every new connection).
fn client_of(spec: &RedisSpec) -> Result<redis::Client, redis::RedisError> {
    redis::Client::open(redis::ConnectionInfo {
        addr: redis::ConnectionAddr::Tcp(spec.host.clone(), spec.port),
        redis: redis::RedisConnectionInfo {
            username: spec.user.clone(),
            password: spec.password.as_ref().map(|p| p.0.clone()),
            ..Default::default()
        },
    })
}

fn expiry_of(op: &Op) -> Option<Instant> {
    match op {
        Op::Set(_, _, Some(t)) => Some(Instant::now() + *t),
        _ => None,
    }
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// A bucket's key lives as long as it takes to fill up, and a second.
pub(super) fn bucket_ttl(rate: f64, burst: f64) -> Duration {
    let secs = (burst / rate).ceil() + 1.0;
    Duration::from_secs_f64(secs.clamp(1.0, 86_400.0))
}

/// `INCRBY`, then the TTL (milliseconds) when the key has none yet:
/// atomic at Redis, and Redis 6's (its `PEXPIRE` has no `NX`).
const INCR_TTL: &str = r"
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return n
";

static INCR: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(INCR_TTL));

/// INCRBY, with the TTL set when the key has none yet ([`INCR_TTL`],
/// by EVALSHA).
async fn incr(
    conn: &mut MultiplexedConnection,
    key: &str,
    by: i64,
    ttl: Option<Duration>,
) -> Result<i64, redis::RedisError> {
    match ttl {
        None => {
            redis::cmd("INCRBY")
                .arg(key)
                .arg(by)
                .query_async(conn)
                .await
        }
        Some(t) => {
            INCR.key(key)
                .arg(by)
                .arg(t.as_millis().max(1) as u64)
                .invoke_async(conn)
                .await
        }
    }
}

/// A value as Redis keeps it: whole numbers in decimal (so INCRBY works
/// on them and other tools read them), text as its bytes, other numbers
/// as Lua writes them (a store kept in Redis refuses booleans; `true`/
/// `false` here only for completeness).
fn to_redis(v: &Stored) -> Vec<u8> {
    match v {
        Stored::Text(b) => b.clone(),
        Stored::Int(n) => n.to_string().into_bytes(),
        Stored::Num(n) => crate::config::lua_float(*n).into_bytes(),
        Stored::Bool(b) => b.to_string().into_bytes(),
    }
}

/// `v` as it reads back from Redis (see `from_redis`): what a store kept
/// in Redis keeps in its local copy too.
pub(super) fn as_redis_keeps(v: Stored) -> Stored {
    match v {
        Stored::Int(_) => v,
        other => from_redis(to_redis(&other)),
    }
}

/// A value read back: an integer when it is written as one, else text
/// (a number that is not whole, or a boolean, comes back as its text).
fn from_redis(b: Vec<u8>) -> Stored {
    let int = std::str::from_utf8(&b)
        .ok()
        .filter(|s| {
            let digits = s.strip_prefix('-').unwrap_or(s);
            !digits.is_empty()
                && digits.len() <= 19
                && digits.bytes().all(|c| c.is_ascii_digit())
                && !(digits.len() > 1 && digits.starts_with('0'))
        })
        .and_then(|s| s.parse::<i64>().ok());
    match int {
        Some(n) => Stored::Int(n),
        None => Stored::Text(b),
    }
}

/// Runs `op` for a hook that may wait: at Redis within the store's
/// timeout, copied to the local copy; on a timeout or an error, the
/// breaker opens and `op` runs on the local copy (and is journaled).
pub(super) async fn call(link: Arc<Link>, local: Arc<Store>, op: Op) -> Result<Reply, String> {
    let timeout = link.spec.timeout;
    match tokio::time::timeout(timeout, link.exec(&op)).await {
        Ok(Ok(reply)) => {
            mirror(&local, &op, &reply);
            Ok(reply)
        }
        Ok(Err(Fault::Answered(why))) => Err(format!(
            "store {}: key {:?}: Redis at {} refused it: {why}",
            link.store,
            op.key(),
            link.spec.addr()
        )),
        Ok(Err(Fault::Away(why) | Fault::Broken(why))) => {
            link.fell_back(&format!("failed ({why})"));
            locally(&link, &local, op)
        }
        Err(_) => {
            link.fell_back(&format!("did not answer within {}", ms(timeout)));
            locally(&link, &local, op)
        }
    }
}

/// Runs `op` on the local copy while the store cannot reach Redis (or
/// the hook cannot wait): a write is journaled (or, Redis being up, sent
/// without waiting).
pub(super) fn locally(link: &Arc<Link>, local: &Store, op: Op) -> Result<Reply, String> {
    let up = link.up();
    if !up {
        link.counters.local_calls.fetch_add(1, Ordering::Relaxed);
    }
    let expires = expiry_of(&op);
    let reply = run_local(local, &op)?;
    if op.is_write() {
        if up {
            link.send(op);
        } else {
            link.journal(op, expires);
        }
    }
    Ok(reply)
}

pub(super) fn run_local(local: &Store, op: &Op) -> Result<Reply, String> {
    Ok(match op {
        Op::Get(key) => Reply::Value(local.get(key), None),
        Op::Set(key, v, ttl) => {
            local.set(key.clone(), v.clone(), *ttl)?;
            Reply::Done
        }
        Op::Incr(key, by, ttl) => Reply::Int(local.incr(key.clone(), *by, *ttl)?),
        Op::Delete(key) => Reply::Deleted(local.delete(key)),
        Op::Take(key, rate, burst) => {
            let (ok, tokens) = local.take(key, *rate, *burst)?;
            Reply::Taken(ok, tokens)
        }
    })
}

/// Copies what Redis answered to the local copy (so a fallback starts
/// from it). Failures (a value too big for the local size) only cost the
/// copy.
fn mirror(local: &Store, op: &Op, reply: &Reply) {
    let _ = match (op, reply) {
        (Op::Get(key), Reply::Value(Some(v), ttl)) => local.set(key.clone(), v.clone(), *ttl),
        (Op::Get(key), Reply::Value(None, _)) | (Op::Delete(key), _) => {
            local.delete(key);
            Ok(())
        }
        (Op::Set(key, v, ttl), _) => local.set(key.clone(), v.clone(), *ttl),
        (Op::Incr(key, _, ttl), Reply::Int(n)) => local.put_int(key.clone(), *n, *ttl),
        _ => Ok(()),
    };
}

/// The store's probe, on the Redis thread: while the store is local,
/// connects and PINGs every [`PROBE_EVERY`]; when Redis answers, replays
/// the journal and puts the store back on Redis.
async fn probe(link: Arc<Link>, _store: Arc<Store>) {
    let Some(client) = link.client.clone() else {
        return;
    };
    let mut first = true;
    let mut logged_down = false;
    while !link.retired.load(Ordering::Relaxed) {
        if link.up() {
            link.wake.notified().await;
            continue;
        }
        match reconnect(&client, &link).await {
            Ok(conn) => {
                {
                    let mut slot = link.conn.lock().unwrap_or_else(|e| e.into_inner());
                    *slot = Some((next_number(), conn));
                }
                match replay(&link).await {
                    Ok(n) => {
                        if !first {
                            link.counters.recoveries.fetch_add(1, Ordering::Relaxed);
                        }
                        if first {
                            tracing::info!(
                                store = %link.store,
                                "store \"{}\": on Redis at {} (prefix \"{}\", timeout {}){}",
                                link.store,
                                link.spec.addr(),
                                link.spec.prefix,
                                ms(link.spec.timeout),
                                if n > 0 { format!("; {n} writes made before it answered replayed") } else { String::new() }
                            );
                        } else {
                            tracing::warn!(
                                store = %link.store,
                                "store \"{}\": Redis at {} answers again: back on Redis; {n} writes made meanwhile replayed",
                                link.store,
                                link.spec.addr()
                            );
                        }
                        first = false;
                        logged_down = false;
                        continue;
                    }
                    Err(why) => {
                        *link.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
                        tracing::debug!(store = %link.store, "replay failed: {why}");
                    }
                }
            }
            Err(why) if why.starts_with(AUTH_REFUSED) => {
                if !logged_down {
                    tracing::error!(
                        store = %link.store,
                        "store \"{}\": Redis at {}: {why}: serving from local state until it accepts the login",
                        link.store,
                        link.spec.addr()
                    );
                    logged_down = true;
                    if first {
                        link.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(why) => {
                if first && !logged_down {
                    tracing::warn!(
                        store = %link.store,
                        "store \"{}\": Redis at {} unreachable ({why}): serving from local state until it answers",
                        link.store,
                        link.spec.addr()
                    );
                    logged_down = true;
                    link.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            _ = link.wake.notified() => {}
        }
    }
}

/// What to say when Redis refused Pocket's password, or wants one: a
/// text starting with [`AUTH_REFUSED`]; `None` for any other error.
fn auth_hint(e: &redis::RedisError, link: &Link) -> Option<String> {
    let text = e.to_string();
    let missing = text.contains("NOAUTH");
    let wrong = text.contains("WRONGPASS")
        || e.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("invalid password")
        || text.contains("without any password configured");
    if !missing && !wrong {
        return None;
    }
    Some(if missing {
        format!(
            "{AUTH_REFUSED}: it wants a password and the store gives none              (password_env = \"REDIS_PASSWORD\" in the store's table reads it from that environment variable) ({text})"
        )
    } else {
        format!(
            "{AUTH_REFUSED}: the {} or password is wrong{} ({text})",
            link.spec
                .user
                .as_ref()
                .map_or("user (default)".to_string(), |u| format!("user {u:?}")),
            if link.spec.password.is_none() {
                " (no password given)"
            } else {
                ""
            }
        )
    })
}

/// How an authentication failure starts (the probe logs it as such).
const AUTH_REFUSED: &str = "Redis refused Pocket's login";

/// A new connection that answered PING within the store's timeout.
async fn reconnect(client: &redis::Client, link: &Link) -> Result<MultiplexedConnection, String> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT.max(link.spec.timeout))
        .set_response_timeout(CONNECT_TIMEOUT.max(link.spec.timeout));
    let mut conn = tokio::time::timeout(
        CONNECT_TIMEOUT.max(link.spec.timeout),
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .map_err(|_| format!("no connection within {}", ms(CONNECT_TIMEOUT)))?
    .map_err(|e| auth_hint(&e, link).unwrap_or_else(|| e.to_string()))?;
    let pong = tokio::time::timeout(
        link.spec.timeout,
        redis::cmd("PING").query_async::<String>(&mut conn),
    )
    .await;
    match pong {
        Ok(Ok(_)) => Ok(conn),
        Ok(Err(e)) => Err(auth_hint(&e, link).unwrap_or_else(|| e.to_string())),
        Err(_) => Err(format!(
            "PING not answered within {}",
            ms(link.spec.timeout)
        )),
    }
}

/// Replays the journal in order, a batch per pipeline; when it is empty,
/// puts the store back on Redis (under the journal's lock, so no write
/// is journaled after the last batch and left behind). Returns how many
/// writes were replayed.
async fn replay(link: &Link) -> Result<u64, String> {
    let mut replayed = 0u64;
    let Some((_, mut conn)) = link.conn.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
        return Err("not connected".into());
    };
    loop {
        let batch: Vec<Pending> = {
            let mut j = link.journal.lock().unwrap_or_else(|e| e.into_inner());
            if j.ops.is_empty() {
                link.up.store(true, Ordering::Relaxed);
                link.counters.up.store(true, Ordering::Relaxed);
                link.counters.pending.store(0, Ordering::Relaxed);
                return Ok(replayed);
            }
            let n = j.ops.len().min(REPLAY_BATCH);
            j.ops.drain(..n).collect()
        };
        let mut p = redis::pipe();
        let now = Instant::now();
        for w in &batch {
            match &w.op {
                Op::Set(key, v, _) => {
                    let left = w.expires.map(|e| e.saturating_duration_since(now));
                    if left.is_some_and(|l| l.is_zero()) {
                        continue;
                    }
                    let c = p.cmd("SET").arg(link.key(key)).arg(to_redis(v));
                    if let Some(l) = left {
                        c.arg("PX").arg(l.as_millis().max(1) as u64);
                    }
                    c.ignore();
                }
                Op::Incr(key, by, None) => {
                    p.cmd("INCRBY").arg(link.key(key)).arg(*by).ignore();
                }
                Op::Incr(key, by, Some(t)) => {
                    p.cmd("EVAL")
                        .arg(INCR_TTL)
                        .arg(1)
                        .arg(link.key(key))
                        .arg(*by)
                        .arg(t.as_millis().max(1) as u64)
                        .ignore();
                }
                Op::Delete(key) => {
                    p.cmd("DEL").arg(link.key(key)).ignore();
                }
                Op::Get(_) | Op::Take(..) => {}
            }
        }
        let sent = tokio::time::timeout(
            CONNECT_TIMEOUT.max(link.spec.timeout * 4),
            p.query_async::<()>(&mut conn),
        )
        .await;
        let failed = match sent {
            Ok(Ok(())) => None,
            // Redis ran the batch and refused some of its writes (an
            // INCRBY on text): the rest are in; trying again would only
            // stop the store from coming back.
            Ok(Err(e)) if matches!(Fault::of(&e), Fault::Answered(_)) => {
                tracing::warn!(
                    store = %link.store,
                    "store \"{}\": Redis refused a replayed write: {e}",
                    link.store
                );
                None
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("replay not answered in time".to_string()),
        };
        if let Some(why) = failed {
            // Back at the front, in order, for the next try.
            let mut j = link.journal.lock().unwrap_or_else(|e| e.into_inner());
            for w in batch.into_iter().rev() {
                j.ops.push_front(w);
            }
            return Err(why);
        }
        replayed += batch.len() as u64;
        link.counters
            .replayed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let left = link
            .journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ops
            .len();
        link.counters.pending.store(left as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_as_redis_keeps_them() {
        assert_eq!(from_redis(b"42".to_vec()), Stored::Int(42));
        assert_eq!(from_redis(b"-7".to_vec()), Stored::Int(-7));
        assert_eq!(from_redis(b"007".to_vec()), Stored::Text(b"007".to_vec()));
        assert_eq!(
            from_redis(b"127.0.0.1:9001".to_vec()),
            Stored::Text(b"127.0.0.1:9001".to_vec())
        );
        assert_eq!(to_redis(&Stored::Int(-3)), b"-3".to_vec());
        assert_eq!(to_redis(&Stored::Bool(true)), b"true".to_vec());
        assert_eq!(bucket_ttl(10.0, 20.0), Duration::from_secs(3));
        assert_eq!(bucket_ttl(0.0001, 20.0), Duration::from_secs(86_400));
    }
}
