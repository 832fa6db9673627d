//! Bodies stream through Pocket in both directions without being buffered:
//! a GiB each way passes while Pocket's peak memory stays flat.

mod common;
use common::*;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

const MIB: u64 = 1024 * 1024;
const BIG: u64 = 1024 * MIB;
/// Far below BIG: a proxy that buffered a body could not stay under it.
const PEAK_RSS_LIMIT_KIB: u64 = 96 * 1024;

/// An upload body of `remaining` bytes; `chunked` hides the length so the
/// client uses chunked transfer encoding.
struct Upload {
    remaining: u64,
    chunked: bool,
}

static CHUNK: [u8; 64 * 1024] = [b'u'; 64 * 1024];

impl Body for Upload {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = this.remaining.min(CHUNK.len() as u64) as usize;
        this.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
    }
    fn size_hint(&self) -> SizeHint {
        if self.chunked {
            SizeHint::default()
        } else {
            SizeHint::with_exact(self.remaining)
        }
    }
}

async fn upload(addr: std::net::SocketAddr, size: u64, chunked: bool) -> String {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("/upload")
        .header("host", "test")
        .body(Upload {
            remaining: size,
            chunked,
        })
        .unwrap();
    let resp = sender
        .send_request(req)
        .await
        .expect("upload through pocket");
    assert_eq!(resp.status(), 200);
    String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned()
}

fn start() -> (Pocket, OriginHandle) {
    let o = origin("O");
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "o" }} }},
  pools = {{ o = {{ servers = {{ "{}" }} }} }},
  on_request = function(req) req:set_header("x-seen", "1") end,
}}"#,
        o.addr
    );
    (Pocket::start(&policy, 1), o)
}

#[tokio::test]
async fn large_download_streams_with_flat_memory() {
    let (pocket, _o) = start();
    let stream = tokio::net::TcpStream::connect(pocket.addr("web"))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("/bytes/{BIG}"))
        .header("host", "test")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        total += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(total, BIG);
    let (_, peak) = pocket.rss_kib();
    eprintln!("download {} MiB, pocket peak RSS {} KiB", BIG / MIB, peak);
    assert!(peak < PEAK_RSS_LIMIT_KIB, "peak RSS {peak} KiB");
}

#[tokio::test]
async fn large_uploads_stream_with_flat_memory_both_framings() {
    let (pocket, _o) = start();
    let addr = pocket.addr("web");
    assert_eq!(
        upload(addr, BIG, false).await,
        format!("O received {BIG} bytes\n")
    );
    assert_eq!(
        upload(addr, 64 * MIB, true).await,
        format!("O received {} bytes\n", 64 * MIB)
    );
    let (_, peak) = pocket.rss_kib();
    eprintln!("upload {} MiB, pocket peak RSS {} KiB", BIG / MIB, peak);
    assert!(peak < PEAK_RSS_LIMIT_KIB, "peak RSS {peak} KiB");
}
