//! Two servers with the same IP in the lab (`same_ip`, real mode): two
//! origins in their own network namespaces hold one address on one
//! bridge. What a user notices: answers from both origins under the one
//! server Pocket knows, the switch when B announces itself (gratuitous
//! ARP), the one server marked down while B holds the address without
//! its service though A is fine, and nothing left behind. A scenario that
//! cannot run is refused before anything starts, with `path:line`.

mod common;
use common::*;

use std::path::{Path, PathBuf};

fn example(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/lab")
        .join(file)
}

/// Runs shipped scenario `file` in real mode: (its output, summary.md,
/// events.jsonl, the report folder). Every expectation must hold (exit
/// 0), and nothing may be left behind.
fn run_example(file: &str) -> (String, String, String, tempfile::TempDir) {
    require_root("lab_same_ip");
    require_command("arping", "iputils-arping");
    let out = tempfile::tempdir().unwrap();
    let lab = std::process::Command::new(pocket_bin())
        .arg("lab")
        .arg(example(file))
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
    eprintln!("{file}:\n{text}");
    assert_eq!(
        done.status.code(),
        Some(0),
        "{file}: every expectation held: {text}"
    );
    let summary = std::fs::read_to_string(out.path().join("summary.md")).unwrap();
    let events = std::fs::read_to_string(out.path().join("events.jsonl")).unwrap();
    assert!(
        summary.contains("fault layer: real (network namespaces)"),
        "{summary}"
    );
    assert!(summary.contains("## Two servers, one address"), "{summary}");
    // Nothing left: namespaces, links, routes, origins.
    let xs = subnets(&summary);
    assert!(!xs.is_empty(), "the summary names the address: {summary}");
    let left = traces(lab_pid, &xs);
    assert!(left.is_empty(), "{file}: left behind: {left:?}");
    (text, summary, events, out)
}

fn write_scenario(body: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scenario.lua");
    std::fs::write(&path, body).unwrap();
    (dir, path)
}

fn ip_out(args: &[&str]) -> String {
    std::process::Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Every trace of lab `lab_pid`'s real layer: its namespaces (the
/// segment's too), host veth ends, the safety routes of subnets `xs`, and
/// origins bound to their addresses.
fn traces(lab_pid: u32, xs: &[String]) -> Vec<String> {
    // `pktlabPID`, `pktlabPIDs`, `pktlabPIDsN`: not another lab's whose
    // pid starts with the same digits.
    let own = |rest: &str| rest.is_empty() || rest.starts_with(|c: char| !c.is_ascii_digit());
    let mut out: Vec<String> = ip_out(&["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.strip_prefix(&format!("pktlab{lab_pid}")).is_some_and(own))
        .map(|n| format!("namespace {n}"))
        .collect();
    out.extend(
        ip_out(&["-o", "link", "show"])
            .lines()
            .filter(|l| {
                l.contains(&format!("plh{lab_pid}x")) || l.contains(&format!("plh{lab_pid}s"))
            })
            .map(|l| format!("link {l}")),
    );
    out.extend(
        ip_out(&["-4", "route", "show"])
            .lines()
            .filter(|l| {
                xs.iter().any(|x| {
                    l.starts_with(&format!("unreachable 10.213.{x}.0/30 "))
                        || l.starts_with(&format!("unreachable 10.213.{x}.0/24 "))
                })
            })
            .map(|l| format!("safety route {l}")),
    );
    out.extend(
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| {
                c.contains(" origin ")
                    && xs
                        .iter()
                        .any(|x| c.contains(&format!("--bind 10.213.{x}.2 ")))
            })
            .map(|c| format!("process {c}")),
    );
    out
}

/// The x of each 10.213.x.y the report names.
fn subnets(text: &str) -> Vec<String> {
    let mut xs: Vec<String> = text
        .split("10.213.")
        .skip(1)
        .filter_map(|rest| rest.split('.').next())
        .map(str::to_string)
        .collect();
    xs.sort();
    xs.dedup();
    xs
}

/// A JSON string field of an events.jsonl line (no escapes needed here).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let (_, rest) = line.split_once(&format!("\"{key}\":\""))?;
    rest.split_once('"').map(|(v, _)| v)
}

fn number(line: &str, key: &str) -> f64 {
    let (_, rest) = line.split_once(&format!("\"{key}\":")).unwrap();
    rest.split([',', '}']).next().unwrap().parse().unwrap()
}

#[test]
fn two_origins_answer_under_one_address_and_the_lab_shows_who_held_it() {
    let (text, summary, events, out) = run_example("same-ip.lua");
    eprintln!("{summary}");

    // ARP from the balancer's side finds both machines behind the address.
    let probe = summary
        .lines()
        .find(|l| l.contains("on the balancer's side, at the end:"))
        .unwrap_or_else(|| panic!("no arping line: {summary}"));
    assert!(
        probe.contains("A (02:00:0a:d5:") && probe.contains("B (02:00:0a:d5:"),
        "{probe}"
    );

    // Pocket saw one server; answers came from both origins.
    assert!(
        text.contains("met: servers in Pocket's access log: 1 (")
            || summary.contains("met: servers in Pocket's access log: 1 ("),
        "{summary}"
    );
    let access = std::fs::read_to_string(out.path().join("access.log")).unwrap();
    let servers: std::collections::BTreeSet<&str> = access
        .lines()
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("server=")))
        .filter(|s| *s != "-")
        .collect();
    assert_eq!(
        servers.len(),
        1,
        "one server in Pocket's access log: {servers:?}"
    );
    for origin in ["origin=\"A\"", "origin=\"B\""] {
        assert!(
            access.lines().any(|l| l.ends_with(origin)),
            "the access log's origin field shows {origin} under that one server"
        );
    }

    // The timeline: A holds the address first; B's announcement moves it
    // (an arp event naming B after the fault), and answers from B come
    // only after it.
    let lines: Vec<&str> = events.lines().collect();
    let find = |from: usize, pred: &dyn Fn(&str) -> bool, what: &str| -> usize {
        lines[from..]
            .iter()
            .position(|l| pred(l))
            .map(|i| from + i)
            .unwrap_or_else(|| panic!("no {what} after line {from}:\n{events}"))
    };
    let is = |kind: &str, start: &str| {
        let (kind, start) = (kind.to_string(), start.to_string());
        move |l: &str| {
            field(l, "kind") == Some(kind.as_str())
                && field(l, "text").is_some_and(|t| t.starts_with(start.as_str()))
        }
    };
    let first_arp = find(0, &is("arp", ""), "arp event");
    assert!(
        field(lines[first_arp], "text")
            .unwrap()
            .starts_with("A holds 10.213."),
        "A holds the address at the start: {}",
        lines[first_arp]
    );
    let announce_b = find(0, &is("fault", "announce B"), "\"announce B\"");
    let b_holds = find(announce_b, &is("arp", "B holds"), "B holding the address");
    let refuse_b = find(announce_b, &is("fault", "refuse B"), "\"refuse B\"");
    let down = find(
        refuse_b,
        &is("health", "server A|B of pool app is DOWN"),
        "DOWN",
    );
    let announce_a = find(refuse_b, &is("fault", "announce A"), "\"announce A\"");
    find(
        announce_a,
        &is("arp", "A holds"),
        "A holding the address again",
    );
    find(
        down.max(announce_a),
        &is("health", "server A|B of pool app is UP"),
        "UP",
    );
    let t_announce_b = number(lines[announce_b], "t");
    let t_b_holds = number(lines[b_holds], "t");
    // (sent, done) of each request `server` answered.
    let answered = |server: &str| -> Vec<(f64, f64)> {
        lines
            .iter()
            .filter(|l| field(l, "kind") == Some("request") && field(l, "server") == Some(server))
            .filter(|l| l.contains("\"failure\":null"))
            .map(|l| (number(l, "sent"), number(l, "t")))
            .collect()
    };
    let (by_a, by_b) = (answered("A"), answered("B"));
    assert!(
        !by_a.is_empty() && !by_b.is_empty(),
        "answers from both: A {}, B {}",
        by_a.len(),
        by_b.len()
    );
    // Timed by when each answer came, not when it was sent: under load a
    // request sent just before the announcement may reach B.
    assert!(
        by_b.iter().all(|(_, done)| *done >= t_announce_b),
        "no answer from B before it announced itself at {t_announce_b}"
    );
    assert!(
        by_a.iter().any(|(_, done)| *done < t_announce_b),
        "A answered before"
    );
    let b_after = by_b.iter().filter(|(sent, _)| *sent >= t_b_holds).count();
    assert!(b_after > 0, "answers from B once it held the address");
}

/// Under long TCP streams the switch is not hidden: the streams open
/// with A are cut when B announces itself (B resets them), Pocket's log
/// says the server broke them, and the streams opened again reach B.
#[test]
fn open_streams_are_cut_when_the_other_server_announces_itself() {
    let (_, summary, events, _out) = run_example("tcp-same-ip.lua");
    let announce = events
        .lines()
        .find(|l| field(l, "kind") == Some("fault") && field(l, "text") == Some("announce B"))
        .map(|l| number(l, "t"))
        .unwrap_or_else(|| panic!("no announce B: {events}"));
    let conns: Vec<&str> = events
        .lines()
        .filter(|l| field(l, "kind") == Some("connection"))
        .collect();
    let cut_on_a: Vec<&&str> = conns
        .iter()
        .filter(|l| field(l, "server") == Some("A") && field(l, "outcome") == Some("cut"))
        .collect();
    assert!(!cut_on_a.is_empty(), "streams on A were cut: {events}");
    for l in &cut_on_a {
        assert!(
            number(l, "t") >= announce,
            "cut by the switch, not before: {l}"
        );
        let cause = field(l, "cause").unwrap_or_default();
        assert!(
            cause.contains("A|B broke the connection"),
            "Pocket's word: {l}"
        );
    }
    let on_b = conns
        .iter()
        .filter(|l| field(l, "server") == Some("B"))
        .count();
    assert!(on_b > 0, "new streams reached B: {events}");
    assert!(
        summary.contains("- Connections answered by origin (their banner): A "),
        "{summary}"
    );
}

#[test]
fn same_ip_is_refused_before_anything_starts_where_it_cannot_run() {
    let policy = r#"policy = [[
    return { listeners = { { name = "web", bind = "{{listen}}", pool = "app" } },
             pools = { app = { servers = { "{{A}}" } } } }
  ]],"#;
    // In userspace: refused at the same_ip line, nothing made.
    let (_d, path) = write_scenario(&format!(
        r#"return {{
  duration = "3s",
  origins = {{ "A", "B" }},
  same_ip = {{ "A", "B" }},
  {policy}
}}"#
    ));
    let lab = std::process::Command::new(pocket_bin())
        .arg("lab")
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lab_pid = lab.id();
    let done = lab.wait_with_output().unwrap();
    let (stdout, err) = (
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr),
    );
    assert_eq!(done.status.code(), Some(2), "{stdout}{err}");
    assert!(!stdout.contains("lab:"), "nothing started: {stdout}");
    assert!(
        err.contains("scenario.lua:4: same_ip needs the real fault layer")
            && err.contains("mode = \"real\""),
        "{err}"
    );
    // Only this lab's names: other tests and labs make their own meanwhile.
    let left = traces(lab_pid, &[]);
    assert!(left.is_empty(), "nothing was made: {left:?}");

    // Mistakes, each at its line.
    let (_d, path) = write_scenario(&format!(
        r#"return {{
  mode = "real",
  duration = "3s",
  origins = {{ "A", "B", "C" }},
  same_ip = {{ "A", "Z" }},
  {policy}
  expect = {{ answered_by = {{ "Q" }}, access_log_servers = -1 }},
}}"#
    ));
    let (code, _, err) = pocket_cmd(&["lab", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    for expected in [
        "scenario.lua:5: same_ip[2] must be one of the origins (A, B, C), not a string (\"Z\")",
        "scenario.lua:10: expect.answered_by[1] must be one of the origins",
        "scenario.lua:10: expect.access_log_servers must be a whole number, 0 or more",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    let (_d, path) = write_scenario(&format!(
        r#"return {{
  mode = "real",
  duration = "3s",
  origins = {{ "A", "B", "C" }},
  same_ip = {{ "A" }},
  {policy}
}}"#
    ));
    let (code, _, err) = pocket_cmd(&["lab", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("scenario.lua:5: same_ip must name at least two of the origins"),
        "{err}"
    );
    let (_d, path) = write_scenario(&format!(
        r#"return {{
  mode = "real",
  duration = "3s",
  origins = {{ "A", "B", "C" }},
  same_ip = {{ "A", "B" }},
  {policy}
  faults = {{
    {{ at = "1s", server = "C", fault = "announce" }},
    {{ at = "1s", server = "B", fault = "flap" }},
  }},
}}"#
    ));
    let (code, _, err) = pocket_cmd(&["lab", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("scenario.lua:10: fault \"announce C\" at 1s: announce is for an origin of same_ip (A, B)")
            && err.contains("fault \"flap B\" at 1s: a same_ip origin takes kill, restart"),
        "{err}"
    );
}

/// Ctrl-C mid-run: the lab stops, says so, and removes the segment, the
/// origins' namespaces and processes, its link and its safety route.
#[test]
fn an_interrupted_same_ip_lab_leaves_nothing_behind() {
    require_root("lab_same_ip");
    require_command("arping", "iputils-arping");
    let out = tempfile::tempdir().unwrap();
    let lab = std::process::Command::new(pocket_bin())
        .arg("lab")
        .arg(example("same-ip.lua"))
        .args(["--quiet", "--out", out.path().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lab_pid = lab.id();
    let segment = format!("pktlab{lab_pid}s");
    let started = std::time::Instant::now();
    // Until the segment's origins are up and the address was learnt: the
    // balancer's side has its link and an ARP entry.
    while !ip_out(&["neigh", "show", "dev", &format!("plh{lab_pid}s")]).contains("lladdr") {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no segment made: {}",
            ip_out(&["netns", "list"])
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(ip_out(&["netns", "list"]).contains(&segment));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(lab_pid as i32, libc::SIGINT) };
    let done = lab.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(2), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let summary = std::fs::read_to_string(out.path().join("summary.md")).unwrap();
    let xs = subnets(&summary);
    assert!(!xs.is_empty(), "the summary names the address: {summary}");
    let left = traces(lab_pid, &xs);
    assert!(left.is_empty(), "left behind after Ctrl-C: {left:?}");
}
