//! A client that leaves while Pocket is still connecting to a server for
//! it: it closed (FIN) without having sent a byte, or reset the
//! connection. Its connect is abandoned, no further server is tried, and
//! the line says `CC` (HAProxy's "client aborted during connect", its
//! `option abortonclose`): a client that gave up, or a scanner's
//! SYN-then-RST, no longer opens an SMTP session or a database login on
//! a server. A client that sent bytes and then shut its side is
//! half-closing, and still waits for the answer: it is served.

use std::io;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Ends when the client on `stream` has left (its FIN with no byte before
/// it, or a reset); never ends once it has sent a byte (what follows is
/// the relay's). Costs a readiness wait, and a 1-byte peek only when the
/// client's side is closed (a FIN: was anything sent before it?): no
/// timer, nothing read.
pub async fn left(stream: &TcpStream) {
    let mut byte = [0u8; 1];
    loop {
        let Ok(ready) = stream.ready(Interest::READABLE).await else {
            return;
        };
        if !ready.is_read_closed() {
            // Bytes and no FIN: the client spoke first; no peek needed
            // (the common case: one syscall fewer per connection).
            break;
        }
        // Through try_io: a peek that finds nothing clears the readiness,
        // so the next wait is for the next event.
        let peeked = stream.try_io(Interest::READABLE, || {
            super::client_hello::peek_now(stream, &mut byte)
        });
        match peeked {
            // The FIN, nothing before it.
            Ok(0) => return,
            // The client spoke first (a ClientHello, a request).
            Ok(_) => break,
            // A closed readiness is final: nothing waiting and closed.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && ready.is_read_closed() => return,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            // A reset, or a socket broken otherwise.
            Err(_) => return,
        }
    }
    std::future::pending().await
}
