//! `pocket.store(name)`: a key-value store shared by every worker and kept
//! across reloads, living in Rust. For stickiness, rate limits, counters.
//!
//! ```lua
//! local sessions = pocket.store("sessions")   -- at load time, once
//! sessions:set("user42", "127.0.0.1:9001", 3600)  -- value, ttl (seconds)
//! sessions:get("user42")                       -- value or nil
//! sessions:incr("hits:/", 1, 60)               -- new count
//! sessions:delete("user42")
//! ```
//!
//! Each store has a size (default 8 MiB, `pocket.store(name, { size =
//! "64 MiB" })`), like nginx's `lua_shared_dict`: when a write would pass
//! it, expired keys go first, then the least recently used ones (approx.:
//! the oldest eighth of a shard at a time), so a script that writes keys
//! without end cannot grow the process.
//!
//! A store the policy declares in `stores = { NAME = { redis = ... } }`
//! is kept in Redis and shared by every Pocket that names it; this one
//! stays its local copy and its fallback (`store/redis.rs`).

pub mod redis;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use mlua::{Lua, Table, UserData, UserDataMethods, Value};

const SHARDS: usize = 16;
/// Largest key or string value a store keeps (bigger is a mistake, not a
/// cache).
const MAX_VALUE: usize = 64 * 1024;
/// A store's size when the script names none, bytes.
pub const DEFAULT_SIZE: usize = 8 << 20;
/// The sizes a script may give, bytes.
const SIZES: std::ops::RangeInclusive<usize> = (64 << 10)..=(1 << 30);
/// The longest store name, bytes.
const MAX_NAME: usize = 256;
/// How many stores a process keeps; stores are never dropped.
pub const MAX_STORES: usize = 64;
/// What an entry costs beyond its key and value: the map's slot, the
/// key's and value's headers (an estimate, for the size accounting).
const ENTRY_OVERHEAD: usize = 96;
/// Every this many writes a shard drops its expired keys.
const SWEEP_EVERY: u32 = 1024;

#[derive(Debug, Clone, PartialEq)]
enum Stored {
    Text(Vec<u8>),
    Int(i64),
    Num(f64),
    Bool(bool),
}

struct Entry {
    value: Stored,
    expires: Option<Instant>,
    /// The shard's clock when the key was last read or written (LRU).
    touched: u64,
}

impl Stored {
    fn bytes(&self) -> usize {
        match self {
            Stored::Text(b) => b.len(),
            _ => 8,
        }
    }
}

fn cost(key: &str, value: &Stored) -> usize {
    key.len() + value.bytes() + ENTRY_OVERHEAD
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<String, Entry>,
    writes: u32,
    /// What the entries cost, bytes (see `cost`).
    bytes: usize,
    /// Ticks on every read and write: the LRU order.
    clock: u64,
}

impl Shard {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let e = self.map.remove(key)?;
        self.bytes = self.bytes.saturating_sub(cost(key, &e.value));
        Some(e)
    }

    fn drop_expired(&mut self, now: Instant) {
        let before = self.map.len();
        self.map.retain(|_, e| e.live(now));
        if self.map.len() != before {
            self.bytes = self.map.iter().map(|(k, e)| cost(k, &e.value)).sum();
        }
    }

    /// Makes room for `need` more bytes within `cap`: expired keys first,
    /// then the least recently used eighth of the shard (at least enough
    /// to fit), so the scan is paid once per many writes. Returns how many
    /// live keys were evicted.
    fn make_room(&mut self, need: usize, cap: usize, now: Instant) -> u64 {
        if self.bytes + need <= cap {
            return 0;
        }
        self.drop_expired(now);
        let mut evicted = 0;
        if self.bytes + need > cap && !self.map.is_empty() {
            let mut ages: Vec<u64> = self.map.values().map(|e| e.touched).collect();
            let k = (ages.len() / 8).max(1).min(ages.len() - 1);
            let (_, cut, _) = ages.select_nth_unstable(k);
            let cut = *cut;
            let before = self.map.len();
            self.map.retain(|_, e| e.touched >= cut);
            evicted += (before - self.map.len()) as u64;
            self.bytes = self.map.iter().map(|(k, e)| cost(k, &e.value)).sum();
            // Still no room (one large value, or a store made smaller):
            // oldest first, in one sorted pass.
            if self.bytes + need > cap {
                let mut order: Vec<(u64, String)> = self
                    .map
                    .iter()
                    .map(|(k, e)| (e.touched, k.clone()))
                    .collect();
                order.sort_unstable_by_key(|(t, _)| *t);
                for (_, key) in order {
                    if self.bytes + need <= cap {
                        break;
                    }
                    self.remove(&key);
                    evicted += 1;
                }
            }
        }
        evicted
    }
}

/// One named store.
pub struct Store {
    name: String,
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    /// The store's size, bytes; each shard holds a sixteenth.
    size: AtomicUsize,
    /// Live keys dropped to make room, since the process started.
    evicted: AtomicU64,
    /// Its link to Redis, when the live policy declares it in `stores`.
    redis: RwLock<Option<Arc<redis::Link>>>,
}

impl Store {
    fn new(name: &str, size: usize) -> Store {
        Store {
            name: name.to_string(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: Default::default(),
            size: AtomicUsize::new(size),
            evicted: AtomicU64::new(0),
            redis: RwLock::new(None),
        }
    }

    fn shard_cap(&self) -> usize {
        self.size.load(Ordering::Relaxed) / SHARDS
    }

    /// Live keys evicted to make room so far (for metrics).
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// What the keys and values take now, bytes (estimated per entry).
    pub fn used(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).bytes)
            .sum()
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &str) -> Option<Stored> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let tick = shard.tick();
        match shard.map.get_mut(key) {
            Some(e) if e.live(now) => {
                e.touched = tick;
                Some(e.value.clone())
            }
            Some(_) => {
                shard.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores `entry` under `key`, making room first (a replaced value's
    /// bytes count as free).
    fn put(
        &self,
        shard: &mut Shard,
        key: String,
        value: Stored,
        expires: Option<Instant>,
    ) -> Result<(), String> {
        let now = Instant::now();
        let need = cost(&key, &value);
        if need > self.shard_cap() {
            return Err(format!(
                "store {}: a key and value of {need} bytes do not fit in a store of {} bytes (each of its 16 shards holds a sixteenth)",
                self.name,
                self.size.load(Ordering::Relaxed)
            ));
        }
        shard.remove(&key);
        let evicted = shard.make_room(need, self.shard_cap(), now);
        if evicted > 0 {
            self.evicted.fetch_add(evicted, Ordering::Relaxed);
        }
        let touched = shard.tick();
        shard.bytes += need;
        shard.map.insert(
            key,
            Entry {
                value,
                expires,
                touched,
            },
        );
        Ok(())
    }

    /// Errors: a key and value bigger than a shard's share of the size.
    fn set(&self, key: String, value: Stored, ttl: Option<Duration>) -> Result<(), String> {
        let now = Instant::now();
        let mut shard = self.shard(&key);
        shard.writes = shard.writes.wrapping_add(1);
        if shard.writes.is_multiple_of(SWEEP_EVERY) {
            shard.drop_expired(now);
        }
        self.put(&mut shard, key, value, ttl.map(|t| now + t))
    }

    /// Adds `by` to an integer (missing or expired counts as 0). The TTL is
    /// set when the key is created, so a window does not slide on every hit.
    fn incr(&self, key: String, by: i64, ttl: Option<Duration>) -> Result<i64, String> {
        let now = Instant::now();
        let mut shard = self.shard(&key);
        shard.writes = shard.writes.wrapping_add(1);
        let tick = shard.tick();
        if let Some(e) = shard.map.get_mut(&key).filter(|e| e.live(now)) {
            e.touched = tick;
            let Stored::Int(n) = e.value else {
                return Err(format!(
                    "store {}: key {key:?} does not hold an integer",
                    self.name
                ));
            };
            // Refused, not saturated: a count stuck at the limit would
            // be silently wrong from then on.
            let Some(next) = n.checked_add(by) else {
                return Err(format!(
                    "store {}: key {key:?} holds {n}; adding {by} would pass the whole-number range \
                     (math.mininteger to math.maxinteger), so incr refuses and the value stays {n}",
                    self.name
                ));
            };
            e.value = Stored::Int(next);
            return Ok(next);
        }
        self.put(&mut shard, key, Stored::Int(by), ttl.map(|t| now + t))?;
        Ok(by)
    }

    fn delete(&self, key: &str) -> bool {
        self.shard(key).remove(key).is_some()
    }

    /// Sets an integer (what Redis counted), keeping the key's expiry when
    /// it has one, else giving it `ttl`.
    fn put_int(&self, key: String, n: i64, ttl: Option<Duration>) -> Result<(), String> {
        let now = Instant::now();
        let mut shard = self.shard(&key);
        let tick = shard.tick();
        if let Some(e) = shard.map.get_mut(&key).filter(|e| e.live(now)) {
            if matches!(e.value, Stored::Int(_)) {
                e.value = Stored::Int(n);
                e.touched = tick;
                return Ok(());
            }
        }
        self.put(&mut shard, key, Stored::Int(n), ttl.map(|t| now + t))
    }

    /// A token bucket under `key`: `rate` tokens a second, at most
    /// `burst`; takes one if there is one. Returns whether it did, and the
    /// tokens left. Atomic (under the shard's lock), so workers racing on
    /// one key never let more through than the bucket holds. The bucket
    /// is kept as text `tokens:unix_seconds`, as at Redis.
    fn take(&self, key: &str, rate: f64, burst: f64) -> Result<(bool, f64), String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut shard = self.shard(key);
        let (mut tokens, last) = match shard.map.get(key).filter(|e| e.live(Instant::now())) {
            Some(Entry {
                value: Stored::Text(b),
                ..
            }) => bucket_of(b).unwrap_or((burst, now)),
            _ => (burst, now),
        };
        tokens = burst.min(tokens + (now - last).max(0.0) * rate);
        let allowed = tokens >= 1.0;
        if allowed {
            tokens -= 1.0;
        }
        let text = format!("{tokens:.6}:{now:.6}").into_bytes();
        let ttl = redis::bucket_ttl(rate, burst);
        self.put(
            &mut shard,
            key.to_string(),
            Stored::Text(text),
            Some(Instant::now() + ttl),
        )?;
        Ok((allowed, tokens))
    }
}

/// `tokens:last` as a bucket keeps it.
fn bucket_of(b: &[u8]) -> Option<(f64, f64)> {
    let text = std::str::from_utf8(b).ok()?;
    let (t, l) = text.split_once(':')?;
    Some((t.parse().ok()?, l.parse().ok()?))
}

/// Every store of the process, by name: outlives every policy generation.
static STORES: LazyLock<Mutex<HashMap<String, Arc<Store>>>> = LazyLock::new(Default::default);

/// Empties every store (between `pocket test` files).
pub fn clear_all() {
    let stores = STORES.lock().unwrap_or_else(|e| e.into_inner());
    for s in stores.values() {
        for shard in &s.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.map.clear();
            shard.bytes = 0;
        }
    }
}

/// Every store made so far.
fn all_stores() -> Vec<Arc<Store>> {
    let stores = STORES.lock().unwrap_or_else(|e| e.into_inner());
    stores.values().cloned().collect()
}

/// The store called `name`, made on first use. `size` (bytes), when
/// given, sets its size, also of a store that exists (the next write
/// evicts down to it). Errors: a new store past [`MAX_STORES`].
pub fn store(name: &str, size: Option<usize>) -> Result<Arc<Store>, String> {
    let mut stores = STORES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = stores.get(name) {
        if let Some(size) = size {
            s.size.store(size, Ordering::Relaxed);
        }
        return Ok(s.clone());
    }
    if stores.len() >= MAX_STORES {
        return Err(format!(
            "cannot make store {name:?}: a process keeps at most {MAX_STORES} stores"
        ));
    }
    let s = Arc::new(Store::new(name, size.unwrap_or(DEFAULT_SIZE)));
    stores.insert(name.to_string(), s.clone());
    Ok(s)
}

/// `{ size = "64 MiB" }`: a size in bytes from a number or a text with a
/// unit (B, KiB, MiB, GiB; nginx's k, m, g alike).
fn size_option(options: Option<Table>) -> mlua::Result<Option<usize>> {
    let Some(options) = options else {
        return Ok(None);
    };
    let bad = |what: String| {
        mlua::Error::RuntimeError(format!(
            "store size {what}: give bytes or a text such as \"64 MiB\", from 64 KiB to 1 GiB"
        ))
    };
    let bytes = match options.get::<Value>("size")? {
        Value::Nil => return Ok(None),
        Value::Integer(n) => usize::try_from(n).map_err(|_| bad(n.to_string()))?,
        Value::String(text) => {
            let text = text.to_string_lossy();
            parse_size(&text).ok_or_else(|| bad(format!("{text:?}")))?
        }
        other => return Err(bad(crate::script::hooks::returned(&other))),
    };
    if !SIZES.contains(&bytes) {
        return Err(bad(format!("of {bytes} bytes")));
    }
    Ok(Some(bytes))
}

fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: usize = digits.parse().ok()?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "k" | "K" | "KiB" => 10,
        "m" | "M" | "MiB" => 20,
        "g" | "G" | "GiB" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

pub struct StoreHandle(Arc<Store>);

fn ttl(v: Option<f64>) -> mlua::Result<Option<Duration>> {
    match v {
        None => Ok(None),
        Some(s) => crate::config::seconds_to_duration(s)
            .filter(|d| !d.is_zero())
            .map(Some)
            .ok_or_else(|| {
                mlua::Error::RuntimeError(format!(
                    "ttl must be seconds, more than 0 and at most 86400, not {s}"
                ))
            }),
    }
}

fn key(store: &str, key: String) -> mlua::Result<String> {
    if key.len() > MAX_VALUE {
        return Err(mlua::Error::RuntimeError(format!(
            "store {store}: key of {} bytes is over the {MAX_VALUE}-byte limit",
            key.len()
        )));
    }
    Ok(key)
}

fn to_stored(store: &str, v: Value) -> mlua::Result<Stored> {
    match v {
        Value::String(s) => {
            let bytes = s.as_bytes().to_vec();
            if bytes.len() > MAX_VALUE {
                return Err(mlua::Error::RuntimeError(format!(
                    "store {store}: value of {} bytes is over the {MAX_VALUE}-byte limit",
                    bytes.len()
                )));
            }
            Ok(Stored::Text(bytes))
        }
        Value::Integer(n) => Ok(Stored::Int(n)),
        Value::Number(n) => Ok(Stored::Num(n)),
        Value::Boolean(b) => Ok(Stored::Bool(b)),
        other => Err(mlua::Error::RuntimeError(format!(
            "store {store}: values are strings, numbers or booleans, not {}",
            crate::script::hooks::returned(&other)
        ))),
    }
}

fn to_lua(lua: &Lua, v: Option<Stored>) -> mlua::Result<Value> {
    Ok(match v {
        None => Value::Nil,
        Some(Stored::Text(b)) => Value::String(lua.create_string(b)?),
        Some(Stored::Int(n)) => Value::Integer(n),
        Some(Stored::Num(n)) => Value::Number(n),
        Some(Stored::Bool(b)) => Value::Boolean(b),
    })
}

use crate::script::errors::arg;

/// `incr`'s `by`: a whole number (nil: 1).
fn count(by: Value) -> mlua::Result<i64> {
    match by {
        Value::Nil => Ok(1),
        Value::Integer(n) => Ok(n),
        // 2.0 is 2; 1.5 or 1e300 is not a count.
        Value::Number(f) if f.fract() == 0.0 && f >= -(2f64.powi(63)) && f < 2f64.powi(63) => {
            Ok(f as i64)
        }
        other => Err(mlua::Error::RuntimeError(format!(
            "bad argument #2 to 'incr': expected a whole number from math.mininteger to \
             math.maxinteger (-2^63 to 2^63-1), got {}",
            crate::script::hooks::returned(&other)
        ))),
    }
}

/// `take`'s rate and burst: numbers above 0 (burst at least 1).
fn bucket(rate: Value, burst: Value) -> mlua::Result<(f64, f64)> {
    let num = |v: &Value| match v {
        Value::Integer(n) => Some(*n as f64),
        Value::Number(f) if f.is_finite() => Some(*f),
        _ => None,
    };
    let rate = num(&rate).filter(|r| *r > 0.0).ok_or_else(|| {
        mlua::Error::RuntimeError(format!(
            "bad argument #2 to 'take': expected a rate above 0 (tokens per second), got {}",
            crate::script::hooks::returned(&rate)
        ))
    })?;
    let burst = num(&burst).filter(|b| *b >= 1.0).ok_or_else(|| {
        mlua::Error::RuntimeError(format!(
            "bad argument #3 to 'take': expected a burst of at least 1, got {}",
            crate::script::hooks::returned(&burst)
        ))
    })?;
    Ok((rate, burst))
}

/// A call's arguments as an operation (bad ones raise, as Lua's own
/// functions do). `set` with a nil value is a delete.
fn op_of(
    lua: &Lua,
    store: &Store,
    method: &str,
    args: mlua::MultiValue,
) -> mlua::Result<redis::Op> {
    use redis::Op;
    let mut args = args.into_iter();
    let mut next = || args.next().unwrap_or(Value::Nil);
    let (a, b, c) = (next(), next(), next());
    let ttl_arg = |v: Value| -> mlua::Result<Option<Duration>> {
        match v {
            Value::Nil => ttl(None),
            Value::Integer(n) => ttl(Some(n as f64)),
            Value::Number(f) => ttl(Some(f)),
            // Lua's own coercion: "60" is 60.
            Value::String(ref t)
                if t.to_str()
                    .ok()
                    .and_then(|t| t.trim().parse::<f64>().ok())
                    .is_some() =>
            {
                ttl(t.to_str().ok().and_then(|t| t.trim().parse::<f64>().ok()))
            }
            other => Err(mlua::Error::RuntimeError(format!(
                "bad argument #3 to '{method}': expected number, got {}",
                crate::script::hooks::returned(&other)
            ))),
        }
    };
    let k: String = arg(lua, method, 1, a)?;
    Ok(match method {
        "get" => Op::Get(k),
        "delete" => Op::Delete(k),
        "set" if b.is_nil() => Op::Delete(k),
        "set" => {
            let k = key(&store.name, k)?;
            let t = ttl_arg(c)?;
            Op::Set(k, to_stored(&store.name, b)?, t)
        }
        "incr" => {
            let k = key(&store.name, k)?;
            let by = count(b)?;
            Op::Incr(k, by, ttl_arg(c)?)
        }
        _ => {
            let k = key(&store.name, k)?;
            let (rate, burst) = bucket(b, c)?;
            Op::Take(k, rate, burst)
        }
    })
}

/// What a call returns to Lua.
fn returned(lua: &Lua, method: &str, reply: redis::Reply) -> mlua::Result<mlua::MultiValue> {
    use redis::Reply;
    let one = |v: Value| Ok(mlua::MultiValue::from_iter([v]));
    match reply {
        Reply::Value(v, _) => one(to_lua(lua, v)?),
        Reply::Int(n) => one(Value::Integer(n)),
        Reply::Done => Ok(mlua::MultiValue::new()),
        Reply::Deleted(d) if method == "delete" => one(Value::Boolean(d)),
        Reply::Deleted(_) => Ok(mlua::MultiValue::new()),
        Reply::Taken(true, _) => one(Value::Boolean(true)),
        Reply::Taken(false, tokens) => Ok(mlua::MultiValue::from_iter([
            Value::Boolean(false),
            Value::Number(0f64.max(1.0 - tokens)),
        ])),
    }
}

/// `take`'s second value when refused is the tokens missing; the seconds
/// to wait need the rate: worked out here, not in every caller.
fn wait_of(out: mlua::MultiValue, op_rate: Option<f64>) -> mlua::MultiValue {
    let mut v: Vec<Value> = out.into_iter().collect();
    if let (Some(rate), Some(Value::Number(missing))) = (op_rate, v.get(1).cloned()) {
        v[1] = Value::Number(missing / rate);
    }
    mlua::MultiValue::from_iter(v)
}

impl UserData for StoreHandle {
    fn add_fields<F: mlua::UserDataFields<Self>>(fields: &mut F) {
        super::names::named(fields, "store");
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        super::names::described(methods, "store", |s| format!("store {:?}", s.0.name));
        // Named one by one (tests/docs_meta.rs reads them here).
        methods.add_method("get", |lua, s, a| local_call(lua, &s.0, "get", a));
        methods.add_method("set", |lua, s, a| local_call(lua, &s.0, "set", a));
        methods.add_method("incr", |lua, s, a| local_call(lua, &s.0, "incr", a));
        methods.add_method("delete", |lua, s, a| local_call(lua, &s.0, "delete", a));
        methods.add_method("take", |lua, s, a| local_call(lua, &s.0, "take", a));
        methods.add_method("name", |_, s, ()| Ok(s.0.name.clone()));
    }
}

/// A store the live policy declares in `stores` (kept in Redis): the same
/// methods, which may wait on Redis within the store's timeout when the
/// hook that calls them may wait (see `store/redis.rs`).
pub struct SharedStoreHandle(Arc<Store>);

impl UserData for SharedStoreHandle {
    fn add_fields<F: mlua::UserDataFields<Self>>(fields: &mut F) {
        super::names::named(fields, "store");
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        super::names::described(methods, "store", |s| format!("store {:?}", s.0.name));
        // Named one by one (tests/docs_meta.rs reads them here).
        methods.add_async_method("get", |lua, s, a| shared_call(lua, s.0.clone(), "get", a));
        methods.add_async_method("set", |lua, s, a| shared_call(lua, s.0.clone(), "set", a));
        methods.add_async_method("incr", |lua, s, a| shared_call(lua, s.0.clone(), "incr", a));
        methods.add_async_method("delete", |lua, s, a| {
            shared_call(lua, s.0.clone(), "delete", a)
        });
        methods.add_async_method("take", |lua, s, a| shared_call(lua, s.0.clone(), "take", a));
        methods.add_method("name", |_, s, ()| Ok(s.0.name.clone()));
    }
}

/// A call on a store only this process keeps.
fn local_call(
    lua: &Lua,
    store: &Store,
    method: &'static str,
    args: mlua::MultiValue,
) -> mlua::Result<mlua::MultiValue> {
    let op = op_of(lua, store, method, args)?;
    let rate = match &op {
        redis::Op::Take(_, r, _) => Some(*r),
        _ => None,
    };
    let reply = redis::run_local(store, &op).map_err(mlua::Error::RuntimeError)?;
    Ok(wait_of(returned(lua, method, reply)?, rate))
}

/// A call on a store kept in Redis: its arguments checked now, whether it
/// may wait decided now (the running Lua thread is the hook's coroutine
/// and the store is on Redis), the rest when polled.
fn shared_call(
    lua: Lua,
    store: Arc<Store>,
    method: &'static str,
    args: mlua::MultiValue,
) -> impl std::future::Future<Output = mlua::Result<mlua::MultiValue>> {
    let op = op_of(&lua, &store, method, args);
    let link = store
        .redis
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // Waits only where the hook runs as a coroutine, and only
    // while the breaker is closed.
    let wait = link.as_ref().is_some_and(|l| l.up())
        && lua
            .app_data_ref::<crate::script::subrequest::CanWait>()
            .is_some_and(|c| c.here(&lua))
        && yieldable(&lua);
    async move {
        let op = shared_value(&store.name, op?)?;
        let rate = match &op {
            redis::Op::Take(_, r, _) => Some(*r),
            _ => None,
        };
        let reply = match link {
            Some(l) if wait => redis::call(l, store, op).await,
            Some(l) => redis::locally(&l, &store, op),
            None => redis::run_local(&store, &op),
        }
        .map_err(mlua::Error::RuntimeError)?;
        Ok(wait_of(returned(&lua, method, reply)?, rate))
    }
}

/// A value as a store kept in Redis keeps it, locally too, so a read
/// gives the same whether Redis or the local copy answers: a whole
/// number written as text (`"42"`) is the integer 42, a float is its text
/// (`"1.5"`), and a boolean is refused (it would come back as the text
/// "false", which is true in an `if`).
fn shared_value(store: &str, op: redis::Op) -> mlua::Result<redis::Op> {
    match op {
        redis::Op::Set(k, Stored::Bool(b), _) => Err(mlua::Error::RuntimeError(format!(
            "store {store}: key {k:?}: a store kept in Redis keeps text and numbers, not booleans              ({b} would read back as the text \"{b}\"); store 1 and 0, or \"yes\" and nil"
        ))),
        redis::Op::Set(k, v, ttl) => Ok(redis::Op::Set(k, redis::as_redis_keeps(v), ttl)),
        op => Ok(op),
    }
}

/// Whether the running Lua code may yield: false inside a function Lua's
/// C code calls (a `string.gsub` replacement, a `table.sort` comparator,
/// a metamethod), where a wait would fail with "attempt to yield across
/// a C-call boundary". Such a call is served as from a hook that cannot
/// wait (local copy; a write also sent without waiting).
fn yieldable(lua: &Lua) -> bool {
    // SAFETY: `state()` is the running thread's, valid during this call;
    // lua_isyieldable only reads it.
    lua.exec_raw_lua(|raw| unsafe { mlua::ffi::lua_isyieldable(raw.state()) != 0 })
}

/// The stores the policy a VM runs declares in `stores` (set before its
/// main chunk runs): `pocket.store(name)` of one of them is shared.
pub struct Declared(pub Vec<String>);

pub fn register(lua: &Lua, pocket: &Table) -> mlua::Result<()> {
    pocket.set(
        "store",
        lua.create_function(|lua, (name, options): (String, Option<Table>)| {
            if name.is_empty() || name.len() > MAX_NAME {
                return Err(mlua::Error::RuntimeError(format!(
                    "a store needs a name of 1 to {MAX_NAME} bytes, not {}",
                    name.len()
                )));
            }
            let size = size_option(options)?;
            let store = store(&name, size).map_err(mlua::Error::RuntimeError)?;
            let shared = lua
                .app_data_ref::<Declared>()
                .is_some_and(|d| d.0.contains(&name));
            if shared {
                lua.create_userdata(SharedStoreHandle(store))
            } else {
                lua.create_userdata(StoreHandle(store))
            }
        })?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_incr_delete_and_expiry() {
        let s = Store::new("t", DEFAULT_SIZE);
        s.set("a".into(), Stored::Text(b"x".to_vec()), None)
            .unwrap();
        assert_eq!(s.get("a"), Some(Stored::Text(b"x".to_vec())));
        assert_eq!(s.incr("n".into(), 2, None), Ok(2));
        assert_eq!(s.incr("n".into(), 3, None), Ok(5));
        assert!(s.incr("a".into(), 1, None).is_err());
        assert!(s.delete("a"));
        assert_eq!(s.get("a"), None);
        s.set(
            "gone".into(),
            Stored::Bool(true),
            Some(Duration::from_nanos(1)),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(s.get("gone"), None);
    }

    #[test]
    fn a_full_store_evicts_the_least_recently_used() {
        let s = Store::new("t", 64 << 10);
        s.set("keep".into(), Stored::Int(1), None).unwrap();
        for i in 0..100_000 {
            s.set(format!("k{i}"), Stored::Text(vec![b'x'; 100]), None)
                .unwrap();
            // Read often, "keep" stays among the recently used.
            if i % 16 == 0 {
                assert!(s.get("keep").is_some(), "evicted at {i}");
            }
        }
        assert!(s.used() <= 64 << 10, "used {}", s.used());
        assert!(s.evicted() > 90_000);
        assert!(s.get("k99999").is_some());
        assert!(s.get("k0").is_none());
        let big = Stored::Text(vec![b'x'; 8 << 10]);
        assert!(s.set("big".into(), big, None).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64 MiB"), Some(64 << 20));
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1 GB"), None);
    }
}
