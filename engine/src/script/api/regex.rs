//! `pocket.regex(pattern)`: a Rust regex compiled once, where the script
//! calls it (normally at load), and matched natively per request.

use mlua::{Lua, MultiValue, Table, UserData, UserDataMethods, Value};

pub struct LuaRegex(regex::Regex);

/// A match takes time in proportion to the text, natively: on a long text,
/// the time budget is checked first (see `vm::before_native`).
fn before_native(lua: &Lua, text: &mlua::LuaString) -> mlua::Result<()> {
    crate::script::vm::before_native(lua, text.as_bytes().len())
}

impl UserData for LuaRegex {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("is_match", |lua, re, text: mlua::LuaString| {
            before_native(lua, &text)?;
            Ok(re.0.is_match(&text.to_str()?))
        });

        // Like string.match: the captures as values (the whole match when
        // the pattern has no groups), or nil.
        methods.add_method("match", |lua, re, text: mlua::LuaString| {
            before_native(lua, &text)?;
            let text = text.to_str()?;
            let Some(caps) = re.0.captures(&text) else {
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
            before_native(lua, &text)?;
            let text = text.to_str()?;
            let Some(caps) = re.0.captures(&text) else {
                return Ok(Value::Nil);
            };
            let t = lua.create_table()?;
            for (i, m) in caps.iter().enumerate() {
                if let Some(m) = m {
                    t.raw_set(i, m.as_str())?;
                }
            }
            for name in re.0.capture_names().flatten() {
                if let Some(m) = caps.name(name) {
                    t.raw_set(name, m.as_str())?;
                }
            }
            Ok(Value::Table(t))
        });

        // Replaces every match; `$1` / `${name}` refer to groups.
        methods.add_method(
            "replace",
            |lua, re, (text, with): (mlua::LuaString, mlua::LuaString)| {
                before_native(lua, &text)?;
                Ok(re
                    .0
                    .replace_all(&text.to_str()?, with.to_str()?.as_ref())
                    .into_owned())
            },
        );
    }
}

/// `pocket.regex_set { p1, p2, ... }`: many patterns matched in one pass,
/// for route tables.
pub struct LuaRegexSet(regex::RegexSet);

impl UserData for LuaRegexSet {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("is_match", |lua, set, text: mlua::LuaString| {
            before_native(lua, &text)?;
            Ok(set.0.is_match(&text.to_str()?))
        });
        // The 1-based indices of every pattern that matches, in order.
        methods.add_method("matches", |lua, set, text: mlua::LuaString| {
            before_native(lua, &text)?;
            let t = lua.create_table()?;
            for i in set.0.matches(&text.to_str()?).iter() {
                t.raw_push(i + 1)?;
            }
            Ok(t)
        });
        // The index of the first pattern that matches, or nil.
        methods.add_method("first", |lua, set, text: mlua::LuaString| {
            before_native(lua, &text)?;
            Ok(set.0.matches(&text.to_str()?).iter().next().map(|i| i + 1))
        });
        methods.add_method("len", |_, set, ()| Ok(set.0.len()));
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
        lua.create_function(|_, patterns: Vec<String>| {
            for p in &patterns {
                if let Err(e) = regex::Regex::new(p) {
                    return Err(mlua::Error::RuntimeError(format!(
                        "bad regex {p:?}: {}",
                        one_line(&e)
                    )));
                }
            }
            regex::RegexSet::new(&patterns)
                .map(LuaRegexSet)
                .map_err(|e| mlua::Error::RuntimeError(format!("bad regex set: {}", one_line(&e))))
        })?,
    )?;
    pocket.set(
        "regex",
        lua.create_function(|_, pattern: String| {
            regex::Regex::new(&pattern).map(LuaRegex).map_err(|e| {
                // regex's messages span lines (pattern, caret, reason):
                // keep the reason, errors are one line here.
                let text = e.to_string();
                let reason = text
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("invalid");
                mlua::Error::RuntimeError(format!("bad regex {pattern:?}: {}", reason.trim()))
            })
        })?,
    )?;
    Ok(())
}
