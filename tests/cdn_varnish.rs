//! The showcase: Pocket in front of two real Varnish caches in front of an
//! origin, all decided by `pocket.cdn`. Each URL lives in one cache and
//! becomes a hit there; POSTs bypass; a cache that stops takes only its own
//! keys to the origin; with both stopped the site stays up.
//! Needs Debian's varnish (tests/run installs it); fails where it is absent.

mod common;
use common::*;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Varnish {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Varnish {
    fn start(origin: SocketAddr) -> Varnish {
        let addr = dead_addr();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("varnishd")
            .args(["-F", "-j", "none", "-T", "none", "-s", "malloc,32m"])
            .args(["-a", &addr.to_string(), "-b", &origin.to_string()])
            .arg("-n")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start varnishd");
        let v = Varnish {
            child,
            addr,
            _dir: dir,
        };
        wait_until(
            || std::net::TcpStream::connect(v.addr).is_ok(),
            "varnishd listening",
        );
        v
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        wait_until(
            || std::net::TcpStream::connect(self.addr).is_err(),
            "varnishd stopped",
        );
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(mut ok: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A cache hit: Varnish's X-Varnish names two transactions (this one and
/// the one that filled the cache).
fn is_hit(r: &Resp) -> bool {
    r.header("x-varnish")
        .is_some_and(|v| v.split_whitespace().count() == 2)
}

#[tokio::test]
async fn pocket_chains_two_varnish_caches_with_fallback_to_the_origin() {
    require_command("varnishd", "varnish");
    let origin = origin("origin");
    let mut v1 = Varnish::start(origin.addr);
    let mut v2 = Varnish::start(origin.addr);
    let policy = format!(
        r#"local cdn = require "pocket.cdn"
return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "cache" }} }},
  pools = {{
    origin = {{ servers = {{ "{o}" }} }},
    cache = cdn.tier {{ servers = {{ "{v1}", "{v2}" }}, fallback = "origin",
                       check = {{ tcp = true, interval = "100ms", fall = 1, rise = 2 }} }},
  }},
  on_response = function(req, res) res:set_header("x-pocket-server", res.server) end,
}}"#,
        o = origin.addr,
        v1 = v1.addr,
        v2 = v2.addr
    );
    let pocket = Pocket::start(&policy, 2);
    let addr = pocket.addr("web");

    // Each URL: one cache, and a hit from the second request on.
    let urls: Vec<String> = (0..12).map(|i| format!("/page/{i}")).collect();
    let mut home = std::collections::HashMap::new();
    for u in &urls {
        let first = get(addr, u).await;
        let again = get(addr, u).await;
        assert_eq!(first.status, 200);
        let cache = first.header("x-pocket-server").unwrap();
        assert_eq!(
            again.header("x-pocket-server").as_deref(),
            Some(cache.as_str()),
            "{u}: one cache"
        );
        assert!(
            is_hit(&again),
            "{u}: second request is a hit: {:?}",
            again.header("x-varnish")
        );
        assert_eq!(first.text(), again.text(), "{u}: the cached body");
        home.insert(u.clone(), cache);
    }
    let on_v1 = home.values().filter(|c| **c == v1.addr.to_string()).count();
    assert!(
        on_v1 > 0 && on_v1 < urls.len(),
        "keys spread over both caches: {home:?}"
    );

    // POST bypasses the caches.
    let before = origin.request_count();
    let r = send(addr, request("POST", "/page/0", &[], "form=1")).await;
    assert_eq!(r.header("x-pocket-server"), Some(origin.addr.to_string()));
    assert!(r.header("x-varnish").is_none());
    assert_eq!(origin.request_count(), before + 1);

    // v2 stops: its keys go to the origin, v1's keys keep hitting v1.
    let mark = pocket.log.lines().len();
    v2.stop();
    pocket.log.wait_for_after(
        mark,
        &[&format!("server {} of pool cache is DOWN", v2.addr)],
    );
    for u in &urls {
        let r = try_get(&pocket, addr, u).await;
        assert_eq!(r.status, 200);
        if home[u] == v1.addr.to_string() {
            assert!(
                is_hit(&r) && r.header("x-pocket-server") == Some(v1.addr.to_string()),
                "{u} still hits v1"
            );
        } else {
            assert_eq!(
                r.header("x-pocket-server"),
                Some(origin.addr.to_string()),
                "{u} goes to the origin"
            );
        }
    }

    // Both stop: the origin serves everything.
    let mark = pocket.log.lines().len();
    v1.stop();
    pocket.log.wait_for_after(
        mark,
        &[&format!("server {} of pool cache is DOWN", v1.addr)],
    );
    for u in &urls {
        let r = try_get(&pocket, addr, u).await;
        assert_eq!(
            (r.status, r.header("x-pocket-server")),
            (200, Some(origin.addr.to_string()))
        );
    }
}

/// GET on a fresh connection; a failure shows Pocket's log.
async fn try_get(pocket: &Pocket, addr: std::net::SocketAddr, path: &str) -> Resp {
    match H1::connect(addr)
        .await
        .send(request("GET", path, &[], ""))
        .await
    {
        Ok(r) => r,
        Err(e) => panic!(
            "GET {path} failed: {e:?}; pocket's log:\n{}",
            pocket.log.text()
        ),
    }
}
