//! What a request, a connection and a worker are, as facts every layer
//! reads: a request's id, a connection's TLS, a worker's stamp of the hook
//! it is in. Plain data, no behaviour of its own.
//!
//! The layers, top to bottom: `server/` accepts connections and hands them
//! to `proxy/`, which runs a request's phases and calls the hooks in
//! `script/`. Each imports only from below. These facts are made in one
//! layer and read in another (the request id is made by a worker, read by
//! the script API and the log; the TLS facts are made by the handshake in
//! `server/`, read by `req.tls`), so they live here, below them all, and
//! no layer has to reach up to name them.

mod drain;
mod request_id;
mod tls_info;

pub use drain::{Drain, Open};
pub use request_id::RequestId;
pub use tls_info::TlsInfo;
