//! One request's record: what came in, where it went, what it cost, and who
//! ended it. Filled in phase by phase; read by the access log and the
//! metrics when the exchange ends.
//!
//! The record travels in an [`Open`]: created when the request head is in
//! (`proxy::handle`), handed from phase to phase, then moved into the
//! response body. Dropping the `Open`, wherever that happens (the body's
//! end, the client going away, the request's task being dropped), ends the
//! exchange: [`crate::observe::exchange_ended`] runs exactly once.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use crate::context::RequestId;
use crate::observe::access_log::Sink;
use crate::proxy::body::Progress;

/// Who ended the exchange, and in which phase: HAProxy's two-letter
/// termination state (its log format's `%ts`, "session state at
/// disconnection"), first letter the cause, second the phase. `--` is a
/// normal end.
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
    pub const NORMAL: Termination = Termination::of(b'-', b'-');

    pub const fn of(cause: u8, phase: u8) -> Termination {
        Termination { cause, phase }
    }

    /// The two letters, as the logs show them.
    #[inline]
    pub fn letters(&self) -> [u8; 2] {
        [self.cause, self.phase]
    }
}

impl std::fmt::Display for Termination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.cause as char, self.phase as char)
    }
}

/// One failed attempt: the pool and server that failed and why
/// (`connect failed`, `no response`, ...), and whether another attempt
/// followed it (a retry; the last failure of a request that got no answer
/// was not retried).
#[derive(Debug, Clone)]
pub struct Retry {
    /// The pool the attempt was in (a fallback moves a request to another
    /// pool: the exchange's `pool` is the last one).
    pub pool: Arc<str>,
    pub server: Arc<str>,
    pub cause: &'static str,
    /// Another attempt began after this one (set when it begins).
    pub retried: bool,
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
    /// The request head could not be read (malformed, or over the size
    /// limit) and was answered 400/414/431 before any request existed: no
    /// method, host or path to log; the line says `<BADREQ>`, HAProxy's
    /// word for it.
    pub bad_request: bool,
    /// The `Host` header as received (HTTP/2: None, the target's
    /// authority says it).
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
    /// From the start until a connection to the server was in hand (a
    /// pooled one: about 0).
    pub connect_ms: Option<f64>,
    /// From the start until the server's response head was in.
    pub first_byte_ms: Option<f64>,
    pub total_ms: f64,
    pub termination: Termination,
    /// Fields the script added with `req:log_field(name, value)`.
    pub script_fields: Vec<(String, String)>,
    /// A compact decision trace (`pocket explain`'s), when asked for.
    pub trace: Option<String>,
    /// Where the line goes: the policy's access log (None: off).
    pub log: Option<Arc<Sink>>,
    /// The connection's TLS, when logged (the JSON line's `tls_version`
    /// and `sni`); None on plain HTTP or with no access log.
    pub tls: Option<Arc<crate::context::TlsInfo>>,
    /// A whole TCP-mode connection (tcp/), not an HTTP request: no
    /// method, host, path or status; `bytes_in`/`bytes_out` are the bytes
    /// client to server and server to client.
    pub tcp: bool,
}

/// An exchange still going. `termination` holds what is logged if it is
/// dropped now (e.g. `CH` while waiting for the server's head: the only
/// way to be dropped then is the client going away); each phase moves it
/// on, and a normal end sets `--`.
pub struct Open {
    pub ex: Exchange,
    start: Instant,
    /// The policy writes an access log: the phases' times are read from
    /// the clock. Without one only the start and the end are (the latency
    /// histogram's), and a phase reached is marked `Some(0.0)`.
    logged: bool,
    /// The request body's progress, which counts the bytes read.
    pub progress: Option<Rc<Progress>>,
    /// When the exchange ended, if the phase that ended it read the
    /// clock already ([`Open::end_at`]): the drop reads it otherwise.
    end: Option<Instant>,
}

impl Open {
    /// Starts the clock; a logged exchange gets its wall-clock time too.
    pub fn new(ex: Exchange) -> Box<Open> {
        Open::build(|| ex)
    }

    /// [`Open::new`] of the record `make` builds, built in its box: the
    /// box is allocated first, so the record (a few hundred bytes) need
    /// not be built on the stack and copied in.
    #[inline(always)]
    pub fn build(make: impl FnOnce() -> Exchange) -> Box<Open> {
        let start = Instant::now();
        let mut open = Box::write(
            Box::new_uninit(),
            Open {
                ex: make(),
                start,
                logged: false,
                progress: None,
                end: None,
            },
        );
        if open.ex.log.is_some() {
            open.logged = true;
            open.ex.started_unix_ms = unix_ms_at(start);
        }
        open
    }

    /// When the exchange began (the request's head was in).
    #[inline]
    pub fn started(&self) -> Instant {
        self.start
    }

    /// Milliseconds since the exchange began.
    #[inline]
    pub fn elapsed_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    /// A phase was reached (connected, the server's head in): the time
    /// since the start if a log will show it, else `0.0` without a clock
    /// read (the metrics only ask whether the phase was reached).
    #[inline]
    pub fn reached(&self) -> Option<f64> {
        Some(if self.logged { self.elapsed_ms() } else { 0.0 })
    }

    /// A server was picked for the next try of `pool`: the try before (if
    /// any) is marked retried, the record names this pool and server, and
    /// the phase is the connect (`CC`). Both request paths call it.
    pub fn trying(&mut self, pool: &Arc<str>, server: &Arc<str>) {
        if let Some(failed) = self.ex.retries.last_mut() {
            failed.retried = true;
        }
        self.ex.pool = Some(pool.clone());
        self.ex.server = Some(server.clone());
        self.set(b'C', b'C');
    }

    /// The exchange's last byte went out at `now` (a time the caller has
    /// just read for its own use): its total is counted to then, without
    /// another clock read when the record is dropped.
    #[inline]
    pub fn end_at(&mut self, now: Instant) {
        self.end = Some(now);
    }

    #[inline]
    pub fn set(&mut self, cause: u8, phase: u8) {
        self.ex.termination = Termination::of(cause, phase);
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        // Only the log and the server latency histogram (a server that
        // answered) read the total.
        if self.logged || self.ex.first_byte_ms.is_some() {
            self.ex.total_ms = match self.end {
                Some(end) => end.saturating_duration_since(self.start).as_secs_f64() * 1000.0,
                None => self.elapsed_ms(),
            };
        }
        if let Some(p) = &self.progress {
            self.ex.bytes_in = p.received();
        }
        crate::observe::exchange_ended(&self.ex);
    }
}

/// Wall-clock milliseconds since the Unix epoch, for the log's `time`:
/// a wall-clock reading taken at most once a second per thread, moved on
/// by the monotonic clock the caller has just read (`now`), so a request
/// costs no second clock read. A step of the system clock shows within a
/// second.
#[inline]
pub fn unix_ms_at(now: Instant) -> u64 {
    use std::cell::Cell;
    thread_local! {
        static BASE: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
    }
    BASE.try_with(|b| {
        if let Some((at, ms)) = b.get() {
            if let Some(d) = now.checked_duration_since(at) {
                if d.as_secs() < 1 {
                    return ms + d.as_millis() as u64;
                }
            }
        }
        let ms = unix_ms();
        b.set(Some((now, ms)));
        ms
    })
    .unwrap_or_else(|_| unix_ms())
}

/// Wall-clock milliseconds since the Unix epoch.
#[inline]
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
