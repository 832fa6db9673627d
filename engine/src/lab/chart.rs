//! The lab report's timeline chart, drawn with plotters' SVG backend
//! (text stays `<text>`: no font files needed). Left axis: requests per
//! second in 100 ms buckets, answered ones stacked by the server that
//! answered, failed ones above them by cause. Right axis: p50 and p99
//! latency of the answered requests (log scale); for a TCP run,
//! connections instead of requests, and on the right the bytes each
//! server echoed per second. Above the plot, one
//! labelled marker per fault and health change, placed in rows so that no
//! two labels overlap and none runs off the edge; a legend on the right.

use std::collections::BTreeSet;

use plotters::coord::combinators::BindKeyPoints;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::{chart_buckets, Event, Run, CHART_BUCKET};
use super::tcp_load::BYTE_BUCKET;

const W: u32 = 1280;
const H: u32 = 720;
const LEGEND_W: u32 = 300;
/// The plot's margins inside its area, and its axis label areas.
const MARGIN: u32 = 12;
const Y_AREA: u32 = 70;
const X_AREA: u32 = 44;
const ROW_H: i32 = 18;
const MAX_ROWS: usize = 10;
const FONT: &str = "sans-serif";

/// Servers: cool colours. Failures: warm ones. Both colour-blind aware
/// (Tableau 10 order).
const SERVER_COLOURS: [RGBColor; 6] = [
    RGBColor(78, 121, 167),
    RGBColor(89, 161, 79),
    RGBColor(118, 183, 178),
    RGBColor(186, 176, 172),
    RGBColor(73, 152, 148),
    RGBColor(160, 203, 232),
];
const FAILURE_COLOURS: [RGBColor; 6] = [
    RGBColor(225, 87, 89),
    RGBColor(176, 122, 161),
    RGBColor(156, 31, 36),
    RGBColor(255, 157, 167),
    RGBColor(242, 142, 43),
    RGBColor(99, 0, 84),
];
const FAULT: RGBColor = RGBColor(214, 96, 0);
const HEALTH: RGBColor = RGBColor(106, 61, 154);
const OTHER: RGBColor = RGBColor(90, 90, 90);
/// The balancer's ARP entry moved (same_ip): who holds the address.
const ARP: RGBColor = RGBColor(0, 128, 128);
const INK: RGBColor = RGBColor(30, 30, 30);

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("drawing the chart: {e:?}")
}

/// What the chart counts: "requests", or "connections" for a TCP load.
fn unit(run: &Run) -> &'static str {
    if run.tcp.is_some() {
        "connections"
    } else {
        "requests"
    }
}

fn event_colour(kind: &str) -> RGBColor {
    match kind {
        "fault" => FAULT,
        "health" => HEALTH,
        super::same_ip::ARP | "vip" => ARP,
        _ => OTHER,
    }
}

/// A few words for an event's marker: "kill B", "B down", "B up",
/// "reload", the full text being in the summary.
pub fn short_label(e: &Event) -> String {
    if e.kind == "health" {
        // "server B of pool app is DOWN: ..."
        let who = e
            .text
            .split_once("server ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("server");
        let state = if e.text.contains(" is DOWN") {
            "down"
        } else {
            "up"
        };
        return format!("{who} {state}");
    }
    if e.kind == "vip" {
        return super::failover::short_label(&e.text);
    }
    if e.kind == super::same_ip::ARP {
        // "B holds 10.213.7.2 (...)" or "no one answers ARP for ..."
        return match e.text.split_once(" holds ") {
            Some((who, _)) => format!("ARP: {who}"),
            None => "ARP: no answer".into(),
        };
    }
    if e.kind == "reload" {
        return if e.text.contains("refused") {
            "reload refused".into()
        } else {
            "reload live".into()
        };
    }
    if e.kind == "watchdog" {
        return if e.text.contains("in place of") {
            "new worker".into()
        } else {
            "worker stuck".into()
        };
    }
    let mut s: String = e.text.chars().take(28).collect();
    if e.text.chars().count() > 28 {
        s.push('…');
    }
    s
}

/// A label's width in pixels at `size` px (sans-serif averages about
/// 0.5 em per character; a little wider is safer).
fn text_w(text: &str, size: i32) -> i32 {
    (text.chars().count() as f64 * size as f64 * 0.55).ceil() as i32 + 2
}

/// Where a marker's label goes: its row and whether it reads leftwards
/// (near the right edge).
struct Placed {
    row: usize,
    left: bool,
    span: (i32, i32),
}

/// Rows for labels of markers at pixel x, first fit: no label overlaps
/// another, none passes `[lo, hi]` (near the right edge a label reads
/// leftwards). Labels sit on white, so another marker's line passing
/// behind one does not hide it. Past `MAX_ROWS` rows a label goes where
/// it overlaps least. Returns each label's row, side and pixel span.
fn place(labels: &[(i32, String)], lo: i32, hi: i32, size: i32) -> Vec<Placed> {
    let mut spans: Vec<Vec<(i32, i32)>> = vec![Vec::new(); MAX_ROWS];
    let mut out = Vec::new();
    for (x, text) in labels {
        let x = *x;
        let w = text_w(text, size);
        let left = x + 4 + w > hi;
        let span = if left {
            ((x - 4 - w).max(lo), x - 2)
        } else {
            (x + 2, x + 4 + w)
        };
        let clear = |r: usize| {
            spans[r]
                .iter()
                .all(|(a, b)| span.1 + 4 < *a || *b + 4 < span.0)
        };
        // No row clear: the one whose labels end furthest left.
        let row = (0..MAX_ROWS).find(|r| clear(*r)).unwrap_or_else(|| {
            (0..MAX_ROWS)
                .min_by_key(|r| spans[*r].iter().map(|s| s.1).max().unwrap_or(i32::MIN))
                .unwrap_or(0)
        });
        spans[row].push(span);
        out.push(Placed { row, left, span });
    }
    out
}

/// Bytes echoed per second by each server of a TCP run, a point per
/// chart bucket (0 where it echoed nothing) up to `end` seconds.
fn byte_lines(tcp: &super::report::TcpView, end: f64) -> Vec<(String, Vec<(f64, f64)>)> {
    let n = ((end / CHART_BUCKET).ceil() as u32).max(1);
    let servers: BTreeSet<&String> = tcp.bytes.keys().map(|(_, s)| s).collect();
    servers
        .into_iter()
        .map(|s| {
            let points = (0..n)
                .map(|i| {
                    // The byte buckets are the chart's (both 100 ms).
                    let t = i as f64 * CHART_BUCKET;
                    let b = tcp.bytes.get(&(i, s.clone())).copied().unwrap_or(0);
                    (t + CHART_BUCKET / 2.0, b as f64 / BYTE_BUCKET)
                })
                .collect();
            (s.clone(), points)
        })
        .collect()
}

/// The chart as an SVG document.
pub fn timeline_svg(run: &Run) -> Result<String, String> {
    let buckets = chart_buckets(run);
    let end = run.end.max(CHART_BUCKET);
    // A TCP run: the right axis carries the bytes each server echoed per
    // second, in place of latency.
    let byte_lines = run.tcp.as_ref().map(|t| byte_lines(t, end));
    let servers: BTreeSet<String> = buckets
        .iter()
        .flat_map(|b| b.servers.keys().cloned())
        .chain(byte_lines.iter().flatten().map(|(s, _)| s.clone()))
        .collect();
    let causes: BTreeSet<String> = buckets
        .iter()
        .flat_map(|b| b.failed.keys().cloned())
        .collect();
    let servers: Vec<String> = servers.into_iter().collect();
    let causes: Vec<String> = causes.into_iter().collect();
    let server_colour = |name: &str| {
        let i = servers.iter().position(|s| s == name).unwrap_or(0);
        SERVER_COLOURS[i % SERVER_COLOURS.len()]
    };
    let cause_colour = |name: &str| {
        let i = causes.iter().position(|s| s == name).unwrap_or(0);
        FAILURE_COLOURS[i % FAILURE_COLOURS.len()]
    };
    let top_rate = buckets
        .iter()
        .map(|b| b.rate(b.ok() + b.failed_total()))
        .fold(0.0f64, f64::max);
    let y_max = (top_rate * 1.12).max(10.0);
    let (lat_lo, lat_hi) = match &byte_lines {
        Some(lines) => {
            let rates: Vec<f64> = lines
                .iter()
                .flat_map(|(_, p)| p.iter().map(|(_, v)| *v))
                .filter(|v| *v > 0.0)
                .collect();
            let hi = rates.iter().copied().fold(1000.0f64, f64::max) * 2.0;
            let lo = rates
                .iter()
                .copied()
                .fold(f64::MAX, f64::min)
                .min(hi / 10.0)
                / 2.0;
            (lo.max(hi / 1e6), hi)
        }
        None => {
            let latencies: Vec<f64> = buckets
                .iter()
                .flat_map(|b| [b.quantile_ms(0.5), b.quantile_ms(0.99)])
                .flatten()
                .collect();
            let hi = latencies.iter().copied().fold(1.0f64, f64::max) * 2.0;
            let lo = latencies
                .iter()
                .copied()
                .fold(f64::MAX, f64::min)
                .clamp(0.01, 1.0)
                / 2.0;
            (lo, hi)
        }
    };
    let tcp = run.tcp.is_some();

    // Marker labels: their rows decide how tall the band above the plot is.
    let plot_lo = MARGIN as i32 + Y_AREA as i32;
    let plot_hi = (W - LEGEND_W - MARGIN - Y_AREA) as i32;
    let px = |t: f64| plot_lo + ((t / end) * (plot_hi - plot_lo) as f64).round() as i32;
    let mut events: Vec<&Event> = run
        .events
        .iter()
        .filter(|e| e.t <= end && e.kind != super::report::BROKEN)
        // Balancers: the address's moves are drawn; keepalived's own
        // states and the clients' ARP entry are in the summary.
        .filter(|e| !matches!(e.kind, "vrrp" | "clients" | "load"))
        .collect();
    events.sort_by(|a, b| a.t.total_cmp(&b.t));
    let labels: Vec<(i32, String)> = events
        .iter()
        .map(|e| (px(e.t), format!("{} {:.2}s", short_label(e), e.t)))
        .collect();
    let placed = place(&labels, 4, (W - LEGEND_W) as i32 - 4, 13);
    let rows = placed.iter().map(|p| p.row + 1).max().unwrap_or(0) as i32;
    let title_h = 34;
    let band_h = title_h + rows * ROW_H + 6;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (main, legend) = root.split_horizontally(W - LEGEND_W);
        let (band, plot_area) = main.split_vertically(band_h as u32);
        band.draw(&Text::new(
            format!(
                "{}: {} per second in {} ms buckets, by server and outcome{}",
                run.title,
                unit(run),
                (CHART_BUCKET * 1000.0) as u32,
                if run.tcp.is_some() {
                    "; bytes per server"
                } else {
                    ""
                }
            ),
            (MARGIN as i32, 8),
            (FONT, 18).into_font().color(&INK),
        ))
        .map_err(err)?;

        let mut chart = ChartBuilder::on(&plot_area)
            .margin(MARGIN)
            .margin_top(4)
            .x_label_area_size(X_AREA)
            .y_label_area_size(Y_AREA)
            .right_y_label_area_size(Y_AREA)
            .build_cartesian_2d(0f64..end, 0f64..y_max)
            .map_err(err)?
            .set_secondary_coord(
                0f64..end,
                (lat_lo..lat_hi)
                    .log_scale()
                    .with_key_points(log_ticks(lat_lo, lat_hi)),
            );
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(228, 228, 228))
            .x_desc("seconds since the lab started")
            .y_desc(format!("{} per second", unit(run)))
            .label_style((FONT, 13).into_font().color(&INK))
            .axis_desc_style((FONT, 14).into_font().color(&INK))
            .x_labels(16)
            .y_labels(8)
            .x_label_formatter(&|v| format!("{v:.1}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(err)?;
        chart
            .configure_secondary_axes()
            .y_desc(if tcp {
                "bytes echoed per second, by server (log)"
            } else {
                "latency of answered requests, ms (log)"
            })
            .label_style((FONT, 13).into_font().color(&INK))
            .axis_desc_style((FONT, 14).into_font().color(&INK))
            .y_label_formatter(&|v| {
                if tcp {
                    super::report::human_bytes(*v as u64)
                } else if *v >= 1.0 {
                    format!("{v:.0}")
                } else {
                    let t = format!("{v:.2}");
                    t.trim_end_matches('0').to_string()
                }
            })
            .draw()
            .map_err(err)?;

        // Stacked bars: servers at the bottom, failures on top.
        let gap = CHART_BUCKET * 0.06;
        let mut bars = Vec::new();
        let mut tops = Vec::new();
        for b in &buckets {
            let (x0, x1) = (b.from + gap, (b.from + CHART_BUCKET - gap).min(end));
            let mut y = 0.0;
            for s in &servers {
                let n = b.servers.get(s).copied().unwrap_or(0);
                if n > 0 {
                    let h = b.rate(n);
                    bars.push(Rectangle::new(
                        [(x0, y), (x1, y + h)],
                        server_colour(s).filled(),
                    ));
                    y += h;
                }
            }
            for c in &causes {
                let n = b.failed.get(c).copied().unwrap_or(0);
                if n > 0 {
                    let h = b.rate(n);
                    bars.push(Rectangle::new(
                        [(x0, y), (x1, y + h)],
                        cause_colour(c).filled(),
                    ));
                    y += h;
                }
            }
            tops.push(((x0 + x1) / 2.0, y, b.retried));
        }
        chart.draw_series(bars).map_err(err)?;

        // A TCP run: a line per server of the bytes it echoed per second;
        // a bucket with none sits on the axis's floor, so a server that
        // stops shows as its line falling.
        for (server, points) in byte_lines.iter().flatten() {
            let points: Vec<(f64, f64)> = points.iter().map(|(t, v)| (*t, v.max(lat_lo))).collect();
            chart
                .draw_secondary_series(LineSeries::new(
                    points,
                    server_colour(server).stroke_width(2),
                ))
                .map_err(err)?;
        }
        // Latency lines through every bucket that had answers (a dot on
        // each: with sparse loads the gaps are buckets without answers).
        let quantiles: &[(f64, bool)] = if tcp {
            &[]
        } else {
            &[(0.5, false), (0.99, true)]
        };
        for &(q, dashed) in quantiles {
            let points: Vec<(f64, f64)> = buckets
                .iter()
                .filter_map(|b| {
                    b.quantile_ms(q)
                        .map(|v| (b.from + CHART_BUCKET / 2.0, v.max(lat_lo)))
                })
                .collect();
            if dashed {
                chart
                    .draw_secondary_series(DashedLineSeries::new(
                        points.clone(),
                        6,
                        4,
                        INK.stroke_width(2),
                    ))
                    .map_err(err)?;
                chart
                    .draw_secondary_series(
                        points
                            .iter()
                            .map(|p| Circle::new(*p, 2, INK.stroke_width(1))),
                    )
                    .map_err(err)?;
            } else {
                chart
                    .draw_secondary_series(LineSeries::new(points.clone(), INK.stroke_width(2)))
                    .map_err(err)?;
                chart
                    .draw_secondary_series(points.iter().map(|p| Circle::new(*p, 2, INK.filled())))
                    .map_err(err)?;
            }
        }

        // Retries: a triangle over the bucket in which Pocket logged them.
        for (x, y, n) in tops {
            if n > 0 {
                let (cx, cy) = chart.backend_coord(&(x, y));
                root.draw(&retry_mark(cx, cy - 8)).map_err(err)?;
            }
        }

        // Markers: a dashed line through the plot, the label in its row
        // above, in the marker's colour on white.
        let (_, plot_bottom) = chart.backend_coord(&(0.0, 0.0));
        let label_y = |p: &Placed| title_h + p.row as i32 * ROW_H + ROW_H / 2;
        for (e, p) in events.iter().zip(&placed) {
            let (x, _) = chart.backend_coord(&(e.t, 0.0));
            root.draw(&DashedPathElement::new(
                vec![(x, label_y(p)), (x, plot_bottom)],
                5,
                3,
                event_colour(e.kind).stroke_width(2),
            ))
            .map_err(err)?;
        }
        for ((e, p), (_, label)) in events.iter().zip(&placed).zip(&labels) {
            let colour = event_colour(e.kind);
            let (x, _) = chart.backend_coord(&(e.t, 0.0));
            let y = label_y(p);
            root.draw(&Rectangle::new(
                [(p.span.0, y - ROW_H / 2 + 1), (p.span.1, y + ROW_H / 2 - 1)],
                WHITE.filled(),
            ))
            .map_err(err)?;
            let (tx, anchor) = if p.left {
                (x - 4, HPos::Right)
            } else {
                (x + 4, HPos::Left)
            };
            let style = TextStyle::from((FONT, 13).into_font())
                .color(&colour)
                .pos(Pos::new(anchor, VPos::Center));
            root.draw(&Text::new(label.clone(), (tx, y), style))
                .map_err(err)?;
        }

        draw_legend(
            &legend,
            run,
            &servers,
            &causes,
            &server_colour,
            &cause_colour,
        )?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// 1-2-5 ticks from `lo` to `hi` (plotters' own log ticks can repeat one).
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut decade = 10f64.powi(lo.log10().floor() as i32);
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if v >= lo && v <= hi {
                out.push(v);
            }
        }
        decade *= 10.0;
    }
    out
}

fn retry_mark(x: i32, y: i32) -> Polygon<(i32, i32)> {
    Polygon::new(
        vec![(x - 5, y - 4), (x + 5, y - 4), (x, y + 4)],
        INK.filled(),
    )
}

fn draw_legend(
    area: &DrawingArea<SVGBackend, Shift>,
    run: &Run,
    servers: &[String],
    causes: &[String],
    server_colour: &dyn Fn(&str) -> RGBColor,
    cause_colour: &dyn Fn(&str) -> RGBColor,
) -> Result<(), String> {
    let text = |s: &str, x: i32, y: i32, size: i32, bold: bool| {
        let font = if bold {
            (FONT, size).into_font().style(FontStyle::Bold)
        } else {
            (FONT, size).into_font()
        };
        Text::new(
            s.to_string(),
            (x, y),
            TextStyle::from(font)
                .color(&INK)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        )
    };
    let total =
        |f: &dyn Fn(&super::load::Sample) -> bool| run.samples.iter().filter(|s| f(s)).count();
    let mut y = 60;
    let x = 10;
    let heading =
        |area: &DrawingArea<SVGBackend, Shift>, s: &str, y: &mut i32| -> Result<(), String> {
            *y += 8;
            area.draw(&text(s, x, *y, 14, true)).map_err(err)?;
            *y += 20;
            Ok(())
        };
    heading(
        area,
        if run.tcp.is_some() {
            "completed by"
        } else {
            "answered by"
        },
        &mut y,
    )?;
    for s in servers {
        let n = total(&|r| r.failure.is_none() && r.server.as_deref().unwrap_or("Pocket") == s);
        area.draw(&Rectangle::new(
            [(x, y - 6), (x + 14, y + 6)],
            server_colour(s).filled(),
        ))
        .map_err(err)?;
        area.draw(&text(&format!("{s} ({n})"), x + 22, y, 13, false))
            .map_err(err)?;
        y += 20;
    }
    if servers.is_empty() {
        area.draw(&text("nobody", x + 22, y, 13, false))
            .map_err(err)?;
        y += 20;
    }
    heading(
        area,
        if run.tcp.is_some() {
            "failed or cut"
        } else {
            "failed"
        },
        &mut y,
    )?;
    for c in causes {
        let n = total(&|r| r.failure.as_ref().is_some_and(|f| &f.kind == c));
        area.draw(&Rectangle::new(
            [(x, y - 6), (x + 14, y + 6)],
            cause_colour(c).filled(),
        ))
        .map_err(err)?;
        area.draw(&text(&format!("{c} ({n})"), x + 22, y, 13, false))
            .map_err(err)?;
        y += 20;
    }
    if causes.is_empty() {
        area.draw(&text("nothing failed", x + 22, y, 13, false))
            .map_err(err)?;
        y += 20;
    }
    heading(area, "Pocket retried", &mut y)?;
    area.draw(&retry_mark(x + 7, y)).map_err(err)?;
    area.draw(&text(
        &format!("on another server ({})", run.retries.len()),
        x + 22,
        y,
        13,
        false,
    ))
    .map_err(err)?;
    y += 20;
    if let Some(tcp) = &run.tcp {
        heading(area, "bytes per second (right axis)", &mut y)?;
        let all = super::report::tcp_bytes_by_server(tcp.bytes);
        for s in servers {
            area.draw(&PathElement::new(
                vec![(x, y), (x + 16, y)],
                server_colour(s).stroke_width(3),
            ))
            .map_err(err)?;
            let n = all.get(s).copied().unwrap_or(0);
            area.draw(&text(
                &format!("{s} ({} in all)", super::report::human_bytes(n)),
                x + 22,
                y,
                13,
                false,
            ))
            .map_err(err)?;
            y += 20;
        }
    } else {
        heading(area, "latency (right axis)", &mut y)?;
        area.draw(&PathElement::new(
            vec![(x, y), (x + 16, y)],
            INK.stroke_width(2),
        ))
        .map_err(err)?;
        area.draw(&text("p50", x + 22, y, 13, false)).map_err(err)?;
        y += 20;
        area.draw(&DashedPathElement::new(
            vec![(x, y), (x + 16, y)],
            5,
            3,
            INK.stroke_width(2),
        ))
        .map_err(err)?;
        area.draw(&text("p99", x + 22, y, 13, false)).map_err(err)?;
        y += 20;
    }
    // Only the markers that occurred: a legend entry promises a line.
    let had = |kind: &str| run.events.iter().any(|e| e.kind == kind);
    let others: Vec<&str> = ["reload", "watchdog"]
        .into_iter()
        .filter(|k| had(k))
        .collect();
    let other_label = others.join(", ");
    let markers: Vec<(RGBColor, &str)> = [
        (FAULT, "fault injected", had("fault")),
        (HEALTH, "health change (Pocket's log)", had("health")),
        (ARP, "ARP: who holds the address", had(super::same_ip::ARP)),
        (ARP, "VRRP: who holds the address", had("vip")),
        (OTHER, other_label.as_str(), !others.is_empty()),
    ]
    .into_iter()
    .filter(|(_, _, had)| *had)
    .map(|(c, w, _)| (c, w))
    .collect();
    if !markers.is_empty() {
        heading(area, "markers", &mut y)?;
    }
    for (colour, what) in markers {
        area.draw(&DashedPathElement::new(
            vec![(x + 7, y - 8), (x + 7, y + 8)],
            5,
            3,
            colour.stroke_width(2),
        ))
        .map_err(err)?;
        area.draw(&text(what, x + 22, y, 13, false)).map_err(err)?;
        y += 20;
    }
    y += 10;
    for line in [
        format!(
            "{} ms buckets; a {} counts",
            (CHART_BUCKET * 1000.0) as u32,
            if run.tcp.is_some() {
                "connection"
            } else {
                "request"
            }
        ),
        if run.tcp.is_some() {
            "when it opened; cut or failed, when it ended"
        } else {
            "when it was sent. Details: summary.md"
        }
        .to_string(),
    ] {
        area.draw(&text(&line, x, y, 12, false)).map_err(err)?;
        y += 16;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Markers close together (a kill and its detection 30 ms later, a
    /// flapping server) and one at the right edge: no two labels overlap
    /// and none leaves the picture.
    #[test]
    fn marker_labels_neither_collide_nor_clip() {
        let (lo, hi) = (4, 976);
        let labels: Vec<(i32, String)> = [
            (300, "kill B 2.01s"),
            (304, "B down 2.04s"),
            (330, "B up 2.22s"),
            (360, "B down 2.36s"),
            (390, "B up 2.52s"),
            (970, "restart balancer 5.98s"),
            (972, "B up 5.99s"),
        ]
        .iter()
        .map(|(x, t)| (*x, t.to_string()))
        .collect();
        let placed = place(&labels, lo, hi, 13);
        for (i, a) in placed.iter().enumerate() {
            assert!(
                a.span.0 >= lo && a.span.1 <= hi,
                "{i} clipped: {:?}",
                a.span
            );
            for b in &placed[i + 1..] {
                let apart = a.span.1 < b.span.0 || b.span.1 < a.span.0;
                assert!(
                    a.row != b.row || apart,
                    "overlap: {:?} {:?}",
                    a.span,
                    b.span
                );
            }
        }
        assert!(
            placed[5].left && placed[6].left,
            "at the right edge labels read leftwards"
        );
    }

    #[test]
    fn health_lines_become_short_labels() {
        let e = |kind, text: &str| Event {
            t: 1.0,
            kind,
            text: text.into(),
        };
        assert_eq!(
            short_label(&e(
                "health",
                "server B of pool app is DOWN: 3 failures in a row"
            )),
            "B down"
        );
        assert_eq!(
            short_label(&e("health", "server B of pool app is UP: 2 checks passed")),
            "B up"
        );
        assert_eq!(short_label(&e("fault", "kill B")), "kill B");
    }
}
