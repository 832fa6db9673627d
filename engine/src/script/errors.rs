//! Turning Lua errors into one line a user can act on: `path:line: message`.

/// The first useful line of a Lua error: for a runtime error
/// `policy.lua:12: attempt to index a nil value`, without the traceback.
pub fn describe_lua_error(err: &mlua::Error) -> String {
    describe_called(err, None)
}

/// Like [`describe_lua_error`]; `called` is the Pocket function the error
/// came from as Lua's traceback names it (`pocket.respond`), for a bad
/// argument whose function mlua does not know.
fn describe_called(err: &mlua::Error, called: Option<&str>) -> String {
    match err {
        mlua::Error::SyntaxError { message, .. } => first_line(message),
        mlua::Error::RuntimeError(message) => message_text(message),
        // Lua's own says "not enough memory"; Pocket's charges say what
        // did not fit (script::memory).
        mlua::Error::MemoryError(what) if what.contains(" bytes ") => {
            format!("script stopped: it used more memory than its limit ({what})")
        }
        mlua::Error::MemoryError(_) => "script stopped: it used more memory than its limit".into(),
        mlua::Error::CallbackError { traceback, cause } => {
            // The cause holds the message; the traceback's first frame in a
            // Lua file tells where the script called us from.
            let inner = describe_called(cause, called_name(traceback).as_deref());
            if has_location(&inner) {
                inner
            } else if let Some(place) = first_lua_frame(traceback) {
                format!("{place}: {inner}")
            } else {
                inner
            }
        }
        mlua::Error::WithContext { context, cause } => {
            format!("{}: {}", context, describe_called(cause, called))
        }
        mlua::Error::BadArgument { to, pos, cause, .. } => {
            // mlua names a method by its Rust type (`StoreHandle.get`) and
            // counts the object as argument 1; the docs write `store:get`.
            let (to, pos) = match to.as_deref().and_then(as_method) {
                // The object itself is wrong: `req.header(...)` for
                // `req:header(...)`.
                Some((noun, var, method)) if *pos <= 1 => {
                    return format!(
                        "{noun} method {method} called with a dot: call it with a colon ({var}:{method}(...))"
                    );
                }
                Some((noun, var, method)) => {
                    let shown = if var.starts_with("your") { noun } else { var };
                    (format!("{shown}:{method}"), pos.saturating_sub(1))
                }
                None => (
                    to.clone()
                        .or_else(|| called.map(str::to_string))
                        .unwrap_or_else(|| "?".into()),
                    *pos,
                ),
            };
            format!(
                "bad argument #{pos} to '{to}': {}",
                describe_called(cause, None)
            )
        }
        mlua::Error::FromLuaConversionError { from, to, message } => {
            let expected = message.clone().unwrap_or_else(|| to.to_lowercase());
            let expected = expected.strip_prefix("expected ").unwrap_or(&expected);
            let expected = match expected
                .strip_prefix("userdata of type '")
                .and_then(|t| t.strip_suffix('\''))
                .and_then(|t| OBJECTS.iter().find(|(ty, _, _)| *ty == t))
            {
                Some((_, noun, _)) => format!("a {noun}"),
                None => expected_words(expected, to),
            };
            if is_not_utf8(&expected) {
                return NOT_UTF8.into();
            }
            format!("expected {expected}, got {}", type_words(from))
        }
        // A `conn`, `req` or `res` kept (in a global, an upvalue) and
        // used after the hook it was given to returned.
        mlua::Error::UserDataDestructed | mlua::Error::CallbackDestructed => KEPT.into(),
        other => first_line(&other.to_string()),
    }
}

/// Lua's own messages about `on_request`'s `req` as they read when it was
/// a full userdata: `attempt to call a request value (local 'req')`. The
/// lent `req` is a light userdata (no allocation per call), and Lua takes
/// a type's `__name` for its messages only from tables and full userdata,
/// so it says `userdata`; no other value a script holds is named so (every
/// Pocket object has a `__name`, and no other light userdata reaches a
/// script). Only Lua's phrases are changed (`attempt to ... a userdata
/// value`, `attempt to compare ... userdata ...`).
pub fn light_as_request(text: String) -> String {
    if !text.contains("userdata") || !text.contains("attempt to ") {
        return text;
    }
    let mut out = text
        .replace("a userdata value", "a request value")
        .replace("two userdata values", "two request values");
    if out.contains("attempt to compare ") {
        out = out
            .replace("compare userdata with", "compare request with")
            .replace(" with userdata", " with request");
    }
    out
}

/// What a script that kept a hook's object past its call is told.
const KEPT: &str = "a conn, req or res is valid only during the call it was given to; \
keep the values you need (conn.peer_ip, req.path, ...), not the object";

/// Argument `n` of the Pocket function `func` (`pocket.respond`)
/// converted to `T`; when it does not convert, the error names the
/// function and the value as the docs do: `bad argument #1 to
/// 'pocket.respond': expected a whole number, got a string ("abc")`.
pub fn arg<T: mlua::FromLua>(
    lua: &mlua::Lua,
    func: &str,
    n: u8,
    v: mlua::Value,
) -> mlua::Result<T> {
    let shown = |v: &mlua::Value| crate::script::hooks::returned(v);
    match T::from_lua(v.clone(), lua) {
        Ok(t) => Ok(t),
        Err(mlua::Error::FromLuaConversionError { to, message, .. }) => {
            let expected = message.unwrap_or_else(|| to.to_lowercase());
            let expected = expected.strip_prefix("expected ").unwrap_or(&expected);
            if is_not_utf8(expected) {
                return Err(mlua::Error::RuntimeError(format!(
                    "bad argument #{n} to '{func}': {NOT_UTF8}"
                )));
            }
            Err(mlua::Error::RuntimeError(format!(
                "bad argument #{n} to '{func}': expected {}, got {}",
                expected_words(expected, &to),
                shown(&v)
            )))
        }
        Err(other) => Err(other),
    }
}

/// A string argument with bytes that are not UTF-8 (`"\255"`), where a
/// Rust `String` is taken: mlua says `invalid utf-8 sequence of 1 bytes
/// from index 0`, which would read as "expected invalid utf-8 ...".
const NOT_UTF8: &str = "expected a UTF-8 string, got a string with bytes that are not UTF-8";

fn is_not_utf8(expected: &str) -> bool {
    expected.contains("utf-8")
}

/// What mlua says a conversion expected, in the docs' words: `a number`,
/// `a whole number`, `a string`.
fn expected_words(expected: &str, to: &str) -> String {
    let integer = [
        "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "usize", "isize",
    ];
    if integer.contains(&to) || expected == "out of range" {
        return "a whole number".into();
    }
    if expected.contains("coercible to number") || ["f32", "f64"].contains(&to) {
        return "a number".into();
    }
    match expected {
        "string or number" | "string" => "a string".into(),
        "table" => "a table".into(),
        "function" => "a function".into(),
        "boolean" => "a boolean".into(),
        other => other.to_string(),
    }
}

/// A Lua type name as a message says it: `a number`, `a Pocket object`.
fn type_words(from: &str) -> String {
    match from {
        "integer" | "number" => "a number".into(),
        "userdata" | "lightuserdata" => "a Pocket object".into(),
        "nil" => "nil".into(),
        other => format!("a {other}"),
    }
}

/// The called C function as the first frame of mlua's traceback names it:
/// `[C]: in function 'pocket.respond'` (a function found in
/// `package.loaded`), `[C]: in field 'get'`.
fn called_name(traceback: &str) -> Option<String> {
    let frame = traceback
        .lines()
        .skip_while(|l| !l.starts_with("stack traceback"))
        .nth(1)?
        .trim();
    let rest = frame.strip_prefix("[C]: in ")?;
    let (what, name) = rest.split_once(' ')?;
    let name = name.strip_prefix('\'')?.strip_suffix('\'')?;
    match what {
        "function" | "field" | "method" => Some(name.to_string()),
        _ => None,
    }
}

/// The longest error message a log line carries, in bytes (as a log line).
pub const MAX_MESSAGE: usize = 8 * 1024;

/// A runtime error's text without mlua's traceback, on one line (a
/// newline shown as `\\n`), cut at [`MAX_MESSAGE`]. A location said twice
/// (`m.lua:7: m.lua:7:`, an error re-raised by `coroutine.wrap`) is said
/// once; an error raised inside the stdlib is placed at the user's line
/// that called it; a table raised as the error says so.
fn message_text(message: &str) -> String {
    let (text, traceback) = match message.find("\nstack traceback:") {
        Some(at) => (&message[..at], &message[at..]),
        None => (message, ""),
    };
    if text.trim_end().ends_with("not found:") || text.contains("' not found:\n") {
        return first_line(message);
    }
    let mut text = without_sandbox_place(text.trim()).to_string();
    // `m.lua:8: m.lua:7: ...`: `coroutine.wrap` re-raises an error with
    // its caller's place in front; the inner place is where it happened.
    while let Some((_, rest)) = split_location(&text) {
        if split_location(rest).is_none() {
            break;
        }
        text = rest.to_string();
    }
    match split_location(&text) {
        Some((place, rest)) if place.starts_with("stdlib/") => {
            if let Some(user) = user_frame(traceback) {
                text = format!("{user}: {rest} (in {place})");
            }
        }
        Some(_) => {}
        // Raised where Lua gives no place (inside `ipairs`, say): the
        // user's line that led there, and the stdlib's if it was there.
        None => {
            let inside = first_lua_frame(traceback)
                .filter(|first| first.starts_with("stdlib/"))
                .map(|first| format!(" (in {first})"))
                .unwrap_or_default();
            text = match user_frame(traceback) {
                Some(user) => format!("{user}: {text}{inside}"),
                // A tail call hid the user's frame: the caller adds its own.
                None => format!("{text}{inside}"),
            };
        }
    }
    let (place, rest) = match split_location(&text) {
        Some((p, r)) => (format!("{p}: "), r.to_string()),
        None => (String::new(), text.clone()),
    };
    let rest = if is_table_address(&rest) {
        "error raised with a table value (no message)".to_string()
    } else {
        rest
    };
    cut(&format!("{place}{}", rest.replace('\n', "\\n")))
}

/// `text` cut at [`MAX_MESSAGE`] bytes (on a character), saying how much
/// was cut.
pub fn cut(text: &str) -> String {
    if text.len() <= MAX_MESSAGE {
        return text.to_string();
    }
    let mut end = MAX_MESSAGE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} more bytes cut)", &text[..end], text.len() - end)
}

/// `table: 0x55d1...`: what Lua makes of a table raised as an error.
fn is_table_address(text: &str) -> bool {
    text.strip_prefix("table: 0x")
        .is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `path.lua:NN: rest` -> (`path.lua:NN`, `rest`).
fn split_location(text: &str) -> Option<(&str, &str)> {
    if !has_location(text) {
        return None;
    }
    let first = text.find(':')?;
    let second = first + 1 + text[first + 1..].find(':')?;
    Some((&text[..second], text[second + 1..].trim_start()))
}

/// The first frame of a traceback in the user's own files (not the
/// stdlib, not the sandbox).
fn user_frame(traceback: &str) -> Option<String> {
    traceback.lines().skip(1).find_map(|line| {
        let frame = line.trim();
        let place = &frame[..frame.find(": ")?];
        (has_location(&format!("{place}:")) && !place.starts_with("stdlib/"))
            .then(|| place.to_string())
    })
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

/// The API's Rust type names as the docs name their objects: (type,
/// noun, the variable the docs' examples call it).
const OBJECTS: &[(&str, &str, &str)] = &[
    ("RequestView", "request", "req"),
    ("ResponseView", "response", "res"),
    ("ConnView", "connection", "conn"),
    ("LuaRegex", "regex", "yourregex"),
    ("LuaRegexSet", "regex set", "yourset"),
    ("StoreHandle", "store", "yourstore"),
    ("ServerHandle", "server", "yourserver"),
];

/// `StoreHandle.get` -> (`store`, `yourstore`, `get`).
fn as_method(to: &str) -> Option<(&'static str, &'static str, String)> {
    let (ty, method) = to.split_once('.')?;
    let (_, noun, var) = OBJECTS.iter().find(|(t, _, _)| *t == ty)?;
    Some((noun, var, method.to_string()))
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
            "bad argument #1 to 'store:get': expected a string, got a table"
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
            "request method header called with a dot: call it with a colon (req:header(...))"
        );
    }

    #[test]
    fn says_a_message_once_on_one_line_and_cut() {
        let e = |m: &str| describe_lua_error(&mlua::Error::RuntimeError(m.into()));
        assert_eq!(e("m.lua:8: m.lua:7: stop"), "m.lua:7: stop");
        assert_eq!(
            e("p.lua:2: a\nb\nstack traceback:\n\t..."),
            "p.lua:2: a\\nb"
        );
        assert_eq!(
            e("table: 0x55d1c0a0\nstack traceback:\n\t[C]: in function 'error'\n\tp.lua:9: in function <p.lua:3>"),
            "p.lua:9: error raised with a table value (no message)"
        );
        assert_eq!(
            e("stdlib/pocket/match.lua:136: boom\nstack traceback:\n\tstdlib/pocket/match.lua:136: in method 'route'\n\tp.lua:4: in function <p.lua:3>"),
            "p.lua:4: boom (in stdlib/pocket/match.lua:136)"
        );
        let long = e(&"x".repeat(MAX_MESSAGE + 10));
        assert_eq!(
            long,
            format!("{}... (10 more bytes cut)", "x".repeat(MAX_MESSAGE))
        );
    }

    #[test]
    fn recognises_locations() {
        assert!(has_location("x/p.lua:12: oops"));
        assert!(!has_location("oops: p.lua"));
    }
}
