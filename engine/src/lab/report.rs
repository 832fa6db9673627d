//! What a lab run leaves behind: a summary (what failed, with which status
//! and why, in the scenario's server names), the event log and every
//! request as JSON lines, and a timeline chart (SVG, drawn with plotters)
//! that shows at a glance what happened: requests per server stacked, so a
//! dying server's share visibly moves; failures by cause in their own
//! colours; p50/p99 latency on a second axis; retries marked; faults and
//! health changes as labelled markers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::words;

use super::load::{Retry, Sample};
use super::stats::{self, Bucket};
use super::tcp_load::{Conn, Outcome, BYTE_BUCKET};

/// A TCP load's record, for the report.
pub struct TcpView<'a> {
    pub conns: &'a [Conn],
    /// (when, server) of every connection a server answered.
    pub opened: &'a [(f64, String)],
    /// Echoed bytes by ([`BYTE_BUCKET`] index, server).
    pub bytes: &'a BTreeMap<(u32, String), u64>,
}

/// Something that happened: a fault, a health change, a reload.
#[derive(Debug, Clone)]
pub struct Event {
    /// Seconds since the lab's clock started.
    pub t: f64,
    /// "fault", "health", "reload", "watchdog", or [`BROKEN`].
    pub kind: &'static str,
    pub text: String,
}

/// Everything a report is made from.
pub struct Run<'a> {
    /// The scenario's `name`.
    pub title: &'a str,
    /// The scenario file, as given.
    pub file: &'a Path,
    /// Which fault layer ran.
    pub mode: &'a str,
    /// How long the load ran, in seconds: the scenario's duration, or
    /// less when the run was interrupted.
    pub end: f64,
    /// The scenario's duration in seconds.
    pub planned: f64,
    /// When the load started on the lab's clock, in seconds: 0, or the
    /// time several balancers took to elect a master (their setup is
    /// not load).
    pub offset: f64,
    /// Stopped by SIGINT/SIGTERM/SIGHUP before its end.
    pub interrupted: bool,
    pub clients: usize,
    /// The clients spoke TLS to Pocket (the scenario's `tls = true`).
    pub tls: bool,
    pub samples: &'a [Sample],
    pub retries: &'a [Retry],
    pub events: &'a [Event],
    /// Each expectation: Some(met), or None when the run was interrupted
    /// before it could be judged.
    pub verdicts: &'a [(String, Option<bool>)],
    /// (address, scenario name) of every origin, to name servers in
    /// Pocket's reasons.
    pub names: &'a [(String, String)],
    /// A TCP load: the report counts connections and bytes.
    pub tcp: Option<TcpView<'a>>,
    /// Origins sharing one address (`same_ip`): their own section.
    pub same_ip: Option<&'a super::same_ip::View>,
}

/// The kind of event for Pocket's log line about an answer it could not
/// complete (`server B broke off its response: ...`, `... closing the
/// client connection`): why a client's connection closed with no status.
/// Not a marker on the chart nor listed among the events (one per broken
/// answer); it names the cause of those failures.
pub const BROKEN: &str = "broken answer";

/// The chart's time buckets: fine enough to see a detection of tens of
/// milliseconds.
pub const CHART_BUCKET: f64 = 0.1;

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_opt(s: Option<&str>) -> String {
    s.map(json_str).unwrap_or_else(|| "null".into())
}

/// Pocket's text with each origin address preceded by its
/// scenario name: "127.0.0.1:9002" becomes "B (127.0.0.1:9002)".
pub fn name_addrs(text: &str, names: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (addr, name) in names {
        out = out.replace(addr.as_str(), &format!("{name} ({addr})"));
    }
    out
}

/// Events, then one line per request, then one per retry.
pub fn events_jsonl(run: &Run) -> String {
    let mut out = String::new();
    for e in run.events {
        let _ = writeln!(
            out,
            "{{\"t\":{:.3},\"kind\":{},\"text\":{}}}",
            e.t,
            json_str(e.kind),
            json_str(&e.text)
        );
    }
    if let Some(tcp) = &run.tcp {
        for c in tcp.conns {
            let _ = writeln!(
                out,
                "{{\"t\":{:.4},\"kind\":\"connection\",\"type\":{},\"start\":{:.4},\"server\":{},\"outcome\":{},\"failure\":{},\"cause\":{},\"bytes\":{}}}",
                c.end,
                json_str(c.kind),
                c.start,
                json_opt(c.server.as_deref()),
                json_str(c.outcome.word()),
                json_opt(c.why.as_ref().map(|f| f.kind.as_str())),
                json_opt(
                    c.why
                        .as_ref()
                        .map(|f| name_addrs(&f.detail, run.names))
                        .as_deref()
                ),
                c.bytes
            );
        }
        for ((i, server), n) in tcp.bytes {
            let _ = writeln!(
                out,
                "{{\"t\":{:.1},\"kind\":\"bytes\",\"server\":{},\"bytes\":{n}}}",
                *i as f64 * BYTE_BUCKET,
                json_str(server)
            );
        }
    }
    for s in run.samples.iter().filter(|_| run.tcp.is_none()) {
        let _ = writeln!(
            out,
            "{{\"t\":{:.4},\"kind\":\"request\",\"sent\":{:.4},\"latency_ms\":{:.3},\"server\":{},\"status\":{},\"failure\":{},\"cause\":{},\"bytes\":{}}}",
            s.done,
            s.sent,
            s.latency_ms(),
            json_opt(s.server.as_deref()),
            s.status.map_or("null".into(), |v| v.to_string()),
            json_opt(s.failure.as_ref().map(|f| f.kind.as_str())),
            json_opt(
                s.failure
                    .as_ref()
                    .map(|f| name_addrs(&f.detail, run.names))
                    .as_deref()
            ),
            s.bytes
        );
    }
    for r in run.retries {
        let _ = writeln!(
            out,
            "{{\"t\":{:.3},\"kind\":\"retry\",\"server\":{},\"addr\":{},\"why\":{}}}",
            r.t,
            json_str(&r.server),
            json_str(&r.addr),
            json_str(&name_addrs(&r.why, run.names))
        );
    }
    out
}

/// Each kind of failure once, most frequent first: status (or what broke),
/// how many, and the cause with servers named.
pub fn failure_lines(run: &Run) -> Vec<String> {
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    // The explanations are about HTTP answers Pocket could not complete;
    // a TCP connection's close is passed on as it came.
    let why_closed = if run.tcp.is_some() {
        BTreeMap::new()
    } else {
        closed_causes(run)
    };
    for (i, s) in run.samples.iter().enumerate() {
        let Some(f) = &s.failure else { continue };
        let mut detail = name_addrs(&f.detail, run.names);
        if let Some(why) = why_closed.get(&i) {
            detail = match s.status {
                None => format!("{detail}, with no status: {why}"),
                Some(_) => format!("{detail}: {why}"),
            };
        }
        let head = match s.status {
            Some(st) if f.kind.starts_with(|c: char| c.is_ascii_digit()) => st.to_string(),
            Some(st) => format!("{} (after a {st} head)", f.kind),
            None => f.kind.clone(),
        };
        *groups.entry(format!("{head}\u{0}{detail}")).or_default() += 1;
    }
    let mut list: Vec<(String, usize)> = groups.into_iter().collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    list.into_iter()
        .map(|(k, n)| {
            let (head, detail) = k.split_once('\u{0}').unwrap_or((&k, ""));
            format!("{head} ×{n}: {detail}")
        })
        .collect()
}

/// Why Pocket closed a client's connection (before or after the status),
/// by sample index: for each such failure, Pocket's own log line about it when one
/// came within half a second (the client cannot know Pocket's request id:
/// no head reached it), else what Pocket does and why.
fn closed_causes(run: &Run) -> BTreeMap<usize, String> {
    let mut logs: Vec<(f64, &str)> = run
        .events
        .iter()
        .filter(|e| e.kind == BROKEN)
        .map(|e| (e.t, e.text.as_str()))
        .collect();
    let mut used = vec![false; logs.len()];
    logs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = BTreeMap::new();
    let mut closed: Vec<(usize, &Sample)> = run
        .samples
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.failure
                .as_ref()
                .is_some_and(|f| f.kind == "connection closed" || f.kind == "connection reset")
        })
        .collect();
    closed.sort_by(|a, b| a.1.done.total_cmp(&b.1.done));
    for (i, s) in closed {
        let moved = super::failover::moved_cause(run.events, s.done);
        let near = logs
            .iter()
            .enumerate()
            .filter(|(j, (t, _))| !used[*j] && (t - s.done).abs() <= 0.5)
            .min_by(|a, b| (a.1 .0 - s.done).abs().total_cmp(&(b.1 .0 - s.done).abs()));
        let why = match near {
            Some((j, (_, text))) => {
                used[j] = true;
                format!(
                    "Pocket closed it because the answer could not be completed (Pocket's log: {})",
                    text.trim_end_matches("; closing the client connection")
                )
            }
            None if moved.is_some() => moved.unwrap_or_default(),
            None if s.status.is_none() => "Pocket's log names no cause. Pocket closes a \
                     client's connection instead of answering when the server broke off \
                     after sending its head: the answer had begun and could not be completed"
                .to_string(),
            None => "Pocket's log names no cause. Pocket closes a client's connection \
                     mid-answer when the server broke off: the answer could not be completed"
                .to_string(),
        };
        out.insert(i, why);
    }
    out
}

/// Retries grouped by server and reason.
fn retry_lines(run: &Run) -> Vec<String> {
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for r in run.retries {
        let who = if r.addr.is_empty() || r.addr == r.server {
            r.server.clone()
        } else {
            format!("{} ({})", r.server, r.addr)
        };
        let why = name_addrs(&r.why, run.names);
        *groups.entry(format!("{who}: {why}")).or_default() += 1;
    }
    groups
        .into_iter()
        .map(|(what, n)| format!("×{n} from {what}"))
        .collect()
}

/// Bytes in a few characters: "512 B", "1.5 KB", "12.3 MB" (powers of 1000).
pub fn human_bytes(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.2} GB", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.1} MB", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.1} KB", f / 1e3)
    } else {
        format!("{n} B")
    }
}

/// A TCP run's counts: (completed, failed, cut).
pub fn tcp_counts(conns: &[Conn]) -> (usize, usize, usize) {
    let n = |o: Outcome| conns.iter().filter(|c| c.outcome == o).count();
    (n(Outcome::Completed), n(Outcome::Failed), n(Outcome::Cut))
}

/// Echoed bytes per server over the whole run.
pub fn tcp_bytes_by_server(bytes: &BTreeMap<(u32, String), u64>) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for ((_, server), n) in bytes {
        *out.entry(server.clone()).or_default() += n;
    }
    out
}

/// The outcome line of a TCP run: `14 connections: 12 completed, 0
/// failed, 2 cut; 9.6 MB echoed (A 6.1 MB, B 3.5 MB)`.
pub fn tcp_outcome_line(tcp: &TcpView) -> String {
    let (done, failed, cut) = tcp_counts(tcp.conns);
    let by: Vec<String> = tcp_bytes_by_server(tcp.bytes)
        .iter()
        .map(|(k, v)| format!("{k} {}", human_bytes(*v)))
        .collect();
    let total: u64 = tcp.bytes.values().sum();
    format!(
        "{}: {done} completed, {failed} failed, {cut} cut; {} echoed ({})",
        words::count(tcp.conns.len() as u64, "connection"),
        human_bytes(total),
        if by.is_empty() {
            "none".into()
        } else {
            by.join(", ")
        }
    )
}

/// One second of a TCP run: connections opened (by the server that
/// answered, counted when the client connected), how many ended each way
/// (counted when they ended), and the bytes echoed by each server.
#[derive(Debug, Default, Clone)]
pub struct TcpSecond {
    pub opened: BTreeMap<String, u64>,
    pub completed: u64,
    pub failed: u64,
    pub cut: u64,
    pub bytes: BTreeMap<String, u64>,
}

/// [`TcpSecond`]s from 0 to `end` seconds.
pub fn tcp_seconds(
    conns: &[Conn],
    opened: &[(f64, String)],
    bytes: &BTreeMap<(u32, String), u64>,
    end: f64,
) -> Vec<TcpSecond> {
    let n = (end.ceil() as usize).max(1);
    let mut out = vec![TcpSecond::default(); n];
    let at = |t: f64| (t.max(0.0) as usize).min(n - 1);
    for (t, s) in opened {
        *out[at(*t)].opened.entry(s.clone()).or_default() += 1;
    }
    for c in conns {
        let b = &mut out[at(c.end)];
        match c.outcome {
            Outcome::Completed => b.completed += 1,
            Outcome::Failed => b.failed += 1,
            Outcome::Cut => b.cut += 1,
        }
    }
    for ((i, server), v) in bytes {
        *out[at(*i as f64 * BYTE_BUCKET)]
            .bytes
            .entry(server.clone())
            .or_default() += v;
    }
    out
}

/// The summary in Markdown: outcome first (what failed and why), then the
/// expectations, the events and a table per second.
pub fn summary_md(run: &Run) -> String {
    let answered: Vec<&Sample> = run.samples.iter().filter(|s| s.failure.is_none()).collect();
    let mut by_server: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &answered {
        *by_server
            .entry(s.server.as_deref().unwrap_or("Pocket"))
            .or_default() += 1;
    }
    let failed = run.samples.len() - answered.len();
    let servers: Vec<String> = by_server.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let at: Vec<String> = run
        .names
        .iter()
        .map(|(addr, name)| format!("{name} at {addr}"))
        .collect();
    // Seconds of load, not of the lab's clock: a balancers' setup is
    // not counted.
    let loaded = (run.end - run.offset).max(0.0);
    let how_long = if run.interrupted && loaded < 0.05 {
        "**interrupted before the load started**: no request sent".to_string()
    } else if run.interrupted {
        format!(
            "**interrupted after {loaded:.1} s (of {} s)** of load",
            run.planned
        )
    } else {
        format!("{loaded:.1} s of load")
    };
    let mut out = format!(
        "# {}\n\nscenario: `{}` · fault layer: {} · {} from {}{}\n\nservers (as Pocket reaches them): {}\n\n## Outcome\n\n",
        run.title,
        run.file.display(),
        run.mode,
        how_long,
        words::count(run.clients as u64, "client"),
        if run.tls { " over TLS" } else { "" },
        at.join(", "),
    );
    if let Some(tcp) = &run.tcp {
        let _ = writeln!(
            out,
            "{}; {} retried by Pocket on another server.\n",
            tcp_outcome_line(tcp),
            run.retries.len()
        );
    } else {
        let _ = writeln!(
            out,
            "{}: {} answered ({}), {} failed; {} retried by Pocket on another server.\n",
            words::count(run.samples.len() as u64, "request"),
            answered.len(),
            if servers.is_empty() {
                "none".into()
            } else {
                servers.join(", ")
            },
            failed,
            run.retries.len(),
        );
    }
    let failures = failure_lines(run);
    if !failures.is_empty() {
        out.push_str(if run.tcp.is_some() {
            "Failed and cut connections (what the client saw ×count: cause):\n\n"
        } else {
            "Failures (status ×count: cause):\n\n"
        });
        for l in &failures {
            let _ = writeln!(out, "- {l}");
        }
        out.push('\n');
    }
    let retries = retry_lines(run);
    if !retries.is_empty() {
        out.push_str("Retries (Pocket's log: a server failed before answering and Pocket tried another):\n\n");
        for l in &retries {
            let _ = writeln!(out, "- {l}");
        }
        out.push('\n');
    }
    if let Some(v) = run.same_ip {
        out.push_str(&v.section(run));
    }
    out.push_str("## Expectations\n\n");
    if run.verdicts.is_empty() {
        out.push_str("(none)\n");
    }
    for (v, ok) in run.verdicts {
        let head = match ok {
            Some(true) => "met:",
            Some(false) => "NOT MET:",
            None => "not reached (interrupted):",
        };
        let _ = writeln!(out, "- {head} {v}");
    }
    out.push_str("\n## Events\n\n");
    for e in run.events.iter().filter(|e| e.kind != BROKEN) {
        let _ = writeln!(out, "- {:.3}s {}: {}", e.t, e.kind, e.text);
    }
    if let Some(tcp) = &run.tcp {
        out.push_str("\n## Per second\n\nConnections opened (by the server that answered, counted when the client connected); completed, failed and cut (counted when they ended); bytes echoed by each server.\n\n| second | opened | completed | failed | cut | bytes |\n|---|---|---|---|---|---|\n");
        let list = |m: &BTreeMap<String, u64>, f: &dyn Fn(u64) -> String| {
            let v: Vec<String> = m.iter().map(|(k, n)| format!("{k} {}", f(*n))).collect();
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(", ")
            }
        };
        for (i, s) in tcp_seconds(tcp.conns, tcp.opened, tcp.bytes, run.end)
            .iter()
            .enumerate()
        {
            let _ = writeln!(
                out,
                "| {i} | {} | {} | {} | {} | {} |",
                list(&s.opened, &|n| n.to_string()),
                s.completed,
                s.failed,
                s.cut,
                list(&s.bytes, &human_bytes),
            );
        }
        return out;
    }
    out.push_str("\n## Per second\n\n| second | answered | by server | failed | by cause | retried | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|---|\n");
    let fmt_ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    for b in whole_buckets(run, 1.0) {
        let servers: Vec<String> = b.servers.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let causes: Vec<String> = b.failed.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            if b.span() < 1.0 - 1e-6 {
                format!("{:.0} (first {:.1} s)", b.from, b.span())
            } else {
                format!("{:.0}", b.from)
            },
            b.ok(),
            servers.join(", "),
            b.failed_total(),
            causes.join(", "),
            b.retried,
            fmt_ms(b.quantile_ms(0.5)),
            fmt_ms(b.quantile_ms(0.99)),
        );
    }
    out
}

pub fn write_all(dir: &Path, run: &Run) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("summary.md"), summary_md(run))?;
    std::fs::write(dir.join("events.jsonl"), events_jsonl(run))?;
    let svg = super::chart::timeline_svg(run).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("timeline.svg"), svg)?;
    if let Some(log) = run.same_ip.and_then(|v| v.access.as_ref()) {
        std::fs::write(dir.join(super::same_ip::ACCESS_LOG), log)?;
    }
    Ok(())
}

/// The buckets the chart draws.
pub fn chart_buckets(run: &Run) -> Vec<Bucket> {
    whole_buckets(run, CHART_BUCKET)
}

/// Buckets of `width` seconds up to the run's end. A last bucket cut
/// short by the end (an interrupted run stops anywhere) is scaled by the
/// part it covers; one covering less than a quarter of its width holds too
/// few requests to say anything, so it is dropped rather than drawn as a
/// sudden drop or spike.
fn whole_buckets(run: &Run, width: f64) -> Vec<Bucket> {
    let mut b = stats::buckets(run.samples, run.retries, width, run.end);
    if b.len() > 1 && b.last().is_some_and(|l| l.span() < width / 4.0) {
        b.pop();
    }
    b
}

#[cfg(test)]
mod tests {
    use super::super::load::Failure;
    use super::*;

    fn failed(status: Option<u16>, kind: &str, detail: &str) -> Sample {
        Sample {
            sent: 1.0,
            done: 1.001,
            server: None,
            status,
            failure: Some(Failure {
                kind: kind.into(),
                detail: detail.into(),
            }),
            bytes: 0,
        }
    }

    /// "5xx 3" said nothing: each failure gets its status, count and cause,
    /// the server by its scenario name and address.
    #[test]
    fn the_summary_names_each_failures_status_and_cause() {
        let why = "no server of pool \"app\" could be reached (tried 1; last: 127.0.0.1:9002: connect failed: Connection refused (os error 111))";
        let samples = vec![
            failed(Some(502), "502 from Pocket", why),
            failed(Some(502), "502 from Pocket", why),
            failed(Some(502), "502 from Pocket", why),
            failed(
                None,
                "client timeout",
                "no whole answer within the load's timeout (2s)",
            ),
        ];
        let names = vec![("127.0.0.1:9002".to_string(), "B".to_string())];
        let run = Run {
            title: "t",
            file: Path::new("t.lua"),
            mode: "userspace",
            tls: false,
            end: 2.0,
            planned: 2.0,
            offset: 0.0,
            interrupted: false,
            clients: 1,
            samples: &samples,
            retries: &[],
            events: &[],
            verdicts: &[],
            names: &names,
            tcp: None,
            same_ip: None,
        };
        let lines = failure_lines(&run);
        assert_eq!(lines[0], "502 ×3: no server of pool \"app\" could be reached (tried 1; last: B (127.0.0.1:9002): connect failed: Connection refused (os error 111))");
        assert_eq!(
            lines[1],
            "client timeout ×1: no whole answer within the load's timeout (2s)"
        );
        let summary = summary_md(&run);
        assert!(
            summary.contains("4 requests: 0 answered (none), 4 failed"),
            "{summary}"
        );
        assert!(summary.contains(&format!("- {}", lines[0])), "{summary}");
    }

    /// A connection Pocket closed with no status is explained: by Pocket's
    /// log line about it when one came near that moment, else by what
    /// Pocket does when a server breaks off after its head.
    #[test]
    fn a_connection_closed_with_no_status_is_explained() {
        let mut samples = vec![
            failed(
                None,
                "connection closed",
                "the connection to Pocket closed before an answer head",
            ),
            failed(
                None,
                "connection closed",
                "the connection to Pocket closed before an answer head",
            ),
        ];
        samples[1].done = 4.0;
        let mut mid = failed(
            Some(200),
            "connection closed",
            "the connection to Pocket closed mid-body",
        );
        mid.done = 3.0;
        samples.push(mid);
        let events = vec![Event {
            t: 1.01,
            kind: BROKEN,
            text: "server B broke off its response: error reading a body from connection".into(),
        }];
        let run = Run {
            title: "t",
            file: Path::new("t.lua"),
            mode: "userspace",
            tls: false,
            end: 5.0,
            planned: 5.0,
            offset: 0.0,
            interrupted: false,
            clients: 1,
            samples: &samples,
            retries: &[],
            events: &events,
            verdicts: &[],
            names: &[],
            tcp: None,
            same_ip: None,
        };
        let lines = failure_lines(&run);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines.contains(&"connection closed (after a 200 head) ×1: the connection to Pocket closed mid-body: Pocket's log names no cause. Pocket closes a client's connection mid-answer when the server broke off: the answer could not be completed".to_string()), "{lines:?}");
        assert!(lines.iter().any(|l| l.contains(
            "with no status: Pocket closed it because the answer could not be completed (Pocket's log: server B broke off its response: error reading a body from connection)"
        )), "{lines:?}");
        assert!(lines.iter().any(|l| l.contains(
            "with no status: Pocket's log names no cause. Pocket closes a client's connection instead of answering when the server broke off after sending its head"
        )), "{lines:?}");
        let summary = summary_md(&run);
        assert!(!summary.contains("broken answer"), "{summary}");
    }

    /// An interrupted balancer run: seconds of load (its setup, the
    /// offset, not counted), to a tenth, of the scenario's duration; and
    /// a run stopped before its load started says so.
    #[test]
    fn an_interrupted_header_counts_seconds_of_load() {
        let mut run = Run {
            title: "t",
            file: Path::new("t.lua"),
            mode: "real",
            tls: false,
            end: 12.627073361,
            planned: 32.0,
            offset: 3.627073361,
            interrupted: true,
            clients: 1,
            samples: &[],
            retries: &[],
            events: &[],
            verdicts: &[],
            names: &[],
            tcp: None,
            same_ip: None,
        };
        let s = summary_md(&run);
        assert!(
            s.contains("**interrupted after 9.0 s (of 32 s)** of load"),
            "{s}"
        );
        run.end = 3.63;
        let s = summary_md(&run);
        assert!(
            s.contains("**interrupted before the load started**: no request sent"),
            "{s}"
        );
    }
}
