//! Turning Lua errors into one line a user can act on: `path:line: message`.

/// The first useful line of a Lua error: for a runtime error
/// `policy.lua:12: attempt to index a nil value`, without the traceback.
pub fn describe_lua_error(err: &mlua::Error) -> String {
    match err {
        mlua::Error::SyntaxError { message, .. } => first_line(message),
        mlua::Error::RuntimeError(message) => first_line(message),
        // Lua's own says "not enough memory"; Pocket's charges say what
        // did not fit (script::memory).
        mlua::Error::MemoryError(what) if what.contains(" bytes ") => {
            format!("script stopped: it used more memory than its limit ({what})")
        }
        mlua::Error::MemoryError(_) => "script stopped: it used more memory than its limit".into(),
        mlua::Error::CallbackError { traceback, cause } => {
            // The cause holds the message; the traceback's first frame in a
            // Lua file tells where the script called us from.
            let inner = describe_lua_error(cause);
            if has_location(&inner) {
                inner
            } else if let Some(place) = first_lua_frame(traceback) {
                format!("{place}: {inner}")
            } else {
                inner
            }
        }
        mlua::Error::WithContext { context, cause } => {
            format!("{}: {}", context, describe_lua_error(cause))
        }
        mlua::Error::BadArgument { to, pos, cause, .. } => {
            // mlua names a method by its Rust type (`StoreHandle.get`) and
            // counts the object as argument 1; the docs write `store:get`.
            let (to, pos) = match to.as_deref().and_then(as_method) {
                // The object itself is wrong: `req.header(...)` for
                // `req:header(...)`.
                Some(method) if *pos <= 1 => {
                    let dotted = method.replacen(':', ".", 1);
                    return format!("{dotted} was called without its object: write {method}(...)");
                }
                Some(method) => (method, pos.saturating_sub(1)),
                None => (to.clone().unwrap_or_else(|| "?".into()), *pos),
            };
            format!(
                "bad argument #{pos} to '{to}': {}",
                describe_lua_error(cause)
            )
        }
        mlua::Error::FromLuaConversionError { from, to, message } => {
            let expected = message.clone().unwrap_or_else(|| to.to_lowercase());
            let expected = expected.strip_prefix("expected ").unwrap_or(&expected);
            let expected = match expected
                .strip_prefix("userdata of type '")
                .and_then(|t| t.strip_suffix('\''))
                .and_then(|t| OBJECTS.iter().find(|(ty, _)| *ty == t))
            {
                Some((_, obj)) => format!("{obj} (a Pocket object)"),
                None => expected.to_string(),
            };
            format!("expected {expected}, got a {from}")
        }
        other => first_line(&other.to_string()),
    }
}

/// An error a script caught with `pcall`, as the string it gets: like
/// [`describe_lua_error`], but a Pocket function that `pcall` called
/// directly has no line of its own (as with Lua's own functions:
/// `pcall(string.rep)`), so none is added.
pub fn describe_caught(err: &mlua::Error) -> String {
    if let mlua::Error::CallbackError { traceback, cause } = err {
        let mut frames = traceback
            .lines()
            .skip_while(|l| !l.starts_with("stack traceback"))
            .skip(1)
            .map(str::trim);
        frames.next();
        if frames
            .next()
            .is_some_and(|f| f.starts_with("[C]") && f.contains("pcall'"))
        {
            return describe_lua_error(cause);
        }
    }
    describe_lua_error(err)
}

/// The API's Rust type names as the docs name their objects.
const OBJECTS: &[(&str, &str)] = &[
    ("RequestView", "req"),
    ("ResponseView", "res"),
    ("ConnView", "conn"),
    ("LuaRegex", "re"),
    ("LuaRegexSet", "set"),
    ("StoreHandle", "store"),
    ("ServerHandle", "server"),
];

/// `StoreHandle.get` -> `store:get`.
fn as_method(to: &str) -> Option<String> {
    let (ty, method) = to.split_once('.')?;
    let (_, obj) = OBJECTS.iter().find(|(t, _)| *t == ty)?;
    Some(format!("{obj}:{method}"))
}

fn first_line(message: &str) -> String {
    let mut lines = message.lines();
    let line = without_sandbox_place(lines.next().unwrap_or("").trim());
    if !line.ends_with("not found:") {
        return line.to_string();
    }
    // `require`'s "module 'x' not found:" lists each place it looked on
    // the lines after: keep them, on the one line.
    let places: Vec<&str> = lines
        .map(str::trim)
        .take_while(|l| !l.starts_with("stack traceback"))
        .filter(|l| !l.is_empty())
        .collect();
    format!("{line} {}", places.join("; "))
}

/// An error raised inside one of the sandbox's wrappers (a `table.sort`
/// comparison, say) carries `pocket-sandbox:NN: `; that place means nothing
/// to a user, so it is dropped.
fn without_sandbox_place(line: &str) -> &str {
    let Some(rest) = line.strip_prefix("pocket-sandbox:") else {
        return line;
    };
    match rest.split_once(": ") {
        Some((n, message)) if n.bytes().all(|b| b.is_ascii_digit()) => message,
        _ => line,
    }
}

/// True when a message already starts with `something.lua:NN:`.
pub(crate) fn has_location(message: &str) -> bool {
    let mut parts = message.splitn(3, ':');
    let (Some(file), Some(line)) = (parts.next(), parts.next()) else {
        return false;
    };
    file.ends_with(".lua") && !line.is_empty() && line.chars().all(|c| c.is_ascii_digit())
}

/// The first `path.lua:NN` frame of a Lua traceback.
fn first_lua_frame(traceback: &str) -> Option<String> {
    traceback.lines().skip(1).find_map(|line| {
        let frame = line.trim();
        let end = frame.find(": ")?;
        let place = &frame[..end];
        if has_location(&format!("{place}:")) {
            Some(place.to_string())
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_first_line() {
        let e = mlua::Error::RuntimeError("a.lua:3: boom\nstack traceback:\n\t...".into());
        assert_eq!(describe_lua_error(&e), "a.lua:3: boom");
    }

    #[test]
    fn keeps_where_require_looked() {
        let e = mlua::Error::RuntimeError(
            "p.lua:1: module 'x' not found:\n\tno field package.preload['x']\n\tno file x.lua\nstack traceback:\n\t[C]: in ?".into(),
        );
        assert_eq!(
            describe_lua_error(&e),
            "p.lua:1: module 'x' not found: no field package.preload['x']; no file x.lua"
        );
    }

    #[test]
    fn drops_the_sandbox_place() {
        let e = mlua::Error::RuntimeError(
            "pocket-sandbox:120: attempt to compare two table values".into(),
        );
        assert_eq!(
            describe_lua_error(&e),
            "attempt to compare two table values"
        );
    }

    #[test]
    #[allow(clippy::arc_with_non_send_sync)] // mlua's own type
    fn names_methods_as_the_docs_do() {
        let e = mlua::Error::BadArgument {
            to: Some("StoreHandle.get".into()),
            pos: 2,
            name: None,
            cause: std::sync::Arc::new(mlua::Error::FromLuaConversionError {
                from: "table",
                to: "String".into(),
                message: Some("expected string or number".into()),
            }),
        };
        assert_eq!(
            describe_lua_error(&e),
            "bad argument #1 to 'store:get': expected string or number, got a table"
        );
    }

    #[test]
    #[allow(clippy::arc_with_non_send_sync)] // mlua's own type
    fn a_method_called_with_a_dot_says_so() {
        let e = mlua::Error::BadArgument {
            to: Some("RequestView.header".into()),
            pos: 1,
            name: None,
            cause: std::sync::Arc::new(mlua::Error::FromLuaConversionError {
                from: "string",
                to: "userdata".into(),
                message: Some("expected userdata of type 'RequestView'".into()),
            }),
        };
        assert_eq!(
            describe_lua_error(&e),
            "req.header was called without its object: write req:header(...)"
        );
    }

    #[test]
    fn recognises_locations() {
        assert!(has_location("x/p.lua:12: oops"));
        assert!(!has_location("oops: p.lua"));
    }
}
