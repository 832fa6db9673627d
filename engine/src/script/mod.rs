//! The Lua side of Pocket: sandboxed VMs with limits, the `pocket` API that
//! scripts call, and the hooks each worker caches.

pub mod api;
mod budget_alloc;
mod budget_hook;
mod budget_timer;
pub mod errors;
pub mod hooks;
pub mod memory;
pub(crate) mod sandbox;
pub mod stdlib;
pub mod subrequest;
pub mod vm;

// Natives that keep to the time budget (installed by vm.rs).
mod guarded;
mod patterns;
mod rep;

pub use errors::describe_lua_error;
pub use hooks::{ConnectVerdict, WorkerScript};
pub use vm::{Limits, Vm};
