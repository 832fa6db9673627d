//! `pocket demo`: two built-in origins and the proxy in front of them, so a
//! newcomer sees A and B alternate on the first reload.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::config::load_policy_source;
use crate::lb::StateRegistry;
use crate::origin::{self, OriginHandle};

/// The demo policy, embedded so `pocket demo` works outside the source tree.
pub const DEMO_SCRIPT: &str = include_str!("../../scripts/demo.lua");

/// Starts origins A and B on 9001 and 9002 and returns them with the demo
/// policy (the file `scripts/demo.lua` if present, so edits show, else
/// the embedded copy).
pub fn start_origins() -> anyhow::Result<Vec<OriginHandle>> {
    let mut out = Vec::new();
    for (name, port) in [("A", 9001), ("B", 9002)] {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        out.push(
            origin::spawn(name, addr)
                .with_context(|| format!("cannot start demo origin {name} on {addr}"))?,
        );
    }
    Ok(out)
}

pub fn demo_policy(registry: &StateRegistry) -> anyhow::Result<crate::config::Policy> {
    let path = Path::new("scripts/demo.lua");
    let source: Arc<str> = match std::fs::read_to_string(path) {
        Ok(s) => Arc::from(s),
        Err(_) => Arc::from(DEMO_SCRIPT),
    };
    load_policy_source(path, source, registry).map_err(|e| anyhow::anyhow!("{e}"))
}

pub const WELCOME: &str = "\
Pocket demo is running.

  Open http://127.0.0.1:8080/ in a browser and reload: A and B alternate.
  Or: for i in 1 2 3 4; do curl -s http://127.0.0.1:8080/; done
      curl -i http://127.0.0.1:8080/ping        (answered by the script itself)

  The policy is scripts/demo.lua. Press Ctrl-C to stop.
";
