//! The PROXY protocol on a listener with `accept_proxy = true` (HAProxy's
//! `accept-proxy`): every connection starts with a v1 or v2 header, sent by
//! the balancer in front, that names the real client. It is read first,
//! before TLS and HTTP, within the listener's `head` timeout; the client
//! it names becomes the connection's peer (`conn.peer_ip`, `req.peer_ip`,
//! X-Forwarded-For, source hashing, the access log).
//!
//! Exactly the header's bytes are consumed (peeked first, then read), so
//! whatever follows is left in the socket for TLS or HTTP. A connection
//! without a header, with a malformed one, or one not whole within the
//! timeout, is closed without an answer: an HTTP answer would be read by
//! the balancer as its client's.
//!
//! The format is <https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt>;
//! the header is parsed by the `ppp` crate.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest v1 header, CRLF included (the specification, section 2.1).
const V1_MAX: usize = 107;

/// The longest v2 header accepted, in bytes: the 16 fixed ones and the
/// addresses and TLVs after them. The format allows 64 KiB; HAProxy reads
/// it into one buffer (`tune.bufsize`, 16 KiB). Real headers are a few
/// dozen bytes (addresses, an authority, a unique id, TLS facts).
const V2_MAX: usize = 16 * 1024;

const V2_SIGNATURE: &[u8] = ppp::v2::PROTOCOL_PREFIX;
const V1_PREFIX: &[u8] = b"PROXY ";

/// What the header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The connection is relayed for this client, which connected to
    /// `destination`.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v2 `LOCAL` (the balancer's own connection, such as its health
    /// check) or v1 `UNKNOWN`, or an address family Pocket cannot use
    /// (AF_UNIX, unspecified): the socket's own peer stands, as HAProxy
    /// keeps it.
    Local,
}

/// Why a connection was refused.
#[derive(Debug)]
pub enum Refused {
    /// Closed by the peer before the header was whole (or before a byte).
    Closed,
    /// Not whole within the `head` timeout.
    Timeout(Duration),
    /// Bytes that are not a PROXY header.
    Malformed(String),
    Io(std::io::Error),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Closed => write!(
                f,
                "the client closed the connection before its PROXY header was whole"
            ),
            Refused::Timeout(d) => write!(f, "no whole PROXY header within {d:?}"),
            Refused::Malformed(why) => write!(f, "bad PROXY header: {why}"),
            Refused::Io(e) => write!(f, "reading the PROXY header failed: {e}"),
        }
    }
}

impl Refused {
    /// The `reason` label of `pocket_proxy_header_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Closed => "closed",
            Refused::Timeout(_) => "timeout",
            Refused::Malformed(_) => "malformed",
            Refused::Io(e) if e.kind() == std::io::ErrorKind::ConnectionReset => "reset",
            Refused::Io(_) => "other",
        }
    }
}

/// Reads the PROXY header at the start of `stream`, within `head`.
pub async fn read_header(stream: &mut TcpStream, head: Duration) -> Result<Header, Refused> {
    match tokio::time::timeout(head, read_bytes(stream)).await {
        Ok(Ok(bytes)) => parse(&bytes),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Refused::Timeout(head)),
    }
}

/// How much of what is waiting in the socket belongs to the header.
enum Take {
    /// This many more bytes belong to it; `true`: then it is whole.
    Bytes(usize, bool),
    Bad(String),
}

/// Given the header bytes read so far (`got`) and the bytes waiting after
/// them (`peeked`), how many of those to read. Never more than the header:
/// what follows stays in the socket.
fn take(got: &[u8], peeked: &[u8]) -> Take {
    let mut all = Vec::with_capacity(got.len() + peeked.len());
    all.extend_from_slice(got);
    all.extend_from_slice(peeked);
    match all.first() {
        Some(b'\r') => {
            let sig = all.len().min(V2_SIGNATURE.len());
            if all[..sig] != V2_SIGNATURE[..sig] {
                return Take::Bad("not a PROXY header (v2 signature wrong)".into());
            }
            if all.len() < 16 {
                return Take::Bytes(peeked.len(), false);
            }
            if all[12] >> 4 != 2 {
                return Take::Bad(format!("unknown version {} (v2 header)", all[12] >> 4));
            }
            let total = 16 + usize::from(u16::from_be_bytes([all[14], all[15]]));
            if total > V2_MAX {
                return Take::Bad(format!(
                    "v2 header of {total} bytes, over the {V2_MAX} accepted"
                ));
            }
            let upto = total.min(all.len());
            Take::Bytes(upto - got.len(), upto == total)
        }
        Some(b'P') => {
            let pre = all.len().min(V1_PREFIX.len());
            if all[..pre] != V1_PREFIX[..pre] {
                return Take::Bad("not a PROXY header".into());
            }
            match memchr::memchr(b'\n', &all) {
                Some(end) if end < V1_MAX => Take::Bytes(end + 1 - got.len(), true),
                Some(_) => Take::Bad(format!("v1 header longer than {V1_MAX} bytes")),
                None if all.len() >= V1_MAX => {
                    Take::Bad(format!("no end of line within {V1_MAX} bytes"))
                }
                None => Take::Bytes(peeked.len(), false),
            }
        }
        Some(_) => Take::Bad("not a PROXY header".into()),
        None => Take::Bytes(0, false),
    }
}

/// Reads exactly the header's bytes: peeks at what has arrived, reads the
/// part of it that is header, until the header is whole. Each round reads
/// at least a byte, so a header sent a byte at a time is read, never spun
/// on.
async fn read_bytes(stream: &mut TcpStream) -> Result<Vec<u8>, Refused> {
    let mut got = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    loop {
        let n = stream.peek(&mut buf).await.map_err(Refused::Io)?;
        if n == 0 {
            return Err(Refused::Closed);
        }
        match take(&got, &buf[..n]) {
            Take::Bad(why) => return Err(Refused::Malformed(why)),
            Take::Bytes(k, whole) => {
                let from = got.len();
                got.resize(from + k, 0);
                stream
                    .read_exact(&mut got[from..])
                    .await
                    .map_err(Refused::Io)?;
                if whole {
                    return Ok(got);
                }
            }
        }
    }
}

/// The header's meaning; `bytes` is exactly one whole header.
fn parse(bytes: &[u8]) -> Result<Header, Refused> {
    // The crate's messages may hold a line break ("must end in '\r\n'"):
    // escaped, so a log entry stays one line.
    let bad = |e: &dyn fmt::Display| Refused::Malformed(e.to_string().escape_debug().to_string());
    if bytes.first() == Some(&b'\r') {
        let h = ppp::v2::Header::try_from(bytes).map_err(|e| bad(&e))?;
        if h.command == ppp::v2::Command::Local {
            return Ok(Header::Local);
        }
        if h.protocol == ppp::v2::Protocol::Datagram {
            // A UDP flow's addresses: a TCP listener cannot be relaying
            // one (HAProxy sends only STREAM for its TCP connections), so
            // the header is wrong, not a client to trust.
            return Err(Refused::Malformed(
                "a v2 header for a datagram (UDP) flow on a TCP connection".into(),
            ));
        }
        return Ok(match h.addresses {
            ppp::v2::Addresses::IPv4(a) => Header::Proxied {
                source: (a.source_address, a.source_port).into(),
                destination: (a.destination_address, a.destination_port).into(),
            },
            ppp::v2::Addresses::IPv6(a) => Header::Proxied {
                source: (a.source_address, a.source_port).into(),
                destination: (a.destination_address, a.destination_port).into(),
            },
            ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => Header::Local,
        });
    }
    let h = ppp::v1::Header::try_from(bytes).map_err(|e| bad(&e))?;
    Ok(match h.addresses {
        ppp::v1::Addresses::Tcp4(a) => Header::Proxied {
            source: (a.source_address, a.source_port).into(),
            destination: (a.destination_address, a.destination_port).into(),
        },
        ppp::v1::Addresses::Tcp6(a) => Header::Proxied {
            source: (a.source_address, a.source_port).into(),
            destination: (a.destination_address, a.destination_port).into(),
        },
        ppp::v1::Addresses::Unknown => Header::Local,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> Result<Header, Refused> {
        match take(&[], bytes) {
            Take::Bytes(n, true) => parse(&bytes[..n]),
            Take::Bytes(..) => Err(Refused::Closed),
            Take::Bad(why) => Err(Refused::Malformed(why)),
        }
    }

    #[test]
    fn v1_stops_at_the_line_end() {
        let input = b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 80\r\nGET / HTTP/1.1\r\n";
        let Take::Bytes(n, true) = take(&[], input) else {
            panic!("not whole")
        };
        assert_eq!(&input[n..n + 3], b"GET");
        assert_eq!(
            whole(input).unwrap(),
            Header::Proxied {
                source: "127.0.0.2:40000".parse().unwrap(),
                destination: "127.0.0.1:80".parse().unwrap()
            }
        );
        assert_eq!(whole(b"PROXY UNKNOWN\r\n").unwrap(), Header::Local);
    }

    #[test]
    fn v1_in_pieces() {
        let Take::Bytes(5, false) = take(&[], b"PROXY") else {
            panic!()
        };
        let Take::Bytes(n, true) = take(b"PROXY", b" UNKNOWN\r\nGET") else {
            panic!()
        };
        assert_eq!(n, 10);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(take(&[], b"GET / HTTP/1.1\r\n"), Take::Bad(_)));
        assert!(matches!(take(&[], b"PROXX"), Take::Bad(_)));
        assert!(matches!(take(&[], &[b'P'; 2][..1]), Take::Bytes(1, false)));
        assert!(matches!(take(&[], &[b'X'; 200]), Take::Bad(_)));
        let long = [b"PROXY ".as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(take(&[], &long), Take::Bad(_)));
        assert!(whole(b"PROXY TCP4 1.2.3.4\r\n").is_err());
        assert!(whole(b"PROXY TCP4 300.2.3.4 1.2.3.4 1 2\r\n").is_err());
    }

    #[test]
    fn v2_reads_its_length() {
        let header = crate::proxy::proxy_header::header(
            crate::proxy::proxy_header::SendProxy::V2,
            Some((
                "[2001:db8::1]:4000".parse().unwrap(),
                "[::1]:80".parse().unwrap(),
            )),
        )
        .unwrap();
        let mut input = header.clone();
        input.extend_from_slice(b"GET /");
        let Take::Bytes(n, false) = take(&[], &input[..10]) else {
            panic!()
        };
        assert_eq!(n, 10);
        let Take::Bytes(n, true) = take(&input[..10], &input[10..]) else {
            panic!()
        };
        assert_eq!(10 + n, header.len());
        assert_eq!(
            whole(&input).unwrap(),
            Header::Proxied {
                source: "[2001:db8::1]:4000".parse().unwrap(),
                destination: "[::1]:80".parse().unwrap()
            }
        );
        let local =
            crate::proxy::proxy_header::header(crate::proxy::proxy_header::SendProxy::V2, None)
                .unwrap();
        assert_eq!(whole(&local).unwrap(), Header::Local);
    }

    #[test]
    fn v2_for_a_datagram_flow_is_refused() {
        use ppp::v2::{Builder, Command, Protocol, Version};
        let addresses: (SocketAddr, SocketAddr) = (
            "192.0.2.7:4000".parse().unwrap(),
            "192.0.2.1:443".parse().unwrap(),
        );
        let bytes =
            Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Datagram, addresses)
                .build()
                .unwrap();
        match whole(&bytes) {
            Err(Refused::Malformed(why)) => assert!(why.contains("datagram"), "{why}"),
            other => panic!("accepted: {other:?}"),
        }
        // The same addresses over STREAM are a client.
        let bytes =
            Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses)
                .build()
                .unwrap();
        assert_eq!(
            whole(&bytes).unwrap(),
            Header::Proxied {
                source: addresses.0,
                destination: addresses.1
            }
        );
    }
}
