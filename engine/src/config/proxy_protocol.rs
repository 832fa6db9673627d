//! The PROXY protocol keys: a listener's `accept_proxy` (a boolean) and a
//! pool's `send_proxy` (`"v1"` or `"v2"`). Anything else is refused at
//! load with the line it is on.

use mlua::{Table, Value};

use super::load::Checker;
use super::pool_settings::shown;
use crate::lb::PoolSettings;
use crate::proxy::proxy_header::SendProxy;

impl Checker<'_> {
    /// A listener's `accept_proxy`: false when absent.
    pub(super) fn accept_proxy(&mut self, t: &Table, label: &str, ns: &str) -> bool {
        self.flag(t, &["listeners", ns, "accept_proxy"], label)
            .unwrap_or(false)
    }

    /// A pool's `send_proxy`, into `s` (and its check, which sends a
    /// header too).
    pub(super) fn send_proxy(&mut self, name: &str, t: &Table, s: &mut PoolSettings) {
        let at = &["pools", name, "send_proxy"];
        let version = match t.get::<Value>("send_proxy") {
            Ok(Value::Nil) => None,
            Ok(Value::String(v)) if SendProxy::parse(&v.to_string_lossy()).is_some() => {
                SendProxy::parse(&v.to_string_lossy())
            }
            Ok(other) => {
                self.error(
                    at,
                    format!(
                        "pool \"{name}\": send_proxy must be \"v1\" or \"v2\" (the PROXY protocol version), not {}",
                        shown(&other)
                    ),
                );
                None
            }
            Err(e) => {
                self.error(at, e.to_string());
                None
            }
        };
        s.send_proxy = version;
        if let Some(check) = s.check.as_mut() {
            check.send_proxy = version;
        }
    }
}
