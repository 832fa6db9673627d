//! Pools, servers, how one server is picked for a request, and the shared
//! state (health, load) every worker reads without locks.

mod balance;
mod pool;
mod round_robin;
mod state;

pub use balance::{hash_bytes, Algorithm};
pub use pool::{
    CheckKind, CheckSpec, Expect, HashKey, Passive, Pool, PoolSettings, Server, Timeouts,
};
pub use round_robin::RoundRobin;
pub use state::{now_ms, AdminState, Health, HealthEvent, HealthKey, ServerState, StateRegistry};
