//! Pools, servers and how one server is picked for a request.

mod pool;
mod round_robin;
mod state;

pub use pool::{Pool, Server, Timeouts};
pub use round_robin::RoundRobin;
pub use state::{ServerState, StateRegistry};
