//! The one way to declare and render a metric family in the Prometheus text
//! exposition format (version 0.0.4): a [`Family`] is declared once, as a
//! constant, with its name, type and help; [`Family::render`] writes its
//! `# HELP` and `# TYPE` lines and hands back [`Samples`] for its series.
//!
//! Every component that exports metrics (the node's [`Telemetry`], the
//! broker link, TLS, the limiters) renders through here, so the format,
//! label escaping and histogram layout are written once.
//!
//! Invariants: label values are escaped (`\`, `"`, newline), so a value from
//! the config cannot break the output; help texts are constants holding no
//! backslash or newline; a histogram's buckets are cumulative and end with
//! `+Inf`, and its `_count` equals the `+Inf` bucket.
//!
//! Rendering happens once per scrape, never on the hot path.
//!
//! [`Telemetry`]: super::Telemetry

use std::fmt::{Display, Write as _};

use super::HistogramSnapshot;

/// A metric family's type (the `# TYPE` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (until the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Fixed buckets, with `_bucket`, `_sum` and `_count` series.
    Histogram,
}

impl Kind {
    /// The word of the `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A metric family: declared once as a `const`, rendered at each scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// The series name (`chouquette_…`).
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// One line of help, without backslash or newline.
    pub help: &'static str,
}

impl Family {
    /// A counter family.
    pub const fn counter(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind: Kind::Counter,
            help,
        }
    }

    /// A gauge family.
    pub const fn gauge(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind: Kind::Gauge,
            help,
        }
    }

    /// A histogram family.
    pub const fn histogram(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind: Kind::Histogram,
            help,
        }
    }

    /// Writes the `# HELP` and `# TYPE` lines to `out`; the family's series
    /// follow through the returned [`Samples`].
    pub fn render<'a>(&self, out: &'a mut String) -> Samples<'a> {
        debug_assert!(!self.help.contains(['\\', '\n']), "{}", self.name);
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind.as_str());
        Samples { out, family: *self }
    }

    /// Writes the family with its one unlabelled series.
    pub fn render_value(&self, out: &mut String, value: impl Display) {
        self.render(out).value(value);
    }
}

/// The series of one family being rendered (see [`Family::render`]).
#[derive(Debug)]
pub struct Samples<'a> {
    out: &'a mut String,
    family: Family,
}

/// Labels of one series, in order: `(name, value)`; values are escaped.
pub type Labels<'l> = [(&'l str, &'l str)];

impl Samples<'_> {
    /// The family's unlabelled series.
    pub fn value(&mut self, value: impl Display) -> &mut Self {
        self.sample(&[], value)
    }

    /// One labelled series of a counter or gauge.
    pub fn sample(&mut self, labels: &Labels<'_>, value: impl Display) -> &mut Self {
        debug_assert_ne!(self.family.kind, Kind::Histogram, "{}", self.family.name);
        line(self.out, self.family.name, "", labels, None, value);
        self
    }

    /// One histogram series: its cumulative `_bucket` lines (the `+Inf`
    /// one last), then `_sum` and `_count`.
    pub fn histogram(&mut self, labels: &Labels<'_>, snap: &HistogramSnapshot) -> &mut Self {
        debug_assert_eq!(self.family.kind, Kind::Histogram, "{}", self.family.name);
        let name = self.family.name;
        let mut cumulative: u64 = 0;
        for (i, n) in snap.counts.iter().enumerate() {
            cumulative += n;
            let le = snap.bounds.get(i).map_or(Le::Inf, |b| Le::Bound(*b));
            line(self.out, name, "_bucket", labels, Some(le), cumulative);
        }
        line(self.out, name, "_sum", labels, None, snap.sum);
        line(self.out, name, "_count", labels, None, cumulative);
        self
    }
}

/// A histogram bucket's `le` label.
#[derive(Debug, Clone, Copy)]
enum Le {
    Bound(f64),
    Inf,
}

impl Display for Le {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Le::Bound(b) => write!(f, "{b}"),
            Le::Inf => f.write_str("+Inf"),
        }
    }
}

/// Writes `name{labels,le="…"} value`, without braces when there is no label.
fn line(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &Labels<'_>,
    le: Option<Le>,
    value: impl Display,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            escape_into(out, value);
            out.push('"');
        }
        if let Some(le) = le {
            if !labels.is_empty() {
                out.push(',');
            }
            let _ = write!(out, "le=\"{le}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Appends a label value with `\`, `"` and newlines escaped (app ids come
/// from the config; channel names cannot hold these, but the output must
/// stay valid whatever they hold).
fn escape_into(out: &mut String, value: &str) {
    if !value.contains(['\\', '"', '\n']) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Family = Family::counter("t_plain_total", "Plain.");
    const BY_APP: Family = Family::gauge("t_by_app", "By app.");
    const LATENCY: Family = Family::histogram("t_seconds", "Latency.");

    #[test]
    fn a_family_writes_help_type_then_its_series() {
        let mut out = String::new();
        PLAIN.render_value(&mut out, 3u64);
        BY_APP
            .render(&mut out)
            .sample(&[("app", "a")], -1i64)
            .sample(&[("app", "b\"\\\n"), ("channel", "c")], 2i64);
        assert_eq!(
            out,
            "# HELP t_plain_total Plain.\n# TYPE t_plain_total counter\nt_plain_total 3\n\
             # HELP t_by_app By app.\n# TYPE t_by_app gauge\nt_by_app{app=\"a\"} -1\n\
             t_by_app{app=\"b\\\"\\\\\\n\",channel=\"c\"} 2\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_and_end_with_inf() {
        let snap = HistogramSnapshot {
            bounds: vec![0.5, 1.0],
            counts: vec![1, 0, 2],
            count: 3,
            sum: 4.25,
        };
        let mut out = String::new();
        LATENCY
            .render(&mut out)
            .histogram(&[], &snap)
            .histogram(&[("op", "x")], &snap);
        assert_eq!(
            out,
            "# HELP t_seconds Latency.\n# TYPE t_seconds histogram\n\
             t_seconds_bucket{le=\"0.5\"} 1\nt_seconds_bucket{le=\"1\"} 1\n\
             t_seconds_bucket{le=\"+Inf\"} 3\nt_seconds_sum 4.25\nt_seconds_count 3\n\
             t_seconds_bucket{op=\"x\",le=\"0.5\"} 1\nt_seconds_bucket{op=\"x\",le=\"1\"} 1\n\
             t_seconds_bucket{op=\"x\",le=\"+Inf\"} 3\nt_seconds_sum{op=\"x\"} 4.25\n\
             t_seconds_count{op=\"x\"} 3\n"
        );
    }
}
