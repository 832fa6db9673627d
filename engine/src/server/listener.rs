//! Listening sockets: one per listener per worker, all on the same address
//! with SO_REUSEPORT so the kernel spreads connections over workers.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use anyhow::Context;
use socket2::{Domain, Socket, Type};

use crate::config::ListenerSpec;

/// A listener's identity across reloads: same name and same configured
/// address means the same sockets keep serving.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    pub name: Arc<str>,
    pub bind: SocketAddr,
}

impl ListenerKey {
    pub fn of(spec: &ListenerSpec) -> ListenerKey {
        ListenerKey {
            name: spec.name.clone(),
            bind: spec.bind,
        }
    }
}

/// A listening socket and the listener it serves.
pub struct Bound {
    pub key: ListenerKey,
    /// The address it really got (port 0 resolved).
    pub addr: SocketAddr,
    pub socket: TcpListener,
}

fn bind_one(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    // Accepted connections inherit TCP_NODELAY from the listening socket
    // (Linux copies it into each one): one setsockopt here instead of one
    // per connection. Replies go out as written; Nagle would hold a
    // small one back for up to an ACK's delay.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// For each worker, its sockets for every listener in `specs`. A listener
/// on port 0 gets a port from the kernel for the first worker; the others
/// share it.
pub fn bind_all<'a>(
    specs: impl IntoIterator<Item = &'a ListenerSpec>,
    workers: usize,
) -> anyhow::Result<Vec<Vec<Bound>>> {
    let mut per_worker: Vec<Vec<Bound>> = (0..workers).map(|_| Vec::new()).collect();
    for spec in specs {
        let mut addr = spec.bind;
        for (w, mine) in per_worker.iter_mut().enumerate() {
            let socket = bind_one(addr).with_context(|| {
                format!(
                    "cannot listen on {} (listener \"{}\")",
                    spec.bind, spec.name
                )
            })?;
            if w == 0 {
                addr = socket.local_addr()?;
            }
            mine.push(Bound {
                key: ListenerKey::of(spec),
                addr,
                socket,
            });
        }
    }
    Ok(per_worker)
}

/// Sockets for one more worker (one that takes a stuck worker's place):
/// every listener in `specs`, bound to the address it really got (`addrs`,
/// port 0 resolved) so the new socket joins the same reuseport group.
pub fn bind_for_one<'a>(
    specs: impl IntoIterator<Item = &'a ListenerSpec>,
    addrs: &[(ListenerKey, SocketAddr)],
) -> anyhow::Result<Vec<Bound>> {
    let mut mine = Vec::new();
    for spec in specs {
        let key = ListenerKey::of(spec);
        let addr = addrs
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(spec.bind, |(_, a)| *a);
        let socket = bind_one(addr)
            .with_context(|| format!("cannot listen on {addr} (listener \"{}\")", spec.name))?;
        mine.push(Bound { key, addr, socket });
    }
    Ok(mine)
}
