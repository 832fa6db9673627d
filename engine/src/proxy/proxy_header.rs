//! The PROXY protocol towards servers: a pool's `send_proxy = "v1" | "v2"`
//! starts each new connection to its servers with a header that carries
//! the client's address (HAProxy's `send-proxy` / `send-proxy-v2`), and
//! its health checks with one that carries none (HAProxy's
//! `check-send-proxy`: v2 `LOCAL`, v1 `PROXY UNKNOWN`), so a server that
//! requires the header can be checked.
//!
//! The format is <https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt>;
//! the bytes are made by the `ppp` crate.
//!
//! A connection that carries one client's address must never carry
//! another's request: the idle connections of such a pool are kept with
//! the client connection (`ConnCtx::private_upstreams`) and close with it,
//! as HAProxy makes them private to the client connection.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Which PROXY protocol header a pool sends (`send_proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendProxy {
    /// The text header, `PROXY TCP4 src dst sport dport\r\n`.
    V1,
    /// The binary header (16 bytes, then the addresses).
    V2,
}

impl SendProxy {
    /// The policy's spelling: `"v1"` or `"v2"`.
    pub fn parse(text: &str) -> Option<SendProxy> {
        match text {
            "v1" => Some(SendProxy::V1),
            "v2" => Some(SendProxy::V2),
            _ => None,
        }
    }
}

/// What a new connection to a server starts with: which header, and the
/// client connection it speaks for: the client's address and the address
/// it connected to (`None`: a health check, which speaks for nobody).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyTo {
    pub version: SendProxy,
    pub addresses: Option<(SocketAddr, SocketAddr)>,
}

/// Writes the header on a fresh connection, before any other byte. `None`:
/// nothing to do. As HAProxy's `send-proxy`, the header describes the
/// client's connection: source the client, destination the address the
/// client connected to (Pocket's listener, or the destination a PROXY
/// header in front named), not this connection to the server.
pub async fn send(stream: &mut TcpStream, to: Option<ProxyTo>) -> io::Result<()> {
    let Some(to) = to else { return Ok(()) };
    let bytes = header(to.version, to.addresses)?;
    stream.write_all(&bytes).await
}

/// A health check's header: one naming no client (`None`: no header).
pub async fn send_for_check(stream: &mut TcpStream, version: Option<SendProxy>) -> io::Result<()> {
    let to = version.map(|version| ProxyTo {
        version,
        addresses: None,
    });
    send(stream, to).await
}

/// The header's bytes: from a client to the address it connected to, or,
/// without them, v1 `PROXY UNKNOWN` / a v2 `LOCAL` header with no
/// addresses.
pub fn header(
    version: SendProxy,
    addresses: Option<(SocketAddr, SocketAddr)>,
) -> io::Result<Vec<u8>> {
    let pair = addresses.map(|(client, local)| same_family(client, local));
    match version {
        SendProxy::V1 => {
            let addresses = match pair {
                Some(pair) => ppp::v1::Addresses::from(pair),
                None => ppp::v1::Addresses::Unknown,
            };
            Ok(addresses.to_string().into_bytes())
        }
        SendProxy::V2 => {
            use ppp::v2::{Builder, Command, Protocol, Version};
            let builder = match pair {
                Some(pair) => {
                    Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, pair)
                }
                None => Builder::with_addresses(
                    Version::Two | Command::Local,
                    Protocol::Unspecified,
                    ppp::v2::Addresses::Unspecified,
                ),
            };
            builder.build()
        }
    }
}

/// Both ends in one address family, as the header can only say: an IPv4
/// end beside an IPv6 one is written IPv4-mapped (`::ffff:a.b.c.d`), as
/// HAProxy does.
fn same_family(client: SocketAddr, local: SocketAddr) -> (SocketAddr, SocketAddr) {
    let mapped = |a: SocketAddr| match a.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    if client.is_ipv4() == local.is_ipv4() {
        (client, local)
    } else {
        (mapped(client), mapped(local))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_carries_the_client() {
        let h = header(
            SendProxy::V1,
            Some((addr("127.0.0.2:40000"), addr("127.0.0.1:5555"))),
        )
        .unwrap();
        assert_eq!(h, b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 5555\r\n");
    }

    #[test]
    fn v1_without_a_client_is_unknown() {
        let h = header(SendProxy::V1, None).unwrap();
        assert_eq!(h, b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn mixed_families_are_written_as_ipv6() {
        let h = header(
            SendProxy::V1,
            Some((addr("10.0.0.1:40000"), addr("[::1]:5555"))),
        )
        .unwrap();
        assert_eq!(h, b"PROXY TCP6 ::ffff:10.0.0.1 ::1 40000 5555\r\n");
    }

    #[test]
    fn v2_round_trips() {
        let h = header(
            SendProxy::V2,
            Some((addr("127.0.0.2:40000"), addr("127.0.0.1:5555"))),
        )
        .unwrap();
        let parsed = ppp::v2::Header::try_from(&h[..]).unwrap();
        assert_eq!(parsed.command, ppp::v2::Command::Proxy);
        assert_eq!(
            parsed.addresses,
            ppp::v2::Addresses::from((addr("127.0.0.2:40000"), addr("127.0.0.1:5555")))
        );
        let local = header(SendProxy::V2, None).unwrap();
        let parsed = ppp::v2::Header::try_from(&local[..]).unwrap();
        assert_eq!(parsed.command, ppp::v2::Command::Local);
        assert_eq!(local.len(), 16);
    }
}
