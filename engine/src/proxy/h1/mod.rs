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

pub mod local;
pub mod servers;

use std::rc::Rc;

use tokio::io::AsyncWrite;

use super::ConnCtx;
use crate::wire::request::RequestHead;

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

/// The client's side of one exchange.
pub struct Client<'a, W> {
    /// Where the response goes: the client connection, whose writes are
    /// bounded by the listener's `send` timeout (a write blocked longer
    /// fails).
    pub io: &'a mut W,
    /// The connection ends after this response whatever happens (the
    /// client asked for it, or Pocket is draining): the response says
    /// `Connection: close`.
    pub closing: bool,
}

/// Phases 1 to 6 for one request that has no body.
pub async fn serve<W: AsyncWrite + Unpin>(
    cx: &Rc<ConnCtx>,
    head: RequestHead,
    client: Client<'_, W>,
) -> Done {
    let _ = (cx, head, client);
    todo!("proxy::h1::serve")
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
