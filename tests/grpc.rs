//! HTTP/2 to servers (`protocol = "h2"`): a real gRPC server and client
//! (Python grpcio, tests/clients/grpc_origin.py and grpc_call.py) through
//! Pocket's plain listener (the client speaks h2c with prior knowledge):
//! a unary call, a call the server fails with a status (it arrives in the
//! trailers), a server-streaming call; the same over TLS with ALPN h2; and
//! an h2c origin (hyper) serving plain HTTP/1.1 clients (curl), its
//! streams sharing one connection.

mod common;
use common::*;

use std::convert::Infallible;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// Python with grpcio: tests/run puts target/venv/bin first on PATH.
fn python_with_grpc() -> &'static str {
    let ok = Command::new("python3")
        .args(["-c", "import grpc"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 cannot import grpc: run the suite with tests/run, which installs tests/setup/requirements.txt into a venv"
    );
    "python3"
}

struct GrpcOrigin {
    child: Child,
    port: u16,
}

impl Drop for GrpcOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn grpc_origin(tls: Option<&Path>) -> GrpcOrigin {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/grpc_origin.py");
    let mut cmd = Command::new(python_with_grpc());
    cmd.arg(script);
    if let Some(dir) = tls {
        cmd.arg(dir.join("server.pem")).arg(dir.join("server.key"));
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs tests/clients/grpc_origin.py");
    let out = Log::default();
    out.follow(child.stdout.take().unwrap());
    let line = out.wait_for_any(&[&["listening "], &["<process ended>"]]);
    assert!(line.contains("listening "), "the gRPC origin did not start");
    let port = line.rsplit(' ').next().unwrap().trim().parse().unwrap();
    GrpcOrigin { child, port }
}

/// One call with the real grpcio client: the lines it printed.
fn grpc_call(target: std::net::SocketAddr, kind: &str, payload: &str) -> Vec<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/grpc_call.py");
    let out = Command::new(python_with_grpc())
        .args([script, &target.to_string(), kind, payload])
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs tests/clients/grpc_call.py");
    assert!(
        out.status.success(),
        "grpc_call.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn pocket_for(dir: tempfile::TempDir, server: &str, tls: &str) -> Pocket {
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "grpc" }} }},
  pools = {{
    grpc = {{ servers = {{ "{server}" }}, protocol = "h2"{tls} }},
  }},
}}
"#
    );
    let path = write_policy(dir.path(), "policy.lua", &policy);
    Pocket::start_file(dir, path, 1)
}

fn assert_calls(web: std::net::SocketAddr) {
    let lines = grpc_call(web, "unary", "hello");
    assert_eq!(lines, ["message echo: hello", "status OK"], "{lines:?}");
    // The status the server failed with arrives (gRPC carries it in the
    // response trailers).
    let lines = grpc_call(web, "fail", "thing-7");
    assert_eq!(
        lines,
        ["status NOT_FOUND", "details no such thing: thing-7"],
        "{lines:?}"
    );
    let lines = grpc_call(web, "stream", "x");
    let want: Vec<String> = (1..=5)
        .map(|i| format!("message part {i}"))
        .chain(["status OK".to_string()])
        .collect();
    assert_eq!(lines, want);
    // A status after messages: only trailers can carry it.
    let lines = grpc_call(web, "stream", "fail");
    assert_eq!(
        lines,
        [
            "message part 1",
            "message part 2",
            "status RESOURCE_EXHAUSTED",
            "details stopped after 2"
        ],
        "{lines:?}"
    );
}

#[test]
fn grpc_calls_go_through_an_h2_pool_with_their_status() {
    let origin = grpc_origin(None);
    let dir = tempfile::tempdir().unwrap();
    let pocket = pocket_for(dir, &format!("127.0.0.1:{}", origin.port), "");
    assert_calls(pocket.addr("web"));
}

#[test]
fn grpc_over_tls_negotiates_h2_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    common::make_test_certs(dir.path());
    let origin = grpc_origin(Some(dir.path()));
    let server = format!("localhost:{}", origin.port);
    let pocket = pocket_for(dir, &server, ", tls = { ca = \"ca.pem\" }");
    assert_calls(pocket.addr("web"));
}

/// The size of the h2c origin's `/big` answer.
const BIG: usize = 4 * 1024 * 1024 + 7;

/// An h2c-only origin (hyper's HTTP/2 server, prior knowledge): answers
/// what it saw. Counts the connections it accepted.
async fn h2c_origin() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counted = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let (head, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        if head.uri.path() == "/big" {
                            let big = Bytes::from(vec![b'x'; BIG]);
                            return Ok(http::Response::new(Full::new(big)));
                        }
                        let body = if body.len() > 64 {
                            Bytes::from(format!("{} bytes", body.len()))
                        } else {
                            body
                        };
                        let text = format!(
                            "h2 origin: {} {} {:?} authority={} body={}\n",
                            head.method,
                            head.uri.path(),
                            head.version,
                            head.uri.authority().map_or("-", |a| a.as_str()),
                            String::from_utf8_lossy(&body),
                        );
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(text))))
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    (addr, conns)
}

/// An HTTP/1.1-only origin (hyper's HTTP/1 server: an HTTP/2 preface is
/// a bad request to it).
async fn h1_only_origin() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("h1 origin\n"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--http1.1"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_origin_serves_http1_clients_on_one_shared_connection() {
    require_command("curl", "curl");
    let (origin, conns) = h2c_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let pocket = pocket_for(dir, &origin.to_string(), "");
    let web = pocket.addr("web");
    let url = format!("http://{web}/page?q=1");
    let got = tokio::task::spawn_blocking(move || curl(&["-H", "Host: site.test", &url]))
        .await
        .unwrap();
    assert_eq!(
        got,
        "h2 origin: GET /page HTTP/2.0 authority=site.test body=\n"
    );
    let url = format!("http://{web}/form");
    let got = tokio::task::spawn_blocking(move || curl(&["-d", "name=value", &url]))
        .await
        .unwrap();
    assert!(
        got.starts_with("h2 origin: POST /form HTTP/2.0") && got.ends_with("body=name=value\n"),
        "{got}"
    );
    // Bodies stream both ways, whole.
    let url = format!("http://{web}/big");
    let got = tokio::task::spawn_blocking(move || curl(&[&url]))
        .await
        .unwrap();
    assert_eq!(got.len(), BIG);
    assert!(got.bytes().all(|b| b == b'x'));
    let upload = pocket.dir.path().join("upload.bin");
    std::fs::write(&upload, vec![b'u'; 3 * 1024 * 1024]).unwrap();
    let (url, file) = (format!("http://{web}/up"), format!("@{}", upload.display()));
    let got = tokio::task::spawn_blocking(move || curl(&["--data-binary", &file, &url]))
        .await
        .unwrap();
    assert!(got.ends_with("body=3145728 bytes\n"), "{got}");
    // Many requests at once, from many client connections: streams on the
    // connection already open (one worker).
    let mut tasks = Vec::new();
    for i in 0..20 {
        tasks.push(tokio::spawn(async move {
            get(web, &format!("/many/{i}")).await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.text().starts_with("h2 origin: GET /many/"),
            "{}",
            r.text()
        );
    }
    let opened = conns.load(Ordering::SeqCst);
    assert!(
        opened <= 2,
        "{opened} connections to the h2 origin for 24 requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_of_an_h2_pool_speak_h2_and_mark_an_http1_only_server_down() {
    let (h2, _) = h2c_origin().await;
    let h1_addr = h1_only_origin().await;
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{
    app = {{
      servers = {{ "{h2}", "{h1_addr}" }},
      protocol = "h2",
      check = {{ http = "GET /health", interval = "300ms", fall = 1, rise = 1 }},
    }},
  }},
}}
"#
    );
    let pocket = Pocket::start(&policy, 1);
    pocket.log.wait_for(&[&format!("server {h1_addr}"), "DOWN"]);
    for i in 0..6 {
        let r = get(pocket.addr("web"), &format!("/after/{i}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.text().starts_with("h2 origin: GET /after/"),
            "{}",
            r.text()
        );
    }
    assert!(
        !pocket
            .log
            .text()
            .contains(&format!("server {h2} of pool app is DOWN")),
        "{}",
        pocket.log.text()
    );
}
