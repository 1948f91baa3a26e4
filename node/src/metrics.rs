//! A small Prometheus registry: counters and gauges with labels, rendered in
//! the text exposition format (version 0.0.4). Hand-rolled because manx-node
//! exports a dozen series and needs nothing else from a metrics crate.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

#[derive(Debug)]
struct Family {
    help: &'static str,
    kind: MetricKind,
    /// Label set (rendered `k="v",…`) → value.
    series: BTreeMap<String, f64>,
}

/// The registry. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Metrics {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(out, "{k}=\"{v}\"");
    }
    out
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Declare a family so it is exported (with no series) before its first
    /// sample, as Prometheus clients do.
    pub fn describe(&self, name: &'static str, kind: MetricKind, help: &'static str) {
        let mut f = self.families.lock().unwrap();
        f.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
    }

    fn with_series(&self, name: &'static str, labels: &[(&str, &str)], f: impl FnOnce(&mut f64)) {
        let mut fams = self.families.lock().unwrap();
        let fam = fams.entry(name).or_insert_with(|| Family {
            help: "",
            kind: MetricKind::Gauge,
            series: BTreeMap::new(),
        });
        f(fam.series.entry(render_labels(labels)).or_insert(0.0));
    }

    /// Add `by` to a counter.
    pub fn inc(&self, name: &'static str, labels: &[(&str, &str)], by: f64) {
        self.with_series(name, labels, |v| *v += by);
    }

    /// Set a gauge.
    pub fn set(&self, name: &'static str, labels: &[(&str, &str)], value: f64) {
        self.with_series(name, labels, |v| *v = value);
    }

    /// Replace every series of a gauge family (e.g. sessions by state).
    pub fn set_all(&self, name: &'static str, series: &[(Vec<(&str, &str)>, f64)]) {
        let mut fams = self.families.lock().unwrap();
        if let Some(fam) = fams.get_mut(name) {
            fam.series.clear();
            for (labels, v) in series {
                fam.series.insert(render_labels(labels), *v);
            }
        }
    }

    /// Read one series (tests, readiness).
    pub fn get(&self, name: &'static str, labels: &[(&str, &str)]) -> Option<f64> {
        let fams = self.families.lock().unwrap();
        fams.get(name)?.series.get(&render_labels(labels)).copied()
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let fams = self.families.lock().unwrap();
        let mut out = String::new();
        for (name, fam) in fams.iter() {
            let kind = match fam.kind {
                MetricKind::Counter => "counter",
                MetricKind::Gauge => "gauge",
            };
            if !fam.help.is_empty() {
                let _ = writeln!(out, "# HELP {name} {}", fam.help);
            }
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, v) in &fam.series {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        }
        out
    }
}

/// Names of the series manx-node exports.
pub mod names {
    pub const BGP_SESSIONS: &str = "manx_bgp_sessions";
    pub const ROUTES_PROGRAMMED: &str = "manx_routes_programmed";
    pub const RECONCILE_RUNS: &str = "manx_dataplane_reconcile_runs_total";
    pub const RECONCILE_SECONDS: &str = "manx_dataplane_reconcile_seconds_total";
    pub const RECONCILE_LAST_SECONDS: &str = "manx_dataplane_reconcile_last_seconds";
    pub const IPAM_OPERATIONS: &str = "manx_ipam_operations_total";
    pub const DATASTORE_ERRORS: &str = "manx_datastore_errors_total";
    pub const DATASTORE_EVENTS: &str = "manx_datastore_events_total";
    pub const LOCAL_WORKLOADS: &str = "manx_local_workloads";
}

/// A registry with every manx-node family described.
pub fn node_metrics() -> Metrics {
    use names::*;
    let m = Metrics::new();
    m.describe(BGP_SESSIONS, MetricKind::Gauge, "BGP sessions by state.");
    m.describe(
        ROUTES_PROGRAMMED,
        MetricKind::Gauge,
        "Kernel routes Manx owns, by kind.",
    );
    m.describe(
        RECONCILE_RUNS,
        MetricKind::Counter,
        "Dataplane reconcile runs.",
    );
    m.describe(
        RECONCILE_SECONDS,
        MetricKind::Counter,
        "Time spent reconciling the dataplane.",
    );
    m.describe(
        RECONCILE_LAST_SECONDS,
        MetricKind::Gauge,
        "Duration of the last reconcile.",
    );
    m.describe(
        IPAM_OPERATIONS,
        MetricKind::Counter,
        "IPAM operations by kind and outcome.",
    );
    m.describe(
        DATASTORE_ERRORS,
        MetricKind::Counter,
        "Datastore errors by operation.",
    );
    m.describe(
        DATASTORE_EVENTS,
        MetricKind::Counter,
        "Datastore watch events processed.",
    );
    m.describe(
        LOCAL_WORKLOADS,
        MetricKind::Gauge,
        "Workload endpoints on this node.",
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_format_with_escaped_labels() {
        let m = node_metrics();
        m.inc(
            names::IPAM_OPERATIONS,
            &[("op", "assign"), ("result", "ok")],
            1.0,
        );
        m.inc(
            names::IPAM_OPERATIONS,
            &[("op", "assign"), ("result", "ok")],
            2.0,
        );
        m.set(names::LOCAL_WORKLOADS, &[], 4.0);
        m.set(names::BGP_SESSIONS, &[("state", "a\"b")], 1.0);
        let text = m.render();
        assert!(text.contains("# TYPE manx_ipam_operations_total counter"));
        assert!(text.contains("manx_ipam_operations_total{op=\"assign\",result=\"ok\"} 3"));
        assert!(text.contains("manx_local_workloads 4"));
        assert!(text.contains("state=\"a\\\"b\""));
    }
}
