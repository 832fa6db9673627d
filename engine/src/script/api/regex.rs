//! `pocket.regex(pattern)`: a Rust regex compiled once, where the script
//! calls it (normally at load), and matched natively per request.

use mlua::{Lua, MultiValue, Table, UserData, UserDataMethods, Value};

use std::rc::Rc;

use crate::script::memory::{self, Charge};
use crate::script::vm::{self, Budget};

/// The largest compiled regex or set, in bytes (the regex crate's default
/// is 10 MiB): a script's regexes live outside the Lua heap.
const COMPILED_LIMIT: usize = 1 << 20;
/// The lazy DFA's cache of one regex, in bytes (the crate's default is
/// 2 MiB). A regex that needs more is matched without it, still in linear
/// time.
const DFA_CACHE: usize = 64 * 1024;

/// What a compiled regex costs the VM's memory limit: its compiled size,
/// measured, plus its match caches (the DFA's, counted at its bound).
fn cost(patterns: &[&str]) -> usize {
    let config = regex_automata::meta::Config::new()
        .nfa_size_limit(Some(COMPILED_LIMIT))
        .hybrid_cache_capacity(DFA_CACHE);
    let compiled = regex_automata::meta::Builder::new()
        .configure(config)
        .build_many(patterns)
        .map_or(COMPILED_LIMIT, |re| re.memory_usage());
    compiled + DFA_CACHE
}

/// Compiles one pattern with Pocket's size limits.
fn compile(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(COMPILED_LIMIT)
        .dfa_size_limit(DFA_CACHE)
        .build()
}

/// A compiled regex, the charge for its memory (dropped with it) and the
/// VM's budget, checked before each match.
pub struct LuaRegex {
    re: regex::Regex,
    _charge: Charge,
    budget: Option<Rc<Budget>>,
}

/// A match takes native time that grows with the text and, for a pattern
/// the lazy DFA cannot hold, with the pattern too (a 60 KiB text can take
/// tens of ms): every call checks the time budget first (one clock read),
/// so a loop of them ends with the budget.
fn before_match(budget: &Option<Rc<Budget>>) -> mlua::Result<()> {
    budget.as_ref().map_or(Ok(()), |b| b.check())
}

impl UserData for LuaRegex {
    fn add_fields<F: mlua::UserDataFields<Self>>(fields: &mut F) {
        super::names::named(fields, "regex");
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        super::names::described(methods, "regex", |r| format!("regex {:?}", r.re.as_str()));
        methods.add_method("is_match", |_, re, text: mlua::LuaString| {
            before_match(&re.budget)?;
            Ok(re.re.is_match(&text.to_str()?))
        });

        // Like string.match: the captures as values (the whole match when
        // the pattern has no groups), or nil.
        methods.add_method("match", |lua, re, text: mlua::LuaString| {
            before_match(&re.budget)?;
            let text = text.to_str()?;
            let Some(caps) = re.re.captures(&text) else {
                return Ok(MultiValue::from_vec(vec![Value::Nil]));
            };
            let mut out = Vec::with_capacity(caps.len());
            let groups: Box<dyn Iterator<Item = _>> = if caps.len() == 1 {
                Box::new(caps.iter())
            } else {
                Box::new(caps.iter().skip(1))
            };
            for m in groups {
                out.push(match m {
                    Some(m) => Value::String(lua.create_string(m.as_str())?),
                    None => Value::Nil,
                });
            }
            Ok(MultiValue::from_vec(out))
        });

        // A table with [0] the whole match, [1].. the groups and named
        // groups by name; nil when it does not match.
        methods.add_method("captures", |lua, re, text: mlua::LuaString| {
            before_match(&re.budget)?;
            let text = text.to_str()?;
            let Some(caps) = re.re.captures(&text) else {
                return Ok(Value::Nil);
            };
            let t = lua.create_table()?;
            for (i, m) in caps.iter().enumerate() {
                if let Some(m) = m {
                    t.raw_set(i, m.as_str())?;
                }
            }
            for name in re.re.capture_names().flatten() {
                if let Some(m) = caps.name(name) {
                    t.raw_set(name, m.as_str())?;
                }
            }
            Ok(Value::Table(t))
        });

        // Replaces every match; `$1` / `${name}` refer to groups. The
        // result is built in Rust, so it stops at the room left in the
        // VM's memory limit (a 1 MiB text with a 1 MiB replacement per
        // character would be a terabyte).
        methods.add_method(
            "replace",
            |lua, re, (text, with): (mlua::LuaString, mlua::LuaString)| {
                before_match(&re.budget)?;
                let text = text.to_str()?;
                let with = with.to_str()?;
                let room = memory::room(lua);
                let too_big = || {
                    mlua::Error::MemoryError(format!(
                        "re:replace: a result of more than {room} bytes (the room left in the limit)"
                    ))
                };
                let mut out = String::new();
                let mut last = 0;
                for caps in re.re.captures_iter(&text) {
                    let Some(m) = caps.get(0) else { continue };
                    out.push_str(&text[last..m.start()]);
                    caps.expand(&with, &mut out);
                    last = m.end();
                    if out.len() > room {
                        return Err(too_big());
                    }
                }
                out.push_str(&text[last..]);
                if out.len() > room {
                    return Err(too_big());
                }
                lua.create_string(out)
            },
        );
    }
}

/// `pocket.regex_set { p1, p2, ... }`: many patterns matched in one pass,
/// for route tables.
/// A compiled set, the charge for its memory (dropped with it) and the
/// VM's budget, checked before each match.
pub struct LuaRegexSet {
    set: regex::RegexSet,
    _charge: Charge,
    budget: Option<Rc<Budget>>,
}

impl UserData for LuaRegexSet {
    fn add_fields<F: mlua::UserDataFields<Self>>(fields: &mut F) {
        super::names::named(fields, "regex set");
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        super::names::described(methods, "regex set", |r| {
            format!("regex set of {} patterns", r.set.len())
        });
        methods.add_method("is_match", |_, set, text: mlua::LuaString| {
            before_match(&set.budget)?;
            Ok(set.set.is_match(&text.to_str()?))
        });
        // The 1-based indices of every pattern that matches, in order.
        methods.add_method("matches", |lua, set, text: mlua::LuaString| {
            before_match(&set.budget)?;
            let t = lua.create_table()?;
            for i in set.set.matches(&text.to_str()?).iter() {
                t.raw_push(i + 1)?;
            }
            Ok(t)
        });
        // The index of the first pattern that matches, or nil.
        methods.add_method("first", |_, set, text: mlua::LuaString| {
            before_match(&set.budget)?;
            Ok(set
                .set
                .matches(&text.to_str()?)
                .iter()
                .next()
                .map(|i| i + 1))
        });
        methods.add_method("len", |_, set, ()| Ok(set.set.len()));
    }
}

fn one_line(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid")
        .trim()
        .to_string()
}

pub fn register(lua: &Lua, pocket: &Table) -> mlua::Result<()> {
    pocket.set(
        "regex_set",
        lua.create_function(|lua, patterns: Vec<String>| {
            for p in &patterns {
                // Each compile is native work of up to tens of ms.
                vm::check_budget(lua)?;
                if let Err(e) = compile(p) {
                    return Err(mlua::Error::RuntimeError(format!(
                        "bad regex {p:?}: {}",
                        one_line(&e)
                    )));
                }
            }
            let set = regex::RegexSetBuilder::new(&patterns)
                .size_limit(COMPILED_LIMIT)
                .dfa_size_limit(DFA_CACHE)
                .build()
                .map_err(|e| {
                    mlua::Error::RuntimeError(format!("bad regex set: {}", one_line(&e)))
                })?;
            let texts: Vec<&str> = patterns.iter().map(|p| p.as_str()).collect();
            let charge = memory::charge(lua, cost(&texts), "a regex set")?;
            Ok(LuaRegexSet {
                set,
                _charge: charge,
                budget: vm::budget_of(lua),
            })
        })?,
    )?;
    pocket.set(
        "regex",
        lua.create_function(|lua, pattern: String| {
            // A compile is native work of up to tens of ms: a loop of them
            // stops at the budget.
            vm::check_budget(lua)?;
            // regex's messages span lines (pattern, caret, reason): keep
            // the reason, errors are one line here.
            let re = compile(&pattern).map_err(|e| {
                mlua::Error::RuntimeError(format!("bad regex {pattern:?}: {}", one_line(&e)))
            })?;
            let charge = memory::charge(lua, cost(&[&pattern]), "a regex")?;
            Ok(LuaRegex {
                re,
                _charge: charge,
                budget: vm::budget_of(lua),
            })
        })?,
    )?;
    Ok(())
}
