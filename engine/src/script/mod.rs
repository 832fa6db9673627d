//! The Lua side of Pocket: sandboxed VMs with limits, the `pocket` API that
//! scripts call, and the hooks each worker caches.

pub mod api;
pub mod errors;
mod guarded;
pub mod hooks;
mod patterns;
mod rep;
pub mod stdlib;
pub mod vm;

pub use errors::describe_lua_error;
pub use hooks::WorkerScript;
pub use vm::{Limits, Vm};
