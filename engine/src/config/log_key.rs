//! The policy's top-level `log = { access = "-" | "PATH", format = "text" |
//! "json" }`: the access log. An unknown format or key is refused at load
//! with `path:line`. The file is opened only by what serves (`pocket run`,
//! `pocket demo`, a reload: [`AccessLog::open`]), so a path that cannot be
//! opened refuses the policy there, with the same `path:line`, and the
//! running policy keeps serving; `pocket check` says whether the file's
//! folder is there ([`AccessLog::check`]); `pocket test` and `pocket
//! explain` (often run on a CI machine, not the server) leave the
//! filesystem alone.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use mlua::{Table, Value};

use super::load::Checker;
use super::pool_settings::shown;
use super::ConfigError;
use crate::observe::access_log::{Format, Sink};

/// A policy's access log: where and how, and once opened, its sink.
#[derive(Debug, Clone)]
pub struct AccessLog {
    /// `-` (standard error) or a path (a relative one already made the
    /// policy folder's).
    pub path: String,
    pub format: Format,
    /// Where `log.access` is written, for errors.
    place: (PathBuf, Option<usize>),
    sink: OnceLock<Arc<Sink>>,
}

impl AccessLog {
    /// Opens the file (created if missing, appended to) and starts its
    /// writer, or shares the one running for that path. Errors: placed
    /// `path:line: log.access: cannot open PATH: the OS's reason`.
    pub fn open(&self) -> Result<(), String> {
        if self.sink.get().is_some() {
            return Ok(());
        }
        let sink = Sink::open(&self.path, self.format).map_err(|e| self.refused(&e))?;
        let _ = self.sink.set(sink);
        Ok(())
    }

    /// The sink, once [`Self::open`] succeeded.
    pub fn sink(&self) -> Option<&Arc<Sink>> {
        self.sink.get()
    }

    /// What `pocket check` can say without creating anything: the file's
    /// folder exists and is a folder Pocket may write in, and the file, if
    /// there, is not a folder. Errors as [`Self::open`]'s.
    pub fn check(&self) -> Result<(), String> {
        if self.path == "-" {
            return Ok(());
        }
        let file = Path::new(&self.path);
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let problem = match std::fs::metadata(dir) {
            Err(e) => Some(format!("{}: {e}", dir.display())),
            Ok(m) if !m.is_dir() => Some(format!("{} is not a folder", dir.display())),
            Ok(_) if !writable(dir) && !file.exists() => {
                Some(format!("cannot create files in {}", dir.display()))
            }
            Ok(_) => match std::fs::metadata(file) {
                Ok(m) if m.is_dir() => Some("it is a folder".into()),
                _ => None,
            },
        };
        match problem {
            Some(p) => Err(self.refused(&p)),
            None => Ok(()),
        }
    }

    fn refused(&self, why: &str) -> String {
        ConfigError {
            path: self.place.0.clone(),
            line: self.place.1,
            message: format!("log.access: cannot open {}: {why}", self.path),
        }
        .to_string()
    }
}

/// The calling user may create files in `dir` (access(2) with W_OK|X_OK).
fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a NUL-terminated path that lives across the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

const LOG_KEYS: &[&str] = &["access", "format"];

impl Checker<'_> {
    /// The access log the policy asks for (None: none, or refused: then
    /// an error is recorded).
    pub(super) fn access_log(&mut self, root: &Table) -> Option<AccessLog> {
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
        // Where `log.access` is written, for an error when it is opened.
        self.error(&["log", "access"], String::new());
        let place = self
            .errors
            .pop()
            .map_or((self.path.to_path_buf(), None), |e| (e.path, e.line));
        Some(AccessLog {
            path,
            format,
            place,
            sink: OnceLock::new(),
        })
    }
}
