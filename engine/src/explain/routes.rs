//! Which `pocket.match` route a request matched, and the route's line.
//!
//! `stdlib/pocket/match.lua` reads `pocket.explain_route` once, when it is
//! loaded. The function exists only in a VM built while [`enable`] is on
//! (`pocket explain`); in the proxy it is nil and a route lookup pays one
//! test of a local for it. When it exists, `match.routes` asks it for the
//! line of each rule (found in the source text from the call's line) and
//! `routes:route` tells it which rule matched.
//!
//! Live (`X-Pocket-Explain`): a worker VM of a policy with
//! `admin.explain_from` has the function too, behind a gate
//! (`pocket.explain_gate.on`) that is open only while an explained request
//! is decided ([`gate`]). Its other requests pay one read of a Lua table
//! field per route lookup; a policy without `explain_from` pays nothing.

use std::cell::{Cell, RefCell};
use std::fmt;

use mlua::{Lua, Table, Value};

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    /// Set while a worker builds the VM of a policy with `explain_from`.
    static LIVE: Cell<bool> = const { Cell::new(false) };
    /// Whether route lookups are noted now: always under `pocket explain`,
    /// only inside [`gate`] in the proxy (a script that opens the Lua-side
    /// gate itself notes nothing).
    static RECORDING: Cell<bool> = const { Cell::new(false) };
    static HITS: RefCell<Vec<RouteHit>> = const { RefCell::new(Vec::new()) };
}

/// What one route lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteHit {
    /// The rule's number in its table (1-based); None: none matched.
    pub index: Option<usize>,
    /// `path:line` of the rule (of the `match.routes` call when none
    /// matched), when it could be found.
    pub place: Option<String>,
    /// What the lookup gave: a pool name, a response, the default.
    pub gave: String,
}

impl RouteHit {
    /// `policy.lua:12` (or `route3` without a place, `default` when none
    /// matched).
    pub fn compact(&self) -> String {
        match (&self.index, &self.place) {
            (Some(_), Some(p)) => p.clone(),
            (Some(i), None) => format!("route{i}"),
            (None, _) => "default".into(),
        }
    }
}

impl fmt::Display for RouteHit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self
            .place
            .as_ref()
            .map(|p| format!(" at {p}"))
            .unwrap_or_default();
        match self.index {
            Some(i) => write!(f, "pocket.match: route {i}{at} matched: {}", self.gave),
            None => write!(f, "pocket.match: no route matched{at}: {}", self.gave),
        }
    }
}

/// VMs built on this thread from now on can report routes.
pub fn enable() {
    ENABLED.with(|e| e.set(true));
    RECORDING.with(|r| r.set(true));
}

/// Runs `build` (a worker's VM build) with route reporting installed
/// behind a closed gate when `live` (the policy has `explain_from`).
pub fn building_live<R>(live: bool, build: impl FnOnce() -> R) -> R {
    let before = LIVE.with(|l| l.replace(live));
    let out = build();
    LIVE.with(|l| l.set(before));
    out
}

/// Where the gate table is kept, to open it from Rust.
const GATE: &str = "pocket.explain_gate";

/// Opens (`true`) or closes the gate of `lua`'s route reporting, for one
/// explained request. Does nothing in a VM without it.
pub fn gate(lua: &Lua, open: bool) {
    if let Ok(t) = lua.named_registry_value::<Table>(GATE) {
        let _ = t.raw_set("on", open);
        RECORDING.with(|r| r.set(open));
    }
}

/// The route lookups since the last call.
pub fn take() -> Vec<RouteHit> {
    HITS.with(|h| std::mem::take(&mut *h.borrow_mut()))
}

/// Adds `pocket.explain_route` when [`enable`] was called on this thread.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let always = ENABLED.with(|e| e.get());
    if !always && !LIVE.with(|l| l.get()) {
        return Ok(());
    }
    let f = lua.create_function(|lua, (what, a, b): (String, Value, Value)| {
        match what.as_str() {
            // match.routes: the places of its `n` rules.
            "places" => {
                let n = match a {
                    Value::Integer(n) => n.max(0) as usize,
                    _ => 0,
                };
                let t = lua.create_table()?;
                if let Some((path, lines)) = rule_lines(lua, n) {
                    for (i, line) in lines.into_iter().enumerate() {
                        t.raw_set(i + 1, format!("{path}:{line}"))?;
                    }
                    t.raw_set(
                        "call",
                        format!("{path}:{}", call_line(lua).map_or(0, |c| c.1)),
                    )?;
                }
                Ok(Value::Table(t))
            }
            // routes:route: rule `a` matched (nil: none), places `b`.
            "matched" if RECORDING.with(|r| r.get()) => {
                let places = match b {
                    Value::Table(t) => Some(t),
                    _ => None,
                };
                let index = match a {
                    Value::Integer(i) => Some(i as usize),
                    _ => None,
                };
                let place = places.as_ref().and_then(|t: &Table| match index {
                    Some(i) => t.raw_get::<Option<String>>(i).ok().flatten(),
                    None => t.raw_get::<Option<String>>("call").ok().flatten(),
                });
                HITS.with(|h| {
                    h.borrow_mut().push(RouteHit {
                        index,
                        place,
                        gave: String::new(),
                    })
                });
                Ok(Value::Nil)
            }
            // routes:route: what the lookup gives (described by Lua).
            "gave" if RECORDING.with(|r| r.get()) => {
                let text = match a {
                    Value::String(s) => format!("pool \"{}\"", s.to_string_lossy()),
                    Value::Nil => "nothing (the listener's default pool)".into(),
                    Value::UserData(_) => "a response made by the route".into(),
                    other => other.type_name().to_string(),
                };
                HITS.with(|h| {
                    if let Some(last) = h.borrow_mut().last_mut() {
                        last.gave = text;
                    }
                });
                Ok(Value::Nil)
            }
            _ => Ok(Value::Nil),
        }
    })?;
    let gate = lua.create_table()?;
    gate.raw_set("on", always)?;
    lua.set_named_registry_value(GATE, &gate)?;
    let pocket: Table = lua.globals().get("pocket")?;
    pocket.raw_set("explain_gate", gate)?;
    pocket.raw_set("explain_route", f)
}

/// The innermost caller outside Pocket's own stdlib: its file and line.
fn call_line(lua: &Lua) -> Option<(String, usize)> {
    for level in 1..32 {
        let found = lua.inspect_stack(level, |d| {
            let src = d.source();
            let name = src.source.as_deref().unwrap_or("").to_string();
            (name, d.current_line())
        })?;
        let (name, line) = found;
        if let (Some(path), Some(line)) = (name.strip_prefix('@'), line) {
            if !path.starts_with("stdlib/pocket/") {
                return Some((path.to_string(), line));
            }
        }
    }
    None
}

/// The lines of the first `n` rules of the `match.routes { ... }` call
/// being run: the table that opens at or after the call's line, and each
/// `{` directly inside it.
fn rule_lines(lua: &Lua, n: usize) -> Option<(String, Vec<usize>)> {
    let (path, line) = call_line(lua)?;
    let source = std::fs::read_to_string(&path).ok()?;
    let lines = scan_rules(&source, line, n);
    Some((path, lines))
}

/// See [`rule_lines`]; skips strings (`"..."`, `'...'`, `[[...]]`) and
/// comments. Lines are 1-based.
pub fn scan_rules(source: &str, from_line: usize, n: usize) -> Vec<usize> {
    let b = source.as_bytes();
    let mut line = 1;
    let mut i = 0;
    let mut depth = 0usize;
    let mut out = Vec::new();
    // Skips a long bracket `[==[ ... ]==]` starting at b[i] == '['.
    let long = |i: usize, line: &mut usize| -> Option<usize> {
        let mut j = i + 1;
        while j < b.len() && b[j] == b'=' {
            j += 1;
        }
        if j >= b.len() || b[j] != b'[' {
            return None;
        }
        let close: Vec<u8> = std::iter::once(b']')
            .chain(std::iter::repeat_n(b'=', j - i - 1))
            .chain(std::iter::once(b']'))
            .collect();
        let mut k = j + 1;
        while k + close.len() <= b.len() {
            if b[k..].starts_with(&close) {
                return Some(k + close.len());
            }
            if b[k] == b'\n' {
                *line += 1;
            }
            k += 1;
        }
        Some(b.len())
    };
    while i < b.len() && out.len() < n {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i += 2;
                if b.get(i) == Some(&b'[') {
                    if let Some(end) = long(i, &mut line) {
                        i = end;
                        continue;
                    }
                }
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' | b'\'' => {
                i += 1;
                while i < b.len() && b[i] != c && b[i] != b'\n' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'[' => match long(i, &mut line) {
                Some(end) => i = end,
                None => i += 1,
            },
            b'{' if line >= from_line => {
                depth += 1;
                if depth == 2 {
                    out.push(line);
                }
                i += 1;
            }
            b'}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::scan_rules;

    #[test]
    fn rules_are_found_at_their_lines_past_strings_and_comments() {
        let src = "local t = { 1 }\n\
                   local routes = match.routes {\n\
                   -- { not a rule }\n\
                   { prefix = \"/{x\", pool = \"a\" },\n\
                   { regex = [[^/api/v\\d{1,3}/]], pool = \"b\" },\n\
                   \n\
                   { header = { \"x\", \"1\" },\n  pool = \"c\" },\n\
                   default = \"a\",\n\
                   }\n\
                   local u = { { } }\n";
        assert_eq!(scan_rules(src, 2, 10), vec![4, 5, 7]);
    }
}
