//! The hash key and the scripted server choice for a connection in a tcp
//! pool, decided once for both places that make it: a live connection
//! ([`super::connect`], whose pool functions may wait for the client's
//! ClientHello) and `pocket explain tcp://` / `pocket test`'s `conn`
//! cases (engine/src/explain/connection.rs, with a ClientHello given).
//! Each runs the pool's functions its own way ([`PoolCalls`]); the order
//! and what each answer means are here.

use std::net::SocketAddr;

use crate::lb::{HashKey, Pool};

/// How the pool functions of one connection are run.
pub(crate) trait PoolCalls {
    /// Why the connection is closed instead of placed (a live connection:
    /// a function read `conn.sni` and no ClientHello came).
    type Stop;

    /// `hash_key = "source"` keys on `peer`'s address (explain tells it).
    fn source(&mut self, _peer: SocketAddr) {}

    /// `hash_key(conn)` of pool `index`: the bytes to hash, None when it
    /// returned nil or failed (a failing function costs the connection
    /// its key, not its server: the caller says so, as it says things).
    async fn hash_key(&mut self, index: usize) -> Result<Option<Vec<u8>>, Self::Stop>;

    /// `balance(servers, conn)` of pool `index`: the server it chose, None
    /// when the pool has no such function, it returned nil or it failed
    /// (round robin decides).
    async fn balance(&mut self, index: usize) -> Result<Option<usize>, Self::Stop>;
}

/// The hash key and the scripted choice for a connection from `peer` in
/// `pool` (number `index`): the pool's `hash_key` (`"source"`: the
/// client's address, as for HTTP, so a client keeps its server across
/// modes; a function: `hash_key(conn)`), then its `balance = function(
/// servers, conn)`. As for requests (proxy/decide.rs), a failing function
/// costs the connection its stickiness or its scripted choice, not its
/// server.
pub(crate) async fn choose<C: PoolCalls>(
    pool: &Pool,
    index: usize,
    peer: SocketAddr,
    calls: &mut C,
) -> Result<(Option<u64>, Option<usize>), C::Stop> {
    let key = match &pool.hash_key {
        None => None,
        Some(HashKey::Source) => {
            calls.source(peer);
            Some(source_key(peer))
        }
        Some(HashKey::Script) => calls
            .hash_key(index)
            .await?
            .map(|k| crate::lb::hash_bytes(&k)),
        // HTTP keys are refused on a tcp pool at load.
        Some(_) => None,
    };
    let preferred = calls.balance(index).await?;
    Ok((key, preferred))
}

/// The hash of the client's address as text, as the HTTP path hashes
/// `hash_key = "source"` (proxy/decide.rs), written on the stack.
pub(crate) fn source_key(peer: SocketAddr) -> u64 {
    let mut text = [0u8; 64];
    let mut rest = &mut text[..];
    let _ = std::io::Write::write_fmt(
        &mut rest,
        format_args!("{}", crate::proxy::forward::canonical_ip(peer.ip())),
    );
    let n = 64 - rest.len();
    crate::lb::hash_bytes(&text[..n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future as _;
    use std::sync::Arc;

    const POLICY: &str = r#"
return {
  listeners = { { name = "t", bind = "127.0.0.1:8443", mode = "tcp", pool = "by_source" } },
  pools = {
    by_source = { mode = "tcp", servers = { "127.0.0.1:9001" }, balance = "hash", hash_key = "source" },
    by_fn = { mode = "tcp", servers = { "127.0.0.1:9002" }, balance = "hash",
              hash_key = function(conn) return conn.sni end },
    plain = { mode = "tcp", servers = { "127.0.0.1:9003" } },
  },
}
"#;

    /// What the shared decision asked for, in order.
    #[derive(Default)]
    struct Calls {
        asked: Vec<&'static str>,
        key: Option<Vec<u8>>,
        stop_at_key: bool,
    }

    impl PoolCalls for Calls {
        type Stop = &'static str;
        fn source(&mut self, _peer: SocketAddr) {
            self.asked.push("source");
        }
        async fn hash_key(&mut self, _index: usize) -> Result<Option<Vec<u8>>, Self::Stop> {
            self.asked.push("hash_key");
            if self.stop_at_key {
                return Err("no ClientHello");
            }
            Ok(self.key.clone())
        }
        async fn balance(&mut self, _index: usize) -> Result<Option<usize>, Self::Stop> {
            self.asked.push("balance");
            Ok(Some(0))
        }
    }

    fn run(
        pool: &str,
        peer: &str,
        calls: &mut Calls,
    ) -> Result<(Option<u64>, Option<usize>), &'static str> {
        let policy = crate::config::load_policy_source(
            std::path::Path::new("choice.lua"),
            Arc::from(POLICY),
            &crate::lb::StateRegistry::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let index = policy.pool_by_name(pool).unwrap();
        let peer: SocketAddr = peer.parse().unwrap();
        let fut = choose(&policy.pools[index], index, peer, calls);
        let mut fut = std::pin::pin!(fut);
        match fut
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("nothing here waits"),
        }
    }

    /// The decision the live path and `pocket explain` share: the key as
    /// the pool says (the client's address as HTTP hashes it, or the
    /// function's bytes), then `balance`; a connection closed while its
    /// key was read asks nothing more.
    #[test]
    fn the_key_then_the_balance_choice_as_the_pool_says() {
        let mut calls = Calls::default();
        let got = run("by_source", "10.0.0.7:5555", &mut calls).unwrap();
        assert_eq!(got, (Some(crate::lb::hash_bytes(b"10.0.0.7")), Some(0)));
        assert_eq!(calls.asked, ["source", "balance"]);
        // An IPv4 client on an IPv6 socket keys as itself.
        let mut calls = Calls::default();
        let mapped = run("by_source", "[::ffff:10.0.0.7]:5555", &mut calls).unwrap();
        assert_eq!(mapped, got);

        let mut calls = Calls {
            key: Some(b"a.example".to_vec()),
            ..Calls::default()
        };
        let got = run("by_fn", "10.0.0.7:5555", &mut calls).unwrap();
        assert_eq!(got, (Some(crate::lb::hash_bytes(b"a.example")), Some(0)));
        assert_eq!(calls.asked, ["hash_key", "balance"]);

        let mut calls = Calls::default();
        assert_eq!(run("by_fn", "10.0.0.7:5555", &mut calls).unwrap().0, None);

        let mut calls = Calls {
            stop_at_key: true,
            ..Calls::default()
        };
        assert_eq!(
            run("by_fn", "10.0.0.7:5555", &mut calls),
            Err("no ClientHello")
        );
        assert_eq!(calls.asked, ["hash_key"]);

        let mut calls = Calls::default();
        assert_eq!(
            run("plain", "10.0.0.7:5555", &mut calls).unwrap(),
            (None, Some(0))
        );
        assert_eq!(calls.asked, ["balance"]);
    }
}
