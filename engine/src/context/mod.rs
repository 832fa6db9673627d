//! What a request, a connection and a worker are, as facts more than one
//! layer reads: a request's id ([`RequestId`]), what a connection's TLS
//! handshake agreed ([`TlsInfo`]), a worker's count of open connections
//! for drain ([`Drain`]), the stamp of the hook call a worker is in, which
//! the watchdog reads ([`stamp`]). Plain data, no I/O, no policy.
//!
//! The layers, top to bottom: `server/` accepts connections and hands them
//! to `proxy/`, which runs a request's phases and calls the hooks in
//! `script/`. Each imports only from below. These facts are made in one
//! layer and read in another (a request id is made by the worker's state
//! in `proxy/`, read by the script API and the log; the TLS facts are
//! made by the handshake in `server/`, read by `req.tls`), so they live
//! here, below them all, and no layer reaches up to name them.

mod drain;
mod request_id;
pub mod stamp;
mod tls_info;

pub use drain::{Drain, Open};
pub use request_id::RequestId;
pub use tls_info::TlsInfo;
