//! Where `conn.sni`/`conn.alpn` may be read on a `tcp` listener, over
//! real sockets: a pool's `hash_key` and `balance` functions wait for the
//! ClientHello as `on_connect` does (breaker16 F2); a first read from a
//! coroutine of the script's or a C function's callback is an error in
//! Pocket's words with the script's line, and a `conn` kept past its call
//! says so (breaker16 F3).

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::on_connect_tcp_tests::{hello, pair, run, script, view};
use super::ConnectVerdict;

/// No `on_connect`: the pool functions are the first to read the name.
const POOLS: &str = r#"
return {
  listeners = {
    { name = "hk", bind = "127.0.0.1:1", mode = "tcp", pool = "hashed",
      timeouts = { client_hello = "300ms" } },
    { name = "bal", bind = "127.0.0.1:2", mode = "tcp", pool = "balanced" },
  },
  pools = {
    hashed = { mode = "tcp", balance = "hash",
               hash_key = function(conn) return conn.sni end,
               servers = { "127.0.0.1:3", "127.0.0.1:4" } },
    balanced = { mode = "tcp",
                 balance = function(servers, conn)
                   if conn.sni == "b.example" then return 2 end
                   return 1
                 end,
                 servers = { "127.0.0.1:5", "127.0.0.1:6" } },
  },
}
"#;

#[test]
fn hash_key_and_balance_read_sni_without_on_connect() {
    let script = script(POOLS);
    let hashed = script.policy.pool_by_name("hashed").unwrap();
    let balanced = script.policy.pool_by_name("balanced").unwrap();
    run(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        for name in ["a.example", "b.example"] {
            let (mut c, s) = pair(&l).await;
            c.write_all(&hello(name, &[])).await.unwrap();
            let mut conn = view(&s, "hk");
            assert_eq!(
                script.on_connect_tcp(&mut conn, &s).await.unwrap(),
                ConnectVerdict::Default
            );
            let key = script.hash_key_conn_waiting(hashed, &mut conn, &s, 1).await;
            assert_eq!(key.unwrap().unwrap().as_deref(), Some(name.as_bytes()));
            // The slot is shared: balance reads the name without a wait.
            let chosen = script
                .choose_server_conn_waiting(balanced, &mut conn, &s, 1)
                .await;
            let want = if name == "b.example" { 1 } else { 0 };
            assert_eq!(chosen.unwrap().unwrap(), Some(want), "{name}");
            assert_eq!(conn.sni().as_deref(), Some(name));
        }
        // A plain call (as `pocket explain` makes) cannot wait: Pocket's
        // words, not mlua's "attempt to yield from outside a coroutine".
        let (_c, s) = pair(&l).await;
        let mut conn = view(&s, "hk");
        script.on_connect_tcp(&mut conn, &s).await.unwrap();
        let e = script.hash_key_conn(hashed, &mut conn, 1).unwrap_err();
        assert!(
            e.message
                .contains("sni.lua:10: conn.sni must be read in the hook itself"),
            "{}",
            e.message
        );
        // A client that is not speaking TLS: nil, at once.
        let (mut c, s) = pair(&l).await;
        c.write_all(b"EHLO me\r\n").await.unwrap();
        let mut conn = view(&s, "hk");
        script.on_connect_tcp(&mut conn, &s).await.unwrap();
        let key = script.hash_key_conn_waiting(hashed, &mut conn, &s, 1).await;
        assert_eq!(key.unwrap().unwrap(), None);
        // A silent client: closed after client_hello, as on_connect's wait.
        let (_c, s) = pair(&l).await;
        let mut conn = view(&s, "hk");
        script.on_connect_tcp(&mut conn, &s).await.unwrap();
        let key = tokio::time::timeout(
            Duration::from_secs(10),
            script.hash_key_conn_waiting(hashed, &mut conn, &s, 1),
        )
        .await
        .expect("the wait ends at client_hello");
        match key.unwrap() {
            Err(ConnectVerdict::Closed {
                reason,
                timed_out: true,
            }) => assert!(reason.contains("client_hello (0.3s"), "{reason}"),
            other => panic!("{other:?}"),
        }
    });
}

const NESTED: &str = r#"
return {
  listeners = { { name = "t", bind = "127.0.0.1:1", mode = "tcp", pool = "p" } },
  pools = { p = { mode = "tcp", servers = { "127.0.0.1:3" } } },
  on_connect = function(conn)
    local how = conn.local_port % 7
    if how == 0 then
      local co = coroutine.wrap(function() return conn.sni end)
      return pocket.reject("got " .. tostring(co()))
    elseif how == 1 then
      local r = ("a"):gsub("a", function() return tostring(conn.sni) end)
      return pocket.reject(r)
    elseif how == 2 then
      local t = { 2, 1 }
      table.sort(t, function(a, b) local _ = conn.sni return a < b end)
      return nil
    elseif how == 3 then
      local ok, v = pcall(function() return conn.sni end)
      return pocket.reject("pcall " .. tostring(ok) .. " " .. tostring(v))
    elseif how == 4 then
      local ok, e = pcall(coroutine.wrap(function() return conn.alpn end))
      return pocket.reject("caught " .. tostring(ok) .. " " .. tostring(e))
    elseif how == 5 then
      local name = conn.sni
      local co = coroutine.wrap(function() return conn.sni end)
      return pocket.reject("known " .. name .. " " .. co())
    else
      kept = kept or conn
      return pocket.reject(kept.peer_ip)
    end
  end,
}
"#;

/// A listener, and a connection to it whose local port is `how` mod 7
/// (the policy above branches on it), that sent a ClientHello for
/// a.example.
async fn conn_for(how: u16) -> (TcpListener, TcpStream, TcpStream) {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        if l.local_addr().unwrap().port() % 7 != how {
            continue;
        }
        let (mut c, s) = pair(&l).await;
        c.write_all(&hello("a.example", &[b"h2"])).await.unwrap();
        return (l, c, s);
    }
    panic!("no port with remainder {how}");
}

#[test]
fn a_first_read_off_the_hooks_coroutine_is_an_error_with_the_line() {
    let script = script(NESTED);
    run(async {
        for (how, line) in [(0, 8), (1, 11), (2, 15)] {
            let (_l, _c, s) = conn_for(how).await;
            let e = script
                .on_connect_tcp(&mut view(&s, "t"), &s)
                .await
                .unwrap_err();
            assert!(
                e.message.contains(&format!("sni.lua:{line}:"))
                    && e.message
                        .contains("conn.sni must be read in the hook itself")
                    && e.message.contains("read it into a local at the top"),
                "{how}: {}",
                e.message
            );
            assert!(!e.message.contains("yield"), "{}", e.message);
            assert!(!e.message.contains("userdata"), "{}", e.message);
        }
    });
}

#[test]
fn pcall_works_and_a_known_name_is_read_anywhere() {
    let script = script(NESTED);
    run(async {
        let (_l, _c, s) = conn_for(3).await;
        let v = script.on_connect_tcp(&mut view(&s, "t"), &s).await;
        assert_eq!(
            v.unwrap(),
            ConnectVerdict::Reject("pcall true a.example".into())
        );
        let (_l, _c, s) = conn_for(4).await;
        match script.on_connect_tcp(&mut view(&s, "t"), &s).await.unwrap() {
            ConnectVerdict::Reject(r) => assert!(
                r.starts_with("caught false ") && r.contains("conn.alpn must be read"),
                "{r}"
            ),
            other => panic!("{other:?}"),
        }
        let (_l, _c, s) = conn_for(5).await;
        let v = script.on_connect_tcp(&mut view(&s, "t"), &s).await;
        assert_eq!(
            v.unwrap(),
            ConnectVerdict::Reject("known a.example a.example".into())
        );
    });
}

#[test]
fn a_conn_kept_past_its_call_says_so() {
    let plain = NESTED
        .replace("conn.sni", "conn.listener")
        .replace("conn.alpn", "conn.listener");
    for source in [NESTED, &plain] {
        let script = script(source);
        run(async {
            let (_l, _c, s) = conn_for(6).await;
            let v = script.on_connect_tcp(&mut view(&s, "t"), &s).await;
            assert_eq!(v.unwrap(), ConnectVerdict::Reject("127.0.0.1".into()));
            let (_l, _c, s) = conn_for(6).await;
            let e = script
                .on_connect_tcp(&mut view(&s, "t"), &s)
                .await
                .unwrap_err();
            assert!(
                e.message.contains("sni.lua:29:")
                    && e.message
                        .contains("valid only during the call it was given to"),
                "{}",
                e.message
            );
        });
    }
}

#[test]
fn a_connections_hooks_make_no_sub_requests() {
    let script = script(
        r#"
return {
  listeners = { { name = "t", bind = "127.0.0.1:1", mode = "tcp", pool = "p" } },
  pools = { p = { mode = "tcp", servers = { "127.0.0.1:3" } } },
  on_connect = function(conn)
    local name = conn.sni
    local got, err = http.get("http://127.0.0.1:1/")
    return pocket.reject(name .. " " .. tostring(got) .. " " .. tostring(err))
  end,
}
"#,
    );
    run(async {
        let (_l, _c, s) = conn_for(0).await;
        match script.on_connect_tcp(&mut view(&s, "t"), &s).await.unwrap() {
            ConnectVerdict::Reject(r) => {
                assert!(r.starts_with("a.example nil not run: "), "{r}")
            }
            other => panic!("{other:?}"),
        }
    });
}
