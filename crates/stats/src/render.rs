//! The two admin renderings of a [`Summary`]: `/stats` text and
//! `/stats/prometheus`.

use std::fmt::Write;

use regex::Regex;

use crate::define::Kind;
use crate::summary::{Summary, Value};

/// The `Content-Type` of [`Summary::prometheus`]: the Prometheus text
/// exposition format, version 0.0.4.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The quantiles `/stats` shows for each histogram.
const TEXT_QUANTILES: [(f64, &str); 3] = [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99")];

impl Summary {
    /// The `/stats` text: one `name{labels}: value` a line, sorted by name.
    /// Names and labels are exactly Prometheus' (so one grep finds a stat
    /// in both outputs). A histogram shows as `name_count`, `name_sum`
    /// (seconds) and `name{quantile="0.5"|"0.9"|"0.99"}` estimated from its
    /// buckets (NaN when empty); `/stats/prometheus` has the buckets.
    ///
    /// With `filter`, only lines whose name part (everything before `: `)
    /// matches it anywhere are kept, e.g. `cluster="api"` or `^nuncio_upstream_`.
    pub fn text(&self, filter: Option<&Regex>) -> String {
        let mut lines: Vec<(String, String)> = Vec::new();
        for (name, family) in &self.families {
            for (labels, value) in &family.series {
                let series = |suffix: &str, extra: Option<(&str, &str)>| {
                    let mut line = format!("{name}{suffix}");
                    write_labels(&mut line, labels, extra);
                    line
                };
                match value {
                    Value::Counter(v) => lines.push((series("", None), v.to_string())),
                    Value::Gauge(v) => lines.push((series("", None), v.to_string())),
                    Value::Histogram(h) => {
                        lines.push((series("_count", None), h.count().to_string()));
                        lines.push((series("_sum", None), float(h.sum())));
                        for (q, label) in TEXT_QUANTILES {
                            lines.push((series("", Some(("quantile", label))), float(h.quantile(q))));
                        }
                    }
                }
            }
        }
        lines.retain(|(name, _)| filter.is_none_or(|re| re.is_match(name)));
        lines.sort();
        let mut out = String::new();
        for (name, value) in lines {
            let _ = writeln!(out, "{name}: {value}");
        }
        out
    }

    /// The Prometheus text exposition format (0.0.4; serve it with
    /// [`PROMETHEUS_CONTENT_TYPE`]): per family, sorted by name, `# HELP`
    /// and `# TYPE` once, then its series sorted by labels. Counters end in
    /// `_total`; histograms in `_seconds` with cumulative `_bucket{le=…}`
    /// series up to `le="+Inf"`, then `_sum` and `_count`. Label values and
    /// help are escaped as the format requires.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        for (name, family) in &self.families {
            if family.series.is_empty() {
                continue;
            }
            let kind = match family.kind {
                Kind::Counter => "counter",
                Kind::Gauge | Kind::WorkerGauge => "gauge",
                Kind::Histogram => "histogram",
            };
            out.push_str("# HELP ");
            out.push_str(name);
            out.push(' ');
            escape(&mut out, &family.help, false);
            let _ = writeln!(out, "\n# TYPE {name} {kind}");
            for (labels, value) in &family.series {
                match value {
                    Value::Counter(v) => sample(&mut out, name, "", labels, None, &v.to_string()),
                    Value::Gauge(v) => sample(&mut out, name, "", labels, None, &v.to_string()),
                    Value::Histogram(h) => {
                        for (le, count) in h.buckets() {
                            let le = float(le);
                            sample(&mut out, name, "_bucket", labels, Some(("le", &le)), &count.to_string());
                        }
                        sample(&mut out, name, "_sum", labels, None, &float(h.sum()));
                        sample(&mut out, name, "_count", labels, None, &h.count().to_string());
                    }
                }
            }
        }
        out
    }
}

fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(String, String)],
    extra: Option<(&str, &str)>,
    value: &str,
) {
    out.push_str(name);
    out.push_str(suffix);
    write_labels(out, labels, extra);
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// `{a="x",b="y",extra="z"}`, nothing when there are no labels.
fn write_labels(out: &mut String, labels: &[(String, String)], extra: Option<(&str, &str)>) {
    let mut pairs = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(extra).peekable();
    if pairs.peek().is_none() {
        return;
    }
    out.push('{');
    for (i, (key, value)) in pairs.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push_str("=\"");
        escape(out, value, true);
        out.push('"');
    }
    out.push('}');
}

/// The format's escapes: `\\` and `\n` everywhere, `\"` in label values.
fn escape(out: &mut String, s: &str, label_value: bool) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if label_value => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// A float as Prometheus writes one: `+Inf`, `-Inf`, `NaN`, else the
/// shortest decimal that reads back the same.
fn float(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        v.to_string() // NaN is "NaN"
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{StatsBuilder, Store};

    fn summary() -> Summary {
        let mut b = StatsBuilder::new();
        let ok =
            b.counter("rq_total", "Requests\\done\nby class.", &[("class", "2xx"), ("cluster", "a\"b\\c\nd")]).unwrap();
        let active = b.gauge("cx_active", "Open.", &[]).unwrap();
        let latency = b.histogram("rq_seconds", "Latency.", &[("cluster", "api")], &[0.001, 0.5]).unwrap();
        let store = Store::new(&b.build(), 0);
        store.add(ok, 3);
        store.gauge_add(active, -2);
        store.observe(latency, Duration::from_millis(1));
        store.observe(latency, Duration::from_millis(2));
        store.observe(latency, Duration::from_secs(1));
        Summary::of(&[store])
    }

    #[test]
    fn text_is_sorted_escaped_and_filterable() {
        let text = summary().text(None);
        let expected = [
            "nuncio_cx_active: -2",
            r#"nuncio_rq_seconds_count{cluster="api"}: 3"#,
            r#"nuncio_rq_seconds_sum{cluster="api"}: 1.003"#,
            r#"nuncio_rq_seconds{cluster="api",quantile="0.5"}: 0.2505"#,
            r#"nuncio_rq_seconds{cluster="api",quantile="0.9"}: 0.5"#,
            r#"nuncio_rq_seconds{cluster="api",quantile="0.99"}: 0.5"#,
            r#"nuncio_rq_total{class="2xx",cluster="a\"b\\c\nd"}: 3"#,
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
        let filter = Regex::new(r#"cluster="api""#).unwrap();
        assert_eq!(summary().text(Some(&filter)).lines().count(), 5);
        let filter = Regex::new("^nuncio_cx_").unwrap();
        assert_eq!(summary().text(Some(&filter)), "nuncio_cx_active: -2\n");
    }

    #[test]
    fn prometheus_exposition() {
        let expected = r#"# HELP nuncio_cx_active Open.
# TYPE nuncio_cx_active gauge
nuncio_cx_active -2
# HELP nuncio_rq_seconds Latency.
# TYPE nuncio_rq_seconds histogram
nuncio_rq_seconds_bucket{cluster="api",le="0.001"} 1
nuncio_rq_seconds_bucket{cluster="api",le="0.5"} 2
nuncio_rq_seconds_bucket{cluster="api",le="+Inf"} 3
nuncio_rq_seconds_sum{cluster="api"} 1.003
nuncio_rq_seconds_count{cluster="api"} 3
# HELP nuncio_rq_total Requests\\done\nby class.
# TYPE nuncio_rq_total counter
nuncio_rq_total{class="2xx",cluster="a\"b\\c\nd"} 3
"#;
        assert_eq!(summary().prometheus(), expected);
    }

    #[test]
    fn floats_as_prometheus_writes_them() {
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(0.0005), "0.0005");
        assert_eq!(float(10.0), "10");
    }
}
