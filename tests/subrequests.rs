//! Sub-requests from `on_request` (http.get / http.request / http.tcp):
//! a real Pocket, real origins, and a small auth service written here
//! that says yes to `Bearer good`, and whose `/slow` answers only when the
//! test lets it.

mod common;
use common::*;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

/// The auth service: `GET /auth` is 200 with `Authorization: Bearer good`,
/// else 401; `/slow` waits for a permit from `release` (counting in
/// `waiting` when it starts to), then answers 200; anything else 200.
struct Auth {
    addr: SocketAddr,
    release: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    arrived: Arc<Notify>,
    /// Connections that ended (the peer closed or went away).
    closed: Arc<AtomicUsize>,
    gone: Arc<Notify>,
}

async fn auth_service() -> Auth {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let release = Arc::new(Semaphore::new(0));
    let waiting = Arc::new(AtomicUsize::new(0));
    let arrived = Arc::new(Notify::new());
    let closed = Arc::new(AtomicUsize::new(0));
    let gone = Arc::new(Notify::new());
    let auth = Auth {
        addr,
        release: release.clone(),
        waiting: waiting.clone(),
        arrived: arrived.clone(),
        closed: closed.clone(),
        gone: gone.clone(),
    };
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let (release, waiting, arrived) = (release.clone(), waiting.clone(), arrived.clone());
            let (closed, gone) = (closed.clone(), gone.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                let status = if path.starts_with("/slow") {
                    waiting.fetch_add(1, Ordering::SeqCst);
                    arrived.notify_waiters();
                    // Released by the test, or the peer goes away first.
                    tokio::select! {
                        permit = release.acquire() => { permit.unwrap().forget(); }
                        _ = s.read(&mut buf) => {
                            closed.fetch_add(1, Ordering::SeqCst);
                            gone.notify_waiters();
                            return;
                        }
                    }
                    "200 OK"
                } else if path.starts_with("/auth") {
                    if head.contains("\r\nauthorization: bearer good\r\n") {
                        "200 OK"
                    } else {
                        "401 Unauthorized"
                    }
                } else {
                    "200 OK"
                };
                let body = format!("auth says {status}\n");
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nx-auth-user: alice\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    auth
}

impl Auth {
    /// Waits until `n` requests wait in `/slow`.
    async fn wait_for_waiting(&self, n: usize) {
        tokio::time::timeout(DEADLINE, async {
            loop {
                let arrived = self.arrived.notified();
                if self.waiting.load(Ordering::SeqCst) >= n {
                    return;
                }
                arrived.await;
            }
        })
        .await
        .expect("the sub-request reached the auth service");
    }

    /// Waits until one connection to the service has ended (`what` is
    /// what that proves, for the failure message).
    async fn wait_for_a_close(&self, what: &str) {
        tokio::time::timeout(DEADLINE, async {
            loop {
                let gone = self.gone.notified();
                if self.closed.load(Ordering::SeqCst) >= 1 {
                    return;
                }
                gone.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}"));
    }
}

/// examples/auth-request/policy.lua with its addresses swapped for the
/// test's: the example itself runs.
fn example_policy(app: SocketAddr, auth: SocketAddr) -> String {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/auth-request/policy.lua"),
    )
    .unwrap();
    text.replace("127.0.0.1:8087", "127.0.0.1:0")
        .replace("127.0.0.1:9701", &app.to_string())
        .replace("127.0.0.1:9702", &auth.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_example_allows_denies_and_passes_public_pages() {
    let app = origin("app");
    let auth = auth_service().await;
    let pocket = Pocket::start(&example_policy(app.addr, auth.addr), 1);
    let web = pocket.addr("web");

    let ok = send(
        web,
        request("GET", "/account", &[("authorization", "Bearer good")], ""),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(ok.text().contains("hello from app"), "{}", ok.text());

    let denied = send(
        web,
        request("GET", "/account", &[("authorization", "Bearer bad")], ""),
    )
    .await;
    assert_eq!(denied.status, 401, "{}", denied.text());
    assert_eq!(denied.text(), "not allowed\n");
    assert!(denied.header("www-authenticate").is_some());

    let none = get(web, "/account").await;
    assert_eq!(none.status, 401);

    let public = get(web, "/public/index.html").await;
    assert_eq!(public.status, 200);
    assert!(public.text().contains("hello from app"));
}

/// A policy whose requests with `x-need-auth` wait on the auth
/// service's `/slow`, with `timeout` seconds; the others need no
/// sub-request.
fn slow_policy(app: SocketAddr, auth: SocketAddr, timeout: &str) -> String {
    format!(
        r#"
return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0" }} }},
  pools = {{ app = {{ servers = {{ "{app}" }} }} }},
  on_request = function(req)
    if req:header("x-need-auth") then
      local res, err = http.get("http://{auth}/slow", {{ timeout = {timeout} }})
      if not res then return pocket.respond(504, "auth: " .. err .. "\n") end
      req:set_header("x-auth", tostring(res.status))
    end
    return "app"
  end,
  -- A synchronous hook of other requests, run while some wait: the
  -- waiting ones' budget is armed anew when they resume.
  on_response = function(req, res) res:set_header("x-seen", "yes") end,
}}
"#
    )
}

fn needs_auth(path: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    request("GET", path, &[("x-need-auth", "1")], "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_auth_service_does_not_hold_up_requests_that_need_no_auth() {
    let app = origin("app");
    let auth = auth_service().await;
    // One worker: the waiting request and the others share it.
    let pocket = Pocket::start(&slow_policy(app.addr, auth.addr, "30"), 1);
    let web = pocket.addr("web");

    let waiting = tokio::spawn(async move { send(web, needs_auth("/headers")).await });
    let second = tokio::spawn(async move { send(web, needs_auth("/headers")).await });
    auth.wait_for_waiting(2).await;

    // Both wait on the auth service; meanwhile the worker serves others.
    for _ in 0..5 {
        let plain = get(web, "/plain").await;
        assert_eq!(plain.status, 200);
        assert!(plain.text().contains("hello from app"));
        assert_eq!(plain.header("x-seen").as_deref(), Some("yes"));
    }
    assert!(
        !waiting.is_finished() && !second.is_finished(),
        "the auth requests were answered before the auth service was"
    );

    // Waiting is not running: past the watchdog's 1 s (and far past the
    // 25 ms hook budget) the worker is not found stuck, and the waiting
    // hooks go on when their answers come.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(
        !pocket.log.text().contains("is stuck"),
        "{}",
        pocket.log.text()
    );
    auth.release.add_permits(2);
    for task in [waiting, second] {
        let resp = tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert!(resp.text().contains("x-auth: 200"), "{}", resp.text());
    }
}

#[tokio::test]
async fn a_dead_auth_service_gives_the_script_its_error() {
    let app = origin("app");
    let dead = dead_addr();
    let policy = format!(
        r#"
return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0" }} }},
  pools = {{ app = {{ servers = {{ "{app}" }} }} }},
  on_request = function(req)
    local res, err = http.request {{ method = "POST", url = "http://{dead}/auth", body = "x", timeout = 5 }}
    if not res then return pocket.respond(503, "auth: " .. err .. "\n") end
    return "app"
  end,
}}
"#,
        app = app.addr
    );
    let pocket = Pocket::start(&policy, 1);
    let resp = get(pocket.addr("web"), "/").await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(
        resp.text().starts_with("auth: connect failed:") && resp.text().contains(&dead.to_string()),
        "{}",
        resp.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_request_past_its_deadline_gives_timed_out() {
    let app = origin("app");
    let auth = auth_service().await;
    let pocket = Pocket::start(&slow_policy(app.addr, auth.addr, "0.3"), 1);
    let resp = send(pocket.addr("web"), needs_auth("/x")).await;
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert_eq!(resp.text(), "auth: timed out after 0.3s\n");
    // The sub-request was dropped at its deadline: the auth service sees
    // its connection go.
    auth.wait_for_a_close("the timed-out sub-request's connection was closed")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_drops_its_sub_request() {
    let app = origin("app");
    let auth = auth_service().await;
    let pocket = Pocket::start(&slow_policy(app.addr, auth.addr, "30"), 1);
    let web = pocket.addr("web");
    let client = tokio::spawn(async move { send(web, needs_auth("/x")).await });
    auth.wait_for_waiting(1).await;
    client.abort();
    auth.wait_for_a_close("the sub-request of a client that left was dropped")
        .await;
    // The worker goes on serving.
    assert_eq!(get(web, "/plain").await.status, 200);
}

#[tokio::test]
async fn a_script_that_loops_after_a_sub_request_is_stopped_by_its_budget() {
    let app = origin("app");
    let policy = format!(
        r#"
return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0" }} }},
  pools = {{ app = {{ servers = {{ "{app}" }} }} }},
  on_request = function(req)
    if req.path == "/loop" then
      local res, err = http.get("http://{app}/health")
      assert(res, err)
      while true do end
    end
    return "app"
  end,
}}
"#,
        app = app.addr
    );
    let pocket = Pocket::start(&policy, 1);
    let web = pocket.addr("web");
    let resp = get(web, "/loop").await;
    assert_eq!(resp.status, 500, "{}", resp.text());
    pocket
        .log
        .wait_for(&["policy.lua:9:", "ran past its time budget"]);
    // The worker is fine, and so is the next request.
    assert_eq!(get(web, "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_targets_tcp_and_bad_arguments() {
    let app = origin("app");
    let auth = auth_service().await;
    let policy = format!(
        r#"
return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0" }} }},
  pools = {{
    app = {{ servers = {{ "{app}" }} }},
    auth = {{ servers = {{ "{auth}" }} }},
  }},
  on_request = function(req)
    if req.path == "/pool" then
      local res, err = http.get("/auth", {{ pool = "auth", headers = {{ authorization = "Bearer good" }} }})
      return pocket.respond(200, res.status .. " " .. res.headers["x-auth-user"] .. " " .. res.body)
    elseif req.path == "/tcp" then
      local got, err = http.tcp("{auth}", "GET /x HTTP/1.1\r\nhost: a\r\n\r\n", {{ all = true }})
      return pocket.respond(200, got)
    elseif req.path == "/nopool" then
      local res, err = http.get("/x", {{ pool = "nope" }})
      return pocket.respond(503, err)
    elseif req.path == "/https" then
      http.get("https://example.com/")
    elseif req.path == "/typo" then
      http.get("http://{auth}/", {{ timout = 1 }})
    elseif req.path == "/co" then
      local co = coroutine.wrap(function() return select(2, http.get("http://{auth}/")) end)
      return pocket.respond(200, co())
    end
    return "app"
  end,
  on_response = function(req, res)
    local r, err = http.get("http://{auth}/")
    res:set_header("x-sub", err)
  end,
}}
"#,
        app = app.addr,
        auth = auth.addr
    );
    let pocket = Pocket::start(&policy, 1);
    let web = pocket.addr("web");

    let pool = get(web, "/pool").await;
    assert_eq!(pool.text(), "200 alice auth says 200 OK\n");

    let tcp = get(web, "/tcp").await;
    assert!(
        tcp.text().starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        tcp.text()
    );

    let nopool = get(web, "/nopool").await;
    assert_eq!(nopool.text(), "no pool named \"nope\" (pools: app, auth)");

    let https = get(web, "/https").await;
    assert_eq!(https.status, 500);
    pocket.log.wait_for(&[
        "policy.lua:19: bad argument #1 to 'http.get'",
        "https is not supported yet",
    ]);
    let typo = get(web, "/typo").await;
    assert_eq!(typo.status, 500);
    pocket.log.wait_for(&[
        "policy.lua:21: bad argument #2 to 'http.get'",
        "unknown option \"timout\" (options: timeout, headers, pool)",
    ]);

    // Nor does a coroutine the script made: not run, and on_request goes on.
    let co = get(web, "/co").await;
    assert_eq!(co.status, 200);
    assert!(co.text().starts_with("not run:"), "{}", co.text());

    // on_response does not wait: its sub-requests are not run.
    let plain = get(web, "/plain").await;
    assert_eq!(plain.status, 200);
    assert!(
        plain.header("x-sub").unwrap().starts_with("not run:"),
        "{:?}",
        plain.header("x-sub")
    );
}

/// `pocket test` runs on_request without a network: a sub-request gets
/// `nil, "not run: ..."`, and a policy without one runs as before.
#[test]
fn pocket_test_does_not_run_sub_requests() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/auth-request/policy.lua");
    let (code, out, err) = pocket_cmd(&["test", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("2 passed, 0 failed"), "{out}");

    // pocket explain runs on_request the same way: the sub-request is not
    // run, and the trace shows the script's answer for that.
    let (code, out, err) = pocket_cmd(&["explain", path.to_str().unwrap(), "GET http://x/account"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("answered by the script: 503"), "{out}");
    let (_, out, _) = pocket_cmd(&["explain", path.to_str().unwrap(), "GET http://x/public/a"]);
    assert!(out.contains("pool \"app\" (on_request chose it)"), "{out}");
}

/// A server that answers every request with `100 Continue` heads, one
/// after another, for up to 20 s (or until the peer goes), never a final
/// response (breaker 15's hostile.py `/cont20`).
async fn continue_flood() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let heads = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(64);
                let until = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
                while tokio::time::Instant::now() < until {
                    if s.write_all(&heads).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Breaker 15 F1b: a server that streams `100 Continue` heads. A
/// sub-request to it gets an error value and a proxied request a 502,
/// both after at most 16 interim heads; the one worker serves other
/// requests meanwhile and is never found stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_streams_100_continue_does_not_hold_the_worker() {
    let app = origin("app");
    let flood = continue_flood().await;
    let policy = format!(
        r#"
return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0" }} }},
  pools = {{
    app = {{ servers = {{ "{app}" }} }},
    hostile = {{ servers = {{ "{flood}" }}, timeouts = {{ response = "15s" }} }},
  }},
  on_request = function(req)
    if req.path == "/sub" then
      local res, err = http.get("http://{flood}/cont20", {{ timeout = 15 }})
      return pocket.respond(502, "sub: " .. tostring(res and res.status) .. " " .. tostring(err) .. "\n")
    elseif req.path == "/proxied" then
      return "hostile"
    end
    return "app"
  end,
}}
"#,
        app = app.addr
    );
    let pocket = Pocket::start(&policy, 1);
    let web = pocket.addr("web");
    let sub = tokio::spawn(async move { get(web, "/sub").await });
    let proxied = tokio::spawn(async move { get(web, "/proxied").await });
    for _ in 0..5 {
        let plain = get(web, "/plain").await;
        assert_eq!(plain.status, 200);
    }
    let sub = tokio::time::timeout(DEADLINE, sub).await.unwrap().unwrap();
    assert_eq!(sub.status, 502, "{}", sub.text());
    assert!(
        sub.text()
            .starts_with("sub: nil too many interim responses (more than 16 1xx heads) from "),
        "{}",
        sub.text()
    );
    let proxied = tokio::time::timeout(DEADLINE, proxied)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(proxied.status, 502, "{}", proxied.text());
    assert!(
        proxied
            .text()
            .contains("sent too many interim (1xx) responses"),
        "{}",
        proxied.text()
    );
    assert_eq!(get(web, "/plain").await.status, 200);
    assert!(
        !pocket.log.text().contains("is stuck"),
        "{}",
        pocket.log.text()
    );
}

/// Breaker 15 F1: a sub-request to Pocket's own listener. Each level
/// carries its depth; the 10th nested request's sub-request is refused
/// with an error value, so one client request costs 10 nested
/// connections, not thousands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_request_to_pocket_itself_stops_at_depth_10() {
    let me = dead_addr();
    let policy = format!(
        r#"
return {{
  listeners = {{ {{ name = "web", bind = "{me}" }} }},
  pools = {{ app = {{ servers = {{ "{me}" }} }} }},
  on_request = function(req)
    local res, err = http.get("http://{me}/self", {{ timeout = 20 }})
    if not res then
      return pocket.respond(508, err .. " at " .. tostring(req:header("pocket-subrequest-depth")) .. "\n")
    end
    return pocket.respond(res.status, res.body)
  end,
}}
"#
    );
    let pocket = Pocket::start(&policy, 2);
    let resp = get(pocket.addr("web"), "/self").await;
    assert_eq!(resp.status, 508, "{}", resp.text());
    assert_eq!(
        resp.text(),
        "sub-request loop: depth 10 reached (a sub-request to Pocket itself?) at 10\n"
    );
    pocket
        .log
        .wait_for(&["policy.lua:6: sub-request loop: depth 10 reached"]);
    // Logged once, not per request.
    let again = get(pocket.addr("web"), "/self").await;
    assert_eq!(again.status, 508);
    let logged = pocket
        .log
        .lines()
        .iter()
        .filter(|l| l.contains("sub-request loop"))
        .count();
    assert!(
        logged <= 2,
        "logged {logged} times (once per worker at most)"
    );
}

/// A server that answers each connection with the first line it got (a
/// PROXY header, or the request line).
async fn first_line_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let end = got.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
                let line = String::from_utf8_lossy(&got[..end]).into_owned();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{line}",
                    line.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

/// Breaker 15 F2: a sub-request through a `send_proxy` pool starts its
/// connection with the PROXY header naming the request's client, as the
/// pool's own requests do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_request_through_a_send_proxy_pool_sends_the_header() {
    let echo = first_line_echo().await;
    let policy = format!(
        r#"
return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0" }} }},
  pools = {{
    spv1 = {{ servers = {{ "{echo}" }}, send_proxy = "v1" }},
    plain = {{ servers = {{ "{echo}" }}, own_health = true }},
  }},
  on_request = function(req)
    if req.path == "/proxied" then return "spv1" end
    local res, err = http.get("/viapool", {{ pool = req.path == "/plain" and "plain" or "spv1" }})
    return pocket.respond(200, tostring(res and res.body or err))
  end,
}}
"#
    );
    let pocket = Pocket::start(&policy, 1);
    let web = pocket.addr("web");
    let sub = get(web, "/sub").await;
    assert!(
        sub.text().starts_with("PROXY TCP4 127.0.0.1 127.0.0.1 "),
        "{}",
        sub.text()
    );
    let proxied = get(web, "/proxied").await;
    assert!(
        proxied
            .text()
            .starts_with("PROXY TCP4 127.0.0.1 127.0.0.1 "),
        "{}",
        proxied.text()
    );
    let plain = get(web, "/plain").await;
    assert_eq!(plain.text(), "GET /viapool HTTP/1.1");
}

/// Breaker 15 F3: `local web = http` (an alias) still makes sub-requests:
/// the load-time detection reads Lua names, not the text `http.`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_of_http_still_makes_sub_requests() {
    let auth = auth_service().await;
    let policy = format!(
        r#"
local web = http
return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0" }} }},
  pools = {{ app = {{ servers = {{ "{auth}" }} }} }},
  on_request = function(req)
    local r, e = web.get("http://{auth}/x", {{ timeout = 5 }})
    return pocket.respond(200, "got: " .. tostring(r and r.status) .. " " .. tostring(e) .. "\n")
  end,
}}
"#,
        auth = auth.addr
    );
    let pocket = Pocket::start(&policy, 1);
    let resp = get(pocket.addr("web"), "/").await;
    assert_eq!(resp.text(), "got: 200 nil\n");
}

/// Breaker 15 minors: what the script wrote wrong raises at its line, on
/// one line (control characters escaped), naming the part that is wrong;
/// a #fragment is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_and_headers_raise_at_the_scripts_line() {
    let auth = auth_service().await;
    let policy = format!(
        r#"
return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0" }} }},
  pools = {{ app = {{ servers = {{ "{auth}" }} }} }},
  on_request = function(req)
    if req.path == "/space" then
      http.get("http://{auth}/a b")
    elseif req.path == "/crlf" then
      http.get("http://{auth}/", {{ headers = {{ ["x a\r\nX-Inj"] = "1" }} }})
    elseif req.path == "/value" then
      http.get("http://{auth}/", {{ headers = {{ ["x-a"] = "1\r\nX-Inj: 2" }} }})
    elseif req.path == "/userinfo" then
      http.get("http://user:pw@{auth}/x")
    elseif req.path == "/fragment" then
      local r, e = http.get("http://{auth}#frag")
      return pocket.respond(200, tostring(r and r.status) .. " " .. tostring(e))
    end
    return "app"
  end,
}}
"#,
        auth = auth.addr
    );
    let pocket = Pocket::start(&policy, 1);
    let web = pocket.addr("web");
    assert_eq!(get(web, "/space").await.status, 500);
    pocket.log.wait_for(&[
        "policy.lua:7: bad argument #1 to 'http.get': the path \"/a b\" has a character",
    ]);
    assert_eq!(get(web, "/crlf").await.status, 500);
    pocket.log.wait_for(&[
        "policy.lua:9: bad argument #2 to 'http.get': headers: bad header name \"x a\\r\\nX-Inj\"",
    ]);
    assert_eq!(get(web, "/value").await.status, 500);
    pocket.log.wait_for(&[
        "policy.lua:11: bad argument #2 to 'http.get': headers: bad value for header \"x-a\" (\"1\\r\\nX-Inj: 2\"",
    ]);
    assert_eq!(get(web, "/userinfo").await.status, 500);
    pocket.log.wait_for(&[
        "policy.lua:13: bad argument #1 to 'http.get': user:password@ in a URL is not supported",
    ]);
    let fragment = get(web, "/fragment").await;
    assert_eq!(fragment.text(), "200 nil");
    // Every event is one line: no raw CR or LF split a message.
    assert!(
        !pocket.log.lines().iter().any(|l| l.starts_with("X-Inj")),
        "{}",
        pocket.log.text()
    );
}
