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

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mlua::{Lua, Table, UserData, UserDataMethods, Value};

const SHARDS: usize = 16;
/// Largest value a store keeps (bigger is a mistake, not a cache).
const MAX_VALUE: usize = 64 * 1024;
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
}

/// One named store.
pub struct Store {
    name: String,
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Store {
    fn new(name: &str) -> Store {
        Store {
            name: name.to_string(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: Default::default(),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &str) -> Option<Stored> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        match shard.map.get(key) {
            Some(e) if e.live(now) => Some(e.value.clone()),
            Some(_) => {
                shard.map.remove(key);
                None
            }
            None => None,
        }
    }

    fn set(&self, key: String, value: Stored, ttl: Option<Duration>) {
        let now = Instant::now();
        let mut shard = self.shard(&key);
        shard.writes = shard.writes.wrapping_add(1);
        if shard.writes.is_multiple_of(SWEEP_EVERY) {
            shard.map.retain(|_, e| e.live(now));
        }
        shard.map.insert(
            key,
            Entry {
                value,
                expires: ttl.map(|t| now + t),
            },
        );
    }

    /// Adds `by` to an integer (missing or expired counts as 0). The TTL is
    /// set when the key is created, so a window does not slide on every hit.
    fn incr(&self, key: String, by: i64, ttl: Option<Duration>) -> Result<i64, String> {
        let now = Instant::now();
        let mut shard = self.shard(&key);
        shard.writes = shard.writes.wrapping_add(1);
        if let Some(e) = shard.map.get_mut(&key).filter(|e| e.live(now)) {
            let Stored::Int(n) = e.value else {
                return Err(format!(
                    "store {}: key {key:?} does not hold an integer",
                    self.name
                ));
            };
            let next = n.saturating_add(by);
            e.value = Stored::Int(next);
            return Ok(next);
        }
        shard.map.insert(
            key,
            Entry {
                value: Stored::Int(by),
                expires: ttl.map(|t| now + t),
            },
        );
        Ok(by)
    }

    fn delete(&self, key: &str) -> bool {
        self.shard(key).map.remove(key).is_some()
    }
}

/// Every store of the process, by name: outlives every policy generation.
static STORES: LazyLock<Mutex<HashMap<String, Arc<Store>>>> = LazyLock::new(Default::default);

/// Empties every store (between `pocket test` files).
pub fn clear_all() {
    let stores = STORES.lock().unwrap_or_else(|e| e.into_inner());
    for s in stores.values() {
        for shard in &s.shards {
            shard.lock().unwrap_or_else(|e| e.into_inner()).map.clear();
        }
    }
}

pub fn store(name: &str) -> Arc<Store> {
    let mut stores = STORES.lock().unwrap_or_else(|e| e.into_inner());
    stores
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(Store::new(name)))
        .clone()
}

pub struct StoreHandle(Arc<Store>);

fn ttl(v: Option<f64>) -> mlua::Result<Option<Duration>> {
    match v {
        None => Ok(None),
        Some(s) => crate::config::seconds_to_duration(s)
            .filter(|d| !d.is_zero())
            .map(Some)
            .ok_or_else(|| {
                mlua::Error::RuntimeError(format!("ttl must be seconds from 0 to 86400, not {s}"))
            }),
    }
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
            "store {store}: values are strings, numbers or booleans, not a {}",
            other.type_name()
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

impl UserData for StoreHandle {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("get", |lua, s, key: String| to_lua(lua, s.0.get(&key)));
        methods.add_method(
            "set",
            |_, s, (key, value, t): (String, Value, Option<f64>)| {
                if value.is_nil() {
                    s.0.delete(&key);
                    return Ok(());
                }
                let v = to_stored(&s.0.name, value)?;
                s.0.set(key, v, ttl(t)?);
                Ok(())
            },
        );
        methods.add_method(
            "incr",
            |_, s, (key, by, t): (String, Option<i64>, Option<f64>)| {
                s.0.incr(key, by.unwrap_or(1), ttl(t)?)
                    .map_err(mlua::Error::RuntimeError)
            },
        );
        methods.add_method("delete", |_, s, key: String| Ok(s.0.delete(&key)));
        methods.add_method("name", |_, s, ()| Ok(s.0.name.clone()));
    }
}

pub fn register(lua: &Lua, pocket: &Table) -> mlua::Result<()> {
    pocket.set(
        "store",
        lua.create_function(|_, name: String| {
            if name.is_empty() {
                return Err(mlua::Error::RuntimeError("a store needs a name".into()));
            }
            Ok(StoreHandle(store(&name)))
        })?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_incr_delete_and_expiry() {
        let s = Store::new("t");
        s.set("a".into(), Stored::Text(b"x".to_vec()), None);
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
        );
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(s.get("gone"), None);
    }
}
