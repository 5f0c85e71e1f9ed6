//! Metrics and logs. The Prometheus recorder is installed once per process; every metric
//! switchyard emits is declared here as a cached handle (a labelled `counter!` lookup costs
//! about a microsecond, a cached handle a few nanoseconds). Names follow Prometheus conventions
//! and are a contract: docs/metrics.md lists them and a test keeps that list true.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::{CommandKind, DeadLetterReason, ExceptionKind, OrderKind, OrderStatus};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static METRICS: OnceLock<Metrics> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
const FAST_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// Installs the Prometheus recorder (once per process) and returns its render handle.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("switchyard_command_latency_seconds".into()),
                LATENCY_BUCKETS,
            )
            .expect("buckets")
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), FAST_BUCKETS)
            .expect("buckets")
            .build_recorder();
        let handle = recorder.handle();
        // In tests several apps share a process; the first recorder wins.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

pub struct Metrics {
    pub orders_received: Vec<Counter>,
    pub orders_rejected: Vec<Counter>,
    pub orders_duplicate: Counter,
    pub order_status: Vec<Counter>,
    pub commands_sent: Vec<Counter>,
    pub results_confirmed: Counter,
    pub results_failed: Counter,
    pub results_timed_out: Counter,
    pub results_late: Counter,
    pub command_latency: Histogram,
    pub retries: Counter,
    pub exceptions: Vec<Counter>,
    pub live_actors: Gauge,
    pub in_flight: Gauge,
    pub pending_commit: Gauge,
    pub outbox_pending: Gauge,
    pub events_published: Counter,
    pub publish_errors: Counter,
    pub store_commits: Counter,
    pub store_batches: Counter,
    pub store_commit_seconds: Histogram,
    pub intake_batch_seconds: Histogram,
    pub registry_meters: Gauge,
    pub registry_rejected: Counter,
    pub actor_activations: Counter,
    pub actor_passivations: Counter,
    /// By type: payment, medical_certificate, approval, weather, emergency.
    pub facts_received: Vec<Counter>,
    pub facts_rejected: Counter,
    /// By verdict: execute, deferred, awaiting_approval, rejected.
    pub policy_decisions: Vec<Counter>,
    pub campaign_releases: Counter,
    pub audit_rows: Counter,
    /// Dead letters that could not carry the whole original record.
    pub dead_letters_truncated: Counter,
    /// 1 while the store accepts writes, 0 while it refuses them (intake paused).
    pub store_available: Gauge,
    pub store_write_failures: Counter,
}

pub const FACT_TYPES: [&str; 5] = [
    "payment",
    "medical_certificate",
    "approval",
    "weather",
    "emergency",
];
pub const VERDICTS: [&str; 4] = ["execute", "deferred", "awaiting_approval", "rejected"];

pub fn fact_received(kind: &str) {
    if let Some(i) = FACT_TYPES.iter().position(|k| *k == kind) {
        metrics().facts_received[i].increment(1);
    }
}

/// Campaign ids that get their own label value; beyond this many, `other` (bounded
/// cardinality).
const CAMPAIGN_LABELS_MAX: usize = 32;

fn campaign_label(id: &str) -> String {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().expect("lock");
    if seen.iter().any(|s| s == id) {
        return id.to_string();
    }
    if seen.len() < CAMPAIGN_LABELS_MAX {
        seen.push(id.to_string());
        return id.to_string();
    }
    "other".into()
}

/// Campaign progress as gauges per campaign (bounded label values).
pub fn campaign_progress(e: &crate::domain::CampaignEvent) {
    let c = campaign_label(&e.campaign_id);
    for (state, v) in [
        ("released", e.released),
        ("remaining", e.remaining),
        ("completed", e.completed),
        ("failed", e.failed),
        ("cancelled", e.cancelled),
        ("deferred", e.deferred),
    ] {
        gauge!("switchyard_campaign_orders", "campaign" => c.clone(), "state" => state)
            .set(v as f64);
    }
    gauge!("switchyard_campaign_rate_per_hour", "campaign" => c.clone())
        .set(e.rate_per_hour as f64);
}

pub fn campaign_released() {
    metrics().campaign_releases.increment(1);
}

pub fn policy_decision(verdict: &str) {
    if let Some(i) = VERDICTS.iter().position(|k| *k == verdict) {
        metrics().policy_decisions[i].increment(1);
    }
}

const EXCEPTION_KINDS: [ExceptionKind; 5] = [
    ExceptionKind::RetriesExhausted,
    ExceptionKind::FieldOrderNeeded,
    ExceptionKind::LoadSideVoltage,
    ExceptionKind::CommandRejected,
    ExceptionKind::OutcomeUnknown,
];

pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| {
        prometheus();
        Metrics {
            orders_received: OrderKind::ALL.iter().map(|k| counter!("switchyard_orders_received_total", "kind" => k.as_str())).collect(),
            orders_rejected: DeadLetterReason::ALL.iter().map(|r| counter!("switchyard_orders_rejected_total", "reason" => r.as_str())).collect(),
            orders_duplicate: counter!("switchyard_orders_duplicate_total"),
            order_status: OrderStatus::ALL.iter().map(|s| counter!("switchyard_order_status_total", "status" => s.as_str())).collect(),
            commands_sent: CommandKind::ALL.iter().map(|k| counter!("switchyard_commands_sent_total", "kind" => k.as_str())).collect(),
            results_confirmed: counter!("switchyard_command_results_total", "outcome" => "confirmed"),
            results_failed: counter!("switchyard_command_results_total", "outcome" => "failed"),
            results_timed_out: counter!("switchyard_command_results_total", "outcome" => "timed_out"),
            results_late: counter!("switchyard_command_results_total", "outcome" => "late"),
            command_latency: histogram!("switchyard_command_latency_seconds"),
            retries: counter!("switchyard_command_retries_total"),
            exceptions: EXCEPTION_KINDS.iter().map(|k| counter!("switchyard_exceptions_total", "kind" => k.as_str())).collect(),
            live_actors: gauge!("switchyard_meter_actors_live"),
            in_flight: gauge!("switchyard_commands_in_flight"),
            pending_commit: gauge!("switchyard_intake_records_pending_commit"),
            outbox_pending: gauge!("switchyard_outbox_pending"),
            events_published: counter!("switchyard_events_published_total"),
            publish_errors: counter!("switchyard_publish_errors_total"),
            store_commits: counter!("switchyard_store_commits_total"),
            store_batches: counter!("switchyard_store_batches_total"),
            store_commit_seconds: histogram!("switchyard_store_commit_seconds"),
            intake_batch_seconds: histogram!("switchyard_intake_batch_seconds"),
            registry_meters: gauge!("switchyard_registry_meters"),
            registry_rejected: counter!("switchyard_registry_records_rejected_total"),
            actor_activations: counter!("switchyard_meter_actor_activations_total"),
            actor_passivations: counter!("switchyard_meter_actor_passivations_total"),
            facts_received: FACT_TYPES.iter().map(|k| counter!("switchyard_facts_received_total", "type" => *k)).collect(),
            facts_rejected: counter!("switchyard_facts_rejected_total"),
            policy_decisions: VERDICTS.iter().map(|v| counter!("switchyard_policy_decisions_total", "verdict" => *v)).collect(),
            campaign_releases: counter!("switchyard_campaign_releases_total"),
            audit_rows: counter!("switchyard_audit_rows_total"),
            dead_letters_truncated: counter!("switchyard_dead_letters_truncated_total"),
            store_available: {
                let g = gauge!("switchyard_store_available");
                g.set(1.0);
                g
            },
            store_write_failures: counter!("switchyard_store_write_failures_total"),
        }
    })
}

/// Records of `topic` gone before switchyard read them (`n` of them).
pub fn records_lost(topic: &str, n: u64) {
    counter!("switchyard_kafka_records_lost_total", "topic" => topic.to_string()).increment(n);
}

/// At most one log line per period for a condition that can repeat thousands of times a
/// second (a failing store, say); the lines in between are counted and reported with the
/// next one.
pub struct LogLimiter {
    /// Milliseconds since [`LogLimiter::epoch`] of the last line logged, plus one (0 = never).
    last_ms: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl LogLimiter {
    pub const fn new() -> LogLimiter {
        LogLimiter {
            last_ms: std::sync::atomic::AtomicU64::new(0),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn epoch() -> std::time::Instant {
        static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
        *EPOCH.get_or_init(std::time::Instant::now)
    }

    /// `Some(suppressed since the last line)` when a line may be logged now.
    pub fn allow(&self, every: Duration) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let now = Self::epoch().elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < every.as_millis() as u64 {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self
            .last_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new()
    }
}

pub fn exception(kind: ExceptionKind) {
    let i = EXCEPTION_KINDS.iter().position(|k| *k == kind).unwrap_or(0);
    metrics().exceptions[i].increment(1);
}

pub(crate) fn store_commit(elapsed: Duration, batches: usize, audit_rows: usize) {
    let m = metrics();
    m.store_commits.increment(1);
    m.audit_rows.increment(audit_rows as u64);
    m.store_batches.increment(batches as u64);
    m.store_commit_seconds.record(elapsed.as_secs_f64());
}

/// Every metric name switchyard registers (kept equal to docs/metrics.md by a test).
pub const METRIC_NAMES: &[&str] = &[
    "switchyard_orders_received_total",
    "switchyard_orders_rejected_total",
    "switchyard_orders_duplicate_total",
    "switchyard_order_status_total",
    "switchyard_commands_sent_total",
    "switchyard_command_results_total",
    "switchyard_command_latency_seconds",
    "switchyard_command_retries_total",
    "switchyard_exceptions_total",
    "switchyard_meter_actors_live",
    "switchyard_commands_in_flight",
    "switchyard_intake_records_pending_commit",
    "switchyard_outbox_pending",
    "switchyard_events_published_total",
    "switchyard_publish_errors_total",
    "switchyard_store_commits_total",
    "switchyard_store_batches_total",
    "switchyard_store_commit_seconds",
    "switchyard_intake_batch_seconds",
    "switchyard_registry_meters",
    "switchyard_registry_records_rejected_total",
    "switchyard_meter_actor_activations_total",
    "switchyard_meter_actor_passivations_total",
    "switchyard_facts_received_total",
    "switchyard_facts_rejected_total",
    "switchyard_policy_decisions_total",
    "switchyard_campaign_releases_total",
    "switchyard_campaign_orders",
    "switchyard_campaign_rate_per_hour",
    "switchyard_audit_rows_total",
    "switchyard_dead_letters_truncated_total",
    "switchyard_store_available",
    "switchyard_store_write_failures_total",
    "switchyard_kafka_records_lost_total",
    "switchyard_dispatch_latency_seconds",
    "switchyard_completion_latency_seconds",
];

/// Internal latency, recorded exactly (HDR histogram, microseconds, 3 significant digits) and
/// as a Prometheus histogram. Excludes head-end time by construction:
/// - dispatch: an order handed to its meter actor (stored and committed by the intake) until
///   its command is handed to the head-end;
/// - completion: a head-end answer handed to the meter actor until the order's final status is
///   durably stored (its event is in the outbox).
///
/// The exact figures are served at `GET /stats/latency` (what the load-test harness reports).
pub struct LatencyProbe {
    exact: std::sync::Mutex<hdrhistogram::Histogram<u64>>,
    prometheus: Histogram,
}

impl LatencyProbe {
    fn new(name: &'static str) -> LatencyProbe {
        LatencyProbe {
            exact: std::sync::Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("bounds"),
            ),
            prometheus: histogram!(name),
        }
    }

    pub fn record(&self, d: Duration) {
        self.prometheus.record(d.as_secs_f64());
        let us = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        if let Ok(mut h) = self.exact.lock() {
            let _ = h.record(us);
        }
    }

    /// Count and percentiles in microseconds since the process started.
    pub fn snapshot(&self) -> LatencySummary {
        let h = self
            .exact
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        LatencySummary {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

pub struct LatencyProbes {
    pub dispatch: LatencyProbe,
    pub completion: LatencyProbe,
}

pub fn latency() -> &'static LatencyProbes {
    static PROBES: OnceLock<LatencyProbes> = OnceLock::new();
    PROBES.get_or_init(|| {
        prometheus();
        LatencyProbes {
            dispatch: LatencyProbe::new("switchyard_dispatch_latency_seconds"),
            completion: LatencyProbe::new("switchyard_completion_latency_seconds"),
        }
    })
}

/// Sets up tracing: text or JSON lines on stderr, filter from `RUST_LOG` or the config.
pub fn init_logging(format: crate::config::LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    use std::io::IsTerminal;
    // Colours only on a terminal: a log file or journald gets plain text an SRE can grep.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        crate::config::LogFormat::Json => builder.json().try_init(),
        crate::config::LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod log_limiter_tests {
    use super::*;

    #[test]
    fn a_limiter_lets_one_line_through_per_period_and_counts_the_rest() {
        let l = LogLimiter::new();
        assert_eq!(l.allow(Duration::from_secs(3600)), Some(0));
        for _ in 0..500 {
            assert_eq!(l.allow(Duration::from_secs(3600)), None);
        }
        // A zero period lets the next line through, reporting what was held back.
        assert_eq!(l.allow(Duration::ZERO), Some(500));
    }
}
