//! docs/pocket.meta.lua, the LuaLS definitions, covers the whole API a
//! policy can reach, and nothing the API does not have: the `pocket` table,
//! `pocket.log`, every stdlib module and the objects it makes, and the
//! tables hooks receive are walked in a real Pocket's VMs; the methods and
//! fields of userdata (requests, responses, stores, regexes, ...) are read
//! from their registration in engine/src/script/api/; the keys of the
//! policy table at every level, and of a `pocket test` case, are the lists
//! a real `pocket check` / `pocket test` gives for an unknown key. The reference pages
//! (lua-api.md, stdlib.md) must name every function of `pocket` and of the
//! stdlib modules too.

mod common;
use common::*;

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn shown(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

const LISTENER: &str = "listeners = { { bind = \"127.0.0.1:1\" } }";

/// Names per class, as (class, name) pairs.
type Names = std::collections::BTreeSet<(String, String)>;

/// What docs/pocket.meta.lua types: `---@class C` then `---@field n`,
/// `function C.n(` / `function Alias:n(` (Alias a `local` of the class)
/// and `C.n = ...`. Also each class's parents (`---@class C: P`).
fn meta_names(meta: &str) -> (Names, std::collections::HashMap<String, String>) {
    let mut names = Names::new();
    let mut parents = std::collections::HashMap::new();
    let mut aliases: std::collections::HashMap<String, String> = Default::default();
    let mut class = String::new();
    let resolve = |owner: &str, aliases: &std::collections::HashMap<String, String>| {
        aliases
            .get(owner)
            .cloned()
            .unwrap_or_else(|| owner.to_string())
    };
    for line in meta.lines() {
        if let Some(c) = line.strip_prefix("---@class ") {
            let c = c.split_whitespace().collect::<Vec<_>>().join(" ");
            let (name, parent) = match c.split_once(':') {
                Some((n, p)) => (n.trim().to_string(), Some(p.trim().to_string())),
                None => (c.split_whitespace().next().unwrap_or("").to_string(), None),
            };
            if let Some(p) = parent {
                parents.insert(name.clone(), p);
            }
            class = name;
        } else if let Some(f) = line.strip_prefix("---@field ") {
            let n = f.split_whitespace().next().unwrap_or("");
            names.insert((class.clone(), n.trim_end_matches('?').to_string()));
        } else if let Some(rest) = line.strip_prefix("local ") {
            if let Some((alias, "{}")) = rest.split_once(" = ") {
                aliases.insert(alias.trim().to_string(), class.clone());
            }
        } else if let Some(rest) = line.strip_prefix("function ") {
            let head = rest.split('(').next().unwrap_or("");
            let (owner, n) = match head.rsplit_once(':') {
                Some(x) => x,
                None => head.rsplit_once('.').unwrap_or(("", head)),
            };
            names.insert((resolve(owner, &aliases), n.to_string()));
        } else if let Some((lhs, _)) = line.split_once(" = ") {
            if let Some((owner, n)) = lhs.rsplit_once('.') {
                if !line.starts_with("--") && !owner.contains(' ') {
                    names.insert((resolve(owner, &aliases), n.to_string()));
                }
            }
        }
    }
    (names, parents)
}

/// The methods and fields registered on userdata in
/// engine/src/script/api/*.rs, by the class meta.lua gives that type.
fn userdata_names() -> Result<Names, String> {
    const CLASSES: &[(&str, &str)] = &[
        ("RequestView", "pocket.Request"),
        ("ResponseView", "pocket.ServerResponse"),
        ("ConnView", "pocket.Conn"),
        ("StoreHandle", "pocket.Store"),
        ("SharedStoreHandle", "pocket.Store"),
        ("ServerHandle", "pocket.ServerHandle"),
        ("LuaRegex", "pocket.Regex"),
        ("LuaRegexSet", "pocket.RegexSet"),
        ("ScriptResponse", "pocket.Response"),
        ("Reject", "pocket.Rejection"),
        ("add_header_methods", "pocket.Headers"),
    ];
    let mut names = Names::new();
    let dir = root().join("engine/src/script/api");
    // Files only: a folder beside them (store/) holds no userdata.
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        if !entry.path().is_file() {
            continue;
        }
        let src = std::fs::read_to_string(entry.path()).unwrap();
        // Each `impl UserData for T` (and the shared header methods) up
        // to the next item at column 0.
        let mut starts: Vec<(usize, String)> = Vec::new();
        for (at, _) in src.match_indices("impl UserData for ") {
            let ty: String = src[at + 18..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            starts.push((at, ty));
        }
        if let Some(at) = src.find("pub fn add_header_methods") {
            starts.push((at, "add_header_methods".into()));
        }
        for (at, ty) in starts {
            let body = &src[at..];
            let body = &body[..body[1..].find("\n}").map_or(body.len(), |e| e + 1)];
            let Some((_, class)) = CLASSES.iter().find(|(t, _)| *t == ty) else {
                return Err(format!(
                    "{}: userdata type {ty} has no class in this test's CLASSES: add it, and the class to docs/pocket.meta.lua",
                    shown(&entry.path())
                ));
            };
            for call in [
                "add_method(",
                "add_method_mut(",
                "add_field_method_get(",
                "add_function(",
            ] {
                for (i, _) in body.match_indices(call) {
                    let rest = body[i + call.len()..].trim_start();
                    if let Some(rest) = rest.strip_prefix('"') {
                        let n = rest.split('"').next().unwrap_or("");
                        names.insert((class.to_string(), n.to_string()));
                    }
                }
            }
            // Fields registered from a table of names (`for &(name, f) in
            // FIELDS`: req's, which its lent form reads too): the table's
            // `("name", Field::X)` entries, in the same file.
            if body.contains("in FIELDS") {
                if let Some(at) = src.find("pub const FIELDS") {
                    let table = &src[at..];
                    let table = &table[..table.find("];").unwrap_or(table.len())];
                    for (i, _) in table.match_indices("(\"") {
                        let n = table[i + 2..].split('"').next().unwrap_or("");
                        names.insert((class.to_string(), n.to_string()));
                    }
                }
            }
            // Fields an async `__index` answers (`conn.sni`, which may
            // wait): matched there as `s.as_bytes() == b"name"`.
            for (i, _) in body.match_indices("as_bytes() == b\"") {
                let rest = &body[i + "as_bytes() == b\"".len()..];
                let n = rest.split('"').next().unwrap_or("");
                names.insert((class.to_string(), n.to_string()));
            }
        }
    }
    Ok(names)
}

/// The names a real Pocket exposes to Lua, walked in its VMs: the `pocket`
/// table, `pocket.log`, every stdlib module and the objects they make, and
/// the tables hooks receive (balance servers, server state, a check's
/// server, `http` and answer, on_health's server).
fn walked_names() -> Names {
    let a = origin("A");
    let dead = dead_addr();
    let mut modules: Vec<String> = std::fs::read_dir(root().join("stdlib/pocket"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.path()
                .file_stem()
                .map(|s| format!("{:?}", s.to_string_lossy()))
        })
        .collect();
    modules.sort();
    let policy = format!(
        r#"local function say(class, t)
  local names = {{}}
  for k in pairs(t) do
    if type(k) == "string" and not k:find("^__") then names[#names + 1] = k end
  end
  table.sort(names)
  pocket.log.warn("API " .. class .. " " .. table.concat(names, " ") .. " END")
end
local function methods(class, object)
  local mt = getmetatable(object)
  say(class, type(mt) == "table" and type(mt.__index) == "table" and mt.__index or {{}})
end
say("pocket", pocket)
say("pocket.log", pocket.log)
say("http", http)
for _, m in ipairs {{ {modules} }} do say("pocket." .. m, require("pocket." .. m)) end
methods("pocket.match.Routes", require("pocket.match").routes {{ default = "app" }})
methods("pocket.ratelimit.Limiter", require("pocket.ratelimit").new {{ rate = 1 }})
local handle = pocket.server("app", "{a}")
return {{
  listeners = {{ {{ name = "web", bind = "127.0.0.1:0", pool = "app" }} }},
  pools = {{
    app = {{
      servers = {{ "{a}", "{dead}" }},
      check = {{ script = true, interval = "100ms", fall = 1 }},
      balance = function(servers, req) say("pocket.BalanceServer", servers[1]) return 1 end,
    }},
  }},
  on_request = function(req)
    say("pocket.ServerState", handle:state())
    local res = http.get("http://{a}/health")
    if res then say("pocket.HttpAnswer", res) end
  end,
  on_check = function(server, http)
    say("pocket.HealthServer", server)
    say("pocket.CheckHttp", http)
    local ok, answer = pcall(http.get, "/health")
    if ok then say("pocket.CheckAnswer", answer) end
    return ok
  end,
  on_health = function(server, up, why) say("pocket.HealthServer", server) end,
}}
"#,
        modules = modules.join(", "),
        a = a.addr
    );
    let pocket = Pocket::start(&policy, 1);
    for class in [
        "pocket.CheckAnswer",
        "pocket.HealthServer",
        "pocket.CheckHttp",
    ] {
        pocket.log.wait_for(&[&format!("API {class} ")]);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = runtime.block_on(get(pocket.addr("web"), "/"));
    assert_eq!(r.status, 200);
    pocket.log.wait_for(&["API pocket.BalanceServer "]);
    pocket.log.wait_for(&["API pocket.ServerState "]);
    pocket.log.wait_for(&["API pocket.HttpAnswer "]);
    let mut names = Names::new();
    for line in pocket.log.lines() {
        let Some(at) = line.find("API ") else {
            continue;
        };
        let mut words = line[at + 4..].split_whitespace();
        let class = words.next().unwrap_or("").to_string();
        for w in words.take_while(|w| *w != "END") {
            names.insert((class.clone(), w.to_string()));
        }
    }
    names
}

/// The keys of the policy table at every level, as a real `pocket check`
/// lists them (`unknown key "zzz" (known: ...)`), by the class meta.lua
/// gives that level.
fn policy_keys() -> Names {
    let policy = r#"return {
  zzz = 1,
  admin = { bind = "127.0.0.1:1", zzz = 1 },
  listeners = { { bind = "127.0.0.1:1", pool = "app", zzz = 1, timeouts = { zzz = "1s" } },
    -- A listener's timeouts list this mode's keys only: both modes.
    { bind = "127.0.0.1:4", mode = "tcp", pool = "t", timeouts = { zzz = "1s" } } },
  pools = { app = { servers = { "127.0.0.1:2", { addr = "127.0.0.1:3", zzz = 1 } }, zzz = 1,
    timeouts = { zzz = "1s" }, check = { tcp = true, zzz = 1 }, passive = { zzz = 1 } },
    t = { mode = "tcp", servers = { "127.0.0.1:5" } } },
  stores = { s = { redis = "127.0.0.1:6", zzz = 1 } },
}
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "policy.lua", policy);
    let (_, out, err) = pocket_cmd(&["check", path.to_str().unwrap()]);
    let mut names = Names::new();
    let mut levels = 0;
    for line in out.lines().chain(err.lines()) {
        let Some((head, known)) = line.split_once(": unknown key \"zzz\" (known: ") else {
            continue;
        };
        let level = head.rsplit(": ").next().unwrap_or("");
        let class = match level {
            "policy" => "pocket.Policy",
            "admin" => "pocket.Admin",
            l if l.starts_with("store ") => "pocket.SharedStore",
            l if l.starts_with("listener") && l.ends_with("timeouts") => "pocket.ClientTimeouts",
            l if l.starts_with("listener") => "pocket.Listener",
            l if l.contains(" server ") => "pocket.Server",
            l if l.ends_with("timeouts") => "pocket.Timeouts",
            l if l.ends_with("check") => "pocket.Check",
            l if l.ends_with("passive") => "pocket.Passive",
            l if l.starts_with("pool") => "pocket.Pool",
            other => panic!("a level of the policy this test does not know: {other:?} in {line}"),
        };
        levels += 1;
        for key in known.trim_end_matches(')').split(", ") {
            names.insert((class.to_string(), key.to_string()));
        }
    }
    assert_eq!(levels, 11, "every level's keys, from:\n{out}{err}");
    // A `pocket test` case, its request and its connection, as `pocket test` lists them.
    let cases = r#"return {
  listeners = { { bind = "127.0.0.1:1", pool = "app" } },
  pools = { app = { servers = { "127.0.0.1:2" } } },
  tests = { { zzz = 1 }, { req = { zzz = 1 } }, { conn = { zzz = 1 } } },
}
"#;
    let path = write_policy(dir.path(), "cases.lua", cases);
    let (_, out, err) = pocket_cmd(&["test", path.to_str().unwrap()]);
    for (what, class) in [
        ("the case", "pocket.TestCase"),
        ("req", "pocket.TestRequest"),
        ("conn", "pocket.TestConn"),
    ] {
        let marker = format!("unknown key \"zzz\" in {what} (known: ");
        let known = out
            .lines()
            .find_map(|l| l.split_once(marker.as_str()).map(|(_, k)| k))
            .unwrap_or_else(|| panic!("no {marker:?} in:\n{out}{err}"));
        // The list ends at its `)`; other errors of the case may follow.
        let known = known.split(')').next().unwrap_or(known);
        for key in known.split(", ") {
            names.insert((class.to_string(), key.to_string()));
        }
    }
    names
}

/// docs/pocket.meta.lua types every name the API exposes, and no name it
/// does not have (for the classes walked here).
#[test]
fn pocket_meta_lua_covers_the_whole_api() {
    let meta = std::fs::read_to_string(root().join("docs/pocket.meta.lua")).unwrap();
    let (typed, parents) = meta_names(&meta);
    eprintln!("meta.lua types {} names", typed.len());
    let mut api = walked_names();
    api.extend(userdata_names().unwrap_or_else(|e| panic!("{e}")));
    api.extend(policy_keys());
    eprintln!("the API exposes {} names", api.len());
    for module in ["util", "match", "canary", "sticky", "ratelimit", "cdn"] {
        assert!(
            api.iter().any(|(c, _)| *c == format!("pocket.{module}")),
            "pocket.{module} was not walked: {api:?}"
        );
    }
    // A class's names include its parents' (pocket.Request: pocket.Headers).
    let has = |class: &str, name: &str| {
        let mut c = Some(class.to_string());
        while let Some(cl) = c {
            if typed.contains(&(cl.clone(), name.to_string())) {
                return true;
            }
            c = parents.get(&cl).cloned();
        }
        false
    };
    let missing: Vec<String> = api
        .iter()
        .filter(|(c, n)| !has(c, n))
        .map(|(c, n)| format!("{c}.{n}"))
        .collect();
    let classes: std::collections::BTreeSet<&String> = api.iter().map(|(c, _)| c).collect();
    let stale: Vec<String> = typed
        .iter()
        .filter(|(c, n)| classes.contains(c) && !api.contains(&(c.clone(), n.clone())))
        .map(|(c, n)| format!("{c}.{n}"))
        .collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/pocket.meta.lua is out of step with the API.\nmissing (exposed, not typed): {missing:?}\nstale (typed, not exposed): {stale:?}"
    );

    // The reference pages name every function of `pocket` and of the
    // stdlib modules too (`pocket.hash(`, `util.split(`).
    let pages = ["docs/lua-api.md", "docs/stdlib.md"]
        .map(|p| std::fs::read_to_string(root().join(p)).unwrap())
        .join("\n");
    let undocumented: Vec<String> = api
        .iter()
        .filter_map(|(c, n)| {
            let prefix = match c.as_str() {
                "pocket" | "pocket.log" => format!("{c}."),
                module
                    if module.matches('.').count() == 1
                        && module.chars().all(|c| !c.is_ascii_uppercase()) =>
                {
                    format!("{}.", module.trim_start_matches("pocket."))
                }
                _ => return None,
            };
            let name = format!("{prefix}{n}");
            let value = n == "version" || n == "log"; // not functions
            (!value && !pages.contains(&format!("{name}("))).then_some(name)
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "not described in docs/lua-api.md or docs/stdlib.md: {undocumented:?}"
    );

    // meta.lua is never run, but it must be Lua: compiled (not run) by Pocket.
    let dir = tempfile::tempdir().unwrap();
    let wrapped = format!("local _ = function()\n{meta}\nend\nreturn {{ {LISTENER} }}\n");
    let path = write_policy(dir.path(), "policy.lua", &wrapped);
    let (code, out, err) = pocket_cmd(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 0, "docs/pocket.meta.lua does not compile: {out}{err}");
}

/// The values meta.lua offers for `balance` and `hash_key` are the ones
/// `pocket check` knows.
#[test]
fn pocket_meta_lua_offers_every_balance_and_hash_key() {
    let meta = std::fs::read_to_string(root().join("docs/pocket.meta.lua")).unwrap();
    let policy = r#"return {
  listeners = { { bind = "127.0.0.1:1" } },
  pools = {
    a = { servers = { "127.0.0.1:2" }, balance = "zzz" },
    b = { servers = { "127.0.0.1:3" }, balance = "hash", hash_key = "zzz" },
  },
}
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "policy.lua", policy);
    let (_, _, err) = pocket_cmd(&["check", path.to_str().unwrap()]);
    let list = |after: &str| -> Vec<String> {
        let line = err
            .lines()
            .find_map(|l| l.split_once(after).map(|(_, rest)| rest.to_string()))
            .unwrap_or_else(|| panic!("no {after:?} in:\n{err}"));
        line.trim_end_matches(')')
            .split(", ")
            .map(|w| w.trim_end_matches(" or a function").to_string())
            .collect()
    };
    let mut missing = Vec::new();
    for name in list("unknown balance algorithm \"zzz\" (known: ") {
        if !meta.contains(&format!("---| \"{name}\"")) {
            missing.push(format!("balance {name}"));
        }
    }
    for name in list("unknown hash_key \"zzz\" (") {
        // "header:NAME" is typed as `string # "header:NAME" or ...`.
        if !meta.contains(&format!("---| \"{name}\"")) && !meta.contains(&format!("\"{name}\"")) {
            missing.push(format!("hash_key {name}"));
        }
    }
    assert!(missing.is_empty(), "docs/pocket.meta.lua lacks {missing:?}");
}
