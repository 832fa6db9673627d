//! Listening sockets: one per listener per worker, all on the same address
//! with SO_REUSEPORT so the kernel spreads connections over workers.

use std::net::{SocketAddr, TcpListener};

use anyhow::Context;
use socket2::{Domain, Socket, Type};

use crate::config::Policy;

/// A listening socket and the listener it serves.
pub struct Bound {
    pub listener: std::sync::Arc<str>,
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
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// For each worker, its sockets for every listener. A listener on port 0
/// gets a port from the kernel for the first worker; the others share it.
pub fn bind_all(policy: &Policy, workers: usize) -> anyhow::Result<Vec<Vec<Bound>>> {
    let mut per_worker: Vec<Vec<Bound>> = (0..workers).map(|_| Vec::new()).collect();
    for spec in &policy.listeners {
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
                listener: spec.name.clone(),
                addr,
                socket,
            });
        }
    }
    Ok(per_worker)
}
