//! One request's record: what came in, where it went, what it cost, and who
//! ended it. Filled in phase by phase; read by the access log and the
//! metrics when the exchange ends.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::proxy::RequestId;

/// Who ended the exchange, and in which phase: HAProxy's two-letter
/// termination state (its log format's `%ts`), first letter the cause, second
/// the phase. `--` is a normal end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Termination {
    /// `-` normal, `C` client aborted, `S` server aborted or errored,
    /// `P` proxy (Pocket refused or failed), `L` local response by the
    /// script, `R` resource limit (maxconn, memory, budget), `c` client
    /// timeout, `s` server timeout.
    pub cause: u8,
    /// `-` none, `R` waiting for the request head, `C` connecting to the
    /// server, `H` waiting for the response head, `D` data transfer
    /// (either body).
    pub phase: u8,
}

impl Termination {
    pub const NORMAL: Termination = Termination {
        cause: b'-',
        phase: b'-',
    };
}

/// One retry: the server that failed and why (`connect refused`,
/// `no response`, ...).
#[derive(Debug, Clone)]
pub struct Retry {
    pub server: Arc<str>,
    pub cause: &'static str,
}

/// One request's record. Times are milliseconds since the exchange began
/// (`None`: that phase was not reached).
#[derive(Debug, Clone)]
pub struct Exchange {
    pub id: RequestId,
    /// When the request head was received, as wall-clock milliseconds
    /// since the Unix epoch (the log's `time`).
    pub started_unix_ms: u64,
    pub client: SocketAddr,
    pub listener: Arc<str>,
    /// The policy generation the request ran on.
    pub generation: u64,
    pub method: http::Method,
    pub host: Option<http::HeaderValue>,
    /// Path and query as received.
    pub target: http::Uri,
    pub version: http::Version,
    /// Status sent to the client (0 if none was sent).
    pub status: u16,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// The pool and server that answered (or were last tried).
    pub pool: Option<Arc<str>>,
    pub server: Option<Arc<str>>,
    pub retries: Vec<Retry>,
    /// Time spent in Lua hooks for this request, in microseconds.
    pub hooks_us: u64,
    pub connect_ms: Option<f64>,
    pub first_byte_ms: Option<f64>,
    pub total_ms: f64,
    pub termination: Termination,
    /// Fields the script added with `req:log_field(name, value)`.
    pub script_fields: Vec<(String, String)>,
    /// A compact decision trace (`pocket explain`'s), when asked for.
    pub trace: Option<String>,
}
