//! `pocket demo` serves a file the user can edit, where the welcome text
//! says it is: written to `pocket-demo/demo.lua` in the folder the demo
//! starts in, reloaded on save without a rebuild, and kept (edits and all)
//! by the next run. The demo listens on its fixed ports (8080, 9001, 9002),
//! so every run is in this one test.

mod common;
use common::*;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `pocket demo` in `dir`; killed on drop.
struct Demo {
    child: Child,
    log: Log,
    out: Log,
}

impl Demo {
    fn start(dir: &Path) -> Demo {
        let mut child = Command::new(pocket_bin())
            .args(["demo", "--workers", "1"])
            .current_dir(dir)
            .env("POCKET_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pocket demo");
        let log = Log::default();
        log.follow(child.stderr.take().unwrap());
        let out = Log::default();
        out.follow(child.stdout.take().unwrap());
        let demo = Demo { child, log, out };
        let line = demo
            .log
            .wait_for_any(&[&["pocket ready"], &["<process ended>"]]);
        assert!(
            !line.contains("<process ended>"),
            "pocket demo did not start (are 8080, 9001 and 9002 free?); log:\n{}",
            demo.log.text()
        );
        demo
    }

    /// The welcome text's line naming the policy file.
    fn policy_line(&self) -> String {
        self.out.wait_for(&["The policy is "])
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const WEB: &str = "127.0.0.1:8080";

#[tokio::test]
async fn the_demo_serves_an_editable_file_in_the_current_folder() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pocket-demo/demo.lua");
    let web: SocketAddr = WEB.parse().unwrap();

    // First run: the file appears, the original, named by its full path.
    let demo = Demo::start(dir.path());
    let original =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("engine/src/demo.lua"))
            .unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    let line = demo.policy_line();
    assert!(
        line.contains(&format!(
            "The policy is {} (written just now)",
            file.display()
        )),
        "{line}"
    );
    assert_eq!(get(web, "/ping").await.text(), "pong\n");
    let served: Vec<String> = [
        get(web, "/").await.header("x-served-by"),
        get(web, "/").await.header("x-served-by"),
    ]
    .into_iter()
    .map(|h| h.expect("x-served-by from on_response"))
    .collect();
    served
        .iter()
        .for_each(|s| assert!(s.starts_with("127.0.0.1:900"), "{s}"));
    assert_ne!(served[0], served[1], "round robin over A and B");

    // An edit, saved: the next request follows it, no restart.
    let from = demo.log.lines().len();
    let edited = original.replace(r#""pong\n""#, r#""pong, edited\n""#);
    assert_ne!(edited, original, "the demo answers /ping with \"pong\\n\"");
    std::fs::write(&file, &edited).unwrap();
    demo.log
        .wait_for_after(from, &["reload (file changed): generation 2 is live"]);
    assert_eq!(get(web, "/ping").await.text(), "pong, edited\n");
    drop(demo);

    // Second run: the user's file is kept, not overwritten.
    let demo = Demo::start(dir.path());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), edited);
    let line = demo.policy_line();
    assert!(
        line.contains(&format!(
            "The policy is {} (yours, from an earlier run",
            file.display()
        )),
        "{line}"
    );
    assert_eq!(get(web, "/ping").await.text(), "pong, edited\n");
    drop(demo);

    // A broken file is refused at start with path:line and the way back.
    std::fs::write(
        &file,
        original.replace("balance = \"round_robin\",", "balance = ,"),
    )
    .unwrap();
    let out = Command::new(pocket_bin())
        .args(["demo", "--workers", "1"])
        .current_dir(dir.path())
        .output()
        .expect("run pocket demo");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("pocket-demo/demo.lua:"), "{err}");
    assert!(
        err.contains("delete it and `pocket demo` writes the original again"),
        "{err}"
    );
}
