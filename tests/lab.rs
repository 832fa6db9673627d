//! The failure lab: every shipped scenario runs (userspace faults) and
//! meets its expectations; reports are written; broken scenarios are
//! refused before anything starts; nothing is left behind after a failure.

mod common;
use common::*;

use std::path::{Path, PathBuf};

fn scenarios() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "lua"))
        .collect();
    out.sort();
    out
}

#[test]
fn every_shipped_scenario_meets_its_expectations() {
    let list = scenarios();
    assert!(list.len() >= 10, "{list:?}");
    let out = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for s in &list {
        let name = s.file_stem().unwrap().to_str().unwrap();
        let report = out.path().join(name);
        let (code, stdout, stderr) = pocket_cmd(&[
            "lab",
            s.to_str().unwrap(),
            "--quiet",
            "--out",
            report.to_str().unwrap(),
        ]);
        eprintln!("{name}: exit {code}\n{stdout}{stderr}");
        if code != 0 {
            failures.push(format!("{name}: exit {code}\n{stdout}{stderr}"));
        }
        for f in ["summary.md", "events.jsonl", "timeline.svg"] {
            assert!(report.join(f).exists(), "{name}: no {f}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_report_has_the_timeline_events_and_a_picture() {
    let out = tempfile::tempdir().unwrap();
    let s = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab/server-dies.lua");
    let (code, stdout, _) = pocket_cmd(&[
        "lab",
        s.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("[fault] kill B"),
        "the live timeline shows the fault: {stdout}"
    );
    let events = std::fs::read_to_string(out.path().join("events.jsonl")).unwrap();
    assert!(
        events.contains("\"kind\":\"fault\",\"text\":\"kill B\""),
        "{events}"
    );
    assert!(
        events.contains("\"kind\":\"health\"") && events.contains("server B of pool app is DOWN"),
        "{events}"
    );
    assert!(events.contains("\"kind\":\"second\""), "{events}");
    let svg = std::fs::read_to_string(out.path().join("timeline.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("kill B") && svg.trim_end().ends_with("</svg>")
    );
    let summary = std::fs::read_to_string(out.path().join("summary.md")).unwrap();
    assert!(
        summary.contains("fault layer: userspace") && summary.contains("met: failed requests: 0"),
        "{summary}"
    );
}

fn write_scenario(body: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scenario.lua");
    std::fs::write(&path, body).unwrap();
    (dir, path)
}

const POLICY: &str = r#"policy = [[
    return { listeners = { { name = "web", bind = "{{listen}}", pool = "app" } },
             pools = { app = { servers = { "{{A}}" } } } }
  ]],"#;

#[test]
fn a_broken_scenario_is_refused_before_anything_starts() {
    let (_d, path) = write_scenario(&format!(
        r#"return {{
  duration = "3s",
  origins = {{ "A" }},
  {POLICY}
  faults = {{
    {{ at = "1s", server = "A", fault = "explode" }},
    {{ at = "9s", server = "A", fault = "kill" }},
    {{ at = "1s", server = "Z", fault = "kill" }},
  }},
}}"#
    ));
    let (code, stdout, err) = pocket_cmd(&["lab", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{stdout}{err}");
    assert!(!stdout.contains("lab:"), "nothing started: {stdout}");
    for expected in [
        "scenario.lua:9: unknown fault \"explode\"",
        "scenario.lua:10: fault \"kill\" at 9s is past the scenario's duration",
        "scenario.lua:11: fault \"kill\" names server \"Z\", which the scenario does not declare",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn real_mode_is_refused_clearly_when_not_available() {
    let s = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab/server-dies.lua");
    let (code, _, err) = pocket_cmd(&["lab", s.to_str().unwrap(), "--real"]);
    assert_eq!(code, 2);
    assert!(err.contains("--real"), "{err}");
}

#[test]
fn a_failed_expectation_exits_1_and_leaves_nothing_running() {
    let (_d, path) = write_scenario(&format!(
        r#"return {{
  duration = "2s",
  origins = {{ "A" }},
  {POLICY}
  load = {{ concurrency = 2, rate = 50 }},
  faults = {{ {{ at = "1s", server = "A", fault = "kill" }} }},
  expect = {{ failed = 0 }},
}}"#
    ));
    let out = tempfile::tempdir().unwrap();
    let lab = std::process::Command::new(pocket_bin())
        .args([
            "lab",
            path.to_str().unwrap(),
            "--quiet",
            "--out",
            out.path().to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lab_pid = lab.id();
    let child = lab.wait_with_output().unwrap();
    assert_eq!(
        child.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&child.stdout)
    );
    assert!(String::from_utf8_lossy(&child.stdout).contains("NOT MET: failed requests"));
    // The lab's Pocket ran from a temp dir named after the lab's pid: gone,
    // and no process still uses it.
    let leftovers: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&format!("pocket-lab-{lab_pid}/")))
        .collect();
    assert!(leftovers.is_empty(), "left running: {leftovers:?}");
    assert!(!std::env::temp_dir()
        .join(format!("pocket-lab-{lab_pid}"))
        .exists());
}
