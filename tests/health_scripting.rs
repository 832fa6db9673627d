//! Where Pocket goes past HAProxy: health checks and balancing written in
//! Lua, and server states set from a script that survive reloads.

mod common;
use common::*;

/// An origin whose `/health` says ok but whose pages answer 500.
fn liar() -> pocket::origin::OriginHandle {
    pocket::origin::spawn_with(
        "liar",
        "127.0.0.1:0".parse().unwrap(),
        pocket::origin::Behaviour {
            fail_status: Some(500),
        },
    )
    .unwrap()
}

fn origin_of(r: &Resp) -> String {
    r.header("x-origin").unwrap_or_default()
}

#[tokio::test]
async fn a_scripted_check_judges_servers_and_a_runaway_check_only_fails() {
    let a = origin("A");
    let liar = liar();
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{
    app = {{ servers = {{ "{a}", "{liar}" }},
      -- timeout 5s: the spinning check below holds the same thread for
      -- 200 ms at a time, and a busy machine must not fail this one.
      check = {{ interval = "100ms", timeout = "5s", fall = 2, rise = 2,
        -- the health page says ok, but does the real page work?
        run = function(server, http)
          local health = http.get("/health")
          local page = http.get("/")
          return health.status == 200 and page.status < 500, "home page answered " .. page.status
        end }} }},
    -- A shares its health with app unless spin keeps its own verdict.
    spin = {{ servers = {{ "{a}" }}, own_health = true,
      check = {{ script = true, interval = "100ms", timeout = "200ms", fall = 1 }} }},
  }},
  on_check = function(server, http) while true do end end,
}}"#,
        a = a.addr,
        liar = liar.addr
    );
    let pocket = Pocket::start(&policy, 1);
    pocket.log.wait_for(&[
        &format!("server {} of pool app is DOWN", liar.addr),
        "home page answered 500",
    ]);
    pocket
        .log
        .wait_for(&[&format!("server {} of pool spin is DOWN", a.addr)]);
    for _ in 0..6 {
        let r = get(pocket.addr("web"), "/").await;
        assert_eq!((r.status, origin_of(&r)), (200, "A".to_string()));
    }
    assert!(!pocket
        .log
        .text()
        .contains(&format!("server {} of pool app is DOWN", a.addr)));
}

/// A runaway check holds the control thread for its whole timeout (3 s
/// here) each time it runs, and every check runs on that thread. The
/// other checks must not pay for it: the time it held the thread is not
/// charged to their timeouts (a check of A with a 2 s timeout, failing at
/// the first miss, `fall = 1`, waited through 3 s stretches), and the
/// runaway waits as long as it held the thread before it runs again.
/// Before, A went DOWN in pool app with `no answer within 2s` on any
/// machine, and the liar's reason was lost the same way.
#[tokio::test]
async fn a_runaway_check_does_not_fail_the_checks_waiting_meanwhile() {
    let a = origin("A");
    let liar = liar();
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{
    app = {{ servers = {{ "{a}", "{liar}" }},
      check = {{ interval = "100ms", timeout = "2s", fall = 1, rise = 2,
        run = function(server, http)
          local health = http.get("/health")
          local page = http.get("/")
          return health.status == 200 and page.status < 500, "home page answered " .. page.status
        end }} }},
    spin = {{ servers = {{ "{a}" }}, own_health = true,
      check = {{ script = true, interval = "100ms", timeout = "3s", fall = 1 }} }},
  }},
  on_check = function(server, http) while true do end end,
}}"#,
        a = a.addr,
        liar = liar.addr
    );
    let pocket = Pocket::start(&policy, 1);
    pocket.log.wait_for(&[
        &format!("server {} of pool app is DOWN", liar.addr),
        "home page answered 500",
    ]);
    let spin_down = format!("server {} of pool spin is DOWN", a.addr);
    pocket
        .log
        .wait_for(&[&spin_down, "ran past its time budget"]);
    // Through two more stretches of the runaway (3 s each, 3 s apart),
    // while A's check runs every 100 ms.
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    let log = pocket.log.text();
    assert!(
        !log.contains(&format!("server {} of pool app is DOWN", a.addr)),
        "{log}"
    );
    for _ in 0..6 {
        let r = get(pocket.addr("web"), "/").await;
        assert_eq!((r.status, origin_of(&r)), (200, "A".to_string()));
    }
}

#[tokio::test]
async fn a_balance_function_picks_the_server() {
    let (a, b) = (origin("A"), origin("B"));
    let policy = format!(
        r#"return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{}", "{}" }},
    balance = function(servers, req)
      local want = req:header("x-pick")
      for i, s in ipairs(servers) do
        if s.addr == want then return i end
      end
      -- nil: round robin decides
    end }} }},
}}"#,
        a.addr, b.addr
    );
    let pocket = Pocket::start(&policy, 2);
    let addr = pocket.addr("web");
    for _ in 0..4 {
        let r = send(
            addr,
            request("GET", "/", &[("x-pick", &b.addr.to_string())], ""),
        )
        .await;
        assert_eq!(origin_of(&r), "B");
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(origin_of(&get(addr, "/").await));
    }
    assert_eq!(seen.len(), 2, "without a choice, round robin: {seen:?}");
}

#[tokio::test]
async fn drain_set_from_a_script_moves_traffic_and_survives_reload() {
    let (a, b) = (origin("A"), origin("B"));
    let policy = |tag: &str| {
        format!(
            r#"local a = pocket.server("app", "{a}")
return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{ app = {{ servers = {{ "{a}", "{b}" }} }} }},
  on_request = function(req)
    if req.path == "/admin/drain" then a:set_state("drain"); return pocket.respond(200, "drained\n") end
    if req.path == "/admin/ready" then a:set_state("ready"); return pocket.respond(200, "ready\n") end
    if req.path == "/admin/state" then return pocket.respond(200, a:state().admin .. "\n") end
  end,
  on_response = function(req, res) res:set_header("x-tag", "{tag}") end,
}}"#,
            a = a.addr,
            b = b.addr
        )
    };
    let pocket = Pocket::start(&policy("one"), 2);
    let addr = pocket.addr("web");
    assert_eq!(get(addr, "/admin/drain").await.text(), "drained\n");
    pocket
        .log
        .wait_for(&[&format!("server {} of pool app set to drain", a.addr)]);
    for _ in 0..6 {
        assert_eq!(origin_of(&get(addr, "/").await), "B");
    }
    std::fs::write(&pocket.policy, policy("two")).unwrap();
    pocket.log.wait_for(&["generation 2 is live"]);
    assert_eq!(
        get(addr, "/admin/state").await.text(),
        "drain\n",
        "kept across the reload"
    );
    for _ in 0..6 {
        let r = get(addr, "/").await;
        assert_eq!(
            (origin_of(&r), r.header("x-tag").as_deref()),
            ("B".to_string(), Some("two"))
        );
    }
    get(addr, "/admin/ready").await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(origin_of(&get(addr, "/").await));
    }
    assert_eq!(seen.len(), 2, "A is back: {seen:?}");
}
