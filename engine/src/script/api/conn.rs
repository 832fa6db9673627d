//! The connection object `on_connect` gets, before a byte is read.

use std::net::SocketAddr;
use std::sync::Arc;

use mlua::{UserData, UserDataFields, UserDataMethods};

pub struct ConnView {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub listener: Arc<str>,
    /// The listener is a TLS one. on_connect runs before the handshake:
    /// `conn.sni` and `conn.alpn` are nil there.
    pub tls: bool,
}

impl ConnView {
    /// A connection as `on_connect` sees it, before a byte is read.
    pub fn new(peer: SocketAddr, local: SocketAddr, listener: Arc<str>, tls: bool) -> ConnView {
        ConnView {
            peer,
            local,
            listener,
            tls,
        }
    }
}

impl UserData for ConnView {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        super::names::read_only(methods, "conn", &[]);
        super::names::described(methods, "connection", |c| {
            format!("connection from {}", c.peer)
        });
    }

    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        super::names::named(fields, "connection");
        fields.add_field_method_get("peer_ip", |_, c| Ok(c.peer.ip().to_string()));
        fields.add_field_method_get("peer_port", |_, c| Ok(c.peer.port()));
        fields.add_field_method_get("local_ip", |_, c| Ok(c.local.ip().to_string()));
        fields.add_field_method_get("local_port", |_, c| Ok(c.local.port()));
        fields.add_field_method_get("listener", |_, c| Ok(c.listener.to_string()));
        fields.add_field_method_get("tls", |_, c| Ok(c.tls));
        // Known only after the handshake, which on_connect precedes.
        fields.add_field_method_get("sni", |_, _| Ok(mlua::Value::Nil));
        fields.add_field_method_get("alpn", |_, _| Ok(mlua::Value::Nil));
        fields.add_field_method_get("tls_version", |_, _| Ok(mlua::Value::Nil));
    }
}
