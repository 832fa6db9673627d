//! Phase 4's clock: waiting for the server's answer while the request
//! body may still be streaming. Each phase has its own inactivity timeout
//! and the one that runs is the one whose turn it is (see
//! [`Progress`]):
//!
//! | phase | timeout | answer |
//! |---|---|---|
//! | client still sending the body | listener `timeouts.body`, since its last piece | 408, connection closed |
//! | server not taking the body | pool `timeouts.idle`, since the last piece it took | 504 |
//! | body sent, no response head yet | pool `timeouts.response`, since the last piece | 504 |
//! | the whole exchange | pool `timeouts.total`, since routing (optional) | 504 |
//!
//! So an upload slower than `response` works as long as it keeps moving,
//! as in nginx and HAProxy.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use http::{Response, StatusCode};
use tokio::time::Instant;

use super::body::{Progress, ResponseBody, Turn};
use super::local;
use crate::context::RequestId;
use crate::lb::{Pool, Server, Timeouts};

/// Which timeout ran out.
#[derive(Debug, Clone, Copy)]
pub enum Late {
    /// The client stopped sending its body for this long.
    Client(Duration),
    /// The server took no piece of the body for this long.
    ServerReading(Duration),
    /// The server sent no response head this long after the request.
    ServerAnswering(Duration),
    /// The whole exchange took longer than the pool's `total`.
    Total(Duration),
}

/// Waits for `answer` (the response head) within the timeout of whichever
/// phase the exchange is in. `progress`: None for a request without a
/// body, which is whole as soon as it is sent. `client_body`: the
/// listener's `timeouts.body`. `deadline`: the pool's total, if any.
pub async fn wait_answer<F: Future>(
    answer: F,
    progress: Option<&Progress>,
    t: &Timeouts,
    client_body: Duration,
    deadline: Option<Instant>,
) -> Result<F::Output, Late> {
    let total = t.total.unwrap_or(Duration::MAX);
    let due = || -> (Instant, Late) {
        let (at, late) = match progress.map(Progress::turn) {
            None => (
                Instant::now() + t.response,
                Late::ServerAnswering(t.response),
            ),
            Some(Turn::Client(since)) => (since + client_body, Late::Client(client_body)),
            Some(Turn::ServerReading(since)) => (since + t.idle, Late::ServerReading(t.idle)),
            Some(Turn::ServerAnswering(since)) => {
                (since + t.response, Late::ServerAnswering(t.response))
            }
        };
        match deadline {
            Some(d) if d < at => (d, Late::Total(total)),
            _ => (at, late),
        }
    };
    let (at, late) = due();
    // Without a body there is one phase only: a plain timeout.
    let Some(progress) = progress else {
        return tokio::time::timeout_at(at, answer).await.map_err(|_| late);
    };
    // The body streams: whose turn it is changes, and with it the deadline.
    // The body wakes this task when the turn changes hands.
    tokio::pin!(answer);
    let sleep = tokio::time::sleep_until(at);
    tokio::pin!(sleep);
    let mut armed = at;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = answer.as_mut().poll(cx) {
            return Poll::Ready(Ok(r));
        }
        progress.watch(cx.waker());
        loop {
            let (at, late) = due();
            if at <= Instant::now() {
                return Poll::Ready(Err(late));
            }
            if at != armed {
                sleep.as_mut().reset(at);
                armed = at;
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    })
    .await
}

/// The kernel gave up on the server connection: unacknowledged data for
/// longer than its TCP_USER_TIMEOUT (the pool's `idle`), a server that
/// stopped reading or a host gone. Found in the error's sources.
pub fn kernel_timed_out(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::TimedOut;
        }
        source = s.source();
    }
    false
}

/// The answer to a request whose timeout ran out, logged; a server's
/// silence counts against it (passive checks), a client's does not.
pub fn answer_late(
    late: Late,
    pool: &Pool,
    server: &Server,
    id: RequestId,
) -> Response<ResponseBody> {
    let (status, why) = match late {
        Late::Client(d) => (
            StatusCode::REQUEST_TIMEOUT,
            format!("the client sent no more of its request body for {d:?} (listener timeouts.body)"),
        ),
        Late::ServerReading(d) => {
            server.state.traffic_failed(pool.passive.after, "request body not read");
            (
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "server {} of pool \"{}\" took none of the request body for {d:?} (timeouts.idle)",
                    server.addr, pool.name
                ),
            )
        }
        Late::ServerAnswering(d) => {
            server.state.traffic_failed(pool.passive.after, "response timeout");
            (
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "server {} of pool \"{}\" did not answer within {d:?} of the request (timeouts.response)",
                    server.addr, pool.name
                ),
            )
        }
        Late::Total(d) => (
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the exchange with server {} of pool \"{}\" took longer than {d:?} (timeouts.total)",
                server.addr, pool.name
            ),
        ),
    };
    tracing::warn!(request = %id, "{why}");
    let mut resp = local::error(status, &why, &id.to_string());
    if matches!(late, Late::Client(_)) {
        // The rest of the body may still come: this connection is done.
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    resp
}
