//! What the clients of several balancers saw (see `balancers.rs`): which
//! balancer answered when, who held the virtual address, the take-over
//! after each fault that takes a balancer out, the requests that failed
//! meanwhile, and the times two balancers held the address at once. The
//! expectations `failover_within` and `two_masters` are judged here.

use std::collections::BTreeMap;
use std::path::Path;

use super::load::Sample;
use super::report::Event;
use super::scenario::{Fault, FaultKind, Scenario};

/// The `vip` event's text for `held` (the watcher's words).
pub fn vip_text(held: &[String]) -> String {
    match held.len() {
        0 => "VIP held by none".into(),
        1 => format!("VIP held by {}", held[0]),
        _ => format!("VIP held by {}: two masters", held.join(", ")),
    }
}

/// A few words for a `vip` event's marker: "VIP: L2", "VIP: L1+L2".
pub fn short_label(text: &str) -> String {
    let held = held_of(text);
    if held.is_empty() {
        "VIP: none".into()
    } else {
        format!("VIP: {}", held.join("+"))
    }
}

/// The balancers a `vip` event says hold the address.
fn held_of(text: &str) -> Vec<String> {
    let rest = text.strip_prefix("VIP held by ").unwrap_or("");
    let list = rest.split(':').next().unwrap_or("");
    if list == "none" || list.is_empty() {
        return Vec::new();
    }
    list.split(", ").map(str::to_string).collect()
}

/// Who held the address at `t`, by the last `vip` event before it.
fn held_at(events: &[Event], t: f64) -> Vec<String> {
    events
        .iter()
        .rfind(|e| e.kind == "vip" && e.t <= t)
        .map(|e| held_of(&e.text))
        .unwrap_or_default()
}

/// The balancer an answer came through: `A via L1` gives L1.
pub fn via_of(s: &Sample) -> Option<&str> {
    s.server.as_deref()?.split_once(" via ").map(|(_, b)| b)
}

/// Spans of two or more holders: (from, to, holders); `to` is the next
/// change or `end`. A span starts at the earliest of the watcher's event
/// and keepalived's own "MASTER" of the balancer that became the second
/// master (the watcher looks every 200 ms, keepalived says it at once),
/// and ends likewise at the earliest of the watcher's next event and
/// keepalived's leaving MASTER (BACKUP, FAULT, stopping) of a holder.
fn two_master_spans(events: &[Event], end: f64) -> Vec<(f64, f64, Vec<String>)> {
    let vips: Vec<(f64, Vec<String>)> = events
        .iter()
        .filter(|e| e.kind == "vip")
        .map(|e| (e.t, held_of(&e.text)))
        .collect();
    let mut out = Vec::new();
    for (i, (t, held)) in vips.iter().enumerate() {
        if held.len() >= 2 {
            let next = vips.get(i + 1);
            let to = next.map_or(end, |(t2, _)| *t2);
            let to = next
                .map(|(_, h)| held.iter().filter(|b| !h.contains(b)))
                .into_iter()
                .flatten()
                .filter_map(|b| {
                    events
                        .iter()
                        .filter(|e| e.kind == "vrrp" && e.t > *t && e.t <= to)
                        .find(|e| {
                            e.text.strip_prefix(b.as_str()).is_some_and(|r| {
                                matches!(
                                    r,
                                    " keepalived: BACKUP"
                                        | " keepalived: FAULT"
                                        | " keepalived: stopping"
                                )
                            })
                        })
                        .map(|e| e.t)
                })
                .fold(to, f64::min);
            let (before, had) = match i.checked_sub(1).map(|j| &vips[j]) {
                Some((t0, h)) => (*t0, h.clone()),
                None => (f64::NEG_INFINITY, Vec::new()),
            };
            let from = held
                .iter()
                .filter(|b| !had.contains(b))
                .filter_map(|b| {
                    let said = format!("{b} keepalived: MASTER");
                    events
                        .iter()
                        .filter(|e| e.kind == "vrrp" && e.text == said)
                        .filter(|e| e.t > before && e.t <= *t)
                        .map(|e| e.t)
                        .next_back()
                })
                .fold(*t, f64::min);
            out.push((from, to, held.clone()));
        }
    }
    out
}

/// Each fault that takes a balancer out (kill, blackhole,
/// stop_keepalived), with when it fired (None: it did not) and, if it
/// failed, why. The same fault given twice is matched to its own event
/// (the n-th of that text).
fn outages<'a>(
    scenario: &'a Scenario,
    events: &[Event],
) -> Vec<(&'a Fault, Option<f64>, Option<String>)> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    scenario
        .faults
        .iter()
        .filter_map(|f| {
            let nth = seen.entry(f.text.as_str()).or_default();
            let n = *nth;
            *nth += 1;
            let takes_out = f.balancer.is_some()
                && matches!(
                    f.kind,
                    FaultKind::Kill | FaultKind::Blackhole | FaultKind::StopKeepalived
                );
            takes_out.then_some((f, n))
        })
        .map(|(f, n)| {
            let mut fired = events
                .iter()
                .enumerate()
                .filter(|(_, e)| e.kind == "fault" && e.text == f.text);
            let Some((k, e)) = fired.nth(n) else {
                return (f, None, None);
            };
            let next = fired.next().map_or(events.len(), |(k2, _)| k2);
            let failed_prefix = format!("{} failed: ", f.text);
            let failed = events[k..next]
                .iter()
                .find_map(|e| e.text.strip_prefix(&failed_prefix))
                .map(str::to_string);
            (f, Some(e.t), failed)
        })
        .collect()
}

/// The first answer through a balancer other than `name` to a request
/// sent at or after `t`: (when the answer came, through which balancer).
fn first_answer_elsewhere(samples: &[Sample], name: &str, t: f64) -> Option<(f64, String)> {
    samples
        .iter()
        .filter(|s| s.failure.is_none() && s.sent >= t)
        .filter_map(|s| {
            via_of(s)
                .filter(|b| *b != name)
                .map(|b| (s.done, b.to_string()))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
}

/// Failed requests sent in [from, to): how many, and by kind
/// ("refused by Pocket ×3, connection reset ×1").
fn failures_between(samples: &[Sample], from: f64, to: f64) -> (usize, String) {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.sent >= from && s.sent < to) {
        if let Some(f) = &s.failure {
            *by.entry(f.kind.as_str()).or_default() += 1;
        }
    }
    let n = by.values().sum();
    let list: Vec<String> = by.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
    (n, list.join(", "))
}

/// Why a client's connection that ended at `t` with no answer broke, in
/// a run with balancers: the virtual address had just moved, or the
/// balancer holding it had just gone. None in other runs.
pub fn moved_cause(events: &[Event], t: f64) -> Option<String> {
    if !events.iter().any(|e| e.kind == "vip") {
        return None;
    }
    let near_a_move = events
        .iter()
        .filter(|e| matches!(e.kind, "vip" | "clients" | "fault" | "vrrp"))
        .any(|e| e.t <= t + 0.5 && e.t >= t - 3.0);
    // With two masters the clients' ARP entry may move faster than the
    // lab looks (every 200 ms).
    let two_masters = two_master_spans(events, f64::INFINITY)
        .iter()
        .any(|(from, to, _)| t >= *from && t <= to + 0.5);
    (near_a_move || two_masters).then(|| {
            "the virtual address was moving between balancers (see Balancers): a connection cannot follow it, the balancer that gets its packets now does not know it and resets it (or the connection's own balancer had just gone)".to_string()
        })
}

/// The balancer expectations: `failover_within` (for each fault that
/// takes a balancer out) and `two_masters`.
pub fn judge(
    scenario: &Scenario,
    samples: &[Sample],
    events: &[Event],
    end: f64,
    interrupted: bool,
) -> Vec<(String, Option<bool>)> {
    let mut out = Vec::new();
    if let Some(within) = scenario.expect.failover_within {
        let list = outages(scenario, events);
        if list.is_empty() {
            out.push((
                format!("failover within {within:?}: no fault takes a balancer out (kill, blackhole, stop_keepalived)"),
                Some(false),
            ));
        }
        for (f, t, failed) in list {
            let name = f.balancer.clone().unwrap_or_default();
            if let (Some(t), Some(why)) = (t, &failed) {
                out.push((
                    format!(
                        "failover after \"{}\" at {t:.2}s: the fault failed ({why})",
                        f.text
                    ),
                    Some(false),
                ));
                continue;
            }
            let Some(t) = t else {
                out.push((
                    format!(
                        "an answer through another balancer after \"{}\" (within {within:?}): the fault never fired",
                        f.text
                    ),
                    if interrupted { None } else { Some(false) },
                ));
                continue;
            };
            if !held_at(events, t).contains(&name) {
                out.push((
                    format!(
                        "failover after \"{}\": {name} did not hold the virtual address then (held by: {})",
                        f.text,
                        held_at(events, t).join(", ")
                    ),
                    Some(false),
                ));
                continue;
            }
            out.push(match first_answer_elsewhere(samples, &name, t) {
                Some((at, other)) => (
                    format!(
                        "first answer through {other} came {:.2}s after \"{}\" (within {within:?})",
                        at - t,
                        f.text
                    ),
                    Some(at - t <= within.as_secs_f64()),
                ),
                None => (
                    format!(
                        "an answer through another balancer after \"{}\" (within {within:?}): never",
                        f.text
                    ),
                    if interrupted { None } else { Some(false) },
                ),
            });
        }
    }
    if let Some(want) = scenario.expect.two_masters {
        let spans = two_master_spans(events, end);
        let total: f64 = spans.iter().map(|(a, b, _)| b - a).sum();
        let expected = if want { "yes" } else { "no" };
        let text = match spans.first() {
            Some((from, _, held)) => format!(
                "two masters: {} held the virtual address at once from {from:.2}s, {total:.2}s in all (expected: {expected})",
                held.join(" and "),
            ),
            None => format!("two masters: never (expected: {expected})"),
        };
        let met = spans.is_empty() != want;
        out.push((text, if !met && interrupted { None } else { Some(met) }));
    }
    out
}

/// The report's "Balancers" section, one line each: where everything
/// was (`layout`), who answered when, who held the address, each
/// take-over and what it cost, each time of two masters.
pub fn summary(
    scenario: &Scenario,
    layout: &str,
    samples: &[Sample],
    events: &[Event],
    end: f64,
) -> Vec<String> {
    let mut out = vec![format!("{layout}.")];
    let mut served = Vec::new();
    for b in &scenario.balancers {
        let through: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.failure.is_none() && via_of(s) == Some(b.as_str()))
            .collect();
        let first = through.iter().map(|s| s.sent).fold(f64::INFINITY, f64::min);
        let last = through.iter().map(|s| s.sent).fold(0.0, f64::max);
        served.push(if through.is_empty() {
            format!("{b} none")
        } else {
            format!("{b} {} (sent {first:.2}s to {last:.2}s)", through.len())
        });
    }
    out.push(format!(
        "Answers through each balancer: {}.",
        served.join(", ")
    ));
    let moves: Vec<String> = events
        .iter()
        .filter(|e| e.kind == "vip")
        .map(|e| {
            let held = held_of(&e.text);
            let who = if held.is_empty() {
                "none".to_string()
            } else {
                held.join(" and ")
            };
            format!("{:.2}s {who}", e.t)
        })
        .collect();
    if !moves.is_empty() {
        out.push(format!(
            "Who held the virtual address: {}.",
            moves.join("; ")
        ));
    }
    for (f, t, failed) in outages(scenario, events) {
        let Some(t) = t else { continue };
        let name = f.balancer.clone().unwrap_or_default();
        if let Some(why) = failed {
            out.push(format!(
                "\"{}\" at {t:.2}s failed ({why}): nothing changed, nothing to take over.",
                f.text
            ));
            continue;
        }
        let held = held_at(events, t);
        if !held.contains(&name) {
            out.push(format!(
                "\"{}\" at {t:.2}s is not a take-over: {name} did not hold the virtual address (held by {}).",
                f.text,
                if held.is_empty() { "none".to_string() } else { held.join(" and ") }
            ));
            continue;
        }
        let moved = events
            .iter()
            .find(|e| {
                e.kind == "vip" && e.t >= t && {
                    let h = held_of(&e.text);
                    !h.is_empty() && !h.contains(&name)
                }
            })
            .map_or("the address never left it".to_string(), |e| {
                format!("the address moved {:.2}s after it", e.t - t)
            });
        out.push(match first_answer_elsewhere(samples, &name, t) {
            Some((at, other)) => {
                let (n, kinds) = failures_between(samples, t, at);
                format!(
                    "Take-over after \"{}\" at {t:.2}s: {moved}; the first answer through {other} came {:.2}s after it; requests that failed in between: {n}{}.",
                    f.text,
                    at - t,
                    if n == 0 { String::new() } else { format!(" ({kinds})") }
                )
            }
            None => format!(
                "After \"{}\" at {t:.2}s: {moved}; no answer came through another balancer.",
                f.text
            ),
        });
    }
    for (from, to, held) in two_master_spans(events, end) {
        let answered: Vec<String> = held
            .iter()
            .map(|b| {
                let n = samples
                    .iter()
                    .filter(|s| s.sent >= from && s.sent < to && s.failure.is_none())
                    .filter(|s| via_of(s) == Some(b.as_str()))
                    .count();
                format!("through {b} {n}")
            })
            .collect();
        let (n, kinds) = failures_between(samples, from, to);
        // What ended it: the last heal of a balancer before its end.
        let healed = events
            .iter()
            .rfind(|e| e.kind == "fault" && e.text.starts_with("heal ") && e.t >= from && e.t <= to)
            .filter(|_| to < end)
            .map_or(String::new(), |e| {
                format!("; one master again {:.2}s after \"{}\"", to - e.t, e.text)
            });
        out.push(format!(
            "Two masters from {from:.2}s to {to:.2}s ({:.2}s): {} held the address at once; answers to requests sent then: {}; failed: {n}{}{healed}.",
            to - from,
            held.join(" and "),
            answered.join(", "),
            if n == 0 { String::new() } else { format!(" ({kinds})") }
        ));
    }
    out
}

/// Puts `lines` as a "Balancers" section in the summary at `path`,
/// before its expectations. Nothing to do without lines.
pub fn add_to_summary(path: &Path, lines: &[String]) -> std::io::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path)?;
    let mut section = String::from("## Balancers\n\n");
    for l in lines {
        section.push_str(&format!("- {l}\n"));
    }
    section.push('\n');
    let text = match text.find("## Expectations") {
        Some(i) => format!("{}{section}{}", &text[..i], &text[i..]),
        None => format!("{text}\n{section}"),
    };
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(t: f64, kind: &'static str, text: &str) -> Event {
        Event {
            t,
            kind,
            text: text.into(),
        }
    }

    #[test]
    fn vip_texts_read_back() {
        for held in [
            vec![],
            vec!["L1".to_string()],
            vec!["L1".into(), "L2".into()],
        ] {
            assert_eq!(held_of(&vip_text(&held)), held);
        }
    }

    #[test]
    fn two_masters_are_the_spans_with_two_holders() {
        let events = [
            e(1.0, "vip", &vip_text(&["L1".into()])),
            e(4.0, "vip", &vip_text(&["L1".into(), "L2".into()])),
            e(6.5, "vip", &vip_text(&["L1".into()])),
        ];
        let spans = two_master_spans(&events, 10.0);
        assert_eq!(spans.len(), 1);
        assert_eq!((spans[0].0, spans[0].1), (4.0, 6.5));
        assert_eq!(held_at(&events, 5.0), vec!["L1", "L2"]);
    }

    /// keepalived says MASTER at once; the watcher sees the address up
    /// to 200 ms later: the span starts at keepalived's word.
    #[test]
    fn two_masters_start_at_keepalived_s_own_master() {
        let events = [
            e(1.0, "vip", &vip_text(&["L1".into()])),
            e(1.0, "vrrp", "L2 keepalived: MASTER"),
            e(3.8, "vrrp", "L2 keepalived: MASTER"),
            e(4.0, "vip", &vip_text(&["L1".into(), "L2".into()])),
            e(6.3, "vrrp", "L2 keepalived: BACKUP"),
            e(6.5, "vip", &vip_text(&["L1".into()])),
        ];
        let spans = two_master_spans(&events, 10.0);
        assert_eq!((spans[0].0, spans[0].1), (3.8, 6.3));
    }
}
