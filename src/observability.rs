//! Metrics and logs. The Prometheus recorder is installed once per process; every metric
//! switchyard emits is declared here as a cached handle (a labelled `counter!` lookup costs
//! about a microsecond, a cached handle a few nanoseconds). Names follow Prometheus conventions
//! and are a contract: docs/metrics.md lists them and a test keeps that list true.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use strum::VariantArray;

use crate::domain::{
    CommandKind, DeadLetterReason, ExceptionKind, FactType, OrderKind, OrderStatus, VerdictKind,
};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static METRICS: OnceLock<Metrics> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
const FAST_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// Installs the Prometheus recorder (once per process) and returns its render handle.
pub(crate) fn prometheus() -> &'static PrometheusHandle {
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
        describe_all();
        gauge!(
            "switchyard_build_info",
            "version" => env!("CARGO_PKG_VERSION"),
            "commit" => GIT_COMMIT,
        )
        .set(1.0);
        business_clock(false, 1.0);
        handle
    })
}

/// Marks the business clock in the metrics (`switchyard_business_clock_*`).
pub(crate) fn business_clock(shifted: bool, speed: f64) {
    gauge!("switchyard_business_clock_shifted").set(if shifted { 1.0 } else { 0.0 });
    gauge!("switchyard_business_clock_speed").set(speed);
}

/// The git commit switchyard was built from (build.rs), or `unknown` (built outside a git
/// work tree, or without git).
pub(crate) const GIT_COMMIT: &str = match option_env!("SWITCHYARD_GIT_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// Gives every metric of [`CATALOGUE`] its `# HELP` text (and unit) in the installed recorder.
fn describe_all() {
    metrics::with_recorder(|r| {
        for m in CATALOGUE {
            let name = metrics::KeyName::from_const_str(m.name);
            let help = metrics::SharedString::const_str(m.help);
            match m.kind {
                MetricKind::Counter => r.describe_counter(name, m.unit, help),
                MetricKind::Gauge => r.describe_gauge(name, m.unit, help),
                MetricKind::Histogram => r.describe_histogram(name, m.unit, help),
            }
        }
    });
}

pub struct Metrics {
    pub(crate) orders_received: Vec<Counter>,
    pub(crate) orders_rejected: Vec<Counter>,
    pub(crate) orders_duplicate: Counter,
    pub order_status: Vec<Counter>,
    pub(crate) commands_sent: Vec<Counter>,
    pub(crate) results_confirmed: Counter,
    pub(crate) results_failed: Counter,
    pub(crate) results_timed_out: Counter,
    pub(crate) results_late: Counter,
    pub(crate) command_latency: Histogram,
    pub(crate) retries: Counter,
    pub(crate) commands_not_sent: Counter,
    pub(crate) recovering: Gauge,
    pub(crate) wakes_deferred: Counter,
    pub(crate) exceptions: Vec<Counter>,
    /// By failure code (its class a label too).
    pub(crate) command_failures: Vec<Counter>,
    pub(crate) live_actors: Gauge,
    pub(crate) in_flight: Gauge,
    pub(crate) pending_commit: Gauge,
    pub(crate) intake_window: Gauge,
    pub(crate) outbox_pending: Gauge,
    pub(crate) events_published: Counter,
    pub(crate) publish_errors: Counter,
    pub(crate) store_commits: Counter,
    pub(crate) store_batches: Counter,
    pub(crate) store_commit_seconds: Histogram,
    pub(crate) store_queue_seconds: Histogram,
    pub(crate) store_answer_seconds: Histogram,
    pub(crate) store_round_seconds: Histogram,
    pub(crate) intake_batch_seconds: Histogram,
    pub(crate) handover_seconds: Histogram,
    pub(crate) owned_units: Gauge,
    pub(crate) leases_lost: Counter,
    pub(crate) commands_fenced: Counter,
    pub(crate) registry_meters: Gauge,
    pub(crate) registry_rejected: Counter,
    pub(crate) actor_activations: Counter,
    pub(crate) actor_passivations: Counter,
    /// By type: payment, medical_certificate, approval, weather, emergency.
    pub(crate) facts_received: Vec<Counter>,
    pub(crate) facts_rejected: Counter,
    /// Reads by outcome: `ignored` (no meter watches it), `delivered` (its meter heard it),
    /// `rejected` (dead-lettered).
    pub(crate) reads_ignored: Counter,
    pub(crate) reads_delivered: Counter,
    pub(crate) reads_rejected: Counter,
    /// Meters whose reads are watched here (cut, post-disconnect watchdog).
    pub(crate) read_watches: Gauge,
    /// By verdict: execute, deferred, awaiting_approval, rejected.
    pub(crate) policy_decisions: Vec<Counter>,
    pub(crate) campaign_releases: Counter,
    pub(crate) audit_rows: Counter,
    /// Dead letters that could not carry the whole original record.
    pub(crate) dead_letters_truncated: Counter,
    /// 1 while the store accepts writes, 0 while it refuses them (intake paused).
    pub(crate) store_available: Gauge,
    pub(crate) store_write_failures: Counter,
    pub(crate) store_read_failures: Counter,
}

pub(crate) fn fact_received(kind: FactType) {
    metrics().facts_received[kind as usize].increment(1);
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
pub(crate) fn campaign_progress(e: &crate::domain::CampaignEvent) {
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

/// Open orders of this instance's meters by service-level class and state (`meter::sla_watch`).
pub(crate) fn orders_sla(counts: &[(&'static str, &'static str, u64)]) {
    for (class, state, n) in counts {
        gauge!("switchyard_orders_sla", "class" => *class, "state" => *state).set(*n as f64);
    }
}

pub(crate) fn campaign_released() {
    metrics().campaign_releases.increment(1);
}

pub(crate) fn policy_decision(verdict: VerdictKind) {
    metrics().policy_decisions[verdict as usize].increment(1);
}

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
            commands_not_sent: counter!("switchyard_commands_not_sent_total"),
            recovering: gauge!("switchyard_recovery_meters_pending"),
            wakes_deferred: counter!("switchyard_meter_wakes_deferred_total"),
            exceptions: ExceptionKind::VARIANTS.iter().map(|k| counter!("switchyard_exceptions_total", "kind" => k.as_str())).collect(),
            command_failures: <crate::domain::FailureCode as strum::VariantArray>::VARIANTS
                .iter()
                .map(|c| {
                    let class: &'static str = c.class().into();
                    counter!("switchyard_command_failures_total", "code" => c.as_str(), "class" => class)
                })
                .collect(),
            live_actors: gauge!("switchyard_meter_actors_live"),
            in_flight: gauge!("switchyard_commands_in_flight"),
            pending_commit: gauge!("switchyard_intake_records_pending_commit"),
            intake_window: gauge!("switchyard_intake_window_orders"),
            outbox_pending: gauge!("switchyard_outbox_pending"),
            events_published: counter!("switchyard_events_published_total"),
            publish_errors: counter!("switchyard_publish_errors_total"),
            store_commits: counter!("switchyard_store_commits_total"),
            store_batches: counter!("switchyard_store_batches_total"),
            store_commit_seconds: histogram!("switchyard_store_commit_seconds"),
            store_queue_seconds: histogram!("switchyard_store_queue_seconds"),
            store_answer_seconds: histogram!("switchyard_store_answer_seconds"),
            store_round_seconds: histogram!("switchyard_store_round_seconds"),
            intake_batch_seconds: histogram!("switchyard_intake_batch_seconds"),
            handover_seconds: histogram!("switchyard_handover_seconds"),
            owned_units: gauge!("switchyard_owned_units"),
            leases_lost: counter!("switchyard_unit_leases_lost_total"),
            commands_fenced: counter!("switchyard_commands_fenced_total"),
            registry_meters: gauge!("switchyard_registry_meters"),
            registry_rejected: counter!("switchyard_registry_records_rejected_total"),
            actor_activations: counter!("switchyard_meter_actor_activations_total"),
            actor_passivations: counter!("switchyard_meter_actor_passivations_total"),
            facts_received: FactType::VARIANTS.iter().map(|k| counter!("switchyard_facts_received_total", "type" => <&str>::from(*k))).collect(),
            facts_rejected: counter!("switchyard_facts_rejected_total"),
            reads_ignored: counter!("switchyard_reads_total", "outcome" => "ignored"),
            reads_delivered: counter!("switchyard_reads_total", "outcome" => "delivered"),
            reads_rejected: counter!("switchyard_reads_total", "outcome" => "rejected"),
            read_watches: gauge!("switchyard_read_watches"),
            policy_decisions: VerdictKind::VARIANTS.iter().map(|v| counter!("switchyard_policy_decisions_total", "verdict" => <&str>::from(*v))).collect(),
            campaign_releases: counter!("switchyard_campaign_releases_total"),
            audit_rows: counter!("switchyard_audit_rows_total"),
            dead_letters_truncated: counter!("switchyard_dead_letters_truncated_total"),
            store_available: {
                let g = gauge!("switchyard_store_available");
                g.set(1.0);
                g
            },
            store_write_failures: counter!("switchyard_store_write_failures_total"),
            store_read_failures: counter!("switchyard_store_read_failures_total"),
        }
    })
}

/// Records of `topic` gone before switchyard read them (`n` of them).
pub(crate) fn records_lost(topic: &str, n: u64) {
    counter!("switchyard_kafka_records_lost_total", "topic" => topic.to_string()).increment(n);
}

/// At most one log line per period for a condition that can repeat thousands of times a
/// second (a failing store, say); the lines in between are counted and reported with the
/// next one.
pub(crate) struct LogLimiter {
    /// Milliseconds since [`LogLimiter::epoch`] of the last line logged, plus one (0 = never).
    last_ms: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl LogLimiter {
    pub(crate) const fn new() -> LogLimiter {
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
    pub(crate) fn allow(&self, every: Duration) -> Option<u64> {
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

pub(crate) fn exception(kind: ExceptionKind) {
    metrics().exceptions[kind as usize].increment(1);
}

/// A head-end's circuit breaker is now `state` (0 closed, 1 open, 2 half-open); `opened`
/// counts an opening.
pub(crate) fn head_end_breaker(head_end: &str, state: f64, opened: bool) {
    if opened {
        metrics::counter!("switchyard_head_end_breaker_opens_total", "head_end" => head_end.to_string())
            .increment(1);
    }
    metrics::gauge!("switchyard_head_end_breaker_state", "head_end" => head_end.to_string())
        .set(state);
}

/// A head-end answered `failed` with `code`.
pub(crate) fn command_failed(code: crate::domain::FailureCode) {
    metrics().command_failures[code as usize].increment(1);
}

pub(crate) fn store_commit(elapsed: Duration, batches: usize, audit_rows: usize) {
    let m = metrics();
    m.store_commits.increment(1);
    m.audit_rows.increment(audit_rows as u64);
    m.store_batches.increment(batches as u64);
    m.store_commit_seconds.record(elapsed.as_secs_f64());
}

/// A write's answer on its way back: the writer sent it → the caller's task has it.
pub(crate) fn store_answered(took: Duration) {
    metrics().store_answer_seconds.record(took.as_secs_f64());
}

/// A write request's wait for its store writer: sent → the writer's round took it; then its
/// round: taken → answered. Queue, round and answer add up to the caller's wait for the write.
/// (The round is recorded per request, unlike `store_commit_seconds` per round: a long round
/// holds every request in it, so most requests see rounds longer than the typical round.)
pub(crate) fn store_queued(waited: Duration, round: Duration) {
    let m = metrics();
    m.store_queue_seconds.record(waited.as_secs_f64());
    m.store_round_seconds.record(round.as_secs_f64());
}

/// Prometheus type of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    /// As in a `# TYPE` line (and the `type` column of docs/metrics.md).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One metric switchyard emits: its name, type, unit and `# HELP` text.
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    pub name: &'static str,
    pub kind: MetricKind,
    pub(crate) unit: Option<Unit>,
    /// The `# HELP` text: the `meaning` column of docs/metrics.md without its backquotes (a
    /// test keeps the two equal).
    pub help: &'static str,
}

const fn spec(
    name: &'static str,
    kind: MetricKind,
    unit: Option<Unit>,
    help: &'static str,
) -> MetricSpec {
    MetricSpec {
        name,
        kind,
        unit,
        help,
    }
}

/// Every metric switchyard registers, with its `# HELP` text: described to the recorder when
/// it is installed, and kept equal to docs/metrics.md (names, types, texts) by a test.
pub const CATALOGUE: &[MetricSpec] = &[
    spec(
        "switchyard_orders_received_total",
        MetricKind::Counter,
        None,
        "orders accepted (validated, stored)",
    ),
    spec(
        "switchyard_orders_rejected_total",
        MetricKind::Counter,
        None,
        "records refused to the dead-letter topic",
    ),
    spec(
        "switchyard_orders_duplicate_total",
        MetricKind::Counter,
        None,
        "redelivered / duplicate order ids ignored",
    ),
    spec(
        "switchyard_order_status_total",
        MetricKind::Counter,
        None,
        "order status changes (one per event)",
    ),
    spec(
        "switchyard_commands_sent_total",
        MetricKind::Counter,
        None,
        "commands handed to the head-end",
    ),
    spec(
        "switchyard_command_results_total",
        MetricKind::Counter,
        None,
        "answers (or their absence) per command",
    ),
    spec(
        "switchyard_command_latency_seconds",
        MetricKind::Histogram,
        Some(Unit::Seconds),
        "command handed over → answer (including head-end time)",
    ),
    spec(
        "switchyard_command_retries_total",
        MetricKind::Counter,
        None,
        "retries scheduled after a retryable failure",
    ),
    spec(
        "switchyard_commands_not_sent_total",
        MetricKind::Counter,
        None,
        "disconnects stored but not sent: their policy decision was over 10 s old when the store confirmed the write (a slow store); decided again, not counted as attempts",
    ),
    spec(
        "switchyard_meter_wakes_deferred_total",
        MetricKind::Counter,
        None,
        "meter wake-ups (retries, holds coming due) put off by up to a second because the store's writers were behind",
    ),
    spec(
        "switchyard_recovery_meters_pending",
        MetricKind::Gauge,
        None,
        "meters with open work at startup not yet resumed (recovery is paced by the store's write queue)",
    ),
    spec(
        "switchyard_command_failures_total",
        MetricKind::Counter,
        None,
        "failed answers of the head-end, by canonical failure code and class (communication, device, safety, configuration)",
    ),
    spec(
        "switchyard_head_end_breaker_state",
        MetricKind::Gauge,
        None,
        "the circuit breaker of each head-end this instance sent commands to: 0 closed, 1 open (commands held), 2 half-open (probing)",
    ),
    spec(
        "switchyard_head_end_breaker_opens_total",
        MetricKind::Counter,
        None,
        "times a head-end's circuit breaker opened (a burst of communication failures or missed deadlines, or a failed probe)",
    ),
    spec(
        "switchyard_exceptions_total",
        MetricKind::Counter,
        None,
        "exceptions raised for a person",
    ),
    spec(
        "switchyard_meter_actors_live",
        MetricKind::Gauge,
        None,
        "live meter actors (active meters)",
    ),
    spec(
        "switchyard_commands_in_flight",
        MetricKind::Gauge,
        None,
        "commands awaiting an answer",
    ),
    spec(
        "switchyard_intake_records_pending_commit",
        MetricKind::Gauge,
        None,
        "records read from the orders topic, not yet stored and committed",
    ),
    spec(
        "switchyard_intake_window_orders",
        MetricKind::Gauge,
        None,
        "orders handed to their meters whose first step is not stored yet (the intake waits while kafka.intake_window are)",
    ),
    spec(
        "switchyard_outbox_pending",
        MetricKind::Gauge,
        None,
        "events committed to the outbox, not yet acknowledged by Kafka",
    ),
    spec(
        "switchyard_events_published_total",
        MetricKind::Counter,
        None,
        "order events and exceptions acknowledged by Kafka",
    ),
    spec(
        "switchyard_publish_errors_total",
        MetricKind::Counter,
        None,
        "produce errors (retried)",
    ),
    spec(
        "switchyard_store_commits_total",
        MetricKind::Counter,
        None,
        "store transactions (group commits)",
    ),
    spec(
        "switchyard_store_batches_total",
        MetricKind::Counter,
        None,
        "write batches; batches / commits = group-commit factor",
    ),
    spec(
        "switchyard_store_commit_seconds",
        MetricKind::Histogram,
        Some(Unit::Seconds),
        "duration of one store transaction including fsync",
    ),
    spec(
        "switchyard_store_queue_seconds",
        MetricKind::Histogram,
        Some(Unit::Seconds),
        "how long a write request waited for its store writer to take it into a round",
    ),
    spec(
        "switchyard_store_answer_seconds",
        MetricKind::Histogram,
        Some(Unit::Seconds),
        "how long a store writer's answer took to reach the task that waits for it",
    ),
    spec(
        "switchyard_store_round_seconds",
        MetricKind::Histogram,
        Some(Unit::Seconds),
        "how long the round that took a write request ran until it answered, per request (queue, round and answer add up to a write's wait)",
    ),
    spec(
        "switchyard_store_checkpoint_seconds",
        MetricKind::Histogram,
        Some(Unit::Seconds),
        "embedded store: one checkpoint (a synced commit of a file, after which the write-ahead log records it includes are dropped); a meter shard's writes do not wait for it (its applier does), the control file's do",
    ),
    spec(
        "switchyard_store_apply_seconds",
        MetricKind::Histogram,
        Some(Unit::Seconds),
        "embedded store: one transaction of a meter shard's applier, which puts writes already durable in the write-ahead log (and acknowledged) in the file, as many rounds as have queued",
    ),
    spec(
        "switchyard_store_wal_bytes_total",
        MetricKind::Counter,
        None,
        "embedded store: bytes of write-ahead log records made durable and checkpointed",
    ),
    spec(
        "switchyard_intake_batch_seconds",
        MetricKind::Histogram,
        Some(Unit::Seconds),
        "one intake batch: validate, dead-letter, store, offsets, deliver",
    ),
    spec(
        "switchyard_handover_seconds",
        MetricKind::Histogram,
        Some(Unit::Seconds),
        "from a group assignment to its units' open work resumed (their facts applied, their open work read)",
    ),
    spec(
        "switchyard_owned_units",
        MetricKind::Gauge,
        None,
        "ownership units (partitions of the orders topic) this instance owns",
    ),
    spec(
        "switchyard_unit_leases_lost_total",
        MetricKind::Counter,
        None,
        "unit leases this instance held and found taken by another instance at renewal (it was frozen or cut off past its lease: it stopped commanding and writing for those meters)",
    ),
    spec(
        "switchyard_commands_fenced_total",
        MetricKind::Counter,
        None,
        "commands stored but not sent because their meter's unit was no longer leased here when the write returned (revoked, or the lease lapsed); the new owner status-checks them",
    ),
    spec(
        "switchyard_registry_meters",
        MetricKind::Gauge,
        None,
        "meters in the registry",
    ),
    spec(
        "switchyard_registry_records_rejected_total",
        MetricKind::Counter,
        None,
        "registry records dead-lettered",
    ),
    spec(
        "switchyard_meter_actor_activations_total",
        MetricKind::Counter,
        None,
        "meter actors started",
    ),
    spec(
        "switchyard_meter_actor_passivations_total",
        MetricKind::Counter,
        None,
        "idle meter actors stopped (state stays in the store)",
    ),
    spec(
        "switchyard_facts_received_total",
        MetricKind::Counter,
        None,
        "policy facts accepted",
    ),
    spec(
        "switchyard_facts_rejected_total",
        MetricKind::Counter,
        None,
        "policy facts dead-lettered (invalid_fact, unknown_meter)",
    ),
    spec(
        "switchyard_reads_total",
        MetricKind::Counter,
        None,
        "meter reads by outcome: ignored (no meter watches it), delivered (its meter heard it), rejected (dead-lettered)",
    ),
    spec(
        "switchyard_read_watches",
        MetricKind::Gauge,
        None,
        "meters whose reads are watched after a cut (post-disconnect watchdog)",
    ),
    spec(
        "switchyard_policy_decisions_total",
        MetricKind::Counter,
        None,
        "policy decisions recorded (a held order re-decided with the same outcome is not counted again)",
    ),
    spec(
        "switchyard_campaign_releases_total",
        MetricKind::Counter,
        None,
        "campaign orders released to their meters",
    ),
    spec(
        "switchyard_campaign_orders",
        MetricKind::Gauge,
        None,
        "progress of each campaign, updated with every campaign event",
    ),
    spec(
        "switchyard_orders_sla",
        MetricKind::Gauge,
        None,
        "open orders of this instance's meters by service-level class and state, counted every sla.sweep_secs",
    ),
    spec(
        "switchyard_campaign_rate_per_hour",
        MetricKind::Gauge,
        None,
        "the release rate in force",
    ),
    spec(
        "switchyard_audit_rows_total",
        MetricKind::Counter,
        None,
        "audit rows durably written",
    ),
    spec(
        "switchyard_dead_letters_truncated_total",
        MetricKind::Counter,
        None,
        "records too large to dead-letter whole, dead-lettered with a truncated value (switchyard.dlq.truncated header; the whole record stays at its source position)",
    ),
    spec(
        "switchyard_store_available",
        MetricKind::Gauge,
        None,
        "1 while the store accepts writes; 0 while it refuses them or fails the reads the intake needs (a full disk, a cluster out of reach): the intake is paused and /readyz answers 503 with the reason until it recovers",
    ),
    spec(
        "switchyard_store_write_failures_total",
        MetricKind::Counter,
        None,
        "store transactions that failed (each is retried; nothing acknowledged is lost)",
    ),
    spec(
        "switchyard_store_read_failures_total",
        MetricKind::Counter,
        None,
        "reads the service cannot go on without that failed (the intake's duplicate check): each pauses the intake like a failed write and is retried",
    ),
    spec(
        "switchyard_kafka_records_lost_total",
        MetricKind::Counter,
        None,
        "records that were gone from a topic (retention, or the embedded Kafka's ~5 MB per partition) before switchyard read them: orders or facts lost upstream of switchyard, to be replayed from their source",
    ),
    spec(
        "switchyard_dispatch_latency_seconds",
        MetricKind::Histogram,
        Some(Unit::Seconds),
        "an order handed to its meter actor (stored and committed by the intake) → its command handed to the head-end (first attempt; head-end time excluded)",
    ),
    spec(
        "switchyard_completion_latency_seconds",
        MetricKind::Histogram,
        Some(Unit::Seconds),
        "a head-end answer handed to the meter actor → the order's final status durably stored",
    ),
    spec(
        "switchyard_order_queue_seconds",
        MetricKind::Histogram,
        Some(Unit::Seconds),
        "dispatch, first stage: an order handed to its meter actor → the actor's handler takes it (mailbox, and the actor's start when it was not live)",
    ),
    spec(
        "switchyard_order_write_seconds",
        MetricKind::Histogram,
        Some(Unit::Seconds),
        "dispatch, second stage: the order's first step submitted to the store → durable (the store's queue and commit)",
    ),
    spec(
        "switchyard_build_info",
        MetricKind::Gauge,
        None,
        "always 1; the labels say which build is running",
    ),
    spec(
        "switchyard_business_clock_shifted",
        MetricKind::Gauge,
        None,
        "1 while business time is shifted for a UAT run (clock.start_at or clock.speed set): decisions are made for the UAT date, not today; 0 on the wall clock",
    ),
    spec(
        "switchyard_business_clock_speed",
        MetricKind::Gauge,
        None,
        "business seconds per wall second (clock.speed; 1 on the wall clock)",
    ),
];

/// Internal latency, recorded exactly (HDR histogram, microseconds, 3 significant digits) and
/// as a Prometheus histogram. Excludes head-end time by construction:
/// - dispatch: an order handed to its meter actor (stored and committed by the intake) until
///   its command is handed to the head-end;
/// - completion: a head-end answer handed to the meter actor until the order's final status is
///   durably stored (its event is in the outbox).
///
/// The exact figures are served at `GET /stats/latency` (what the load-test harness reports).
pub(crate) struct LatencyProbe {
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

    pub(crate) fn record(&self, d: Duration) {
        self.prometheus.record(d.as_secs_f64());
        let us = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        if let Ok(mut h) = self.exact.lock() {
            let _ = h.record(us);
        }
    }

    /// Count and percentiles in microseconds since the process started.
    pub(crate) fn snapshot(&self) -> LatencySummary {
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
    pub(crate) max_us: u64,
}

pub(crate) struct LatencyProbes {
    pub(crate) dispatch: LatencyProbe,
    pub(crate) completion: LatencyProbe,
    /// Stages of the dispatch: the actor's mailbox, then the step's write.
    pub(crate) order_queue: LatencyProbe,
    pub(crate) order_write: LatencyProbe,
}

pub(crate) fn latency() -> &'static LatencyProbes {
    static PROBES: OnceLock<LatencyProbes> = OnceLock::new();
    PROBES.get_or_init(|| {
        prometheus();
        LatencyProbes {
            dispatch: LatencyProbe::new("switchyard_dispatch_latency_seconds"),
            completion: LatencyProbe::new("switchyard_completion_latency_seconds"),
            order_queue: LatencyProbe::new("switchyard_order_queue_seconds"),
            order_write: LatencyProbe::new("switchyard_order_write_seconds"),
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

#[cfg(test)]
mod catalogue_tests {
    use super::*;

    /// Registers (and where needed records into) every metric switchyard emits, through the
    /// functions the code uses, and returns the Prometheus exposition.
    fn render_after_touching_every_metric() -> String {
        let m = metrics();
        m.command_latency.record(0.2);
        m.store_commit_seconds.record(0.002);
        store_queued(Duration::from_micros(50), Duration::from_micros(900));
        m.intake_batch_seconds.record(0.003);
        latency().dispatch.record(Duration::from_micros(500));
        latency().completion.record(Duration::from_micros(700));
        latency().order_queue.record(Duration::from_micros(100));
        latency().order_write.record(Duration::from_micros(300));
        crate::store::wal::record_checkpoint(Duration::from_millis(40), 4096);
        crate::store::backlog::record_apply(Duration::from_millis(3));
        records_lost("switchyard.catalogue-test.v1", 0);
        campaign_progress(&crate::domain::CampaignEvent {
            schema_version: 1,
            campaign_id: "CATALOGUE-TEST".into(),
            event: "progress".into(),
            status: crate::domain::CampaignStatus::Active,
            at: jiff::Timestamp::UNIX_EPOCH,
            rate_per_hour: 1,
            total: 0,
            released: 0,
            remaining: 0,
            completed: 0,
            failed: 0,
            cancelled: 0,
            deferred: 0,
            expected_finish: None,
            by: None,
        });
        orders_sla(&[("p1", "breached", 0)]);
        // A head-end whose breaker opens (state gauge and opens counter).
        head_end_breaker("CATALOGUE-TEST", 1.0, true);
        prometheus().render()
    }

    #[test]
    fn every_exposed_metric_has_help_and_is_in_the_catalogue() {
        let text = render_after_touching_every_metric();
        let mut helped = std::collections::BTreeSet::new();
        let mut typed = std::collections::BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("a HELP line has a text");
                assert!(!help.trim().is_empty(), "empty HELP for {name}");
                helped.insert(name.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("a TYPE line has a type");
                assert!(
                    helped.contains(name),
                    "`# TYPE {name}` without a `# HELP {name}` line before it:\n{text}"
                );
                typed.insert(name.to_string(), kind.to_string());
            }
        }
        for spec in CATALOGUE {
            assert_eq!(
                typed.get(spec.name).map(String::as_str),
                Some(spec.kind.as_str()),
                "{} is not exposed as a {}",
                spec.name,
                spec.kind.as_str()
            );
        }
        for name in typed.keys().filter(|n| n.starts_with("switchyard_")) {
            assert!(
                CATALOGUE.iter().any(|s| s.name == name),
                "{name} is exposed but not in CATALOGUE"
            );
        }
        let info = text
            .lines()
            .find(|l| l.starts_with("switchyard_build_info{"))
            .expect("build_info exposed");
        assert!(
            info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
                && info.contains(&format!("commit=\"{GIT_COMMIT}\""))
                && info.ends_with(" 1"),
            "{info}"
        );
    }

    #[test]
    fn catalogue_names_are_unique_and_conventional() {
        let mut seen = std::collections::BTreeSet::new();
        for s in CATALOGUE {
            assert!(seen.insert(s.name), "{} twice", s.name);
            assert!(s.name.starts_with("switchyard_"), "{}", s.name);
            assert_eq!(
                s.kind == MetricKind::Counter,
                s.name.ends_with("_total"),
                "counters, and only counters, end in _total: {}",
                s.name
            );
            if s.name.ends_with("_seconds") {
                assert_eq!(s.unit, Some(Unit::Seconds), "{}", s.name);
            }
            assert!(
                !s.help.contains('`') && !s.help.contains('\n'),
                "{}",
                s.name
            );
        }
    }

    /// `promtool check metrics` on the exposition (needs promtool on the PATH, e.g. Debian's
    /// `prometheus` package): `cargo test --lib observability -- --ignored`.
    #[test]
    #[ignore = "needs promtool"]
    fn promtool_accepts_the_exposition() {
        use std::io::Write;
        let text = render_after_touching_every_metric();
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool on the PATH");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
