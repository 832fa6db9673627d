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

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
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
}

impl Store {
    fn new(name: &str, size: usize) -> Store {
        Store {
            name: name.to_string(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: Default::default(),
            size: AtomicUsize::new(size),
            evicted: AtomicU64::new(0),
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

impl UserData for StoreHandle {
    fn add_fields<F: mlua::UserDataFields<Self>>(fields: &mut F) {
        super::names::named(fields, "store");
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        super::names::described(methods, "store", |s| format!("store {:?}", s.0.name));
        methods.add_method("get", |lua, s, key: Value| {
            let key: String = arg(lua, "get", 1, key)?;
            to_lua(lua, s.0.get(&key))
        });
        methods.add_method(
            "set",
            |lua, s, (key, value, t): (Value, Value, Option<f64>)| {
                let key: String = arg(lua, "set", 1, key)?;
                if value.is_nil() {
                    s.0.delete(&key);
                    return Ok(());
                }
                let key = self::key(&s.0.name, key)?;
                let v = to_stored(&s.0.name, value)?;
                s.0.set(key, v, ttl(t)?).map_err(mlua::Error::RuntimeError)
            },
        );
        methods.add_method(
            "incr",
            |lua, s, (key, by, t): (Value, Value, Option<f64>)| {
                let key: String = arg(lua, "incr", 1, key)?;
                let key = self::key(&s.0.name, key)?;
                let by = match by {
                    Value::Nil => 1,
                    Value::Integer(n) => n,
                    // 2.0 is 2; 1.5 or 1e300 is not a count.
                    Value::Number(f) if f.fract() == 0.0 && f >= -(2f64.powi(63)) && f < 2f64.powi(63) => f as i64,
                    other => {
                        return Err(mlua::Error::RuntimeError(format!(
                            "bad argument #2 to 'incr': expected a whole number from math.mininteger to \
                             math.maxinteger (-2^63 to 2^63-1), got {}",
                            crate::script::hooks::returned(&other)
                        )))
                    }
                };
                s.0.incr(key, by, ttl(t)?)
                    .map_err(mlua::Error::RuntimeError)
            },
        );
        methods.add_method("delete", |lua, s, key: Value| {
            let key: String = arg(lua, "delete", 1, key)?;
            Ok(s.0.delete(&key))
        });
        methods.add_method("name", |_, s, ()| Ok(s.0.name.clone()));
    }
}

pub fn register(lua: &Lua, pocket: &Table) -> mlua::Result<()> {
    pocket.set(
        "store",
        lua.create_function(|_, (name, options): (String, Option<Table>)| {
            if name.is_empty() || name.len() > MAX_NAME {
                return Err(mlua::Error::RuntimeError(format!(
                    "a store needs a name of 1 to {MAX_NAME} bytes, not {}",
                    name.len()
                )));
            }
            let size = size_option(options)?;
            store(&name, size)
                .map(StoreHandle)
                .map_err(mlua::Error::RuntimeError)
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
