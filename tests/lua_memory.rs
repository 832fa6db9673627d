//! A worker's Lua heap stays flat however many requests pass: each hook
//! call leaves a request object with a finalizer behind, more than Lua's
//! incremental collector keeps up with at full load (a benchmark once
//! drove a VM into its memory limit after ~1M requests).

use std::sync::Arc;

use pocket::config::load_policy_source;
use pocket::context::RequestId;
use pocket::lb::StateRegistry;
use pocket::script::api::request::RequestView;
use pocket::script::{Limits, WorkerScript};

#[test]
fn the_heap_stays_flat_over_many_hook_calls() {
    let source = r#"return {
  listeners = { { bind = "127.0.0.1:1", pool = "app" } },
  pools = { app = { servers = { "127.0.0.1:2" } } },
  on_request = function(req) if req.path == "/x" then return "app" end end,
}"#;
    let registry = StateRegistry::default();
    let policy = load_policy_source(
        std::path::Path::new("memory.lua"),
        Arc::from(source),
        &registry,
    )
    .unwrap();
    let script = WorkerScript::new(Arc::new(policy), Limits::default()).unwrap();
    let mut peak = 0;
    for i in 0..100_000u64 {
        let head = http::Request::get("/x").body(()).unwrap().into_parts().0;
        let mut view = RequestView {
            raw_target: None,
            head,
            peer: "127.0.0.1:1".parse().unwrap(),
            listener: Arc::from("web"),
            id: RequestId { worker: 0, seq: i },
            growth: 0,
            tls: None,
        };
        assert!(script.on_request(&mut view).is_ok());
        peak = peak.max(script.vm.lua.used_memory());
    }
    // Without the periodic collection it passes 1 MiB by 100k calls and keeps growing.
    assert!(peak < 512 * 1024, "Lua heap peaked at {} KiB", peak / 1024);
}
