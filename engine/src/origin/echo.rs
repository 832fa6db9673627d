//! The built-in TCP origin, for the lab's TCP scenarios and tests: on
//! each connection it first sends its banner, `origin NAME\r\n` (so a
//! client behind a TCP balancer knows which server it reached, as the
//! HTTP origin's `x-origin` says), then sends back every byte that comes
//! until the client shuts its write; then it shuts its own (a half-close
//! is answered, not cut).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::OriginHandle;

/// The first line an echo origin named `name` sends.
pub fn banner(name: &str) -> String {
    format!("origin {name}\r\n")
}

/// Binds `addr` (port 0 picks one) and serves echo on a thread of its
/// own; `requests` of the handle counts connections. Stops when the
/// handle is dropped, closing every open connection (the thread's runtime
/// goes with it): a server dying under open connections.
pub fn spawn_echo(name: &str, addr: SocketAddr) -> io::Result<OriginHandle> {
    let banner: Arc<[u8]> = Arc::from(banner(name).into_bytes());
    super::on_own_thread(
        name,
        format!("echo-{name}"),
        addr,
        Arc::new(AtomicU16::new(0)),
        move |listener, connections| serve_echo(listener, banner, connections),
    )
}

/// Serves echo forever on `listener`.
pub async fn serve_echo(listener: TcpListener, banner: Arc<[u8]>, connections: Arc<AtomicU64>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(echo(stream, banner.clone()));
    }
}

async fn echo(mut stream: TcpStream, banner: Arc<[u8]>) {
    let _ = stream.set_nodelay(true);
    if stream.write_all(&banner).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => {
                let _ = stream.shutdown().await;
                return;
            }
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// The banner first, the bytes back, and after the client's half-close
    /// the origin's own close.
    #[test]
    fn echoes_after_its_banner_and_answers_a_half_close() {
        let h = spawn_echo("B", "127.0.0.1:0".parse().unwrap()).unwrap();
        let mut s = std::net::TcpStream::connect(h.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"hello").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut all = String::new();
        s.read_to_string(&mut all).unwrap();
        assert_eq!(all, "origin B\r\nhello");
        assert_eq!(h.request_count(), 1);
    }
}
