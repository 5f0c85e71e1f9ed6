//! The deploy kit queries only what switchyard exports: every metric named in an expression of
//! the Grafana dashboard (deploy/grafana), the Prometheus rule file (deploy/switchyard-alerts.yml)
//! and the Prometheus Operator's PrometheusRule (deploy/k8s) is one of switchyard's metrics
//! (`observability::CATALOGUE`, which docs/metrics.md and /metrics are held to by
//! tests/contracts.rs), a histogram's by its `_bucket`, `_sum` or `_count` series. And the
//! PrometheusRule carries exactly the rule file's groups (the rule file is the one source).
//! deploy/validate.sh checks the same files with the tools of their own ecosystems
//! (kubernetes-validate, compose-go, Prometheus' rule and PromQL parsers); this test keeps them
//! true in the suite.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use switchyard::observability::{MetricKind, CATALOGUE};

fn read(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every series name switchyard exposes.
fn exported() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for m in CATALOGUE {
        out.insert(m.name.to_string());
        if m.kind == MetricKind::Histogram {
            for s in ["_bucket", "_sum", "_count"] {
                out.insert(format!("{}{s}", m.name));
            }
        }
    }
    out
}

/// The `switchyard_*` identifiers of a PromQL expression (metric names; switchyard's labels
/// and label values never start with `switchyard_`).
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("switchyard_") {
        let start = i + at;
        let boundary =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_' || b[end] == b':')
        {
            end += 1;
        }
        if boundary {
            out.push(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

/// Every `expr` string anywhere in a JSON (or YAML-as-JSON) document.
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

fn yaml(rel: &str) -> Value {
    serde_norway::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Checks every expression of `doc`; returns the distinct metrics it queries.
fn check(rel: &str, doc: &Value) -> BTreeSet<String> {
    let known = exported();
    let mut found = Vec::new();
    exprs(doc, &mut found);
    assert!(!found.is_empty(), "{rel}: no expressions found");
    let mut used = BTreeSet::new();
    for e in &found {
        for m in metrics_in(e) {
            assert!(
                known.contains(&m),
                "{rel} queries {m}, which switchyard does not export (docs/metrics.md lists what it does): {e}"
            );
            used.insert(m);
        }
    }
    used
}

#[test]
fn the_dashboard_queries_only_exported_metrics() {
    let rel = "deploy/grafana/switchyard-dashboard.json";
    let doc: Value = serde_json::from_str(&read(rel)).expect("dashboard is JSON");
    let used = check(rel, &doc);
    // A dashboard for disconnect day: orders, commands, head-end, exceptions, store, campaigns.
    assert!(
        used.len() >= 12,
        "{rel} shows only {} metrics: {used:?}",
        used.len()
    );
    for must in [
        "switchyard_orders_received_total",
        "switchyard_command_latency_seconds_bucket",
        "switchyard_exceptions_total",
    ] {
        assert!(used.contains(must), "{rel} does not show {must}");
    }
}

#[test]
fn the_alert_rules_query_only_exported_metrics_and_the_operator_copy_is_the_same() {
    let file = yaml("deploy/switchyard-alerts.yml");
    let used = check("deploy/switchyard-alerts.yml", &file);
    assert!(used.len() >= 3, "alerts use {used:?}");
    let crd = yaml("deploy/k8s/prometheusrule.yaml");
    check("deploy/k8s/prometheusrule.yaml", &crd);
    assert_eq!(crd["kind"], "PrometheusRule");
    assert_eq!(
        crd["spec"]["groups"], file["groups"],
        "deploy/k8s/prometheusrule.yaml is generated from deploy/switchyard-alerts.yml: run deploy/k8s/gen-prometheusrule.py"
    );
}

#[test]
fn the_metric_name_scan_finds_names_and_only_names() {
    assert_eq!(
        metrics_in(
            r#"histogram_quantile(0.99, sum by (le) (rate(switchyard_command_latency_seconds_bucket{job="switchyard"}[5m]))) / on() switchyard_outbox_pending"#
        ),
        [
            "switchyard_command_latency_seconds_bucket",
            "switchyard_outbox_pending"
        ]
    );
    assert!(metrics_in(r#"up{job="switchyard"} == 0"#).is_empty());
    assert!(metrics_in("my_switchyard_thing").is_empty());
}
