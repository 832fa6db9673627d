//! What a policy script can do to a request, as a user sees it through a
//! real Pocket in front of real origins.

mod common;
use common::*;

fn switching_policy(stat: &OriginHandle, api: &OriginHandle, admin: &OriginHandle) -> String {
    format!(
        r#"
local util = require "pocket.util"
local helper = require "helper"          -- a module next to the policy
local static = pocket.regex [[^/(static|assets)/]]
local pong = pocket.respond(200, "pong\n", {{ ["content-type"] = "text/plain", ["x-local"] = "yes" }})

return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "api" }} }},
  pools = {{
    static = {{ servers = {{ "{s}" }} }},
    api    = {{ servers = {{ "{a}" }} }},
    admin  = {{ servers = {{ "{m}" }} }},
  }},
  on_request = function(req)
    if req.path == "/ping" then return pong end
    if req.path == "/old" then return pocket.redirect(301, "/new") end
    if req.path == "/teapot" then return pocket.respond(418, "short and stout\n") end
    if req.host == "admin.example" then return "admin" end
    if req:header("x-debug") == "1" then return "admin" end
    if util.cookie(req:header("cookie"), "beta") == "yes" then return "static" end
    if static:is_match(req.path) then return "static" end
    if req.path == "/rewrite" then
      req:set_path("/headers")
      req:set_header("x-added", helper.tag)
      req:remove_header("x-secret")
      return "api"
    end
    local id = pocket.regex("^/items/(\\d+)$"):match(req.path)
    if id then req:set_header("x-item", id) end
    -- nil: the listener's default pool (api)
  end,
  on_response = function(req, res)
    res:set_header("x-served-by", res.pool .. " " .. res.server)
    res:set_header("x-req-path", req.path)
    res:remove_header("x-origin-request")
  end,
}}
"#,
        s = stat.addr,
        a = api.addr,
        m = admin.addr
    )
}

fn start_switching() -> (Pocket, [OriginHandle; 3]) {
    let (s, a, m) = (origin("static"), origin("api"), origin("admin"));
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), "helper.lua", "return { tag = 'from-helper' }\n");
    let path = write_policy(dir.path(), "policy.lua", &switching_policy(&s, &a, &m));
    (Pocket::start_file(dir, path, 2), [s, a, m])
}

#[tokio::test]
async fn content_switching_by_host_path_header_and_cookie() {
    let (pocket, _origins) = start_switching();
    let addr = pocket.addr("web");
    let r = get(addr, "/static/app.css").await;
    assert_eq!(r.header("x-origin").as_deref(), Some("static"));
    let r = get(addr, "/anything").await;
    assert_eq!(r.header("x-origin").as_deref(), Some("api"), "default pool");
    let r = send(
        addr,
        request("GET", "/", &[("host", "Admin.Example:8080")], ""),
    )
    .await;
    assert_eq!(
        r.header("x-origin").as_deref(),
        Some("admin"),
        "host, case and port ignored"
    );
    let r = send(addr, request("GET", "/", &[("x-debug", "1")], "")).await;
    assert_eq!(r.header("x-origin").as_deref(), Some("admin"));
    let r = send(
        addr,
        request("GET", "/", &[("cookie", "a=b; beta=yes")], ""),
    )
    .await;
    assert_eq!(r.header("x-origin").as_deref(), Some("static"));
}

#[tokio::test]
async fn local_responses_and_redirects_never_reach_a_server() {
    let (pocket, origins) = start_switching();
    let addr = pocket.addr("web");
    let r = get(addr, "/ping").await;
    assert_eq!((r.status, r.text().as_str()), (200, "pong\n"));
    assert_eq!(r.header("x-local").as_deref(), Some("yes"));
    let r = get(addr, "/old").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location").as_deref(), Some("/new"));
    let r = get(addr, "/teapot").await;
    assert_eq!(r.status, 418);
    assert!(origins.iter().all(|o| o.request_count() == 0));
}

#[tokio::test]
async fn header_edits_in_both_directions_and_rewrites() {
    let (pocket, _origins) = start_switching();
    let addr = pocket.addr("web");
    let r = send(
        addr,
        request("GET", "/rewrite?q=1", &[("x-secret", "s3cret")], ""),
    )
    .await;
    let seen = r.text();
    assert!(seen.contains("x-added: from-helper"), "{seen}");
    assert!(!seen.contains("s3cret"), "{seen}");
    assert_eq!(
        r.header("x-req-path").as_deref(),
        Some("/headers"),
        "on_response sees the rewritten path"
    );
    assert!(r
        .header("x-served-by")
        .unwrap()
        .starts_with("api 127.0.0.1:"));
    assert_eq!(r.header("x-origin-request"), None, "removed by on_response");

    let r = get(addr, "/items/42").await;
    assert_eq!(r.status, 200);
    let r = get(addr, "/headers").await;
    assert!(!r.text().contains("x-item"));
}

#[tokio::test]
async fn forwarding_headers_host_and_hop_by_hop() {
    let api = origin("api");
    let policy = format!(
        r#"return {{ listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "api" }} }},
                   pools = {{ api = {{ servers = {{ "{}" }} }} }} }}"#,
        api.addr
    );
    let pocket = Pocket::start(&policy, 1);
    let r = send(
        pocket.addr("web"),
        request(
            "GET",
            "/headers",
            &[
                ("host", "shop.example"),
                ("x-forwarded-for", "192.0.2.7"),
                ("x-forwarded-proto", "https"),
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("x-end-to-end", "kept"),
            ],
            "",
        ),
    )
    .await;
    let seen = r.text();
    assert!(seen.contains("host: shop.example\n"), "Host kept: {seen}");
    assert!(
        seen.contains("x-forwarded-for: 192.0.2.7, 127.0.0.1\n"),
        "{seen}"
    );
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
    assert!(seen.contains("x-end-to-end: kept\n"), "{seen}");
    assert!(!seen.contains("x-hop"), "named in Connection: {seen}");
    assert!(!seen.contains("keep-alive"), "{seen}");
}

#[tokio::test]
async fn h2c_clients_reach_http1_servers() {
    let (pocket, _origins) = start_switching();
    let addr = pocket.addr("web");
    let r = h2_get(addr, "shop.example:8080", "/headers").await;
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("host: shop.example:8080\n"),
        "{}",
        r.text()
    );
    assert_eq!(r.header("x-origin").as_deref(), Some("api"));
    let r = h2_get(addr, "admin.example", "/").await;
    assert_eq!(
        r.header("x-origin").as_deref(),
        Some("admin"),
        "host from :authority"
    );
    let r = h2_get(addr, "x", "/ping").await;
    assert_eq!(r.text(), "pong\n");
}

#[tokio::test]
async fn on_connect_can_reject_a_connection() {
    let api = origin("api");
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "api" }},
                {{ name = "closed", bind = "127.0.0.1:0", pool = "api" }} }},
  pools = {{ api = {{ servers = {{ "{}" }} }} }},
  on_connect = function(conn)
    if conn.listener == "closed" and conn.peer_ip == "127.0.0.1" then
      return pocket.reject("not from loopback")
    end
  end,
}}"#,
        api.addr
    );
    let pocket = Pocket::start(&policy, 1);
    assert_eq!(get(pocket.addr("web"), "/").await.status, 200);
    let answer = raw(pocket.addr("closed"), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(
        answer, "",
        "rejected connections are closed without a response"
    );
    pocket
        .log
        .wait_for(&["connection rejected", "not from loopback"]);
    assert_eq!(api.request_count(), 1);
}
