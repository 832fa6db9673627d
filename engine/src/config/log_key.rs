//! The policy's top-level `log = { access = "-" | "PATH", format = "text" |
//! "json" }`: the access log. A path that cannot be opened, an unknown
//! format or key is refused at load with `path:line`, so the running
//! policy keeps serving.

use std::path::Path;
use std::sync::Arc;

use mlua::{Table, Value};

use super::load::Checker;
use super::pool_settings::shown;
use crate::observe::access_log::{Format, Sink};

const LOG_KEYS: &[&str] = &["access", "format"];

impl Checker<'_> {
    /// The access log the policy asks for (None: none, or refused: then
    /// an error is recorded).
    pub(super) fn access_log(&mut self, root: &Table) -> Option<Arc<Sink>> {
        let t = match root.get::<Value>("log") {
            Ok(Value::Nil) => return None,
            Ok(Value::Table(t)) => t,
            Ok(other) => {
                self.error(
                    &["log"],
                    format!(
                        "log must be a table like {{ access = \"-\", format = \"text\" }}, not {}",
                        shown(&other)
                    ),
                );
                return None;
            }
            Err(e) => {
                self.error(&["log"], crate::script::describe_lua_error(&e));
                return None;
            }
        };
        let _ = self.unknown_keys(&t, LOG_KEYS, "log", &["log"]);
        let format = match t.get::<Value>("format") {
            Ok(Value::Nil) => Some(Format::Text),
            Ok(Value::String(s)) => {
                let name = s.to_string_lossy();
                let f = Format::parse(&name);
                if f.is_none() {
                    self.error(
                        &["log", "format"],
                        format!("log.format must be \"text\" or \"json\", not \"{name}\""),
                    );
                }
                f
            }
            Ok(other) => {
                self.error(
                    &["log", "format"],
                    format!(
                        "log.format must be \"text\" or \"json\", not {}",
                        shown(&other)
                    ),
                );
                None
            }
            Err(e) => {
                self.error(&["log", "format"], crate::script::describe_lua_error(&e));
                None
            }
        };
        let access = match t.get::<Value>("access") {
            Ok(Value::String(s)) if !s.as_bytes().is_empty() => s.to_string_lossy(),
            Ok(Value::Nil) => {
                self.error(
                    &["log"],
                    "log needs access = \"-\" (standard error) or a file path".into(),
                );
                return None;
            }
            Ok(other) => {
                self.error(
                    &["log", "access"],
                    format!(
                        "log.access must be \"-\" (standard error) or a file path, not {}",
                        shown(&other)
                    ),
                );
                return None;
            }
            Err(e) => {
                self.error(&["log", "access"], crate::script::describe_lua_error(&e));
                return None;
            }
        };
        let format = format?;
        // A relative path is the policy's folder's, as `require` is.
        let path = if access == "-" || Path::new(&access).is_absolute() {
            access.clone()
        } else {
            let dir = self.path.parent().unwrap_or(Path::new(""));
            dir.join(&access).display().to_string()
        };
        match Sink::open(&path, format) {
            Ok(sink) => Some(sink),
            Err(e) => {
                self.error(
                    &["log", "access"],
                    format!("log.access: cannot open {path}: {e}"),
                );
                None
            }
        }
    }
}
