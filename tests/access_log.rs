//! The access log as a user reads it: one line per request, from a real
//! Pocket in front of real origins, for each way an exchange can end
//! (proxied, answered by the script, refused, retried, cut by the server,
//! left by the client), in both formats; rotation with SIGUSR1; a full
//! disk costs lines, never requests.
//!
//! JSON lines are read with Python's `json` module (Debian's python3), as
//! a log shipper would.

mod common;
use common::*;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// The lines of the log file at `path` once one has every one of `parts`
/// (panics with the file after the deadline).
fn wait_line(path: &Path, parts: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return l.to_string();
        }
        if start.elapsed() > DEADLINE {
            panic!("no access log line with {parts:?} in {path:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A JSON line, flattened by Python's json module: `timings.total_ms`,
/// `retries.0.cause`, `fields.user`; null as `null`.
fn parsed(line: &str) -> HashMap<String, String> {
    const FLATTEN: &str = r#"
import json, sys
def walk(prefix, v, out):
    if isinstance(v, dict):
        for k, x in v.items(): walk(prefix + [k], x, out)
    elif isinstance(v, list):
        out.append((".".join(prefix), "list:%d" % len(v)))
        for i, x in enumerate(v): walk(prefix + [str(i)], x, out)
    else:
        out.append((".".join(prefix), "null" if v is None else (str(v).lower() if isinstance(v, bool) else str(v))))
out = []
walk([], json.loads(sys.stdin.read()), out)
for k, v in out: print(k + "\t" + v)
"#;
    require_command("python3", "python3");
    let mut child = std::process::Command::new("python3")
        .args(["-c", FLATTEN])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(line.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not a JSON line: {line}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn policy(log: &str, pool: &str, extra: &str) -> String {
    format!(
        r#"return {{
  log = {log},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {pool} }},
  on_request = function(req)
    req:log_field("user", req:header("x-user") or "nobody")
    if req.path == "/ping" then return pocket.respond(200, "pong\n") end
  end,
  {extra}
}}"#
    )
}

fn log_path(dir: &tempfile::TempDir, name: &str) -> std::path::PathBuf {
    dir.path().join(name)
}

#[tokio::test]
async fn a_proxied_request_in_json() {
    let a = origin("A");
    let dir = tempfile::tempdir().unwrap();
    let file = log_path(&dir, "access.json");
    let pocket = Pocket::start(
        &policy(
            &format!(r#"{{ access = "{}", format = "json" }}"#, file.display()),
            &format!(r#"{{ servers = {{ "{}" }} }}"#, a.addr),
            "",
        ),
        2,
    );
    let addr = pocket.addr("web");
    let r = send(
        addr,
        request(
            "GET",
            "/hello?x=1",
            &[("host", "shop.test"), ("x-user", "alice")],
            "",
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    let line = wait_line(&file, &["/hello?x=1"]);
    let f = parsed(&line);
    let id = r.header("x-request-id");
    assert_eq!(f["method"], "GET");
    assert_eq!(f["host"], "shop.test");
    assert_eq!(f["path"], "/hello?x=1");
    assert_eq!(f["proto"], "HTTP/1.1");
    assert_eq!(f["status"], "200");
    assert_eq!(f["listener"], "web");
    assert_eq!(f["generation"], "1");
    assert_eq!(f["pool"], "app");
    assert_eq!(f["server"], a.addr.to_string());
    assert_eq!(f["termination"], "--");
    assert_eq!(f["bytes_in"], "0");
    assert_eq!(f["bytes_out"], r.body.len().to_string());
    assert_eq!(f["retries"], "list:0");
    assert_eq!(f["fields.user"], "alice");
    assert!(f["client"].starts_with("127.0.0.1:"), "{line}");
    assert!(
        !f["id"].is_empty() && id.is_none_or(|i| i == f["id"]),
        "{line}"
    );
    // RFC 3339, UTC, milliseconds: 2026-11-30T01:45:15.123Z
    let t = &f["time"];
    assert!(
        t.len() == 24 && t.ends_with('Z') && &t[10..11] == "T" && &t[19..20] == ".",
        "{line}"
    );
    for k in ["hooks_ms", "connect_ms", "first_byte_ms", "total_ms"] {
        let v: f64 = f[&format!("timings.{k}")]
            .parse()
            .unwrap_or_else(|_| panic!("timings.{k} is a number: {line}"));
        assert!(v >= 0.0, "{line}");
    }

    // A request body is counted in.
    let r = send(addr, request("POST", "/upload", &[], &"x".repeat(5000))).await;
    assert_eq!(r.status, 200);
    let f = parsed(&wait_line(&file, &["/upload"]));
    assert_eq!(f["bytes_in"], "5000");
    assert_eq!(f["method"], "POST");

    // An h2 stream gets its own line, its host from :authority.
    let r = h2_get(addr, "h2.test", "/over-h2").await;
    assert_eq!(r.status, 200);
    let f = parsed(&wait_line(&file, &["/over-h2"]));
    assert_eq!(f["proto"], "HTTP/2");
    assert_eq!(f["host"], "h2.test");
    assert_eq!(f["termination"], "--");
}

#[tokio::test]
async fn local_answers_and_refusals_in_text() {
    let a = origin("A");
    let dir = tempfile::tempdir().unwrap();
    let file = log_path(&dir, "access.log");
    let pocket = Pocket::start(
        &policy(
            &format!(r#"{{ access = "{}" }}"#, file.display()),
            &format!(r#"{{ servers = {{ "{}" }} }}"#, a.addr),
            "",
        ),
        1,
    );
    let addr = pocket.addr("web");

    let r = get(addr, "/ping").await;
    assert_eq!(r.text(), "pong\n");
    let line = wait_line(&file, &[" /ping "]);
    assert!(
        line.contains("\"GET test /ping HTTP/1.1\" 200 LR "),
        "{line}"
    );
    assert!(line.contains(" out=5 "), "{line}");
    assert!(line.contains(" pool=- server=- "), "{line}");
    assert!(line.contains(" user=\"nobody\""), "{line}");

    // A proxied one in text.
    let r = get(addr, "/plain").await;
    assert_eq!(r.status, 200);
    let line = wait_line(&file, &[" /plain "]);
    assert!(line.contains("\" 200 -- "), "{line}");
    assert!(
        line.contains(&format!(" pool=app server={} ", a.addr)),
        "{line}"
    );
    assert!(line.contains(" g1 "), "{line}");

    // Refused before any server: Pocket's (P) in the request phase (R).
    let out = raw(
        addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    let line = wait_line(&file, &["\"CONNECT "]);
    assert!(line.contains(" 405 PR "), "{line}");
    // No hook ran for it: its hook time is nothing.
    assert!(line.contains(" ms=0.000/"), "{line}");
}

#[tokio::test]
async fn a_retry_after_a_refused_connect_a_server_timeout_and_no_server_left() {
    let a = origin("A");
    let dead = dead_addr();
    let dir = tempfile::tempdir().unwrap();
    let file = log_path(&dir, "access.json");
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  log = {{ access = "{}", format = "json" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }},
                {{ name = "gone", bind = "127.0.0.1:0", pool = "dead" }},
                {{ name = "slow", bind = "127.0.0.1:0", pool = "slow" }} }},
  pools = {{
    app = {{ servers = {{ "{dead}", "{}" }}, retries = 1 }},
    dead = {{ servers = {{ "{dead}" }}, retries = 0 }},
    slow = {{ servers = {{ "{}" }}, timeouts = {{ response = "300ms" }} }},
  }},
}}"#,
            file.display(),
            a.addr,
            a.addr
        ),
        1,
    );
    let addr = pocket.addr("web");
    // Round robin sends one of the first two requests to the dead server
    // first; it is retried on A.
    let mut retried = None;
    for i in 0..6 {
        let r = get(addr, &format!("/try/{i}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let line = wait_line(&file, &[&format!("/try/{i}\"")]);
        if line.contains("connect failed") {
            retried = Some(line);
            break;
        }
    }
    let line = retried.expect("a request tried the dead server first");
    let f = parsed(&line);
    assert_eq!(f["retries"], "list:1");
    assert_eq!(f["retries.0.server"], dead.to_string());
    assert_eq!(f["retries.0.cause"], "connect failed");
    assert_eq!(f["server"], a.addr.to_string());
    assert_eq!(f["status"], "200");
    assert_eq!(f["termination"], "--");

    // A server too slow to answer: 504, a server timeout (s) waiting for
    // the head (H).
    let r = get(pocket.addr("slow"), "/delay/20000").await;
    assert_eq!(r.status, 504);
    let f = parsed(&wait_line(&file, &["/delay/20000"]));
    assert_eq!(f["status"], "504");
    assert_eq!(f["termination"], "sH");
    assert_eq!(f["server"], a.addr.to_string());

    // A pool with no server to take it: 502, HAProxy's SC.
    let r = get(pocket.addr("gone"), "/nobody").await;
    assert_eq!(r.status, 502);
    let f = parsed(&wait_line(&file, &["/nobody"]));
    assert_eq!(f["status"], "502");
    assert_eq!(f["termination"], "SC");
    assert_eq!(f["server"], dead.to_string());
    assert_eq!(f["timings.first_byte_ms"], "null");
}

/// An origin that answers every request with a head promising 100000
/// bytes, sends 1000 of them, and closes: a server dying mid-body.
fn dying_origin() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                if read_request_head(&mut c).is_none() {
                    return;
                }
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
                let _ = c.write_all(&[b'x'; 1000]);
                let _ = c.flush();
                std::thread::sleep(Duration::from_millis(100));
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_server_dying_and_a_client_leaving_mid_body() {
    let a = origin("A");
    let dying = dying_origin();
    let dir = tempfile::tempdir().unwrap();
    let file = log_path(&dir, "access.json");
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  log = {{ access = "{}", format = "json" }},
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }},
                {{ name = "dies", bind = "127.0.0.1:0", pool = "dying" }} }},
  pools = {{ app = {{ servers = {{ "{}" }} }}, dying = {{ servers = {{ "{dying}" }} }} }},
}}"#,
            file.display(),
            a.addr
        ),
        1,
    );

    // The server dies mid-body: S(erver), D(ata).
    let out = raw(
        pocket.addr("dies"),
        b"GET /cut HTTP/1.1\r\nHost: test\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let f = parsed(&wait_line(&file, &["/cut"]));
    assert_eq!(f["status"], "200");
    assert_eq!(f["termination"], "SD");
    assert_eq!(f["bytes_out"], "1000");

    // The client leaves mid-body: C(lient), D(ata).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(pocket.addr("web"))
            .await
            .unwrap();
        s.write_all(b"GET /bytes/200000000 HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut got = 0;
        let mut b = vec![0u8; 65536];
        while got < 100_000 {
            let n = tokio::time::timeout(DEADLINE, s.read(&mut b))
                .await
                .expect("bytes from pocket")
                .unwrap();
            assert!(n > 0, "pocket closed early");
            got += n;
        }
    }
    let f = parsed(&wait_line(&file, &["/bytes/200000000"]));
    assert_eq!(f["status"], "200");
    assert_eq!(f["termination"], "CD");
    let out: u64 = f["bytes_out"].parse().unwrap();
    assert!(out > 0 && out < 200_000_000, "bytes_out {out}");
}

#[tokio::test]
async fn pocket_reopen_reopens_the_file_for_logrotate_and_spares_other_pockets() {
    let a = origin("A");
    let dir = tempfile::tempdir().unwrap();
    let file = log_path(&dir, "access.log");
    let pocket = Pocket::start(
        &policy(
            &format!(r#"{{ access = "{}" }}"#, file.display()),
            &format!(r#"{{ servers = {{ "{}" }} }}"#, a.addr),
            "",
        ),
        2,
    );
    let addr = pocket.addr("web");
    assert_eq!(get(addr, "/before").await.status, 200);
    wait_line(&file, &[" /before "]);

    // logrotate: move the file, then `pocket reopen` (SIGUSR1 to the
    // Pockets serving this policy, and to no other process).
    let mut bystander = std::process::Command::new(pocket_bin())
        .args(["origin", "--name", "Z", "--port", "0"])
        .env("POCKET_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its signal handlers are set once it says it listens.
    let mut said = std::io::BufReader::new(bystander.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut said, &mut line).unwrap() > 0,
            "pocket origin stopped before it listened"
        );
    }
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&file, &rotated).unwrap();
    let from = pocket.log.lines().len();
    let (code, out, err) = pocket_cmd(&["reopen", pocket.policy.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("pid {}: reopening its access log", pocket.pid())),
        "{out}"
    );
    pocket.log.wait_for_after(from, &["access log", "reopened"]);
    // A stray SIGUSR1 (a blanket `kill -USR1 $(pgrep pocket)`) does not
    // stop `pocket origin`.
    unsafe { libc::kill(bystander.id() as i32, libc::SIGUSR1) };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "pocket origin died of SIGUSR1"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();

    assert_eq!(get(addr, "/after").await.status, 200);
    wait_line(&file, &[" /after "]);
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        old.contains(" /before ") && !old.contains(" /after "),
        "{old}"
    );
    assert!(
        !std::fs::read_to_string(&file)
            .unwrap()
            .contains(" /before "),
        "the new file has only new lines"
    );
}

#[tokio::test]
async fn a_reload_can_change_the_format_and_bad_values_are_refused() {
    let a = origin("A");
    let dir = tempfile::tempdir().unwrap();
    let file = log_path(&dir, "access.log");
    let pool = format!(r#"{{ servers = {{ "{}" }} }}"#, a.addr);
    let path = write_policy(
        dir.path(),
        "policy.lua",
        &policy(
            &format!(r#"{{ access = "{}" }}"#, file.display()),
            &pool,
            "",
        ),
    );
    let pocket = Pocket::start_file_with(dir, path.clone(), 1, &["--no-watch"]);
    let addr = pocket.addr("web");

    assert_eq!(get(addr, "/as-text").await.status, 200);
    wait_line(&file, &[" /as-text "]);

    // Bad values: refused with path:line; the running policy keeps serving.
    for (bad, says) in [
        (
            r#"{ access = "-", format = "xml" }"#.to_string(),
            "log.format must be \"text\" or \"json\", not \"xml\"",
        ),
        (
            r#"{ access = "/nonexistent-dir/a.log" }"#.to_string(),
            "log.access: cannot open /nonexistent-dir/a.log",
        ),
        (
            r#"{ access = "-", colour = true }"#.to_string(),
            "unknown key \"colour\"",
        ),
    ] {
        std::fs::write(&path, policy(&bad, &pool, "")).unwrap();
        let (code, _, err) = pocket_cmd(&["reload", path.to_str().unwrap()]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("policy.lua:2:") && err.contains(says), "{err}");
        assert_eq!(get(addr, "/still").await.status, 200);
    }

    // A new policy changes the format: its requests' lines are JSON.
    std::fs::write(
        &path,
        policy(
            &format!(r#"{{ access = "{}", format = "json" }}"#, file.display()),
            &pool,
            "",
        ),
    )
    .unwrap();
    let (code, out, err) = pocket_cmd(&["reload", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(get(addr, "/as-json").await.status, 200);
    let f = parsed(&wait_line(&file, &["\"/as-json\""]));
    assert_eq!(f["path"], "/as-json");
    assert_ne!(f["generation"], "1");
}

/// Unmounts the tmpfs however the test ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// What holds the tiny file system's space, for a failure message: its
/// use (statvfs via `df`), its files, and every process's descriptor
/// that points into it (a deleted file still open keeps its blocks).
fn space_held(mnt: &Path) -> String {
    let df = std::process::Command::new("df")
        .args(["-B1"])
        .arg(mnt)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let ls = std::process::Command::new("ls")
        .args(["-la"])
        .arg(mnt)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut open = String::new();
    for proc_dir in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(to) = std::fs::read_link(fd.path()) {
                if to.starts_with(mnt) {
                    open += &format!("{} -> {}\n", fd.path().display(), to.display());
                }
            }
        }
    }
    format!("df:\n{df}\nls:\n{ls}\nopen descriptors:\n{open}")
}

#[tokio::test]
async fn a_full_disk_costs_lines_never_requests() {
    let a = origin("A");
    let dir = tempfile::tempdir().unwrap();
    // As root: a real full file system (a 64 KiB tmpfs, filled up).
    // Otherwise: /dev/full, whose every write fails with ENOSPC.
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let mnt = dir.path().join("tiny");
    std::fs::create_dir(&mnt).unwrap();
    let mut mounted = None;
    let file = if root
        && std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(&mnt)
            .status()
            .is_ok_and(|s| s.success())
    {
        mounted = Some(Mounted(mnt.clone()));
        mnt.join("access.log")
    } else {
        std::path::PathBuf::from("/dev/full")
    };
    let pocket = Pocket::start(
        &policy(
            &format!(r#"{{ access = "{}", format = "json" }}"#, file.display()),
            &format!(r#"{{ servers = {{ "{}" }} }}"#, a.addr),
            "",
        ),
        2,
    );
    let addr = pocket.addr("web");
    if mounted.is_some() {
        assert_eq!(get(addr, "/first").await.status, 200);
        wait_line(&file, &["/first"]);
        // Fill the file system.
        let mut filler = std::fs::File::create(mnt.join("filler")).unwrap();
        while filler.write_all(&[0u8; 4096]).is_ok() {}
        let _ = filler.flush();
    }
    // Every request is answered.
    let mut h1 = H1::connect(addr).await;
    for i in 0..400 {
        let r = h1.get(&format!("/full/{i}")).await;
        assert_eq!(r.status, 200);
    }
    // Pocket's log says lines were dropped.
    let line = pocket.log.wait_for(&["access log:", "dropped"]);
    assert!(line.contains("line"), "{line}");
    if mounted.is_some() {
        // Room again: lines are written again. Truncated before it is
        // removed: a removed file's blocks stay taken while any process
        // still holds it open (a descriptor a fork copied, say), which
        // made this test flaky; a truncated one gives them back at once.
        std::fs::OpenOptions::new()
            .write(true)
            .open(mnt.join("filler"))
            .and_then(|f| f.set_len(0))
            .unwrap();
        std::fs::remove_file(mnt.join("filler")).unwrap();
        // Read as bytes: a line the full disk cut may have left the file
        // not valid UTF-8, which `read_to_string` would take as empty.
        // Waits for the event with a generous deadline (a busy machine).
        let has_room_line = || {
            let bytes = std::fs::read(&file).unwrap_or_default();
            bytes.windows(6).any(|w| w == b"/room/")
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut i = 0;
        while !has_room_line() && std::time::Instant::now() < deadline {
            assert_eq!(h1.get(&format!("/room/{i}")).await.status, 200);
            i += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            has_room_line(),
            "lines are written again once there is room; the file system:\n{}\nPocket's log:\n{}",
            space_held(&mnt),
            pocket.log.text()
        );
    }
    drop(pocket);
    drop(mounted);
}

#[tokio::test]
async fn every_answer_gets_exactly_one_line_and_a_client_leaving_early_is_ch() {
    let a = origin("A");
    let dir = tempfile::tempdir().unwrap();
    let file = log_path(&dir, "access.json");
    let pocket = Pocket::start(
        &policy(
            &format!(r#"{{ access = "{}", format = "json" }}"#, file.display()),
            &format!(r#"{{ servers = {{ "{}" }} }}"#, a.addr),
            "",
        ),
        2,
    );
    let addr = pocket.addr("web");
    // A mix of answers: proxied, local, refused, HEAD, h2 streams on one
    // connection, keep-alive requests on another.
    let mut sent = 0;
    let mut h1 = H1::connect(addr).await;
    for i in 0..10 {
        assert_eq!(h1.get(&format!("/mix/{i}")).await.status, 200);
        assert_eq!(h1.get("/ping").await.status, 200);
        let r = h1
            .send(request("HEAD", &format!("/mix-head/{i}"), &[], ""))
            .await;
        assert_eq!(r.unwrap().status, 200);
        sent += 3;
    }
    for i in 0..5 {
        assert_eq!(
            h2_get(addr, "test", &format!("/mix-h2/{i}")).await.status,
            200
        );
        sent += 1;
    }
    let out = raw(addr, b"CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    sent += 1;
    // The client gives up while the server is still thinking: C(lient),
    // while waiting for the response H(ead); no status was sent.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /delay/3000 HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    sent += 1;
    let f = parsed(&wait_line(&file, &["/delay/3000"]));
    assert_eq!(f["termination"], "CH");
    assert_eq!(f["status"], "null");
    // One more, last: once its line is there, every earlier one is too
    // (both workers' buffers are drained on every tick).
    assert_eq!(get(addr, "/last").await.status, 200);
    sent += 1;
    wait_line(&file, &["\"/last\""]);
    std::thread::sleep(Duration::from_millis(500));
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), sent, "{text}");
    let f = parsed(text.lines().find(|l| l.contains("/mix-head/0")).unwrap());
    assert_eq!(f["method"], "HEAD");
    assert_eq!(f["termination"], "--");
}

/// A request head Pocket cannot read gets its answer (400, 414, 431) from
/// hyper or the head check before any request exists; it still gets one
/// line, `"<BADREQ>"` refused by Pocket (PR), as HAProxy logs it.
#[tokio::test]
async fn a_head_that_cannot_be_read_gets_a_badreq_line() {
    let a = origin("A");
    let dir = tempfile::tempdir().unwrap();
    let file = log_path(&dir, "access.log");
    let pocket = Pocket::start(
        &policy(
            &format!(r#"{{ access = "{}", format = "json" }}"#, file.display()),
            &format!(r#"{{ servers = {{ "{}" }} }}"#, a.addr),
            "",
        ),
        1,
    );
    let addr = pocket.addr("web");
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let cases: Vec<(&[u8], &str)> = vec![
        // An unknown transfer coding (hyper: 400).
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nx",
            "HTTP/1.1 400",
        ),
        // Not a request line.
        (b"HELLO\r\n\r\n", "HTTP/1.1 400"),
        // A bare LF (the head check: 400).
        (b"GET / HTTP/1.1\nHost: x\n\n", "HTTP/1.1 400"),
        // A request line over the head size (414).
        (long_uri.as_bytes(), "HTTP/1.1 414"),
    ];
    let mut statuses = Vec::new();
    for (bytes, want) in &cases {
        let out = raw(addr, bytes).await;
        assert!(out.starts_with(want), "{want}: {out}");
        statuses.push(want[9..12].to_string());
    }
    // One line each, in any order, then a normal request to know all came.
    assert_eq!(get(addr, "/after").await.status, 200);
    wait_line(&file, &["\"/after\""]);
    let text = std::fs::read_to_string(&file).unwrap();
    let bad: Vec<HashMap<String, String>> = text
        .lines()
        .filter(|l| l.contains("<BADREQ>"))
        .map(parsed)
        .collect();
    assert_eq!(bad.len(), cases.len(), "{text}");
    let mut got: Vec<String> = bad.iter().map(|l| l["status"].clone()).collect();
    got.sort();
    statuses.sort();
    assert_eq!(got, statuses, "{text}");
    for l in &bad {
        assert_eq!(l["termination"], "PR");
        assert_eq!(l["path"], "null");
    }
}

/// A policy whose log goes to a folder this machine does not have (a CI
/// run of a server's policy): `pocket test` and `pocket explain` run
/// without touching it, `pocket check` says at `path:line` that it cannot
/// be opened and creates nothing, and `pocket run` refuses to start with
/// the same words.
#[test]
fn only_serving_opens_the_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("var-log-pocket");
    let log = missing.join("access.log");
    let path = dir.path().join("policy.lua");
    std::fs::write(
        &path,
        policy(
            &format!(r#"{{ access = "{}" }}"#, log.display()),
            r#"{ servers = { "127.0.0.1:9" } }"#,
            r#"tests = { { req = { path = "/ping" }, status = 200, body = "pong\n" } },"#,
        ),
    )
    .unwrap();
    let p = path.to_str().unwrap();

    let (code, out, err) = pocket_cmd(&["test", p]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = pocket_cmd(&["explain", p, "GET http://x/ping"]);
    assert_eq!(code, 0, "{out}{err}");

    let says = format!("policy.lua:2: log.access: cannot open {}", log.display());
    let (code, out, err) = pocket_cmd(&["check", p]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&says), "{err}");
    let (code, out, err) = pocket_cmd(&["run", p]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&says), "{err}");
    assert!(!missing.exists(), "nothing was created");
}

/// A server that takes the connection, reads the request head, and closes
/// without a byte of an answer.
fn mute_origin() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&b[..n]),
                }
            }
        }
    });
    addr
}

/// The termination codes of the ends HAProxy tells apart: every server
/// taking the request and closing before a head is `SH` (not `SC`, which
/// says none could be connected to); a hook stopped by its time budget is
/// a resource limit, `RR` (an error of the script's own stays `PR`); a
/// client that stops reading is its timeout, `cD` (not `CD`, the client
/// going away).
#[tokio::test]
async fn server_closing_script_over_budget_and_client_send_timeout_codes() {
    let a = origin("A");
    let (m1, m2) = (mute_origin(), mute_origin());
    let pocket = Pocket::start(
        &format!(
            r#"return {{
  log = {{ access = "-" }},
  listeners = {{ {{ name = "mute", bind = "127.0.0.1:0", pool = "mute" }},
                {{ name = "web", bind = "127.0.0.1:0", pool = "app", timeouts = {{ send = "1s" }} }} }},
  pools = {{
    mute = {{ servers = {{ "{m1}", "{m2}" }}, retries = 2, passive = false }},
    app = {{ servers = {{ "{}" }} }},
  }},
  on_request = function(req)
    if req.path == "/spin" then while true do end end
    if req.path == "/oops" then error("oops") end
  end,
}}"#,
            a.addr
        ),
        1,
    );
    let r = get(pocket.addr("mute"), "/silence").await;
    assert_eq!(r.status, 502);
    let line = pocket.log.wait_for(&["/silence HTTP/1.1\" 502 "]);
    assert!(
        line.contains(" 502 SH ") && line.contains("retries=2"),
        "{line}"
    );
    assert!(line.contains("no response"), "{line}");

    let web = pocket.addr("web");
    assert_eq!(get(web, "/spin").await.status, 500);
    let line = pocket.log.wait_for(&["/spin HTTP/1.1\" 500 "]);
    assert!(line.contains(" 500 RR "), "{line}");
    assert_eq!(get(web, "/oops").await.status, 500);
    let line = pocket.log.wait_for(&["/oops HTTP/1.1\" 500 "]);
    assert!(line.contains(" 500 PR "), "{line}");

    // A client that reads nothing of a large body.
    const BIG: u64 = 1 << 30;
    let mut s = tokio::net::TcpStream::connect(web).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut s,
        format!("GET /bytes/{BIG} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let line = pocket
        .log
        .wait_for(&[&format!("/bytes/{BIG} HTTP/1.1\" 200 ")]);
    assert!(line.contains(" 200 cD "), "{line}");
    drop(s);
}

/// `pocket check` says where the access log goes, as it says where the
/// admin listener is.
#[test]
fn pocket_check_names_the_access_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(
        dir.path(),
        "policy.lua",
        &policy(
            r#"{ access = "-", format = "json" }"#,
            r#"{ servers = { "127.0.0.1:9" } }"#,
            "",
        ),
    );
    let (code, out, err) = pocket_cmd(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("access log: stderr (json)"), "{out}");
}
