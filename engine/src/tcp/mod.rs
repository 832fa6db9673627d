//! TCP mode (`mode = "tcp"` listeners and pools, HAProxy's `mode tcp`):
//! each client connection goes whole to one server. Its phases, in order:
//!
//! 1. Accept (server/worker.rs), and on an `accept_proxy` listener read
//!    the PROXY header that names the client.
//! 2. On a listener whose `on_connect` reads `conn.sni` or `conn.alpn`,
//!    peek the client's TLS ClientHello (never decrypted), waiting at most
//!    `timeouts.client_hello`.
//! 3. `on_connect` (Lua): a `tcp` pool, `pocket.reject(reason)`, or nil
//!    (the listener's pool).
//! 4. Pick a server with the pool's balance and connect within
//!    `timeouts.connect`; a server that refuses is skipped for the next.
//! 5. Copy bytes both ways with backpressure until both sides are done,
//!    passing a half-close on; `timeouts.idle` ends a silent connection.
//!    The access log line is written when the connection ends.
//!
//! SKELETON (issue 16): filled in by the TCP path work.

pub mod client_hello;
