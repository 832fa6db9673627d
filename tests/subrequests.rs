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
}

/// examples/auth-request/policy.lua with its addresses swapped for the
/// test's: the example itself runs.
fn example_policy(app: SocketAddr, auth: SocketAddr) -> String {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/auth-request/policy.lua"),
    )
    .unwrap();
    text.replace("127.0.0.1:8086", "127.0.0.1:0")
        .replace("127.0.0.1:9601", &app.to_string())
        .replace("127.0.0.1:9602", &auth.to_string())
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
    tokio::time::timeout(DEADLINE, async {
        loop {
            let gone = auth.gone.notified();
            if auth.closed.load(Ordering::SeqCst) >= 1 {
                return;
            }
            gone.await;
        }
    })
    .await
    .expect("the timed-out sub-request's connection was closed");
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
    tokio::time::timeout(DEADLINE, async {
        loop {
            let gone = auth.gone.notified();
            if auth.closed.load(Ordering::SeqCst) >= 1 {
                return;
            }
            gone.await;
        }
    })
    .await
    .expect("the sub-request of a client that left was dropped");
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
