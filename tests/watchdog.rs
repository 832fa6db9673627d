//! The watchdog: a worker that stops coming back is named in the log
//! (hook, `path:line` where the hook is defined, request id), taken out of
//! rotation and replaced; the other workers keep serving, `pocket reload`
//! keeps working, and SIGTERM still ends the process within the grace
//! period plus 1 s.
//!
//! The stall is the failure lab's `hang_worker` fault (`pocket run
//! --lab-faults`, then SIGUSR2: the next hook call hangs its worker for
//! good). Script escapes from the time budget get closed one by one, so a
//! test built on one of them would stop testing the watchdog the day it is
//! closed; the lab fault stands for whatever escape is left.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const GRACE: Duration = Duration::from_secs(2);

/// The hook is defined on line 4: the log must say so.
fn policy(origin: SocketAddr) -> String {
    format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{origin}" }} }} }},
  on_request = function(req)
    req:set_header("x-seen", "yes")
  end,
}}"#
    )
}

fn start(policy: &str) -> Pocket {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "policy.lua", policy);
    let mut child = Command::new(pocket_bin())
        .args([
            "run",
            path.to_str().unwrap(),
            "--workers",
            "2",
            "--grace",
            "2s",
            "--lab-faults",
        ])
        .env("POCKET_LOG", "info")
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
        policy: path,
    };
    let line = p
        .log
        .wait_for_any(&[&["pocket ready"], &["<process ended>"]]);
    assert!(!line.contains("<process ended>"), "{}", p.log.text());
    p
}

/// One request on a fresh connection: the status, or None if the
/// connection failed or gave no answer within `wait`.
fn get(addr: SocketAddr, wait: Duration) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(wait)).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out);
    text.split(' ').nth(1)?.parse().ok()
}

/// Makes one worker hang: arms the lab fault and sends the request whose
/// hook call hangs (from a thread: it is never answered).
fn hang_a_worker(p: &Pocket, addr: SocketAddr) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(p.pid() as i32, libc::SIGUSR2) };
    p.log.wait_for(&["lab fault hang_worker armed"]);
    std::thread::spawn(move || get(addr, Duration::from_secs(120)));
    let line = p
        .log
        .wait_for(&["lab fault hang_worker: worker", "hangs in on_request"]);
    eprintln!("{line}");
}

/// Sends SIGTERM and returns how long the process took to end.
fn stop(p: &mut Pocket) -> Duration {
    let t = Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(p.pid() as i32, libc::SIGTERM) };
    let deadline = t + DEADLINE;
    loop {
        if p.child.try_wait().unwrap().is_some() {
            return t.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "pocket did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The one time bound the watchdog promises: grace + 1 s. Checked with a
/// generous margin for a loaded CI machine.
fn assert_ended_in_time(took: Duration) {
    let bound = GRACE + Duration::from_secs(1);
    eprintln!("SIGTERM to exit: {took:?} (bound {bound:?})");
    assert!(
        took < bound + Duration::from_secs(2),
        "SIGTERM took {took:?}; the bound is grace + 1 s = {bound:?}"
    );
}

#[test]
fn a_stuck_worker_is_named_replaced_and_the_rest_goes_on() {
    let a = origin("A");
    let mut p = start(&policy(a.addr));
    let addr = p.addr("web");
    for _ in 0..4 {
        assert_eq!(get(addr, DEADLINE), Some(200));
    }

    hang_a_worker(&p, addr);
    let stuck = p.log.wait_for(&[
        "is stuck: on_request (",
        "policy.lua:4) for request ",
        "has not returned for",
    ]);
    let replaced = p.log.wait_for(&["started in place of stuck worker"]);
    eprintln!("{stuck}\n{replaced}");

    // The fleet serves every new request (the stuck worker's sockets have
    // left the reuseport group; its replacement joined it).
    let failed = (0..100)
        .filter(|_| get(addr, Duration::from_secs(30)) != Some(200))
        .count();
    assert_eq!(failed, 0, "requests failed after the replacement");

    // A reload no longer waits on the stuck worker.
    let (code, out, err) = pocket_cmd(&["reload", p.policy.to_str().unwrap()]);
    assert_eq!(code, 0, "reload refused: {err}\n{}", p.log.text());
    assert!(out.contains("reloaded: generation 2"), "{out}");
    let (_, status, _) = pocket_cmd(&["status", p.policy.to_str().unwrap()]);
    assert!(status.contains("workers: 2\n"), "{status}");
    assert!(status.contains("workers_replaced: 1\n"), "{status}");
    assert_eq!(get(addr, DEADLINE), Some(200));

    assert_ended_in_time(stop(&mut p));
}

#[test]
fn sigterm_ends_the_process_in_time_even_before_the_watchdog_noticed() {
    let a = origin("A");
    let mut p = start(&policy(a.addr));
    let addr = p.addr("web");
    assert_eq!(get(addr, DEADLINE), Some(200));
    hang_a_worker(&p, addr);
    // At once: the stuck worker is still one of the fleet the drain waits for.
    assert_ended_in_time(stop(&mut p));
}
