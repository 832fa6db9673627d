//! Reading `mode = "http" | "tcp"` (listeners and pools), with one
//! message for every wrong value: a misspelling gets "did you mean", a
//! case slip is named as one, and a string is never called "not a string".

use mlua::Value;

use super::{near_miss, shown, Mode};

/// The mode `v` names (nil: http), or the message for a wrong one,
/// starting with `mode` (the caller puts the listener or pool first).
pub(super) fn read_mode(v: &Value) -> Result<Mode, String> {
    read_mode_guess(v).map_err(|(why, _)| why)
}

/// As [`read_mode`], with the mode a wrong value was meant to be when
/// that is plain (`"TCP"`, `"tpc"`): the rest of a pool is then checked
/// as that mode, so its tcp keys bring no second, false error.
pub(super) fn read_mode_guess(v: &Value) -> Result<Mode, (String, Option<Mode>)> {
    let named = |m: &str| if m == "tcp" { Mode::Tcp } else { Mode::Http };
    let s = match v {
        Value::Nil => return Ok(Mode::Http),
        Value::String(s) => s,
        _ => {
            return Err((
                format!("mode must be \"http\" or \"tcp\", not {}", shown(v)),
                None,
            ))
        }
    };
    let text = s.to_string_lossy();
    match text.as_str() {
        "http" => return Ok(Mode::Http),
        "tcp" => return Ok(Mode::Tcp),
        _ => {}
    }
    if let Some(m) = ["http", "tcp"]
        .iter()
        .find(|m| text.eq_ignore_ascii_case(m))
    {
        return Err((
            format!("mode is written in lower case: \"{m}\", not \"{text}\""),
            Some(named(m)),
        ));
    }
    let meant = ["http", "tcp"].iter().find(|m| near_miss(&text, m));
    let hint = match meant {
        Some(m) => format!(" (did you mean \"{m}\"?)"),
        None if text.eq_ignore_ascii_case("udp") => {
            " (Pocket carries TCP only: UDP is not proxied)".to_string()
        }
        None => String::new(),
    };
    Err((
        format!(
            "mode must be \"http\" or \"tcp\", not \"{}\"{hint}",
            text.chars().take(40).collect::<String>()
        ),
        meant.map(|m| named(m)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(text: &str) -> String {
        let lua = mlua::Lua::new();
        let v = Value::String(lua.create_string(text).unwrap());
        read_mode(&v).unwrap_err()
    }

    #[test]
    fn a_wrong_string_is_named_as_a_string() {
        assert_eq!(
            said("tpc"),
            "mode must be \"http\" or \"tcp\", not \"tpc\" (did you mean \"tcp\"?)"
        );
        assert_eq!(
            said("TCP"),
            "mode is written in lower case: \"tcp\", not \"TCP\""
        );
        assert!(said("udp").contains("not \"udp\""), "{}", said("udp"));
        assert!(!said("udp").contains("a string"));
    }
}
