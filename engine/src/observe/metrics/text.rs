//! The Prometheus text exposition format (version 0.0.4), written by hand:
//! a scrape walks a few hundred atomics and writes them out, so a small
//! writer is all it takes, and the request path never touches it (the
//! counting is plain atomics, see `counters.rs`).
//!
//! Format rules followed: `# HELP` and `# TYPE` once per family before its
//! samples; label values escape `\`, `"` and newline; HELP text escapes
//! `\` and newline; histograms write cumulative `_bucket{le=...}` lines
//! ending in `le="+Inf"`, then `_sum` and `_count`
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>).

use std::fmt::Write as _;

/// A metric family's type, as `# TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Builds one exposition. A family's `# HELP` and `# TYPE` lines are
/// written with its first sample, so a family with no samples (no retry
/// seen yet) leaves no empty header.
#[derive(Default)]
pub struct Text {
    out: String,
    /// The header of the family begun last, not yet written.
    pending: Option<(&'static str, Kind, &'static str)>,
}

impl Text {
    pub fn new() -> Text {
        Text::default()
    }

    /// Begins a family: `name` (no `_total`/`_bucket` suffix added: the
    /// name as exposed, a histogram's base name), its type and help text.
    pub fn family(&mut self, name: &'static str, kind: Kind, help: &'static str) {
        self.pending = Some((name, kind, help));
    }

    fn header(&mut self) {
        if let Some((name, kind, help)) = self.pending.take() {
            let _ = writeln!(
                self.out,
                "# HELP {name} {}\n# TYPE {name} {}",
                escape_help(help),
                kind.name()
            );
        }
    }

    /// One sample of the current family. Integer values print as integers,
    /// floats with Rust's shortest round-trip form.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Value) {
        self.header();
        self.out.push_str(name);
        self.labels(labels, None);
        self.out.push(' ');
        value.write(&mut self.out);
        self.out.push('\n');
    }

    /// A histogram sample set: `counts` are per-bucket (not cumulative)
    /// counts for `bounds` (seconds, ascending) plus one more for above the
    /// last bound; `sum` in seconds.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
    ) {
        self.header();
        let mut cumulative = 0u64;
        for (i, count) in counts.iter().enumerate() {
            cumulative += count;
            let le = match bounds.get(i) {
                Some(b) => format!("{b}"),
                None => "+Inf".to_string(),
            };
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        self.out.push(' ');
        sum.write(&mut self.out);
        self.out.push('\n');
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {cumulative}");
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
            if !first {
                self.out.push(',');
            }
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_label_into(v, &mut self.out);
            self.out.push('"');
        }
        self.out.push('}');
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A sample's value.
pub trait Value {
    fn write(&self, out: &mut String);
}

impl Value for u64 {
    fn write(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for i64 {
    fn write(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for f64 {
    fn write(&self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

fn escape_label_into(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_writes_help_and_type_once_before_its_samples() {
        let mut t = Text::new();
        t.family("pocket_x_total", Kind::Counter, "Things.");
        t.sample("pocket_x_total", &[("pool", "web")], 3u64);
        t.sample("pocket_x_total", &[("pool", "api")], 0u64);
        assert_eq!(
            t.finish(),
            "# HELP pocket_x_total Things.\n# TYPE pocket_x_total counter\n\
             pocket_x_total{pool=\"web\"} 3\npocket_x_total{pool=\"api\"} 0\n"
        );
    }

    #[test]
    fn a_family_without_samples_writes_nothing() {
        let mut t = Text::new();
        t.family("pocket_a_total", Kind::Counter, "A.");
        t.family("pocket_b", Kind::Gauge, "B.");
        t.sample("pocket_b", &[], 1i64);
        assert_eq!(
            t.finish(),
            "# HELP pocket_b B.\n# TYPE pocket_b gauge\npocket_b 1\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut t = Text::new();
        t.family("pocket_y", Kind::Gauge, "Back\\slash\nnewline.");
        t.sample("pocket_y", &[("pool", "a\"b\\c\nd")], 1.5f64);
        assert_eq!(
            t.finish(),
            "# HELP pocket_y Back\\\\slash\\nnewline.\n# TYPE pocket_y gauge\n\
             pocket_y{pool=\"a\\\"b\\\\c\\nd\"} 1.5\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_and_end_in_inf() {
        let mut t = Text::new();
        t.family("pocket_h_seconds", Kind::Histogram, "H.");
        t.histogram(
            "pocket_h_seconds",
            &[("pool", "p")],
            &[0.1, 1.0],
            &[2, 3, 1],
            2.25,
        );
        assert_eq!(
            t.finish(),
            "# HELP pocket_h_seconds H.\n# TYPE pocket_h_seconds histogram\n\
             pocket_h_seconds_bucket{pool=\"p\",le=\"0.1\"} 2\n\
             pocket_h_seconds_bucket{pool=\"p\",le=\"1\"} 5\n\
             pocket_h_seconds_bucket{pool=\"p\",le=\"+Inf\"} 6\n\
             pocket_h_seconds_sum{pool=\"p\"} 2.25\n\
             pocket_h_seconds_count{pool=\"p\"} 6\n"
        );
    }
}
