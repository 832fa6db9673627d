//! The lent `req` reads and refuses as mlua's userdata does (the same
//! values, the same messages), and a kept one is refused after its call.

use super::*;
use crate::context::RequestId;

fn view(uri: &str, host: &str) -> RequestView {
    let head = http::Request::builder()
        .method("POST")
        .uri(uri)
        .header("host", host)
        .header("x-a", "1")
        .header("x-a", "2")
        .body(())
        .expect("a request")
        .into_parts()
        .0;
    RequestView {
        head,
        peer: "10.0.0.7:4711".parse().expect("an address"),
        listener: "web".into(),
        id: RequestId { worker: 1, seq: 42 },
        raw_target: None,
        growth: 0,
        tls: None,
    }
}

/// Every field and the methods' results, as one string, from `req`.
const READ_ALL: &str = r#"
  local req = ...
  local out = {}
  for _, k in ipairs({"method", "path", "query", "uri", "host", "target", "version",
      "scheme", "tls", "sni", "alpn", "tls_version", "peer_ip", "peer_port", "listener", "id"}) do
    out[#out + 1] = k .. "=" .. tostring(req[k])
  end
  out[#out + 1] = "x-a=" .. tostring(req:header("X-A"))
  out[#out + 1] = "all=" .. #req:header_all("x-a")
  local n = 0
  for _ in req:headers() do n = n + 1 end
  out[#out + 1] = "lines=" .. n
  out[#out + 1] = tostring(req)
  out[#out + 1] = type(req)
  return table.concat(out, " ")
"#;

fn mlua_reads(lua: &Lua, r: &mut RequestView, code: &str) -> mlua::Result<String> {
    let f = lua.load(code).set_name("@policy.lua").into_function()?;
    lua.scope(|scope| {
        let ud = scope.create_userdata_ref_mut(r)?;
        f.call(ud)
    })
}

fn lent_reads(lua: &Lua, lender: &Lender, r: &mut RequestView, code: &str) -> mlua::Result<String> {
    let f = lua.load(code).set_name("@policy.lua").into_function()?;
    let one = lender.lend(lua, r, |ud| f.call::<String>(ud));
    // The same through the wrapped call on_request uses.
    let wrapped = lender.wrap(lua, &f)?;
    let two = lender.call(r, || wrapped.call::<String>(()));
    let shown =
        |r: &mlua::Result<String>| r.clone().map_err(|e| crate::script::describe_lua_error(&e));
    assert_eq!(shown(&one), shown(&two), "{code}");
    one
}

#[test]
fn fields_and_methods_read_as_mlua_userdata_does() {
    let lua = Lua::new();
    let lender = Lender::new(&lua).expect("lender");
    for (uri, host) in [
        ("/a/b?x=1", "Example.COM:8080"),
        ("/", "plain.example"),
        ("/p", ""),
    ] {
        let want = mlua_reads(&lua, &mut view(uri, host), READ_ALL).expect("mlua");
        let got = lent_reads(&lua, &lender, &mut view(uri, host), READ_ALL).expect("lent");
        assert_eq!(got, want);
    }
}

#[test]
fn edits_reach_the_request() {
    let lua = Lua::new();
    let lender = Lender::new(&lua).expect("lender");
    let mut r = view("/old?q=1", "h");
    let code = r#"local req = ...
      req:set_path("/new"); req:set_header("x-b", "yes"); req:remove_header("x-a")
      req:set_method("PUT")
      return req.path .. " " .. req.uri .. " " .. req.method"#;
    let got = lent_reads(&lua, &lender, &mut r, code).expect("lent");
    assert_eq!(got, "/new /new?q=1 PUT");
    assert_eq!(r.head.uri, "/new?q=1");
    assert_eq!(r.head.headers["x-b"], "yes");
    assert!(r.head.headers.get("x-a").is_none());
}

/// The same error text from both, as `describe_lua_error` shows it.
#[test]
fn errors_read_as_mlua_userdata_gives_them() {
    let lua = Lua::new();
    let lender = Lender::new(&lua).expect("lender");
    for code in [
        "local req = ... ; return req.nosuch",
        "local req = ... ; return req[1]",
        "local req = ... ; req.path = '/x'",
        "local req = ... ; req.color = 1",
        "local req = ... ; return req.header('x-a')",
        "local req = ... ; return req:set_path(5)",
        "local req = ... ; return req:set_path({})",
        "local req = ... ; return req()",
        "local req = ... ; return #req",
        "local req = ... ; return getmetatable(req)",
    ] {
        let want = mlua_reads(&lua, &mut view("/", "h"), code)
            .map_err(|e| crate::script::describe_lua_error(&e));
        let got = lent_reads(&lua, &lender, &mut view("/", "h"), code)
            .map_err(|e| crate::script::describe_lua_error(&e));
        assert_eq!(
            got.map_err(|e| e.replace("[string \"local req = ... ; ", "")),
            want.map_err(|e| e.replace("[string \"local req = ... ; ", "")),
            "{code}"
        );
    }
}

/// A `req` kept past its call: every use is the documented error, also
/// while another request is lent.
#[test]
fn a_kept_req_is_refused_after_its_call() {
    let lua = Lua::new();
    let lender = Lender::new(&lua).expect("lender");
    let keep = "kept = ... ; return 'ok'";
    lent_reads(&lua, &lender, &mut view("/first", "h"), keep).expect("lent");
    for code in [
        "return kept.path",
        "return kept.peer_ip",
        "return kept:header('x-a')",
        "return tostring(kept)",
        "kept.path = 1",
    ] {
        for during in [false, true] {
            let err = if during {
                lent_reads(&lua, &lender, &mut view("/second", "h"), code)
            } else {
                lua.load(code).eval::<String>()
            }
            .expect_err(code);
            let shown = crate::script::describe_lua_error(&err);
            assert!(
                shown.contains("valid only during the call it was given to"),
                "{code}: {shown}"
            );
        }
    }
}

/// Messages that name a value call a lent `req` what they call mlua's.
#[test]
fn a_lent_req_is_named_as_a_request() {
    let lua = Lua::new();
    let lender = Lender::new(&lua).expect("lender");
    let ud = lender
        .lend(&lua, &mut view("/", "h"), |ud| Ok(ud.clone()))
        .expect("lent");
    assert_eq!(
        crate::script::hooks::returned(&Value::UserData(ud)),
        "a request (req)"
    );
}
