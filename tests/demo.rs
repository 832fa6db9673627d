//! `pocket demo` serves a file the user can edit, where the welcome text
//! says it is: written to `pocket-demo/demo.lua` in the folder the demo
//! starts in, reloaded on save without a rebuild, and kept (edits and all)
//! by the next run. The demo runs on free ports (`--port`,
//! `--origin-ports`), so a demo the user runs on 8080, 9001 and 9002 at
//! the same time does not make these tests fail.

mod common;
use common::*;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `pocket demo` in `dir`; killed on drop.
struct Demo {
    child: Child,
    log: Log,
    out: Log,
}

/// Free ports for the demo's listener, origins A and B and the admin
/// listener.
#[derive(Clone, Copy)]
struct Ports {
    web: u16,
    a: u16,
    b: u16,
    admin: u16,
}

impl Ports {
    fn free() -> Ports {
        // Held together while picked, so the three differ.
        let held: Vec<std::net::TcpListener> = (0..4)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let port = |i: usize| held[i].local_addr().unwrap().port();
        Ports {
            web: port(0),
            a: port(1),
            b: port(2),
            admin: port(3),
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--port".into(),
            self.web.to_string(),
            "--origin-ports".into(),
            format!("{},{}", self.a, self.b),
            "--admin-port".into(),
            self.admin.to_string(),
        ]
    }

    fn web(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.web).into()
    }

    /// The shipped demo.lua as the demo writes it with these ports.
    fn source(&self, original: &str) -> String {
        original
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", self.web))
            .replace("127.0.0.1:9001", &format!("127.0.0.1:{}", self.a))
            .replace("127.0.0.1:9002", &format!("127.0.0.1:{}", self.b))
            .replace("127.0.0.1:8404", &format!("127.0.0.1:{}", self.admin))
    }
}

impl Demo {
    fn start(dir: &Path, ports: Ports) -> Demo {
        let mut child = Command::new(pocket_bin())
            .args(["demo", "--workers", "1"])
            .args(ports.args())
            .current_dir(dir)
            .env("POCKET_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pocket demo");
        let log = Log::default();
        log.follow(child.stderr.take().unwrap());
        let out = Log::default();
        out.follow(child.stdout.take().unwrap());
        let demo = Demo { child, log, out };
        let line = demo
            .log
            .wait_for_any(&[&["pocket ready"], &["<process ended>"]]);
        assert!(
            !line.contains("<process ended>"),
            "pocket demo did not start; log:\n{}",
            demo.log.text()
        );
        demo
    }

    /// The welcome text's line naming the policy file.
    fn policy_line(&self) -> String {
        self.out.wait_for(&["The policy is "])
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_demo_serves_an_editable_file_in_the_current_folder() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pocket-demo/demo.lua");
    let ports = Ports::free();
    let web = ports.web();

    // First run: the file appears, the original with the ports asked
    // for, named by its full path.
    let demo = Demo::start(dir.path(), ports);
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("engine/src/demo.lua"))
            .unwrap();
    let original = ports.source(&shipped);
    assert_ne!(original, shipped, "the ports are written into the file");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    // The welcome text shows where the demo really listens.
    demo.out.wait_for(&[&format!(
        "Open http://127.0.0.1:{}/ in a browser",
        ports.web
    )]);
    // The stats page is there, where the welcome says, showing A and B.
    let admin: SocketAddr = ([127, 0, 0, 1], ports.admin).into();
    demo.out
        .wait_for(&[&format!("http://{admin}/ is the stats page")]);
    let host = admin.to_string();
    let status = send(
        admin,
        request("GET", "/api/status", &[("host", host.as_str())], ""),
    )
    .await;
    assert_eq!(status.status, 200, "{}", status.text());
    for origin in [ports.a, ports.b] {
        assert!(
            status.text().contains(&format!("\"127.0.0.1:{origin}\"")),
            "{}",
            status.text()
        );
    }
    let line = demo.policy_line();
    assert!(
        line.contains(&format!(
            "The policy is {} (written just now)",
            file.display()
        )),
        "{line}"
    );
    assert_eq!(get(web, "/ping").await.text(), "pong\n");
    // The demo's access log is on from the first request (stderr, text):
    // the script's own answer, `LR`.
    demo.log.wait_for(&["\"GET ", " /ping HTTP/1.1\" 200 LR "]);
    let served: Vec<String> = [
        get(web, "/").await.header("x-served-by"),
        get(web, "/").await.header("x-served-by"),
    ]
    .into_iter()
    .map(|h| h.expect("x-served-by from on_response"))
    .collect();
    served.iter().for_each(|s| {
        assert!(
            [ports.a, ports.b]
                .iter()
                .any(|p| s == &format!("127.0.0.1:{p}")),
            "{s}"
        )
    });
    assert_ne!(served[0], served[1], "round robin over A and B");

    // An edit, saved: the next request follows it, no restart.
    let from = demo.log.lines().len();
    let edited = original.replace(r#""pong\n""#, r#""pong, edited\n""#);
    assert_ne!(edited, original, "the demo answers /ping with \"pong\\n\"");
    std::fs::write(&file, &edited).unwrap();
    demo.log
        .wait_for_after(from, &["reload (file changed): generation 2 is live"]);
    assert_eq!(get(web, "/ping").await.text(), "pong, edited\n");
    drop(demo);

    // Second run: the user's file is kept, not overwritten.
    let demo = Demo::start(dir.path(), ports);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), edited);
    let line = demo.policy_line();
    assert!(
        line.contains(&format!(
            "The policy is {} (yours, from an earlier run",
            file.display()
        )),
        "{line}"
    );
    assert_eq!(get(web, "/ping").await.text(), "pong, edited\n");
    drop(demo);

    // A broken file is refused at start with path:line and the way back.
    std::fs::write(
        &file,
        original.replace("balance = \"round_robin\",", "balance = ,"),
    )
    .unwrap();
    let out = Command::new(pocket_bin())
        .args(["demo", "--workers", "1"])
        .args(ports.args())
        .current_dir(dir.path())
        .output()
        .expect("run pocket demo");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("pocket-demo/demo.lua:"), "{err}");
    assert!(
        err.contains("delete it and `pocket demo` writes the original again"),
        "{err}"
    );
}

/// The welcome text's promise, in a real browser (Debian's headless
/// chromium, driven by tests/browser/demo_page.py with selenium): "Open
/// http://.../ in a browser and reload: A and B alternate". A browser asks
/// for /favicon.ico after each page; the demo's policy answers it itself,
/// so only page loads take turns (sent to the pool, the icon took every
/// other turn and every reload showed B).
#[test]
fn a_browser_reloading_the_demo_page_sees_a_and_b_alternate() {
    require_browser();
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let demo = Demo::start(dir.path(), ports);
    let loads = 6;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/demo_page.py");
    let out = Command::new("python3")
        .args([
            script,
            &format!("http://{}/", ports.web()),
            &loads.to_string(),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run python3");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && said.ends_with("DONE\n"),
        "the browser said:\n{said}\nPocket's log:\n{}",
        demo.log.text()
    );
    let pages: Vec<&str> = said.lines().filter(|l| *l != "DONE").collect();
    assert_eq!(pages.len(), loads, "{said}");
    let servers: Vec<&str> = pages
        .iter()
        .map(|page| {
            ["A", "B"]
                .into_iter()
                .find(|s| page.starts_with(&format!("hello from {s} ")))
                .unwrap_or_else(|| panic!("a page from origin A or B, not {page:?}"))
        })
        .collect();
    for pair in servers.windows(2) {
        assert_ne!(
            pair[0],
            pair[1],
            "each reload reaches the other server: {servers:?}\nPocket's log:\n{}",
            demo.log.text()
        );
    }
    // The browser did ask for the icon, and the policy answered it.
    demo.log
        .wait_for(&["\"GET ", " /favicon.ico HTTP/1.1\" 204 LR "]);
    assert!(
        !demo
            .log
            .text()
            .lines()
            .any(|l| l.contains("/favicon.ico") && l.contains("server=127.0.0.1:")),
        "no icon request reached an origin:\n{}",
        demo.log.text()
    );
}

/// `pocket demo` takes only options: a wrong one is answered with a usage
/// line that shows them as optional, not as if `--workers` were required.
#[test]
fn a_wrong_demo_option_shows_the_options_as_optional() {
    let out = Command::new(pocket_bin())
        .args(["demo", "--foo"])
        .output()
        .expect("run pocket demo");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("Usage: pocket demo [OPTIONS]"), "{err}");
    assert!(!err.contains("Usage: pocket demo --workers"), "{err}");
}

/// `examples/NAME/run.sh` with `CARGO_TARGET_DIR` set uses the binary
/// there (it used `target/release/pocket`, which was not there: three
/// "No such file or directory", then "Pocket on http://..." though nothing
/// started). Here that binary fails at once: the script stops with the
/// reason, exits non-zero, announces nothing and leaves nothing running.
#[test]
fn an_example_that_cannot_start_says_why_and_announces_nothing() {
    let target = tempfile::tempdir().unwrap();
    let release = target.path().join("release");
    std::fs::create_dir_all(&release).unwrap();
    let fake = release.join("pocket");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"fake pocket: cannot start ($*)\" >&2\nexit 3\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for example in [
        "canary",
        "content-switching",
        "maintenance-page",
        "sticky-sessions",
    ] {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(example)
            .join("run.sh");
        let out = Command::new("bash")
            .arg(&script)
            .env("CARGO_TARGET_DIR", target.path())
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::null())
            .output()
            .expect("run the example's run.sh");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{example}: {err}");
        assert!(!err.contains("Pocket on http"), "{example}: {err}");
        assert!(!err.contains("No such file"), "{example}: {err}");
        if err.contains("is already in use") {
            // Someone runs this example now: refused before anything ran.
            continue;
        }
        assert!(
            err.contains("fake pocket: cannot start (origin --name"),
            "{example}: {err}"
        );
        assert!(
            err.contains("exited (status 3) before listening on port"),
            "{example}: {err}"
        );
        let left = std::fs::read_dir(tmp.path()).unwrap().count();
        assert_eq!(left, 0, "{example}: its run folder is removed");
    }
}

/// `pocket demo` with ports it cannot serve on (0, a port given twice, a
/// busy listener port) says why and exits 1 before it writes its file or
/// says it is running; a kept file on other ports than asked is told.
#[test]
fn the_demo_refuses_bad_or_busy_ports_before_it_says_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pocket-demo/demo.lua");
    let ports = Ports::free();
    let run = |args: Vec<String>| {
        let out = Command::new(pocket_bin())
            .args(["demo", "--workers", "1"])
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run pocket demo");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let origins = format!("{},{}", ports.a, ports.b);
    // The listener port busy (the tester's `--port 18490` with it taken).
    let busy = std::net::TcpListener::bind(ports.web()).unwrap();
    let (code, out, err) = run(ports.args());
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(!out.contains("is running"), "{out}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{}", ports.web)),
        "{err}"
    );
    assert!(!file.exists(), "nothing written for a busy port");
    drop(busy);
    // The listener port equal to an origin's (`--port 18480
    // --origin-ports 18480,18482`), and 0.
    for (port, says) in [
        (ports.a.to_string(), format!("are both {}", ports.a)),
        ("0".to_string(), "--port is 0".to_string()),
    ] {
        let (code, out, err) = run(vec![
            "--port".into(),
            port,
            "--origin-ports".into(),
            origins.clone(),
        ]);
        assert_eq!(code, Some(1), "{out}{err}");
        assert!(!out.contains("is running"), "{out}");
        assert!(err.contains(&says), "{err}");
        assert!(!file.exists(), "nothing written for bad ports");
    }

    // A file kept from a run on other ports: the welcome says it listens
    // elsewhere than asked.
    let first = Demo::start(dir.path(), ports);
    first.policy_line();
    drop(first);
    let other = Ports::free();
    let demo = Demo::start(dir.path(), other);
    demo.out.wait_for(&[&format!(
        "Note: pocket-demo/demo.lua (kept as it is) listens on 127.0.0.1:{}, not on port {} (--port",
        ports.web, other.web
    )]);
    demo.out.wait_for(&[&format!(
        "Note: pocket-demo/demo.lua (kept as it is) has its stats page on 127.0.0.1:{}, not on port {}",
        ports.admin, other.admin
    )]);
    demo.out
        .wait_for(&["(--admin-port, 8404 unless you give it)"]);
    demo.out
        .wait_for(&["Note: origins A and B run on", "(--origin-ports"]);
    demo.out.wait_for(&["so its requests"]);
}
