//! TCP mode (`mode = "tcp"` listeners and pools) end to end: a real Pocket
//! in front of real TCP servers (small threads here that speak simple
//! protocols and report what they received), real clients.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// Reads with a deadline: a test never hangs on a socket.
fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to pocket");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s
}

fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read to the end");
    out
}

/// What a test server does with each connection, on its own thread.
type Behaviour = fn(TcpStream, &str, &mpsc::Sender<String>);

/// A TCP server on a free loopback port named `name`; each connection is
/// handled by `behaviour` on a thread of its own, which may report on
/// the channel.
fn server(name: &'static str, behaviour: Behaviour) -> (SocketAddr, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let _ = s.set_read_timeout(Some(DEADLINE));
            let tx = tx.clone();
            std::thread::spawn(move || behaviour(s, name, &tx));
        }
    });
    (addr, rx)
}

/// Reads the whole request (to the client's half-close), then answers
/// `NAME:` and what it read, and closes.
fn echo_after_eof(mut s: TcpStream, name: &str, tx: &mpsc::Sender<String>) {
    let got = read_all(&mut s);
    let _ = tx.send(format!("{name} got {}", got.len()));
    let _ = s.write_all(format!("{name}:").as_bytes());
    let _ = s.write_all(&got);
    let _ = s.shutdown(Shutdown::Write);
}

/// Sends a banner and shuts its write side at once; then reads what the
/// client still sends, to its end, and reports it.
fn banner_then_listen(mut s: TcpStream, name: &str, tx: &mpsc::Sender<String>) {
    let _ = s.write_all(format!("220 {name} ready\r\n").as_bytes());
    let _ = s.shutdown(Shutdown::Write);
    let got = read_all(&mut s);
    let _ = tx.send(String::from_utf8_lossy(&got).into_owned());
}

fn policy(servers: &[SocketAddr], extra_pool: &str, extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"return {{
  listeners = {{ {{ name = "t", bind = "127.0.0.1:0", mode = "tcp", pool = "p" }} }},
  pools = {{ p = {{ mode = "tcp", servers = {{ {} }}{extra_pool} }} }},
{extra}
}}
"#,
        list.join(", ")
    )
}

#[test]
fn echo_with_half_close_both_ways() {
    let (echo, echoed) = server("E", echo_after_eof);
    let (banner, heard) = server("B", banner_then_listen);
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  listeners = {{ {{ name = "echo", bind = "127.0.0.1:0", mode = "tcp", pool = "echo" }},
                {{ name = "banner", bind = "127.0.0.1:0", mode = "tcp", pool = "banner" }} }},
  pools = {{ echo = {{ mode = "tcp", servers = {{ "{echo}" }} }},
            banner = {{ mode = "tcp", servers = {{ "{banner}" }} }} }},
}}
"#
        ),
        1,
    );

    // The client shuts its write side first and still reads the answer.
    let mut c = connect(pocket.addr("echo"));
    c.write_all(b"hello over tcp").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut c), b"E:hello over tcp");
    assert_eq!(
        echoed.recv_timeout(DEADLINE).unwrap(),
        "E got 14",
        "the server saw the client's end"
    );

    // The server shuts first; the client can still send.
    let mut c = connect(pocket.addr("banner"));
    assert_eq!(read_all(&mut c), b"220 B ready\r\n");
    c.write_all(b"QUIT after your close\r\n").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        heard.recv_timeout(DEADLINE).unwrap(),
        "QUIT after your close\r\n"
    );
}
