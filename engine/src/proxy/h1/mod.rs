//! Pocket's own HTTP/1 path: the request phases for a request whose head
//! `wire::request` read, forwarded to an HTTP/1.1 server over a plain
//! connection of the worker's own, its response head checked
//! (`wire::response`) and relayed with its body, not rebuilt. hyper is
//! not involved; the phases are those of the hyper path (`proxy/mod.rs`),
//! in the same order, with the same rules:
//!
//! 1. [`serve`]: pin the worker's policy, give the request an id, open its
//!    record.
//! 2. Decide (`proxy::decide`, shared with the hyper path).
//! 3. Pick a server, check out an idle connection or open one; a server
//!    that cannot be reached is skipped (the request never left).
//! 4. Write the head (one write), wait for the response head on the
//!    pool's clocks; a safe request a reused connection dropped
//!    unanswered is sent again on a new one.
//! 5. Check the head's framing; `on_response` (Lua) if the policy has one.
//! 6. Write the head to the client and relay the body by its framing; the
//!    server connection goes back idle when its body ended and the server
//!    keeps it.
//!
//! Which requests come here is decided twice: at load, a policy whose
//! pools are all plain HTTP/1.1 ([`takes_policy`]); per request, by
//! `wire::request::parse` (no body, no upgrade ...). The others go to
//! hyper, as all requests did before.

pub mod buf;
mod clock;
mod forward;
pub mod local;
mod relay;
pub mod servers;

use std::rc::Rc;
use std::task::{Context, Poll};

use http::{Method, Response};
use tokio::io::AsyncWrite;

use super::body::ResponseBody;
use super::decide::{self, Route};
use super::{open_exchange, ConnCtx};
use crate::context::Drain;
use crate::observe::exchange::Open;
use crate::script::api::request::RequestView;
use crate::wire::request::RequestHead;
pub use clock::Clock;

/// How the client connection goes on after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// The response went out whole and the connection may serve another
    /// request.
    KeepAlive,
    /// The connection must close (the client or Pocket said so, a body
    /// was cut, a write failed).
    Close,
}

/// The client connection as the request phases use it: written to (each
/// write bounded by the listener's `send` timeout: a write blocked longer
/// fails with `TimedOut`), and watched for the client going away while
/// the server is awaited.
pub trait ClientConn: AsyncWrite + Unpin {
    /// Ready once the client has closed its side or its socket failed: the
    /// exchange is given up and the connection closed, no answer written
    /// (as hyper does). While pending, bytes the client sends ahead (its
    /// next request) are kept for later; once some are, it stops reading
    /// (as hyper's server does), so it never buffers more than one read.
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// The client's side of one exchange.
pub struct Client<'a, W> {
    /// Where the response goes.
    pub io: &'a mut W,
    /// The connection's timer, for the server's clocks.
    pub clock: &'a mut Clock,
    /// The connection ends after this response whatever happens (the
    /// client asked for it, or Pocket was draining when it came): the
    /// response says `Connection: close`.
    pub closing: bool,
    /// The worker's drain: one that starts while the request is served
    /// closes the connection after it too, its response saying so (as
    /// hyper's graceful shutdown disables keep-alive mid-request).
    pub drain: &'a Drain,
}

impl<W> Client<'_, W> {
    /// Whether the response about to be written is the connection's
    /// last: read when its head is written, not when the request came.
    pub fn closes(&self) -> bool {
        self.closing || self.drain.is_draining()
    }
}

/// Phases 1 to 6 for one request that has no body.
pub async fn serve<W: ClientConn>(
    cx: &Rc<ConnCtx>,
    head: RequestHead,
    client: Client<'_, W>,
) -> Done {
    // Phase 1: one generation of the policy for the whole request.
    let script = cx.worker.script();
    let id = cx.worker.next_request_id();
    let mut open = open_exchange(cx, &script, id, &head.parts);
    let head_only = head.parts.method == Method::HEAD;
    let framing = head.framing;
    let mut view = RequestView {
        head: head.parts,
        raw_target: None,
        peer: cx.peer,
        listener: cx.listener.clone(),
        id,
        growth: 0,
        tls: cx.tls().cloned(),
    };
    // Phase 2, as the hyper path decides (explained requests go to hyper).
    let route = if script.waits() {
        // Raced with the client going away, as hyper drops a request whose
        // client left.
        let deciding = std::pin::pin!(decide::decide_waiting(&script, &mut view, cx.local));
        let Some(route) = until_gone(client.io, deciding).await else {
            return Done::Close;
        };
        route
    } else {
        decide::decide(&script, &mut view)
    };
    open.ex.hooks_us += crate::observe::metrics::take_request_hook_ns() / 1000;
    crate::script::api::log_field::take_into(&mut open.ex.script_fields);
    let (resp, letters) = match route {
        Route::Local(r) => (super::local::from_script(r), (b'L', b'R')),
        Route::Refuse(status, why) => (
            super::local::refusal(status, &why, &id.to_string()),
            (b'P', b'R'),
        ),
        Route::OverLimit(status, why) => (
            super::local::refusal(status, &why, &id.to_string()),
            (b'R', b'R'),
        ),
        Route::Pool {
            pool,
            key,
            preferred,
        } => {
            // Phases 3 to 6.
            let to = forward::To {
                pool,
                key,
                preferred,
                framing,
                head_only,
            };
            // The view by reference: its head stays in this future rather
            // than being moved into the next one.
            return forward::forward(cx, &script, &mut view, to, open, client).await;
        }
    };
    open.set(letters.0, letters.1);
    answer(client, resp, open, head_only).await
}

/// Writes one of Pocket's own answers (the script's, a refusal, an error)
/// and ends its record: the status, the body bytes written; the
/// termination the phase set stays (a local answer cut by the client is
/// still the phase's, as on the hyper path).
pub(super) async fn answer<W: ClientConn>(
    client: Client<'_, W>,
    resp: Response<ResponseBody>,
    mut open: Box<Open>,
    head_only: bool,
) -> Done {
    // A refusal closes the connection (proxy::local::refusal says so in
    // its head), as does a script's answer whose `Connection` says
    // `close` among its tokens: the field is written as it is (hyper's
    // server reads it the same way).
    let close = client.closes() || local::closes(resp.headers());
    open.ex.status = resp.status().as_u16();
    // Boxed: the writer's future is large and only local answers need
    // it; every request's future would carry its size.
    let w = Box::pin(local::write(client.io, resp, head_only, close));
    match w.await {
        Ok(n) => {
            open.ex.bytes_out += n;
            if close {
                Done::Close
            } else {
                Done::KeepAlive
            }
        }
        Err(_) => Done::Close,
    }
}

/// Runs `fut` unless the client goes away first (then None: the future,
/// and the request's record with the termination its phase set, are
/// dropped by the caller, as hyper drops a request whose client left).
/// Pinned by the caller where it is made: a large future (the tries') is
/// not moved into this one's state.
pub(super) async fn until_gone<W: ClientConn, F: std::future::Future>(
    io: &mut W,
    mut fut: std::pin::Pin<&mut F>,
) -> Option<F::Output> {
    std::future::poll_fn(|task| {
        if let Poll::Ready(r) = fut.as_mut().poll(task) {
            return Poll::Ready(Some(r));
        }
        if io.poll_gone(task).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// Whether a policy's requests may take this path: every pool an HTTP
/// request can reach speaks plain HTTP/1.1 to its servers (no `tls`, no
/// `protocol = "h2"`, no `send_proxy`: those connections are hyper's,
/// `proxy/upstream.rs`). Pools with `mode = "tcp"` do not count: an HTTP
/// listener's requests never go to them (`returned_pool` refuses it).
/// Decided once per load (`WorkerScript::direct_h1`), never per request.
pub fn takes_policy(policy: &crate::config::Policy) -> bool {
    policy
        .pools
        .iter()
        .filter(|p| p.mode == crate::config::Mode::Http)
        .all(|p| takes_pool(p))
}

/// A pool the direct path can send requests to.
fn takes_pool(pool: &crate::lb::Pool) -> bool {
    pool.protocol == crate::config::upstream_tls::Protocol::Http1
        && pool.tls.is_none()
        && pool.send_proxy.is_none()
}

#[cfg(test)]
mod tests {
    use super::takes_policy;
    use std::sync::Arc;

    fn policy(pools: &str) -> crate::config::Policy {
        let source = format!(
            "return {{ listeners = {{ {{ name = \"web\", bind = \"127.0.0.1:0\", pool = \"a\" }} }},\n\
             pools = {{ {pools} }} }}"
        );
        crate::config::load_policy_source(
            std::path::Path::new("gate.lua"),
            Arc::from(source),
            &crate::lb::StateRegistry::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn plain_http1_pools_take_the_direct_path() {
        assert!(takes_policy(&policy(
            "a = { servers = { \"127.0.0.1:9\" } }, b = { servers = { \"127.0.0.1:10\" }, retries = 1 }"
        )));
    }

    #[test]
    fn one_pool_hyper_must_serve_keeps_the_whole_policy_on_hyper() {
        let plain = "a = { servers = { \"127.0.0.1:9\" } }";
        for other in [
            "b = { servers = { \"127.0.0.1:10\" }, protocol = \"h2\" }",
            "b = { servers = { \"localhost:10\" }, tls = true }",
            "b = { servers = { \"127.0.0.1:10\" }, send_proxy = \"v2\" }",
        ] {
            assert!(
                !takes_policy(&policy(&format!("{plain}, {other}"))),
                "{other}"
            );
        }
    }

    #[test]
    fn tcp_pools_do_not_count() {
        let p = policy(
            "a = { servers = { \"127.0.0.1:9\" } }, \
             t = { servers = { \"127.0.0.1:10\" }, mode = \"tcp\", send_proxy = \"v1\" }",
        );
        assert!(takes_policy(&p));
    }
}
