//! Pocket: a compact load balancer and reverse proxy whose decisions are
//! written in Lua.
//!
//! The engine is a map of rooms, each with one job:
//! - [`config`]: load a policy script into a validated [`config::Policy`].
//! - [`script`]: the Lua side: sandboxed VMs, limits, the `pocket` API.
//! - [`server`]: worker threads, listeners, the accept loop.
//! - [`proxy`]: the request path, phase by phase.
//! - [`context`]: what a request, a connection and a worker are, below
//!   `server`, `proxy` and `script` (which import downwards; the one
//!   edge still up is named in docs/architecture.md, "Map").
//! - [`wire`]: HTTP/1 over bytes, and the header rules every layer applies.
//! - [`lb`]: pools, servers and how one is picked.
//! - [`dns`]: servers written as DNS names, resolved at load and, with a
//!   pool's `resolve`, again while it runs.
//! - [`origin`]: the small built-in origin server used by the demo and labs.
//! - [`admin`]: the admin listener: stats page, JSON API, `/metrics`.

pub mod admin;
pub mod config;
pub mod context;
pub mod demo;
pub mod dns;
pub mod explain;
pub mod health;
pub mod lab;
pub mod lb;
pub mod observe;
pub mod origin;
pub mod policy_tests;
mod policy_tests_conn;
pub mod proxy;
pub mod relay;
pub mod reload;
pub mod script;
pub mod server;
pub mod tcp;
pub mod wire;
pub mod words;
