//! `on_connect` on a `tcp` listener reading `conn.sni`/`conn.alpn`, over
//! real sockets: the wait happens only when the script reads them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::{ConnectVerdict, WorkerScript};
use crate::script::api::conn::ConnView;
use crate::script::Limits;

const POLICY: &str = r#"
return {
  listeners = {
    { name = "smtp", bind = "127.0.0.1:1", mode = "tcp", pool = "mail" },
    { name = "tls", bind = "127.0.0.1:2", mode = "tcp", pool = "site_a",
      timeouts = { client_hello = "300ms" } },
  },
  pools = {
    mail = { mode = "tcp", servers = { "127.0.0.1:3" } },
    site_a = { mode = "tcp", servers = { "127.0.0.1:4" } },
    site_b = { mode = "tcp", servers = { "127.0.0.1:5" } },
    web = { servers = { "127.0.0.1:6" } },
  },
  on_connect = function(conn)
    if conn.listener ~= "tls" then return nil end
    local name = conn.sni
    local alpn = conn.alpn and table.concat(conn.alpn, ",") or "none"
    if name == "a.example" and alpn == "h2,http/1.1" then return "site_a" end
    if name == "b.example" and conn.sni == "b.example" then return "site_b" end
    if name == "web.example" then return "web" end
    if name == "boom.example" then error("no such site") end
    if name == "loop.example" then while true do end end
    if name == nil then return nil end
    return pocket.reject("unknown name " .. name .. " alpn " .. alpn)
  end,
}
"#;

pub(super) fn script(source: &str) -> WorkerScript {
    let registry = crate::lb::StateRegistry::default();
    let policy = crate::config::load_policy_source(
        std::path::Path::new("sni.lua"),
        Arc::from(source),
        &registry,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let limits = Limits {
        hook_budget: Duration::from_millis(50),
        ..Limits::default()
    };
    WorkerScript::new(Arc::new(policy), limits).expect("script")
}

/// A connected pair: the client's end and the accepted end.
pub(super) async fn pair(l: &TcpListener) -> (TcpStream, TcpStream) {
    let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (s, _) = l.accept().await.unwrap();
    (c, s)
}

pub(super) fn hello(name: &str, alpn: &[&[u8]]) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let server = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

pub(super) fn view(s: &TcpStream, listener: &str) -> ConnView {
    ConnView::new(
        s.peer_addr().unwrap(),
        s.local_addr().unwrap(),
        Arc::from(listener),
        false,
    )
}

pub(super) fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn sni_picks_the_pool_and_alpn_is_a_list() {
    let script = script(POLICY);
    run(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        for (name, pool) in [("a.example", "site_a"), ("B.Example", "site_b")] {
            let (mut c, s) = pair(&l).await;
            c.write_all(&hello(name, &[b"h2", b"http/1.1"]))
                .await
                .unwrap();
            let mut conn = view(&s, "tls");
            let verdict = script.on_connect_tcp(&mut conn, &s).await.unwrap();
            let want = script.policy.pool_by_name(pool).unwrap();
            assert_eq!(verdict, ConnectVerdict::Pool(want), "{name}");
            assert_eq!(conn.sni().as_deref(), Some(&*name.to_ascii_lowercase()));
        }
        let (mut c, s) = pair(&l).await;
        c.write_all(&hello("c.example", &[])).await.unwrap();
        let verdict = script
            .on_connect_tcp(&mut view(&s, "tls"), &s)
            .await
            .unwrap();
        assert_eq!(
            verdict,
            ConnectVerdict::Reject("unknown name c.example alpn none".into())
        );
    });
}

#[test]
fn a_listener_whose_path_never_reads_sni_never_waits() {
    let script = script(POLICY);
    run(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        // The client sends nothing (an SMTP client waits for the banner).
        let (_c, s) = pair(&l).await;
        let started = Instant::now();
        let verdict = tokio::time::timeout(
            Duration::from_secs(10),
            script.on_connect_tcp(&mut view(&s, "smtp"), &s),
        )
        .await
        .expect("on_connect on smtp must not wait for client bytes");
        assert_eq!(verdict.unwrap(), ConnectVerdict::Default);
        assert!(started.elapsed() < Duration::from_millis(250));
    });
}

#[test]
fn plain_text_gets_nil_at_once() {
    let script = script(POLICY);
    run(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (mut c, s) = pair(&l).await;
        c.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let verdict = script
            .on_connect_tcp(&mut view(&s, "tls"), &s)
            .await
            .unwrap();
        assert_eq!(verdict, ConnectVerdict::Default);
    });
}

#[test]
fn a_silent_or_leaving_client_is_closed() {
    let script = script(POLICY);
    run(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (_c, s) = pair(&l).await;
        match script
            .on_connect_tcp(&mut view(&s, "tls"), &s)
            .await
            .unwrap()
        {
            ConnectVerdict::Closed {
                reason: why,
                timed_out: true,
            } => {
                assert!(
                    why.contains("client_hello (0.3s; 0 bytes received)"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
        let (mut c, s) = pair(&l).await;
        c.write_all(&hello("a.example", &[])[..10]).await.unwrap();
        drop(c);
        match script
            .on_connect_tcp(&mut view(&s, "tls"), &s)
            .await
            .unwrap()
        {
            ConnectVerdict::Closed {
                reason: why,
                timed_out: false,
            } => {
                assert!(why.contains("10 bytes"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        // The VM goes on serving the next connection.
        let (mut c, s) = pair(&l).await;
        c.write_all(&hello("a.example", &[b"h2", b"http/1.1"]))
            .await
            .unwrap();
        let verdict = script
            .on_connect_tcp(&mut view(&s, "tls"), &s)
            .await
            .unwrap();
        assert!(matches!(verdict, ConnectVerdict::Pool(_)));
    });
}

#[test]
fn errors_after_the_wait_name_the_line_and_the_budget_still_holds() {
    let script = script(POLICY);
    run(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (mut c, s) = pair(&l).await;
        c.write_all(&hello("boom.example", &[])).await.unwrap();
        let e = script
            .on_connect_tcp(&mut view(&s, "tls"), &s)
            .await
            .unwrap_err();
        assert!(
            e.message.contains("sni.lua:") && e.message.contains("no such site"),
            "{}",
            e.message
        );
        assert!(!e.limit);

        let (mut c, s) = pair(&l).await;
        c.write_all(&hello("loop.example", &[])).await.unwrap();
        let e = script
            .on_connect_tcp(&mut view(&s, "tls"), &s)
            .await
            .unwrap_err();
        assert!(e.limit, "{}", e.message);

        let (mut c, s) = pair(&l).await;
        c.write_all(&hello("web.example", &[])).await.unwrap();
        let e = script
            .on_connect_tcp(&mut view(&s, "tls"), &s)
            .await
            .unwrap_err();
        assert!(e.message.contains("an http pool"), "{}", e.message);
    });
}

#[test]
fn a_policy_that_never_names_sni_keeps_the_plain_call() {
    let plain = r#"
return {
  listeners = { { name = "smtp", bind = "127.0.0.1:1", mode = "tcp", pool = "mail" } },
  pools = { mail = { mode = "tcp", servers = { "127.0.0.1:3" } } },
  on_connect = function(conn)
    if conn.peer_ip == "10.0.0.66" then return pocket.reject("blocked") end
  end,
}
"#;
    let script = script(plain);
    assert!(script.waiting_on_connect.is_none());
    assert!(self::script(POLICY).waiting_on_connect.is_some());
}

#[test]
fn sni_and_alpn_are_nil_on_http_listeners_and_unknown_fields_are_errors() {
    let script = script(
        r#"
return {
  listeners = { { name = "web", bind = "127.0.0.1:1", pool = "web" } },
  pools = { web = { servers = { "127.0.0.1:6" } } },
  on_connect = function(conn)
    assert(conn.sni == nil and conn.alpn == nil)
    if conn.peer_port == 1 then return conn.nope end
  end,
}
"#,
    );
    let peer = "127.0.0.1:2".parse().unwrap();
    let mut conn = ConnView::new(peer, peer, Arc::from("web"), true);
    assert_eq!(script.on_connect(&mut conn).unwrap(), None);
    let peer = "127.0.0.1:1".parse().unwrap();
    let mut conn = ConnView::new(peer, peer, Arc::from("web"), true);
    let e = script.on_connect(&mut conn).unwrap_err();
    assert!(
        e.message.contains("connection has no field \"nope\""),
        "{}",
        e.message
    );
}

/// Not a check: prints what `on_connect` costs per connection with and
/// without the ClientHello wait (`cargo test --lib -- --ignored
/// on_connect_cost --nocapture`).
#[test]
#[ignore]
fn on_connect_cost() {
    let waiting = script(POLICY);
    let bytes = hello("a.example", &[b"h2", b"http/1.1"]);
    run(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let n = 2000;
        for (label, listener) in [
            ("smtp (no wait, coroutine policy)", "smtp"),
            ("tls (peek + parse + coroutine)", "tls"),
        ] {
            let mut spent = Duration::ZERO;
            for _ in 0..n {
                let (mut c, s) = pair(&l).await;
                c.write_all(&bytes).await.unwrap();
                let mut conn = view(&s, listener);
                let t = Instant::now();
                let v = waiting.on_connect_tcp(&mut conn, &s).await.unwrap();
                spent += t.elapsed();
                assert!(!matches!(v, ConnectVerdict::Closed { .. }));
            }
            println!(
                "{label}: {:.1} µs per connection",
                spent.as_secs_f64() * 1e6 / n as f64
            );
        }
    });
    let plain = script(
        r#"
return {
  listeners = { { name = "smtp", bind = "127.0.0.1:1", mode = "tcp", pool = "mail" } },
  pools = { mail = { mode = "tcp", servers = { "127.0.0.1:3" } } },
  on_connect = function(conn)
    if conn.listener ~= "tls" then return nil end
  end,
}
"#,
    );
    run(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let n = 2000;
        let mut spent = Duration::ZERO;
        for _ in 0..n {
            let (_c, s) = pair(&l).await;
            let mut conn = view(&s, "smtp");
            let t = Instant::now();
            plain.on_connect_tcp(&mut conn, &s).await.unwrap();
            spent += t.elapsed();
        }
        println!(
            "plain call (policy never names sni): {:.1} µs per connection",
            spent.as_secs_f64() * 1e6 / n as f64
        );
    });
}

/// `on_connect_given` (pocket explain tcp://, pocket test's conn cases):
/// the ClientHello as given, no socket, the verdict read as live, and
/// whether the script read it.
#[test]
fn a_given_client_hello_decides_without_a_socket() {
    use crate::tcp::client_hello::ClientHello;
    let script = script(POLICY);
    let peer = "127.0.0.1:2".parse().unwrap();
    let given = |listener: &str, sni: Option<&str>, alpn: Option<&[&str]>| {
        let mut conn = ConnView::new(peer, peer, Arc::from(listener), false);
        let hello = (sni.is_some() || alpn.is_some()).then(|| ClientHello {
            sni: sni.map(str::to_string),
            alpn: alpn.map(|a| a.iter().map(|p| p.as_bytes().to_vec()).collect()),
        });
        let verdict = script.on_connect_given(&mut conn, hello);
        let read = conn.hello.as_ref().is_some_and(|s| s.was_read());
        (verdict, read)
    };
    let site_a = script.policy.pool_by_name("site_a").unwrap();
    let (v, read) = given("tls", Some("a.example"), Some(&["h2", "http/1.1"]));
    assert_eq!(v.unwrap(), ConnectVerdict::Pool(site_a));
    assert!(read);
    let (v, _) = given("tls", None, None);
    assert_eq!(v.unwrap(), ConnectVerdict::Default);
    let (v, _) = given("tls", Some("c.example"), None);
    assert_eq!(
        v.unwrap(),
        ConnectVerdict::Reject("unknown name c.example alpn none".into())
    );
    let (v, _) = given("tls", Some("web.example"), None);
    assert!(v.unwrap_err().message.contains("an http pool"));
    // The smtp listener returns before reading: nothing read.
    let (v, read) = given("smtp", Some("a.example"), None);
    assert_eq!(v.unwrap(), ConnectVerdict::Default);
    assert!(!read);
}
