//! Real servers and clients for the TCP-mode tests (tests/tcp_checks.rs,
//! tests/tcp_sni.rs, tests/tcp_examples.rs): SMTP servers made with
//! Python's `aiosmtpd` and mail sent with `smtplib`, Debian's
//! `redis-server` and `redis-cli`, TLS origins holding their own
//! certificates and `openssl s_client`. Each server is killed on drop;
//! every wait is for an event with a generous deadline.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{require_command, Log, DEADLINE};

/// The path of a helper script in tests/clients/.
pub fn script(name: &str) -> String {
    format!("{}/tests/clients/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A port nothing listens on now (the test's servers take it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `N` distinct ports nothing listens on now, for servers that cannot
/// bind port 0 and say which port they got (`redis-server`: `--port 0`
/// turns TCP off). All are held until all are known, so no two are the
/// same; another process may still take one before the server does.
/// The SMTP servers bind port 0 and print theirs.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("its port").port())
}

/// The admin listener's address, bound on port 0, from Pocket's log.
pub fn admin_addr(pocket: &super::Pocket) -> SocketAddr {
    let line = pocket.log.wait_for(&["admin listening on "]);
    line.rsplit("admin listening on ")
        .next()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// Waits until `addr` accepts connections (at most 20 s).
pub fn wait_listening(addr: SocketAddr) {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{addr} does not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fails, saying how to get it, when python3 has no `aiosmtpd`.
pub fn require_aiosmtpd() {
    let ok = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 cannot import aiosmtpd: run the suite with tests/run, which installs tests/setup/requirements.txt into a venv"
    );
}

/// An SMTP server (tests/clients/smtp_server.py) named `name` on `port`:
/// banner `220 NAME ESMTP pocket-test`, each mail it takes printed to
/// `out` as `mail NAME from=... subject=...`; killed on drop.
pub struct Smtp {
    child: Child,
    pub out: Log,
    pub addr: SocketAddr,
}

impl Smtp {
    pub fn start(name: &str, port: u16) -> Smtp {
        Self::start_with(name, port, &[])
    }

    /// Over TLS from the first byte, with the server.pem and server.key
    /// of [`super::make_test_certs`] in `dir`.
    pub fn start_tls(name: &str, port: u16, dir: &Path) -> Smtp {
        let cert = dir.join("server.pem");
        let key = dir.join("server.key");
        Self::start_with(name, port, &[cert.to_str().unwrap(), key.to_str().unwrap()])
    }

    fn start_with(name: &str, port: u16, more: &[&str]) -> Smtp {
        require_aiosmtpd();
        let mut child = Command::new("python3")
            .args([&script("smtp_server.py"), name, &port.to_string()])
            .args(more)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run python3");
        let out = Log::default();
        out.follow(child.stdout.take().unwrap());
        let line = out.wait_for_any(&[&["listening "], &["<process ended>"]]);
        // Port 0: the one it got.
        let port: u16 = line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("smtp_server.py {name} did not start: {}", out.text()));
        Smtp {
            child,
            out,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one mail through `addr` with smtplib (smtp_send.py): what it
/// printed (`banner 220 ...`, `sent 250 delivered to A`).
pub fn send_mail(addr: SocketAddr, subject: &str) -> String {
    let out = Command::new("python3")
        .args([
            &script("smtp_send.py"),
            &addr.ip().to_string(),
            &addr.port().to_string(),
            subject,
        ])
        .output()
        .expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "smtp_send.py: {text}");
    text
}

/// The server that took a mail, from [`send_mail`]'s output (`A` for
/// `sent 250 delivered to A`).
pub fn delivered_to(said: &str) -> String {
    said.split("sent 250 delivered to ")
        .nth(1)
        .unwrap_or_else(|| panic!("no delivery in {said}"))
        .trim()
        .to_string()
}

/// A `redis-server` on `port`, with `requirepass` when `password` is
/// given, saving nothing; killed on drop.
pub struct Redis {
    child: Child,
    pub addr: SocketAddr,
    /// Its working directory, removed after it is gone.
    _dir: tempfile::TempDir,
}

impl Redis {
    pub fn start(port: u16, password: Option<&str>) -> Redis {
        require_command("redis-server", "redis-server");
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", dir.path().to_str().unwrap()]);
        if let Some(p) = password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run redis-server");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let r = Redis {
            child,
            addr,
            _dir: dir,
        };
        wait_listening(addr);
        r
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `redis-cli -h 127.0.0.1 -p PORT ARGS...`: its output, trimmed.
pub fn redis_cli(addr: SocketAddr, args: &[&str]) -> String {
    require_command("redis-cli", "redis-tools");
    let out = Command::new("redis-cli")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A TLS origin process (tests/clients/sni_origin.py) with its own
/// certificate, which Pocket never holds: its port and the lines it
/// printed. Killed on drop.
pub struct TlsOrigin {
    child: Child,
    pub port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl TlsOrigin {
    /// Starts an origin named `name` with a self-signed certificate for
    /// `host`, made here with openssl, on a free port.
    pub fn start(dir: &Path, name: &str, host: &str) -> TlsOrigin {
        require_command("openssl", "openssl");
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "1", "-subj", &format!("/CN={host}")])
            .args(["-addext", &format!("subjectAltName=DNS:{host}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl req");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let mut child = Command::new("python3")
            .arg(script("sni_origin.py"))
            .arg(name)
            .arg(&cert)
            .arg(&key)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("listening ") {
                    let _ = tx.send(port.parse::<u16>().unwrap());
                }
                kept.lock().unwrap().push(line);
            }
        });
        let port = rx.recv_timeout(DEADLINE).expect("the origin starts");
        TlsOrigin { child, port, lines }
    }

    /// TCP connections it accepted so far.
    pub fn accepted(&self) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("accepted"))
            .count()
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl s_client -servername NAME` (no SNI at all when `name` is
/// None): what it printed (the server's certificate subject and what the
/// origin wrote) and its exit status.
pub fn s_client(addr: SocketAddr, name: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new("timeout");
    cmd.arg("20")
        .args(["openssl", "s_client", "-connect", &addr.to_string()]);
    match name {
        Some(name) => cmd.args(["-servername", name]),
        None => cmd.arg("-noservername"),
    };
    let out = cmd
        .args(["-alpn", "h2,http/1.1", "-ign_eof"])
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}
