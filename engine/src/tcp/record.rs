//! A TCP connection's record: the access log line and the metrics of one
//! whole client connection, written when it ends (however its task ends:
//! the record lives in an [`Open`], whose drop writes it).
//!
//! Termination states (HAProxy's `%ts` in `mode tcp`): `--` both sides
//! closed normally; `PR` refused by the proxy before any server was
//! tried (`pocket.reject`, an `on_connect` error, no pool); `SC` no server
//! could be connected to (refused, or none up); `sC` the last connect
//! timed out; `CD`/`SD` a side broke (reset) while data moved; `cD`/`sD`
//! nothing moved for `timeouts.idle` (the client's or the server's
//! silence); `KD` killed while data moved (the end of a drain's grace
//! period); `KC` killed while connecting (likewise); `CR` ended before
//! `on_connect` decided (the phase that may wait for the client); `cR`
//! no whole TLS ClientHello within `timeouts.client_hello` (an
//! `on_connect` that reads `conn.sni`).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::context::RequestId;
use crate::observe::exchange::Open;
use crate::observe::{Exchange, Termination};
use crate::script::WorkerScript;

/// Opens the record of a connection accepted on `listener` from `peer`:
/// the clock starts now. Its termination starts as `CR` (only the
/// client going away can end it before a later phase moves it on).
pub fn open(
    script: &WorkerScript,
    id: RequestId,
    peer: SocketAddr,
    listener: Arc<str>,
) -> Box<Open> {
    Open::new(Exchange {
        id,
        started_unix_ms: 0,
        client: peer,
        listener,
        generation: script.generation,
        method: http::Method::GET,
        bad_request: false,
        host: None,
        target: http::Uri::default(),
        version: http::Version::HTTP_11,
        status: 0,
        bytes_in: 0,
        bytes_out: 0,
        pool: None,
        server: None,
        retries: Vec::new(),
        hooks_us: 0,
        connect_ms: None,
        first_byte_ms: None,
        total_ms: 0.0,
        termination: Termination::of(b'C', b'R'),
        script_fields: Vec::new(),
        trace: None,
        log: script.access_log.clone(),
        tls: None,
        tcp: true,
    })
}
