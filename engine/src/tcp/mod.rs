//! TCP mode (`mode = "tcp"` listeners and pools, HAProxy's `mode tcp`):
//! each client connection goes whole to one server. Its phases, in order,
//! each in its own file:
//!
//! 1. Accept (server/worker.rs `accept_loop`, which hands a tcp
//!    listener's connection, with its connection slot, to [`serve`]); on
//!    an `accept_proxy` listener read the PROXY header that names the
//!    client ([`serve`], server/proxy_protocol.rs).
//! 2. On a listener whose `on_connect` reads `conn.sni` or `conn.alpn`,
//!    peek the client's TLS ClientHello (never decrypted), waiting at most
//!    `timeouts.client_hello` (script `on_connect_tcp`).
//! 3. `on_connect` (Lua): a `tcp` pool, `pocket.reject(reason)`, or nil
//!    (the listener's pool) ([`serve`]).
//! 4. Pick a server with the pool's balance and connect within
//!    `timeouts.connect`; a server that refuses is marked (passive
//!    health) and skipped for the next, up to `retries`, then the pool's
//!    fallback ([`connect`]; the hash key and the pool's `balance`
//!    function's choice, shared with `pocket explain`: [`pool_choice`]). A client that leaves meanwhile ends it
//!    ([`client_left`]).
//! 5. Copy bytes both ways with backpressure until both sides are done,
//!    passing a half-close on; `timeouts.idle` ends a silent connection
//!    (the shared copier, crate::relay).
//! 6. The access log line and the metrics, when the connection ends, with
//!    HAProxy's termination state ([`record`]).
//!
//! A reload leaves an established connection on its generation: it keeps
//! its server, its `timeouts.idle` and its in-flight count, not the
//! generation's script or pools, which it lets go once connected.
//! SIGTERM's drain lets it run until the grace period ends, then closes
//! it (`KD`).

pub mod client_hello;
pub mod client_left;
pub mod connect;
pub mod pool_choice;
pub mod record;
pub mod serve;

pub use serve::serve;
