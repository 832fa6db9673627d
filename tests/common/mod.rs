//! Shared test helpers: a real `pocket` process on a policy written to a
//! temp dir, real built-in origins on 127.0.0.1:0, and small HTTP clients.
//! Every wait is for an event (a log line, a port) with a generous deadline.
#![allow(dead_code)]

pub mod corpus;
pub mod tcp_servers;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

pub use pocket::origin::{spawn as spawn_origin_at, OriginHandle};

/// Generous: CI machines are shared and slow.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn pocket_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pocket")
}

/// A built-in origin named `name` on a free loopback port.
pub fn origin(name: &str) -> OriginHandle {
    spawn_origin_at(name, "127.0.0.1:0".parse().unwrap()).expect("start origin")
}

/// A loopback address nothing listens on (bound, then released).
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Lines a process wrote to stderr, collected by a reader thread.
#[derive(Clone, Default)]
pub struct Log {
    inner: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Log {
    /// Collects every line `stream` yields, then `<process ended>`.
    pub fn follow(&self, stream: impl std::io::Read + Send + 'static) {
        let sink = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                sink.push(line);
            }
            sink.push("<process ended>".into());
        });
    }

    fn push(&self, line: String) {
        let (lines, cv) = &*self.inner;
        lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        cv.notify_all();
    }

    pub fn lines(&self) -> Vec<String> {
        self.inner
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// Waits for a line containing every one of `parts`; panics with the
    /// log after the deadline.
    pub fn wait_for(&self, parts: &[&str]) -> String {
        self.wait_for_after(0, parts)
    }

    /// Like [`Log::wait_for`], looking only at lines from number `from` on
    /// (take `lines().len()` before the event, so an older line with the
    /// same words does not count).
    pub fn wait_for_after(&self, from: usize, parts: &[&str]) -> String {
        let (lines, cv) = &*self.inner;
        let start = Instant::now();
        let mut guard = lines.lock().unwrap();
        loop {
            if let Some(l) = guard
                .iter()
                .skip(from)
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return l.clone();
            }
            let left = DEADLINE.checked_sub(start.elapsed()).unwrap_or_else(|| {
                panic!(
                    "no log line with {parts:?} within {DEADLINE:?}; log:\n{}",
                    guard.join("\n")
                )
            });
            guard = cv.wait_timeout(guard, left).unwrap().0;
        }
    }
}

/// A running `pocket run` process; killed on drop.
pub struct Pocket {
    pub child: Child,
    pub log: Log,
    pub dir: tempfile::TempDir,
    pub policy: PathBuf,
}

impl Pocket {
    /// Writes `policy` to a temp dir and runs it with `workers` workers;
    /// returns once Pocket says it is ready.
    pub fn start(policy: &str, workers: usize) -> Pocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.lua");
        std::fs::write(&path, policy).unwrap();
        Self::start_file(dir, path, workers)
    }

    /// Like [`Pocket::start`], with `POCKET_LOG` set to `filter` (for
    /// tests that wait for debug lines).
    pub fn start_logging(policy: &str, workers: usize, filter: &str) -> Pocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.lua");
        std::fs::write(&path, policy).unwrap();
        Self::spawn(dir, path, workers, filter, &[])
    }

    pub fn start_file(dir: tempfile::TempDir, policy: PathBuf, workers: usize) -> Pocket {
        Self::spawn(dir, policy, workers, "info", &[])
    }

    /// Like [`Pocket::start_file`], with more `pocket run` arguments.
    pub fn start_file_with(
        dir: tempfile::TempDir,
        policy: PathBuf,
        workers: usize,
        extra: &[&str],
    ) -> Pocket {
        Self::spawn(dir, policy, workers, "info", extra)
    }

    /// Like [`Pocket::start`], with more `pocket run` arguments.
    pub fn start_with(policy: &str, workers: usize, extra: &[&str]) -> Pocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.lua");
        std::fs::write(&path, policy).unwrap();
        Self::spawn(dir, path, workers, "info", extra)
    }

    fn spawn(
        dir: tempfile::TempDir,
        policy: PathBuf,
        workers: usize,
        filter: &str,
        extra: &[&str],
    ) -> Pocket {
        let mut child = Command::new(pocket_bin())
            .args([
                "run",
                policy.to_str().unwrap(),
                "--workers",
                &workers.to_string(),
            ])
            .args(extra)
            .env("POCKET_LOG", filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pocket");
        let log = Log::default();
        log.follow(child.stderr.take().unwrap());
        let p = Pocket {
            child,
            log,
            dir,
            policy,
        };
        let line = p
            .log
            .wait_for_any(&[&["pocket ready"], &["<process ended>"]]);
        if line.contains("<process ended>") {
            panic!("pocket did not start; log:\n{}", p.log.text());
        }
        p
    }

    /// The address a listener really listens on (its port may have been 0).
    pub fn addr(&self, listener: &str) -> SocketAddr {
        let line = self
            .log
            .wait_for(&[&format!("listener {listener} listening on ")]);
        let text = line.rsplit("listening on ").next().unwrap().trim();
        text.parse()
            .unwrap_or_else(|_| panic!("bad address in {line:?}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now and at its peak, in KiB (from /proc).
    pub fn rss_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Log {
    /// Waits for a line matching any of the alternatives.
    pub fn wait_for_any(&self, alternatives: &[&[&str]]) -> String {
        let (lines, cv) = &*self.inner;
        let start = Instant::now();
        let mut guard = lines.lock().unwrap();
        loop {
            for parts in alternatives {
                if let Some(l) = guard.iter().find(|l| parts.iter().all(|p| l.contains(p))) {
                    return l.clone();
                }
            }
            let left = DEADLINE.checked_sub(start.elapsed()).unwrap_or_else(|| {
                panic!(
                    "no log line matching {alternatives:?}; log:\n{}",
                    guard.join("\n")
                )
            });
            guard = cv.wait_timeout(guard, left).unwrap().0;
        }
    }
}

impl Drop for Pocket {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `pocket <args>` to completion: (exit code, stdout, stderr).
pub fn pocket_cmd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(pocket_bin())
        .args(args)
        .env("POCKET_LOG", "info")
        .output()
        .expect("run pocket");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `policy` to `dir/name` and returns the path.
pub fn write_policy(dir: &Path, name: &str, policy: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, policy).unwrap();
    path
}

/// A response as a test looks at it.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("").to_string())
    }
}

/// One HTTP/1.1 keep-alive connection.
pub struct H1 {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl H1 {
    pub async fn connect(addr: SocketAddr) -> H1 {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to pocket");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        H1 { sender }
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Resp, hyper::Error> {
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        collect(resp).await
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        self.send(request("GET", path, &[], ""))
            .await
            .expect("GET through pocket")
    }
}

async fn collect(resp: http::Response<hyper::body::Incoming>) -> Result<Resp, hyper::Error> {
    let (head, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Resp {
        status: head.status.as_u16(),
        headers: head.headers,
        body,
    })
}

/// Builds a request; `path` is origin-form, `Host` defaults to "test".
pub fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        b = b.header("host", "test");
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// GET on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    H1::connect(addr).await.get(path).await
}

/// Any request on a fresh connection.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Resp {
    H1::connect(addr)
        .await
        .send(req)
        .await
        .expect("request through pocket")
}

/// GET over HTTP/2 with prior knowledge (h2c), `authority` as :authority.
pub async fn h2_get(addr: SocketAddr, authority: &str, path: &str) -> Resp {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(format!("http://{authority}{path}"))
        .version(http::Version::HTTP_2)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.expect("h2 request");
    collect(resp).await.unwrap()
}

/// Sends raw bytes and reads until the server closes or `DEADLINE`.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The suite skips nothing: a test whose real part is missing fails here,
/// saying what is missing and how to get it. `tests/run` installs every
/// Debian package in tests/setup/apt.txt, so this fires only on a plain
/// `cargo test` on a machine that lacks one.
pub fn require_command(command: &str, debian_package: &str) {
    if let Err(e) = Command::new(command).arg("-V").output() {
        panic!(
            "`{command}` cannot run here ({e}); this test needs Debian's {debian_package}: \
             run the suite with tests/run, which installs it (or: sudo apt-get install -y {debian_package})"
        );
    }
}

/// Reads a request head (up to its blank line) from a raw test origin's
/// connection; None if the client closed or the read failed first.
pub fn read_request_head(c: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match c.read(&mut b) {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&b[..n]),
        }
    }
    Some(head)
}

/// Fails a test that drives a real browser unless Chromium runs and
/// python3 can import Selenium (tests/run installs both).
pub fn require_browser() {
    require_command("chromium", "chromium");
    let ok = Command::new("python3")
        .args(["-c", "import selenium"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 cannot import selenium: run the suite with tests/run, which installs tests/setup/requirements.txt into a venv"
    );
}

/// Fails a test that makes Linux network namespaces unless it runs as
/// root: skipping would hide that it never ran.
pub fn require_root(test: &str) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2));
    if euid != Some("0") {
        panic!(
            "{test} needs root (it makes network namespaces): run the suite as root, \
             sudo tests/run"
        );
    }
}

/// Runs `pocket check POLICY` with `deadline` as a hang guard only:
/// (exit code, stderr). A run past it is killed and fails the test.
pub fn check_within(policy: &Path, deadline: Duration) -> (i32, String) {
    use std::io::Read;
    let mut child = Command::new(pocket_bin())
        .args(["check", policy.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pocket");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for pocket") {
            break status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pocket check did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    (status.code().unwrap_or(-1), err)
}

/// Writes ca.pem, server.pem and server.key into `dir`: a test CA, and a
/// server certificate it signed for `localhost`, `origin.test` and
/// 127.0.0.1 (ca.key beside them, for tests that sign more).
pub fn make_test_certs(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Pocket test CA");
    let ca_key = KeyPair::generate().unwrap();
    std::fs::write(dir.join("ca.key"), ca_key.serialize_pem()).unwrap();
    let ca = CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let mut leaf =
        CertificateParams::new(vec!["localhost".to_string(), "origin.test".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}
