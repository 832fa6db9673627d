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
fn real_mode_refuses_a_fault_the_kernel_cannot_make_before_anything_starts() {
    let (_d, path) = write_scenario(&format!(
        r#"return {{
  mode = "real",
  duration = "3s",
  origins = {{ "A" }},
  {POLICY}
  faults = {{ {{ at = "1s", server = "A", fault = "cut", bytes = 10 }} }},
}}"#
    ));
    let before = netns_list();
    let (code, stdout, err) = pocket_cmd(&["lab", path.to_str().unwrap(), "--real"]);
    assert_eq!(code, 2, "{stdout}{err}");
    assert!(!stdout.contains("lab:"), "nothing started: {stdout}");
    assert!(
        err.contains("--real") && err.contains("\"cut A\"") && err.contains("--userspace"),
        "{err}"
    );
    assert_eq!(netns_list(), before, "no namespace was made");
}

/// The network namespaces on this machine (empty without `ip`).
fn netns_list() -> String {
    std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn ip_out(args: &[&str]) -> Option<String> {
    let o = std::process::Command::new("ip").args(args).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Why the real fault layer cannot run here, if it cannot.
fn real_layer_unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2));
    if euid != Some("0") {
        return Some("needs root for network namespaces".into());
    }
    if ip_out(&["-V"]).is_none() {
        return Some("no usable `ip` command".into());
    }
    let probe = format!("pktlabprobe{}", std::process::id());
    if ip_out(&["netns", "add", &probe]).is_none() {
        return Some("cannot make a network namespace".into());
    }
    let _ = ip_out(&["netns", "del", &probe]);
    if std::process::Command::new("tc").arg("-V").output().is_err() {
        return Some("no `tc` command".into());
    }
    None
}

/// Every trace of the real layer: namespaces, host veth ends, safety
/// routes, origins bound to a namespace address.
fn real_traces(lab_pid: u32) -> Vec<String> {
    let mut out: Vec<String> = netns_list()
        .lines()
        .filter(|l| l.starts_with(&format!("pktlab{lab_pid}")))
        .map(|l| format!("namespace {l}"))
        .collect();
    out.extend(
        ip_out(&["-o", "link", "show"])
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!("plh{lab_pid}x")))
            .map(|l| format!("link {l}")),
    );
    out.extend(
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(" origin ") && c.contains("--bind 10.213."))
            .map(|c| format!("process {c}")),
    );
    out
}

fn unreachable_routes() -> usize {
    ip_out(&["-4", "route", "show"])
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("unreachable 10.213.") && l.contains("metric 4000"))
        .count()
}

const THROTTLED: &str = r#"return {
  name = "throttled link",
  mode = "real",
  duration = "4s",
  origins = { "A", "B" },
  policy = [[
    return {
      listeners = { { name = "web", bind = "{{listen}}", pool = "app" } },
      pools = { app = { servers = { "{{A}}", "{{B}}" },
                        check = { http = "GET /health", interval = "250ms", timeout = "200ms", rise = 2, fall = 2 } } },
    }
  ]],
  load = { concurrency = 4, rate = 40, paths = { "/bytes/100000" }, timeout = "5s" },
  faults = {
    { at = "1s", server = "B", fault = "slow", bandwidth = 200000 },
    { at = "2s", server = "B", fault = "refuse" },
    { at = "2.5s", server = "B", fault = "heal" },
  },
  expect = { detected_within = "1s", recovered_within = "1s", ok_min = 100 },
}"#;

#[test]
fn real_mode_makes_the_faults_in_the_kernel_and_leaves_nothing_behind() {
    if let Some(why) = real_layer_unavailable() {
        // Nothing is skipped: tests/run installs `ip` and `tc` and says to
        // run as root.
        panic!("real lab: {why}; run the suite as root: sudo tests/run");
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab");
    let (_d, throttled) = write_scenario(THROTTLED);
    let routes_before = unreachable_routes();
    let runs: [(PathBuf, &[&str]); 3] = [
        (dir.join("server-dies.lua"), &["--real"]),
        (dir.join("cable-pulled-download.lua"), &["--real"]),
        // mode = "real" in the scenario, no flag: bandwidth by tc tbf.
        (throttled, &[]),
    ];
    for (scenario, flags) in &runs {
        let out = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let lab = std::process::Command::new(pocket_bin())
            .arg("lab")
            .arg(scenario)
            .args(*flags)
            .args(["--quiet", "--out", out.path().to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lab_pid = lab.id();
        let done = lab.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&done.stdout),
            String::from_utf8_lossy(&done.stderr)
        );
        eprintln!("{}: {:?}\n{text}", scenario.display(), started.elapsed());
        assert_eq!(
            done.status.code(),
            Some(0),
            "{}: {text}",
            scenario.display()
        );
        let summary = std::fs::read_to_string(out.path().join("summary.md")).unwrap();
        assert!(
            summary.contains("fault layer: real (network namespaces)"),
            "{summary}"
        );
        let traces = real_traces(lab_pid);
        assert!(traces.is_empty(), "left behind: {traces:?}");
        assert_eq!(unreachable_routes(), routes_before, "safety routes removed");
    }

    // Ctrl-C mid-run: the lab stops and still removes everything.
    let out = tempfile::tempdir().unwrap();
    let lab = std::process::Command::new(pocket_bin())
        .arg("lab")
        .arg(dir.join("server-dies.lua"))
        .args(["--real", "--quiet", "--out", out.path().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lab_pid = lab.id();
    let started = std::time::Instant::now();
    while netns_list()
        .lines()
        .all(|l| !l.starts_with(&format!("pktlab{lab_pid}")))
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "no namespace made"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(lab_pid as i32, libc::SIGINT) };
    let done = lab.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(2), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let traces = real_traces(lab_pid);
    assert!(traces.is_empty(), "left behind after Ctrl-C: {traces:?}");
    assert_eq!(unreachable_routes(), routes_before, "safety routes removed");
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

/// `pocket lab` stops its Pocket as an operator would (SIGTERM, drain), so
/// no pid or status file of it stays in the temp folder: not of the one it
/// restarts in the middle, nor of the one it stops at the end.
#[test]
fn a_lab_run_leaves_no_pid_or_status_files() {
    let (_d, path) = write_scenario(&format!(
        r#"return {{
  duration = "3s",
  origins = {{ "A" }},
  {POLICY}
  load = {{ concurrency = 2, rate = 50 }},
  faults = {{ {{ at = "1s", target = "balancer", fault = "restart" }} }},
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
    let done = lab.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(stdout.contains(" ok, "), "{stdout}");
    // The lab's Pocket served this policy path.
    let policy = std::env::temp_dir()
        .join(format!("pocket-lab-{lab_pid}"))
        .join("policy.lua");
    let stem = pocket::reload::stem(&policy);
    let left: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&stem))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
