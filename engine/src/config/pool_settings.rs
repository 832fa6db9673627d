//! A pool's settings as the policy writes them: balance, retries,
//! timeouts, active and passive checks. Every value is checked here, at
//! load, with a line to point at.

use std::time::Duration;

use mlua::{Table, Value};

use super::load::Checker;
use super::{parse_duration, seconds_to_duration};
use crate::lb::{Algorithm, CheckKind, CheckSpec, HashKey, Passive, PoolSettings, Timeouts};

const MAX_RETRIES: i64 = 10;
const TIMEOUT_KEYS: &[&str] = &[
    "connect",
    "response",
    "idle",
    "keepalive",
    "total",
    "tunnel",
];
const CHECK_KEYS: &[&str] = &[
    "tcp", "http", "run", "script", "host", "expect", "body", "pattern", "send", "interval",
    "timeout", "rise", "fall", "start",
];
/// `timeouts.idle` of a tcp pool that does not write it: nginx stream's
/// `proxy_timeout` (10 min). An http pool's stays [`Timeouts::default`]'s.
pub const TCP_IDLE_DEFAULT: Duration = Duration::from_secs(600);
const PASSIVE_KEYS: &[&str] = &["after", "on_5xx", "cooldown"];

fn is_written(t: &Table, key: &str) -> bool {
    !matches!(t.get::<Value>(key), Ok(Value::Nil))
}

/// A duration value: `"2s"`, `"250ms"` or a number of seconds. A string
/// that is a bare number (`"1"`) is refused: its unit is a guess, and a
/// number written as a string is more likely a slip than a choice.
pub(super) fn duration(v: &Value) -> Result<Duration, String> {
    let range = "a duration from 0s to 24h";
    match v {
        Value::String(s) => {
            let text = s.to_string_lossy();
            if text.chars().count() > SHOWN_MAX {
                // No duration is this long: echo it cut, once.
                return Err(format!("must be {range}, not {}", shown(v)));
            }
            if text.trim().parse::<f64>().is_ok() {
                return Err(format!(
                    "\"{text}\" has no unit: write \"{}s\" (or ms, m, h)",
                    text.trim()
                ));
            }
            parse_duration(&text)
        }
        Value::Integer(n) => seconds_to_duration(*n as f64)
            .ok_or_else(|| format!("must be {range}, not {}", shown(v))),
        Value::Number(n) => {
            seconds_to_duration(*n).ok_or_else(|| format!("must be {range}, not {}", shown(v)))
        }
        _ => Err(format!("must be a duration like \"2s\", not {}", shown(v))),
    }
}

/// A value as a message shows it, its type and (for a plain value) the
/// value itself: `a number (5)`, `a string ("fast")`, `a table`, `a regex
/// (pocket.regex)`. A float is written as Lua's `tostring` writes it
/// (`%.14g`: `1e+300`, not 301 digits); a string longer than
/// [`SHOWN_MAX`] characters is cut, with `...`.
pub(crate) fn shown(v: &Value) -> String {
    match v {
        Value::Integer(n) => format!("a number ({n})"),
        Value::Number(n) => format!("a number ({})", lua_float(*n)),
        Value::Boolean(b) => format!("a boolean ({b})"),
        Value::String(s) => format!("a string (\"{}\")", cut(&s.to_string_lossy())),
        Value::Nil => "nothing (nil)".into(),
        Value::Table(_) => "a table".into(),
        Value::Function(_) => "a function".into(),
        Value::UserData(ud) => {
            crate::script::api::userdata_name(ud).unwrap_or_else(|| "a value made by Pocket".into())
        }
        other => format!("a {}", other.type_name()),
    }
}

/// The most characters of a string a message echoes.
const SHOWN_MAX: usize = 80;

fn cut(text: &str) -> String {
    match text.char_indices().nth(SHOWN_MAX) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// `n` as Lua 5.4's `tostring` writes a float: C's `%.14g`, with `.0`
/// added when that looks like an integer (lobject.c, `tostringbuff`).
pub fn lua_float(n: f64) -> String {
    if n.is_nan() {
        return if n.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if n.is_infinite() {
        return if n < 0.0 { "-inf" } else { "inf" }.into();
    }
    const P: i32 = 14;
    // The exponent after rounding to P significant digits.
    let sci = format!("{:.*e}", (P - 1) as usize, n);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |t: &str| -> String {
        if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            t.to_string()
        }
    };
    let text = if (-4..P).contains(&exp) {
        trim(&format!("{:.*}", (P - 1 - exp) as usize, n))
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    };
    if text.bytes().all(|b| b == b'-' || b.is_ascii_digit()) {
        format!("{text}.0")
    } else {
        text
    }
}

impl Checker<'_> {
    /// The boolean at `at` (its last step is the key in `t`): `None` when
    /// absent; a value of another kind is an error that says
    /// `WHAT: KEY must be true or false, not VALUE` and gives `None`.
    pub(super) fn flag(&mut self, t: &mlua::Table, at: &[&str], what: &str) -> Option<bool> {
        let key = at.last().copied().unwrap_or_default();
        match t.get::<Value>(key) {
            Ok(Value::Nil) => None,
            Ok(Value::Boolean(b)) => Some(b),
            Ok(other) => {
                self.error(
                    at,
                    format!("{what}: {key} must be true or false, not {}", shown(&other)),
                );
                None
            }
            Err(e) => {
                self.error(at, e.to_string());
                None
            }
        }
    }

    pub(super) fn pool_settings(&mut self, name: &str, t: &Table) -> PoolSettings {
        let mut s = PoolSettings::default();

        // The mode first: what else the pool may say depends on it.
        match t.get::<Value>("mode") {
            Ok(v) => match super::mode_value::read_mode_guess(&v) {
                Ok(m) => s.mode = m,
                Err((why, meant)) => {
                    s.mode = meant.unwrap_or_default();
                    // Its listeners get no second error about a mode
                    // mismatch caused by this one.
                    self.bad_mode_pools.insert(name.to_string());
                    self.error(&["pools", name, "mode"], format!("pool \"{name}\": {why}"));
                }
            },
            Err(e) => self.error(
                &["pools", name, "mode"],
                crate::script::describe_lua_error(&e),
            ),
        }

        let refused = if s.mode == super::Mode::Tcp {
            self.http_only_in_tcp_pool(name, t)
        } else {
            Vec::new()
        };

        // A value already reported wrong must not bring a second, false
        // error about what depends on it (hash_key when the algorithm was
        // mistyped, bypass when the fallback was).
        let errors_before = self.errors.len();
        match t.get::<Value>("balance") {
            Ok(Value::Nil) => {}
            Ok(Value::String(b)) => {
                let b = b.to_string_lossy();
                match Algorithm::parse(&b) {
                    Some(a) => s.algorithm = a,
                    None if b == "source" => self.error(
                        &["pools", name, "balance"],
                        format!("pool \"{name}\": unknown balance algorithm \"source\": HAProxy's balance source is balance = \"hash\", hash_key = \"source\" here"),
                    ),
                    None => self.error(
                        &["pools", name, "balance"],
                        format!(
                            "pool \"{name}\": unknown balance algorithm \"{b}\" (known: {})",
                            Algorithm::NAMES
                        ),
                    ),
                }
            }
            Ok(Value::Function(_)) => s.algorithm = Algorithm::Script,
            Ok(other) => self.error(
                &["pools", name, "balance"],
                format!(
                    "pool \"{name}\": balance must be an algorithm name ({}) or a function(servers, req), not {}",
                    Algorithm::NAMES,
                    shown(&other)
                ),
            ),
            Err(e) => self.error(&["pools", name, "balance"], e.to_string()),
        }

        let balance_wrong = self.errors.len() > errors_before;
        let fallback_given = !matches!(t.get::<Value>("fallback"), Ok(Value::Nil));
        match t.get::<Value>("fallback") {
            Ok(Value::Nil) => {}
            Ok(Value::String(f)) => {
                s.fallback = Some(std::sync::Arc::from(f.to_string_lossy().as_str()))
            }
            Ok(other) => self.error(
                &["pools", name, "fallback"],
                format!(
                    "pool \"{name}\": fallback must be a pool name, not {}",
                    shown(&other)
                ),
            ),
            Err(e) => self.error(&["pools", name, "fallback"], e.to_string()),
        }
        let what = format!("pool \"{name}\"");
        if let Some(b) = self.flag(t, &["pools", name, "own_health"], &what) {
            s.own_health = b;
        }
        if let Some(b) = self.flag(t, &["pools", name, "rehash"], &what) {
            s.rehash = b;
        }
        match t.get::<Value>("bypass") {
            Ok(Value::Nil) => {}
            Ok(_) if refused.contains(&"bypass") => {}
            Ok(Value::Function(_)) if s.fallback.is_some() || fallback_given => {}
            Ok(Value::Function(_)) => self.error(
                &["pools", name, "bypass"],
                format!("pool \"{name}\": bypass needs a fallback pool"),
            ),
            Ok(other) => self.error(
                &["pools", name, "bypass"],
                format!(
                    "pool \"{name}\": bypass must be a function(req), not {}",
                    shown(&other)
                ),
            ),
            Err(e) => self.error(&["pools", name, "bypass"], e.to_string()),
        }

        match t.get::<Value>("slow_start") {
            Ok(Value::Nil) => {}
            Ok(v) => match duration(&v) {
                Ok(d) if !d.is_zero() => s.slow_start = Some(d),
                Ok(_) => {}
                Err(msg) => self.error(
                    &["pools", name, "slow_start"],
                    format!("pool \"{name}\": slow_start: {msg}"),
                ),
            },
            Err(e) => self.error(&["pools", name, "slow_start"], e.to_string()),
        }

        match (t.get::<Value>("hash_key"), &s.algorithm) {
            (Ok(Value::Nil), Algorithm::Hash) => s.hash_key = Some(HashKey::Source),
            (Ok(Value::Nil), _) => {}
            (Ok(_), _) if refused.contains(&"hash_key") => {}
            (Ok(v), Algorithm::Hash) => s.hash_key = self.hash_key(name, &v),
            (Ok(_), _) if balance_wrong => {}
            (Ok(_), _) => self.error(
                &["pools", name, "hash_key"],
                format!("pool \"{name}\": hash_key needs balance = \"hash\""),
            ),
            (Err(e), _) => self.error(&["pools", name, "hash_key"], e.to_string()),
        }
        match t.get::<Value>("hash_balance_factor") {
            Ok(Value::Nil) => {}
            Ok(Value::Integer(f)) if (101..=1000).contains(&f) && s.algorithm == Algorithm::Hash => {
                s.balance_factor = Some(f as u32)
            }
            Ok(Value::Integer(f)) if (101..=1000).contains(&f) && balance_wrong => {}
            Ok(Value::Integer(f)) if (101..=1000).contains(&f) => self.error(
                &["pools", name, "hash_balance_factor"],
                format!("pool \"{name}\": hash_balance_factor needs balance = \"hash\""),
            ),
            Ok(other) => self.error(
                &["pools", name, "hash_balance_factor"],
                format!("pool \"{name}\": hash_balance_factor must be a whole number (a percentage) from 101 to 1000, not {}", shown(&other)),
            ),
            Err(e) => self.error(&["pools", name, "hash_balance_factor"], e.to_string()),
        }

        s.retries = match t.get::<Value>("retries") {
            Ok(Value::Nil) => 3,
            Ok(Value::Integer(n)) if (0..=MAX_RETRIES).contains(&n) => n as u32,
            Ok(other) => {
                self.error(
                    &["pools", name, "retries"],
                    format!(
                        "pool \"{name}\": retries must be a whole number from 0 to {MAX_RETRIES}, not {}",
                        shown(&other)
                    ),
                );
                0
            }
            Err(e) => {
                self.error(&["pools", name, "retries"], e.to_string());
                0
            }
        };

        match t.get::<Value>("timeouts") {
            Ok(Value::Nil) => {}
            Ok(Value::Table(tt)) => s.timeouts = self.timeouts(name, &tt, s.mode),
            Ok(other) => self.error(
                &["pools", name, "timeouts"],
                format!(
                    "pool \"{name}\": timeouts must be a table like {{ connect = \"1s\" }}, not {}",
                    shown(&other)
                ),
            ),
            Err(e) => self.error(&["pools", name, "timeouts"], e.to_string()),
        }
        // A tcp connection may rightly be quiet for minutes (an SMTP
        // session, a database client between queries): nginx stream's
        // `proxy_timeout` default, 10 min, unless the policy says.
        let idle_written =
            matches!(t.get::<Value>("timeouts"), Ok(Value::Table(tt)) if is_written(&tt, "idle"));
        if s.mode == super::Mode::Tcp && !idle_written {
            s.timeouts.idle = TCP_IDLE_DEFAULT;
        }

        match t.get::<Value>("check") {
            Ok(Value::Nil) => {}
            Ok(Value::Table(ct)) => s.check = self.check(name, &ct, s.mode),
            Ok(Value::Function(_)) => {
                s.check = Some(CheckSpec {
                    kind: CheckKind::Script,
                    interval: Duration::from_secs(2),
                    timeout: Duration::from_secs(1),
                    rise: 2,
                    fall: 3,
                    start_up: true,
                    pool_function: true,
                    send_proxy: None,
                })
            }
            Ok(other) => self.error(
                &["pools", name, "check"],
                format!("pool \"{name}\": check must be a table like {{ http = \"GET /health\" }} or {{ tcp = true }}, not {}", shown(&other)),
            ),
            Err(e) => self.error(&["pools", name, "check"], e.to_string()),
        }

        match t.get::<Value>("passive") {
            Ok(Value::Nil) => {}
            Ok(Value::Boolean(false)) => s.passive.after = 0,
            Ok(Value::Table(pt)) => s.passive = self.passive(name, &pt, s.mode),
            Ok(other) => self.error(
                &["pools", name, "passive"],
                format!("pool \"{name}\": passive must be false or a table like {{ after = 3 }}, not {}", shown(&other)),
            ),
            Err(e) => self.error(&["pools", name, "passive"], e.to_string()),
        }
        self.send_proxy(name, t, &mut s);
        self.upstream_transport(name, t, &mut s);
        s
    }

    fn hash_key(&mut self, pool: &str, v: &Value) -> Option<HashKey> {
        let text = match v {
            Value::Function(_) => return Some(HashKey::Script),
            Value::String(s) => s.to_string_lossy(),
            other => {
                self.error(
                    &["pools", pool, "hash_key"],
                    format!(
                        "pool \"{pool}\": hash_key must be a name or a function(req), not {}",
                        shown(other)
                    ),
                );
                return None;
            }
        };
        let key = match text.as_str() {
            "source" => HashKey::Source,
            "uri" => HashKey::Uri,
            "path" => HashKey::Path,
            "host" => HashKey::Host,
            other => {
                if let Some(h) = other.strip_prefix("header:") {
                    match http::HeaderName::from_bytes(h.trim().as_bytes()) {
                        Ok(n) => HashKey::Header(n),
                        Err(_) => {
                            self.error(
                                &["pools", pool, "hash_key"],
                                format!("pool \"{pool}\": bad header name in hash_key \"{other}\" (a header name is one word, like \"header:x-user\")"),
                            );
                            return None;
                        }
                    }
                } else if let Some(c) = other.strip_prefix("cookie:") {
                    // RFC 6265 section 4.1.1: a cookie-name is a token.
                    match http::HeaderName::from_bytes(c.trim().as_bytes()) {
                        Ok(_) if !c.trim().is_empty() => HashKey::Cookie(c.trim().to_string()),
                        _ => {
                            self.error(
                                &["pools", pool, "hash_key"],
                                format!("pool \"{pool}\": bad cookie name in hash_key \"{other}\" (a cookie name is one word, like \"cookie:session\")"),
                            );
                            return None;
                        }
                    }
                } else {
                    self.error(
                        &["pools", pool, "hash_key"],
                        format!("pool \"{pool}\": unknown hash_key \"{other}\" (source, uri, path, host, header:NAME, cookie:NAME or a function)"),
                    );
                    return None;
                }
            }
        };
        Some(key)
    }

    fn timeouts(&mut self, pool: &str, tt: &Table, mode: super::Mode) -> Timeouts {
        let mut timeouts = Timeouts::default();
        let at = ["pools", pool, "timeouts"];
        // A tcp pool's http keys are refused by tcp_rules: listed here
        // are only the keys that work in this mode.
        let shown_keys: &[&str] = match mode {
            super::Mode::Tcp => &["connect", "idle"],
            super::Mode::Http => TIMEOUT_KEYS,
        };
        self.unknown_keys_in(
            tt,
            TIMEOUT_KEYS,
            shown_keys,
            &format!("pool \"{pool}\" timeouts"),
            &at,
            super::tcp_rules::pool_timeout_advice,
        );
        let here = format!("pool \"{pool}\": timeouts.");
        self.positive_duration(tt, "connect", &here, &at, &mut timeouts.connect);
        self.positive_duration(tt, "response", &here, &at, &mut timeouts.response);
        self.positive_duration(tt, "idle", &here, &at, &mut timeouts.idle);
        self.positive_duration(tt, "keepalive", &here, &at, &mut timeouts.keepalive);
        self.positive_duration(tt, "tunnel", &here, &at, &mut timeouts.tunnel);
        let mut total = Duration::ZERO;
        self.positive_duration(tt, "total", &here, &at, &mut total);
        timeouts.total = Some(total).filter(|t| !t.is_zero());
        timeouts
    }

    fn count(&mut self, pool: &str, t: &Table, key: &str, default: u32, max: i64) -> u32 {
        match t.get::<Value>(key) {
            Ok(Value::Nil) => default,
            Ok(Value::Integer(n)) if (1..=max).contains(&n) => n as u32,
            Ok(other) => {
                self.error(
                    &["pools", pool, "check", key],
                    format!(
                        "pool \"{pool}\" check: {key} must be a whole number from 1 to {max}, not {}",
                        shown(&other)
                    ),
                );
                default
            }
            Err(e) => {
                self.error(&["pools", pool, "check", key], e.to_string());
                default
            }
        }
    }

    fn check(&mut self, pool: &str, ct: &Table, mode: super::Mode) -> Option<CheckSpec> {
        let misspelt = self.unknown_keys(
            ct,
            CHECK_KEYS,
            &format!("pool \"{pool}\" check"),
            &["pools", pool, "check"],
        );
        let before = self.errors.len();
        let what = format!("pool \"{pool}\" check");
        // `run` and `script` of the wrong type: said once, and no "say
        // either tcp or http" after (the user meant a scripted check).
        let mut meant_script = false;
        match ct.get::<Value>("run") {
            Ok(Value::Nil) | Ok(Value::Function(_)) => {}
            Ok(other) => {
                meant_script = true;
                self.error(
                    &["pools", pool, "check", "run"],
                    format!(
                        "{what}: run must be a function(server), not {}",
                        shown(&other)
                    ),
                );
            }
            Err(e) => self.error(&["pools", pool, "check", "run"], e.to_string()),
        }
        match ct.get::<Value>("script") {
            Ok(Value::Nil) | Ok(Value::Boolean(_)) => {}
            Ok(other) => {
                meant_script = true;
                self.error(
                    &["pools", pool, "check", "script"],
                    format!(
                        "{what}: script must be true or false, not {}",
                        shown(&other)
                    ),
                );
            }
            Err(e) => self.error(&["pools", pool, "check", "script"], e.to_string()),
        }
        let kinds = ["tcp", "http", "run", "script"]
            .iter()
            .filter(|k| !matches!(ct.get::<Value>(**k), Ok(Value::Nil)))
            .count();
        if kinds > 1 {
            self.error(
                &["pools", pool, "check"],
                format!("{what}: say one of tcp = true, http = \"GET /path\", run = function or script = true, not several"),
            );
            meant_script = true;
        }
        let scripted = matches!(ct.get::<Value>("run"), Ok(Value::Function(_)))
            || matches!(ct.get::<Value>("script"), Ok(Value::Boolean(true)));
        if scripted
            && !matches!(ct.get::<Value>("run"), Ok(Value::Function(_)))
            && !self.has_on_check
        {
            self.error(
                &["pools", pool, "check", "script"],
                format!("{what}: script = true needs an on_check function in the policy"),
            );
        }
        // A check on the line a tcp server sends (HAProxy's `tcp-check`):
        // `send`, `expect` or `pattern` without `http`.
        let line_check = !scripted
            && !is_written(ct, "http")
            && ["send", "expect", "pattern"]
                .iter()
                .any(|k| is_written(ct, k));
        if is_written(ct, "send") && is_written(ct, "http") {
            self.error(
                &["pools", pool, "check", "send"],
                format!("{what}: send goes with expect or pattern (a check on the line a tcp server answers); an http check writes its own request: leave send out"),
            );
        }
        if line_check && mode != super::Mode::Tcp {
            let key = ["send", "expect", "pattern"]
                .into_iter()
                .find(|k| is_written(ct, k))
                .unwrap_or("send");
            self.error(
                &["pools", pool, "check", key],
                format!("{what}: {key} without http checks the line a tcp server answers, and pool \"{pool}\" is an http pool: check it with http = \"GET /path\", or add mode = \"tcp\" to the pool"),
            );
            meant_script = true;
        }
        // HAProxy's `option tcp-check` + `tcp-check expect` read as
        // tcp = true + expect: the check would silently wait for a banner.
        if line_check && mode == super::Mode::Tcp && is_written(ct, "tcp") {
            let keys: Vec<&str> = ["send", "expect", "pattern"]
                .into_iter()
                .filter(|k| is_written(ct, k))
                .collect();
            self.error(
                &["pools", pool, "check", "tcp"],
                format!("{what}: tcp = true only connects; {} make{} a line check: leave tcp = true out", keys.join(" and "), if keys.len() == 1 { "s" } else { "" }),
            );
        }
        let kind = match (ct.get::<Value>("tcp"), ct.get::<Value>("http")) {
            _ if scripted => CheckKind::Script,
            (Ok(Value::Nil) | Ok(Value::Boolean(true)), Ok(Value::Nil))
                if line_check && mode == super::Mode::Tcp =>
            {
                let misspelt_answer = misspelt.iter().any(|k| k == "expect" || k == "pattern");
                self.line_check(pool, ct, &what, misspelt_answer)
            }
            (Ok(Value::Boolean(true)), Ok(Value::Nil)) => CheckKind::Tcp,
            (Ok(Value::Nil), Ok(Value::String(line))) => {
                let line = line.to_string_lossy();
                let mut words = line.split_whitespace();
                let (method, path) = match (words.next(), words.next()) {
                    (Some(p), None) if p.starts_with('/') => ("GET".to_string(), p.to_string()),
                    (Some(m), Some(p)) if p.starts_with('/') => {
                        (m.to_ascii_uppercase(), p.to_string())
                    }
                    _ => {
                        self.error(
                            &["pools", pool, "check", "http"],
                            format!("{what}: http must be like \"GET /health\", not \"{line}\""),
                        );
                        (String::new(), String::new())
                    }
                };
                let host = match ct.get::<Value>("host") {
                    Ok(Value::String(h)) => Some(h.to_string_lossy()),
                    Ok(Value::Nil) => None,
                    Ok(other) => {
                        self.error(
                            &["pools", pool, "check", "host"],
                            format!("{what}: host must be a string, not {}", shown(&other)),
                        );
                        None
                    }
                    Err(_) => None,
                };
                let expect = match ct.get::<Value>("expect") {
                    Ok(Value::Nil) => (200, 399),
                    Ok(Value::Integer(n)) if (100..=599).contains(&n) => (n as u16, n as u16),
                    Ok(Value::String(s))
                        if s.to_string_lossy().len() == 3
                            && s.to_string_lossy().ends_with("xx") =>
                    {
                        let first = s.to_string_lossy().as_bytes()[0];
                        match first {
                            b'1'..=b'5' => {
                                let base = (first - b'0') as u16 * 100;
                                (base, base + 99)
                            }
                            _ => (0, 0),
                        }
                    }
                    Ok(Value::Table(r)) => match (r.get::<i64>(1), r.get::<i64>(2)) {
                        (Ok(lo), Ok(hi)) if 100 <= lo && lo <= hi && hi <= 599 => {
                            (lo as u16, hi as u16)
                        }
                        (Ok(lo), Ok(hi)) if lo > hi => {
                            // Said as what it is: not "not a table".
                            self.error(
                                &["pools", pool, "check", "expect"],
                                format!("{what}: expect = {{{lo}, {hi}}} is a reversed range: write the lower status first, {{{hi}, {lo}}}"),
                            );
                            (1, 1)
                        }
                        _ => (0, 0),
                    },
                    _ => (0, 0),
                };
                if expect == (0, 0) {
                    let found = ct
                        .get::<Value>("expect")
                        .map(|v| shown(&v))
                        .unwrap_or_default();
                    self.error(&["pools", pool, "check", "expect"], format!("{what}: expect must be a status (200), a class (\"2xx\") or a range {{200, 399}}, not {found}"));
                }
                let body = match ct.get::<Value>("body") {
                    Ok(Value::String(b)) => Some(b.to_string_lossy()),
                    Ok(Value::Nil) => None,
                    Ok(other) => {
                        self.error(
                            &["pools", pool, "check", "body"],
                            format!("{what}: body must be a string, not {}", shown(&other)),
                        );
                        None
                    }
                    Err(_) => None,
                };
                let pattern = match ct.get::<Value>("pattern") {
                    Ok(Value::String(p)) => self.check_pattern(pool, &what, &p.to_string_lossy()),
                    _ => None,
                };
                CheckKind::Http {
                    method,
                    path,
                    host,
                    expect,
                    body,
                    pattern,
                }
            }
            (tcp, http) => {
                let said = |v: &Result<Value, mlua::Error>| !matches!(v, Ok(Value::Nil));
                if let (true, Ok(v)) = (said(&tcp), &tcp) {
                    self.error(
                        &["pools", pool, "check", "tcp"],
                        format!("{what}: tcp must be true, not {}", shown(v)),
                    );
                } else if let (true, Ok(v)) = (said(&http), &http) {
                    self.error(
                        &["pools", pool, "check", "http"],
                        format!(
                            "{what}: http must be like \"GET /health\", not {}",
                            shown(v)
                        ),
                    );
                } else if !meant_script
                    && !misspelt.iter().any(|k| {
                        ["tcp", "http", "run", "script"].contains(&k.as_str())
                            || (mode == super::Mode::Tcp
                                && ["send", "expect", "pattern"].contains(&k.as_str()))
                    })
                {
                    self.error(
                        &["pools", pool, "check"],
                        match mode {
                            super::Mode::Tcp => format!("{what}: say tcp = true, expect = \"...\" (text the server's first line contains, after send = \"...\" if it waits to be spoken to) or http = \"GET /path\""),
                            super::Mode::Http => format!("{what}: say either tcp = true or http = \"GET /path\""),
                        },
                    );
                }
                CheckKind::Tcp
            }
        };
        let mut interval = Duration::from_secs(2);
        let mut timeout = Duration::from_secs(1);
        for (key, slot) in [("interval", &mut interval), ("timeout", &mut timeout)] {
            match ct.get::<Value>(key) {
                Ok(Value::Nil) => {}
                Ok(v) => match duration(&v) {
                    Ok(d) if d >= Duration::from_millis(10) => *slot = d,
                    Ok(_) => self.error(
                        &["pools", pool, "check", key],
                        format!("{what}: {key} must be at least 10ms, not {}", shown(&v)),
                    ),
                    Err(msg) => self.error(
                        &["pools", pool, "check", key],
                        format!("{what}: {key}: {msg}"),
                    ),
                },
                Err(e) => self.error(&["pools", pool, "check", key], e.to_string()),
            }
        }
        let rise = self.count(pool, ct, "rise", 2, 100);
        let fall = self.count(pool, ct, "fall", 3, 100);
        let start_up = match ct.get::<Value>("start") {
            Ok(Value::Nil) => true,
            Ok(Value::String(s)) if s.to_string_lossy() == "up" => true,
            Ok(Value::String(s)) if s.to_string_lossy() == "down" => false,
            Ok(other) => {
                self.error(
                    &["pools", pool, "check", "start"],
                    format!(
                        "{what}: start must be \"up\" or \"down\", not {}",
                        shown(&other)
                    ),
                );
                true
            }
            Err(e) => {
                self.error(&["pools", pool, "check", "start"], e.to_string());
                true
            }
        };
        if self.errors.len() > before {
            return None;
        }
        Some(CheckSpec {
            kind,
            interval,
            timeout,
            rise,
            fall,
            start_up,
            pool_function: matches!(ct.get::<Value>("run"), Ok(Value::Function(_))),
            send_proxy: None,
        })
    }

    /// A tcp pool's check on the first line a server answers
    /// (`check = { send = "PING\r\n", expect = "+PONG" }`, a banner
    /// with no `send`, or `pattern = "^220[ -]"`): HAProxy's `tcp-check
    /// send` / `tcp-check expect string|rstring`. `send` alone is refused:
    /// any answer would pass.
    /// `misspelt_answer`: `expect` or `pattern` was written misspelt (and
    /// said so already).
    fn line_check(
        &mut self,
        pool: &str,
        ct: &Table,
        what: &str,
        misspelt_answer: bool,
    ) -> CheckKind {
        for key in ["body", "host"] {
            if is_written(ct, key) {
                self.error(
                    &["pools", pool, "check", key],
                    format!("{what}: {key} is for http checks; a check with send/expect reads one line: leave {key} out"),
                );
            }
        }
        let send = match ct.get::<Value>("send") {
            Ok(Value::Nil) => None,
            Ok(Value::String(b)) if !b.as_bytes().is_empty() => {
                let bytes = b.as_bytes().to_vec();
                if !bytes.ends_with(b"\n") {
                    // HAProxy's `tcp-check send PING` habit: a line
                    // protocol waits for the line end and the check
                    // times out, three times, before anything says so.
                    let line = self.places_line(&["pools", pool, "check", "send"]);
                    let place = match line {
                        Some(n) => format!("{}:{n}", self.path.display()),
                        None => self.path.display().to_string(),
                    };
                    self.warnings.push(format!(
                        "{place}: {what}: send has no line end ({} bytes): a line protocol waits for it; write \"...\\r\\n\"",
                        bytes.len()
                    ));
                }
                Some(bytes)
            }
            Ok(Value::String(_)) => {
                self.error(
                    &["pools", pool, "check", "send"],
                    format!("{what}: send must not be empty: the bytes to write, like send = \"PING\\r\\n\" (leave send out for a server that speaks first)"),
                );
                None
            }
            Ok(other) => {
                self.error(
                    &["pools", pool, "check", "send"],
                    format!(
                        "{what}: send must be the bytes to write, like send = \"PING\\r\\n\", not {}",
                        shown(&other)
                    ),
                );
                None
            }
            Err(e) => {
                self.error(&["pools", pool, "check", "send"], e.to_string());
                None
            }
        };
        let text = match ct.get::<Value>("expect") {
            Ok(Value::Nil) => None,
            Ok(Value::String(t)) if !t.as_bytes().is_empty() => Some(t.to_string_lossy()),
            Ok(other) => {
                self.error(
                    &["pools", pool, "check", "expect"],
                    format!(
                        "{what}: expect must be the text the server's first line contains, like expect = \"220\", not {}",
                        shown(&other)
                    ),
                );
                Some(String::new())
            }
            Err(e) => {
                self.error(&["pools", pool, "check", "expect"], e.to_string());
                Some(String::new())
            }
        };
        let pattern = match ct.get::<Value>("pattern") {
            Ok(Value::Nil) => None,
            Ok(Value::String(p)) => self.check_pattern(pool, what, &p.to_string_lossy()),
            Ok(other) => {
                self.error(
                    &["pools", pool, "check", "pattern"],
                    format!(
                        "{what}: pattern must be a regex the first line matches, like pattern = \"^220[ -]\", not {}",
                        shown(&other)
                    ),
                );
                None
            }
            Err(e) => {
                self.error(&["pools", pool, "check", "pattern"], e.to_string());
                None
            }
        };
        let written = |k| is_written(ct, k);
        let expect = match (text, pattern) {
            (Some(_), _) if written("pattern") => {
                self.error(
                    &["pools", pool, "check", "pattern"],
                    format!("{what}: say expect (text the line contains) or pattern (a regex it matches), not both"),
                );
                None
            }
            (Some(t), None) => Some(crate::lb::Expect::Text(t)),
            (None, Some(re)) => Some(crate::lb::Expect::Pattern(re)),
            _ => None,
        };
        match expect {
            Some(expect) => CheckKind::Expect { send, expect },
            None => {
                if !written("expect") && !written("pattern") && !misspelt_answer {
                    self.error(
                        &["pools", pool, "check", "send"],
                        format!("{what}: send needs expect = \"...\" (text the answer's first line contains) or pattern = \"...\" (a regex it matches); without one any answer would pass"),
                    );
                }
                CheckKind::Tcp
            }
        }
    }

    /// A check's `pattern` (an HTTP body's or a line check's first
    /// line's), compiled once at load; a bad one is an error at its line
    /// with the regex crate's reason.
    fn check_pattern(&mut self, pool: &str, what: &str, p: &str) -> Option<regex::Regex> {
        match regex::Regex::new(p) {
            Ok(re) => Some(re),
            Err(e) => {
                let text = e.to_string();
                let reason = text.lines().last().unwrap_or("").trim();
                self.error(
                    &["pools", pool, "check", "pattern"],
                    format!("{what}: bad pattern {p:?}: {reason}"),
                );
                None
            }
        }
    }

    fn passive(&mut self, pool: &str, pt: &Table, mode: super::Mode) -> Passive {
        self.unknown_keys(
            pt,
            PASSIVE_KEYS,
            &format!("pool \"{pool}\" passive"),
            &["pools", pool, "passive"],
        );
        let mut p = Passive::default();
        match pt.get::<Value>("after") {
            Ok(Value::Nil) => {}
            Ok(Value::Integer(n)) if (0..=1000).contains(&n) => p.after = n as u32,
            Ok(other) => self.error(
                &["pools", pool, "passive", "after"],
                format!(
                    "pool \"{pool}\" passive: after must be a whole number from 0 to 1000, not {}",
                    shown(&other)
                ),
            ),
            Err(e) => self.error(&["pools", pool, "passive", "after"], e.to_string()),
        }
        let what = format!("pool \"{pool}\" passive");
        // A tcp pool's on_5xx is refused by tcp_rules, whatever its value.
        if mode == super::Mode::Http {
            if let Some(b) = self.flag(pt, &["pools", pool, "passive", "on_5xx"], &what) {
                p.on_5xx = b;
            }
        }
        match pt.get::<Value>("cooldown") {
            Ok(Value::Nil) => {}
            Ok(v) => match duration(&v) {
                Ok(d) => p.cooldown = d,
                Err(msg) => self.error(
                    &["pools", pool, "passive", "cooldown"],
                    format!("pool \"{pool}\" passive: cooldown: {msg}"),
                ),
            },
            Err(e) => self.error(&["pools", pool, "passive", "cooldown"], e.to_string()),
        }
        p
    }
}

#[cfg(test)]
mod shown_tests {
    use super::*;

    #[test]
    fn floats_are_written_as_lua_writes_them() {
        for (n, want) in [
            (1e300, "1e+300"),
            (1.5, "1.5"),
            (2.0, "2.0"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (123456789012345.0, "1.2345678901234e+14"),
            (-0.25, "-0.25"),
        ] {
            assert_eq!(lua_float(n), want, "{n}");
        }
    }

    #[test]
    fn long_strings_are_cut() {
        let long = "9".repeat(300);
        let c = cut(&long);
        assert_eq!(c.len(), SHOWN_MAX + 3);
        assert!(c.ends_with("..."));
        assert_eq!(cut("2s"), "2s");
    }
}
