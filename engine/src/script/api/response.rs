//! The response object `on_response` gets: status and headers to edit, and
//! which pool and server answered.

use std::sync::Arc;

use http::response::Parts;
use mlua::{UserData, UserDataFields, UserDataMethods};

use super::headers::{add_header_methods, HasHeaders};

pub struct ResponseView {
    pub head: Parts,
    pub pool: Arc<str>,
    pub server: Arc<str>,
    /// Net bytes the script's header edits added to `head` (headers.rs
    /// bounds it); 0 for a new view.
    pub growth: isize,
}

impl HasHeaders for ResponseView {
    fn headers(&self) -> &http::HeaderMap {
        &self.head.headers
    }
    fn headers_mut(&mut self) -> &mut http::HeaderMap {
        &mut self.head.headers
    }
    fn growth_mut(&mut self) -> &mut isize {
        &mut self.growth
    }
}

impl UserData for ResponseView {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        super::names::named(fields, "response");
        fields.add_field_method_get("status", |_, r| Ok(r.head.status.as_u16()));
        fields.add_field_method_get("pool", |_, r| Ok(r.pool.to_string()));
        fields.add_field_method_get("server", |_, r| Ok(r.server.to_string()));
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        super::names::described(methods, "response", |r| {
            format!("response {}", r.head.status.as_u16())
        });
        add_header_methods(methods);
        super::names::read_only(methods, "res", &[("status", "res:set_status(...)")]);
        // A final status a client can read: 200 to 599, as pocket.respond.
        // (A 204 or 205 loses the body; see proxy::deliver.)
        methods.add_method_mut("set_status", |_, r, code: i64| {
            r.head.status = u16::try_from(code)
                .ok()
                .filter(|c| (200..=599).contains(c))
                .and_then(|c| http::StatusCode::from_u16(c).ok())
                .ok_or_else(|| {
                    mlua::Error::RuntimeError(format!(
                        "status {code} is not a final status from 200 to 599"
                    ))
                })?;
            Ok(())
        });
    }
}
