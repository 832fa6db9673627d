//! What a lab run leaves behind: a summary table, the event log as JSON
//! lines, and a timeline picture (SVG) with the faults and health changes
//! marked, because people would rather look than read.

use std::fmt::Write as _;
use std::path::Path;

use super::load::Second;

/// Something that happened: a fault, a health change, a reload.
#[derive(Debug, Clone)]
pub struct Event {
    /// Seconds since the load started.
    pub t: f64,
    /// "fault", "health", "reload", "balancer".
    pub kind: &'static str,
    pub text: String,
}

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

pub fn events_jsonl(events: &[Event], seconds: &[Second]) -> String {
    let mut out = String::new();
    for e in events {
        let _ = writeln!(
            out,
            "{{\"t\":{:.3},\"kind\":{},\"text\":{}}}",
            e.t,
            json_str(e.kind),
            json_str(&e.text)
        );
    }
    for (i, s) in seconds.iter().enumerate() {
        let failed: Vec<String> = s
            .failed
            .iter()
            .map(|(k, v)| format!("{}:{v}", json_str(k)))
            .collect();
        let servers: Vec<String> = s
            .servers
            .iter()
            .map(|(k, v)| format!("{}:{v}", json_str(k)))
            .collect();
        let _ = writeln!(
            out,
            "{{\"t\":{i},\"kind\":\"second\",\"ok\":{},\"retried\":{},\"failed\":{{{}}},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"servers\":{{{}}}}}",
            s.ok,
            s.retried,
            failed.join(","),
            s.quantile_ms(0.5),
            s.quantile_ms(0.99),
            servers.join(",")
        );
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Requests per second (answered in green, failed in red) over time, with
/// faults (orange) and health changes (blue) marked.
pub fn timeline_svg(title: &str, seconds: &[Second], events: &[Event]) -> String {
    let (w, h, left, top, bottom) = (900.0, 360.0, 60.0, 40.0, 40.0);
    let plot_h = h - top - bottom;
    let n = seconds.len().max(1) as f64;
    let step = (w - left - 20.0) / n;
    let max = seconds
        .iter()
        .map(|s| s.ok + s.failed_total())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let y = |v: f64| top + plot_h - v / max * plot_h;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="20" font-size="14">{}</text>
<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>
<text x="5" y="{}">{max:.0}/s</text>
"#,
        esc(title),
        top + plot_h,
        w - 20.0,
        top + plot_h,
        top + plot_h,
        top + 10.0
    );
    for (i, s) in seconds.iter().enumerate() {
        let x = left + i as f64 * step + 1.0;
        let ok_top = y(s.ok as f64);
        let _ = writeln!(
            svg,
            r##"<rect x="{x:.1}" y="{ok_top:.1}" width="{:.1}" height="{:.1}" fill="#4caf50"><title>{i}s: {} ok</title></rect>"##,
            (step - 2.0).max(1.0),
            top + plot_h - ok_top,
            s.ok
        );
        let failed = s.failed_total();
        if failed > 0 {
            let fh = (failed as f64 / max * plot_h).max(3.0);
            let _ = writeln!(
                svg,
                r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{fh:.1}" fill="#e53935"><title>{i}s: {failed} failed</title></rect>"##,
                ok_top - fh,
                (step - 2.0).max(1.0)
            );
        }
        if i % ((n as usize / 15).max(1)) == 0 {
            let _ = writeln!(
                svg,
                r#"<text x="{x:.1}" y="{:.1}">{i}s</text>"#,
                top + plot_h + 15.0
            );
        }
    }
    for (k, e) in events.iter().enumerate() {
        let x = left + e.t * step;
        let color = match e.kind {
            "fault" => "#ff9800",
            "health" => "#1e88e5",
            _ => "#8e24aa",
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="{color}" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" fill="{color}">{}</text>"#,
            top + plot_h,
            x + 3.0,
            top + 12.0 + (k % 6) as f64 * 12.0,
            esc(&e.text)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The summary as a Markdown table.
pub fn summary_md(
    title: &str,
    mode: &str,
    seconds: &[Second],
    events: &[Event],
    verdicts: &[(String, bool)],
) -> String {
    let mut out = format!("# {title}\n\nfault layer: {mode}\n\n| second | ok | retried | failed | causes | p50 ms | p99 ms | servers |\n|---|---|---|---|---|---|---|---|\n");
    for (i, s) in seconds.iter().enumerate() {
        let causes: Vec<String> = s.failed.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let servers: Vec<String> = s.servers.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            out,
            "| {i} | {} | {} | {} | {} | {:.2} | {:.2} | {} |",
            s.ok,
            s.retried,
            s.failed_total(),
            causes.join(", "),
            s.quantile_ms(0.5),
            s.quantile_ms(0.99),
            servers.join(", ")
        );
    }
    out.push_str("\n## Events\n\n");
    for e in events {
        let _ = writeln!(out, "- {:.2}s {}: {}", e.t, e.kind, e.text);
    }
    out.push_str("\n## Expectations\n\n");
    for (v, ok) in verdicts {
        let _ = writeln!(out, "- {} {v}", if *ok { "met:" } else { "NOT MET:" });
    }
    out
}

pub fn write_all(
    dir: &Path,
    title: &str,
    mode: &str,
    seconds: &[Second],
    events: &[Event],
    verdicts: &[(String, bool)],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("summary.md"),
        summary_md(title, mode, seconds, events, verdicts),
    )?;
    std::fs::write(dir.join("events.jsonl"), events_jsonl(events, seconds))?;
    std::fs::write(
        dir.join("timeline.svg"),
        timeline_svg(title, seconds, events),
    )?;
    Ok(())
}
