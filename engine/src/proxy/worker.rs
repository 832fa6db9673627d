//! One worker's state as the request phases use it: the policy new
//! requests run on, the worker's server connections (hyper's and the
//! direct path's), its request ids, its drain count. The worker thread,
//! its accept loops and its control messages are server/worker.rs's; this
//! is what they hand each connection (`ConnCtx::worker`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::context::{Drain, RequestId};
use crate::proxy::h1::servers::Servers;
use crate::proxy::upstream::Upstreams;
use crate::script::WorkerScript;

/// One worker's state, shared by every connection it serves.
pub struct Worker {
    pub index: usize,
    script: RefCell<Rc<WorkerScript>>,
    pub upstreams: Rc<Upstreams>,
    /// The plain HTTP/1.1 server connections of the direct path
    /// (proxy/h1/servers.rs), apart from hyper's.
    pub servers: Servers,
    seq: Cell<u64>,
    /// Counts open client connections, so a drain knows when the last
    /// has gone.
    pub drain: Rc<Drain>,
}

impl Worker {
    /// A worker's state before its first request: `script` is the policy
    /// it starts on, `drain` counts its open client connections.
    pub fn new(index: usize, script: WorkerScript, drain: Rc<Drain>) -> Worker {
        Worker {
            index,
            script: RefCell::new(Rc::new(script)),
            upstreams: Rc::new(Upstreams::default()),
            servers: Servers::new(),
            seq: Cell::new(0),
            drain,
        }
    }

    /// New requests run on `script` from now on (a reload's commit);
    /// requests in flight keep the one they hold.
    pub fn set_script(&self, script: Rc<WorkerScript>) {
        *self.script.borrow_mut() = script;
    }

    /// The policy a new request runs on. Requests hold their own `Rc`, so a
    /// swap never disturbs one in flight.
    #[inline]
    pub fn script(&self) -> Rc<WorkerScript> {
        self.script.borrow().clone()
    }

    #[inline]
    pub fn next_request_id(&self) -> RequestId {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        RequestId {
            worker: self.index as u32,
            seq,
        }
    }
}
