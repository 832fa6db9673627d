//! `pocket explain`: why a request goes where it goes.
//!
//! The decision code ([`crate::proxy::decide`], [`crate::lb::Pool::pick`])
//! takes a [`Tracer`]. The proxy passes [`NoTrace`], whose `ON` is `false`:
//! every `if T::ON { ... }` at a branch point is removed by the compiler,
//! so a request that is not explained costs what it cost before. `pocket
//! explain` passes a [`Trace`], which records each step; the same record
//! has a one-line form ([`Trace::compact`]) for logs and headers. The proxy
//! passes a `Trace` too for a request that asks with `X-Pocket-Explain`
//! from an `admin.explain_from` address ([`live`]).

mod candidates;
pub mod cli;
pub mod connection;
pub mod live;
mod request;
pub mod routes;
mod trace;

pub use candidates::{of as candidates, Candidate, Skip};
pub use trace::{HookCall, Step, Trace};

use std::time::Duration;

/// Receives the steps of one request's decision. Every method has an empty
/// default; callers guard their calls (and the work of building the
/// arguments) with `if T::ON`, so [`NoTrace`] costs nothing.
pub trait Tracer {
    /// Whether anything is recorded (a constant: branches on it fold away).
    const ON: bool;

    /// A hook ran: its name, how long it took, what it returned (as the
    /// user would write it: `"app"`, `a 200 response`, `nil`).
    fn hook(&mut self, _name: &str, _pool: Option<&str>, _took: Duration, _returned: String) {}

    /// The request was answered without a pool: a refusal by Pocket or a
    /// response made by the script.
    fn answered(&mut self, _status: u16, _by_script: bool, _why: &str) {}

    /// A connection on a `tcp` listener was closed before any server
    /// connection: by the script (`pocket.reject`) or by Pocket (no pool,
    /// `on_connect` failed, no server can take it).
    fn closed(&mut self, _by_script: bool, _why: &str) {}

    /// The pool that serves the request and why it was chosen
    /// (`on_request`, the listener's default, a bypass, a fallback).
    fn pool(&mut self, _name: &str, _algorithm: &'static str, _why: &str) {}

    /// What a `hash` pool hashed (`cookie sid = "42"`), or why it had no
    /// key (then the pool balances by round robin).
    fn hash_key(&mut self, _what: String, _value: Option<String>) {}

    /// One pick: every server of the pool with why it was or was not
    /// chosen.
    fn pick(&mut self, _pool: &str, _candidates: Vec<Candidate>, _chosen: Option<usize>) {}

    /// The server picked failed before answering (`connect failed`, `no
    /// response`) and the request goes on to the next pick (the proxy
    /// only: `pocket explain` has no network).
    fn failed(&mut self, _server: &str, _cause: &str) {}
}

/// The proxy's tracer: records nothing, costs nothing.
pub struct NoTrace;

impl Tracer for NoTrace {
    const ON: bool = false;
}
