//! The load-test report: what was measured, next to the raw limit of the part it uses (measured
//! in the same run) and the scenario's targets; written as `report.json` (here: the data, read
//! back by `--render`), `report.md` ([`table`]: the summary table) and SVG plots ([`plots`]).

mod plots;
mod table;

use std::path::Path;

use serde::{Deserialize, Serialize};
use switchyard::observability::LatencySummary;

use crate::scenario::Scenario;

/// One scrape of the switchyard process (`life` counts restarts: counters start again at 0).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    pub t: f64,
    pub life: u32,
    pub received: f64,
    pub terminal: f64,
    pub commands: f64,
    pub audit_rows: f64,
    pub releases: f64,
    pub in_flight: f64,
    pub live_actors: f64,
    pub pending_commit: f64,
    pub outbox_pending: f64,
    pub timed_out: f64,
    pub rss: u64,
    /// Meter reads taken (`switchyard_reads_total`, every outcome).
    #[serde(default)]
    pub reads: f64,
    /// Times a head-end's circuit breaker opened (`switchyard_head_end_breaker_opens_total`).
    #[serde(default)]
    pub breaker_opens: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub os: String,
}

impl Machine {
    pub fn here() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let mem_kb = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        let os = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| format!("Linux {}", s.trim()))
            .unwrap_or_else(|_| std::env::consts::OS.into());
        Machine {
            cpu,
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_gib: mem_kb / (1024.0 * 1024.0),
            os,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Raw {
    /// Bare librdkafka consumer on the same orders topic, records/s.
    pub consume_per_sec: f64,
    /// Bare durable appends, 1,000 audit rows per transaction, to a fresh store on the same
    /// disk, rows/s.
    pub store_append_rows_per_sec: f64,
    /// What measured `store_append_rows_per_sec` when it was not the embedded store's bare
    /// appends (the ScyllaDB store: bare CQL audit inserts at the store's concurrency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_what: Option<String>,
    /// Bare librdkafka consumer on the reads topic, records/s (scenarios with meter reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consume_reads_per_sec: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recovery {
    pub open_orders: u64,
    pub killed_at_s: f64,
    /// From restart to `/readyz` (registry replayed, open work scanned, intake running).
    pub ready_secs: f64,
    /// From restart until every meter with open work was handed back its work (switchyard's
    /// recovery is paced by its store after `/readyz`; `switchyard_recovery_meters_pending`
    /// reached 0). Absent in reports from before 2026-12-03 afternoon.
    #[serde(default)]
    pub resumed_secs: Option<f64>,
    /// Commands in flight when it was killed.
    #[serde(default)]
    pub in_flight_at_kill: u64,
    /// The scenario's `kill_at_in_flight` was never reached: the kill came when the peak had
    /// passed (every order accepted, in flight 10 % below its peak).
    #[serde(default)]
    pub trigger_missed: bool,
}

/// What the store's writers waited on over a life, from switchyard's metrics
/// (`switchyard_store_checkpoint_seconds`, `switchyard_store_round_seconds`): the write stage's
/// tail is the checkpoints a round queues behind and the rounds themselves
/// (docs/architecture.md, "Steady's tail measured again").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StoreWaits {
    /// Checkpoints (synced redb commits) over all files, their mean, and how many took longer
    /// than 100 ms.
    pub checkpoints: u64,
    pub checkpoint_mean_ms: f64,
    /// (`None`: switchyard's histogram has no 0.1 s bucket.)
    pub checkpoints_over_100ms: Option<u64>,
    /// Write requests answered, the mean of their round (taken by the writer → answered), and
    /// the share of them whose round took longer than 100 ms.
    pub requests: u64,
    pub round_mean_ms: f64,
    pub rounds_over_100ms: Option<f64>,
}

pub(crate) struct Inputs {
    pub scenario: Scenario,
    pub broker: String,
    pub store: String,
    pub machine: Machine,
    pub command: String,
    pub produced: usize,
    pub expected_final: usize,
    /// Distinct expected orders with a final status (from the order events).
    pub orders_final: u64,
    /// Distinct other orders with a final status.
    pub other_final: u64,
    /// Distinct orders held by a down head-end (a `deferred` event `head_end_unavailable`).
    pub held_by_head_end: u64,
    /// Distinct orders that failed, by the reason of their `failed` event.
    pub failed_by_reason: std::collections::BTreeMap<String, u64>,
    pub timed_out: bool,
    pub baseline_rss: u64,
    pub baseline_ready_secs: f64,
    pub rss_ready: u64,
    pub peak_rss: u64,
    pub startup_secs: f64,
    pub registry_produce_secs: f64,
    pub preload_produce_secs: f64,
    pub samples: Vec<Sample>,
    pub storm_at: Option<f64>,
    pub latency: Option<(LatencySummary, LatencySummary)>,
    pub latency_before_kill: Option<(LatencySummary, LatencySummary)>,
    /// The dispatch's stages in the last life: the actor's mailbox, then the step's write.
    pub stages: Option<(LatencySummary, LatencySummary)>,
    /// The store writers' checkpoints and rounds in the last life.
    pub store_waits: Option<StoreWaits>,
    pub recovery: Option<Recovery>,
    pub raw: Raw,
    pub actor_memory: Option<ActorMemory>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub orders_produced: usize,
    pub orders_accepted: u64,
    /// Distinct orders of the `expected_final` set that reached a final status (counted once
    /// each from the order-events topic, never more than `expected_final`).
    pub orders_final: u64,
    pub expected_final: usize,
    /// Distinct orders outside that set that reached a final status too (campaign orders the
    /// campaign released, on meters the storm did not touch).
    #[serde(default)]
    pub other_final: u64,
    pub timed_out: bool,
    pub ingest_per_sec: f64,
    pub ingest_peak_1s: f64,
    pub end_to_end_per_sec: f64,
    pub end_to_end_peak_1s: f64,
    pub end_to_end_vs_raw_consume: f64,
    pub ingest_vs_raw_consume: f64,
    pub audit_rows_per_sec: f64,
    pub audit_rows_peak_1s: f64,
    pub audit_vs_raw_append: f64,
    pub dispatch: Option<LatencySummary>,
    pub completion: Option<LatencySummary>,
    /// The dispatch's stages (last life): the actor's mailbox, then the order step's write.
    #[serde(default)]
    pub dispatch_stages: Option<(LatencySummary, LatencySummary)>,
    /// What the store's writers waited on in the last life (embedded store; from its metrics).
    /// Absent in reports from before 2026-12-07 night.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_waits: Option<StoreWaits>,
    pub peak_in_flight: u64,
    pub peak_live_actors: u64,
    /// Commands that timed out before the kill (or in the only life).
    pub timed_out_commands: u64,
    /// Commands that timed out after a restart: those whose deadline ran out while the
    /// process was down are expected here, so they are reported apart.
    #[serde(default)]
    pub timed_out_after_restart: u64,
    pub longest_stall_s: f64,
    pub startup_secs: f64,
    pub baseline_rss_bytes: u64,
    pub rss_ready_bytes: u64,
    pub peak_rss_bytes: u64,
    pub bytes_per_registered_meter: f64,
    pub bytes_per_live_actor: Option<f64>,
    /// The actor's own overhead and with one open order, measured apart after the run with a
    /// counting allocator (scenarios that test memory per actor and reached 10,000 live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_memory: Option<ActorMemory>,
    pub campaign_releases: u64,
    pub campaign_releases_per_hour: Option<f64>,
    /// Meter reads taken per second, first to last (scenarios with meter reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads_per_sec: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads_peak_1s: Option<f64>,
    #[serde(default)]
    pub reads_taken: u64,
    /// With head-end outages in the scenario: what the breaker did to the orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage: Option<OutageSummary>,
}

/// Memory per live meter actor, measured apart after the run by `switchyard-actor-memory` (the
/// service's bench `actor_memory` built as a binary): `meters` actors on the real directory,
/// store and policy, one arbiter, a counting global allocator. Heap bytes held per actor
/// (exact, no allocator or page noise) and the resident-set growth beside them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ActorMemory {
    pub meters: u64,
    /// A bare actix actor with no state (context, mailbox, task, address): the floor.
    pub floor_heap_bytes: f64,
    pub floor_rss_bytes: f64,
    /// A meter actor activated with no order: its own overhead (issue 12, item 2).
    pub idle_heap_bytes: f64,
    pub idle_rss_bytes: f64,
    /// The same actor holding one open disconnect with its command in flight.
    pub with_order_heap_bytes: f64,
    pub with_order_rss_bytes: f64,
    /// The same actors once each order completed (a confirmed disconnect with its register
    /// read), live and idle: what an order leaves behind, the store's cache growth included.
    #[serde(default)]
    pub after_order_heap_bytes: f64,
    #[serde(default)]
    pub after_order_rss_bytes: f64,
}

/// A head-end outage scenario's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutageSummary {
    /// "HE-1 from 20 s for 120 s" (from switchyard's start).
    pub outages: String,
    pub breaker_opens: u64,
    pub held_orders: u64,
    pub failed_by_reason: std::collections::BTreeMap<String, u64>,
    /// The last order final, seconds after switchyard was ready.
    pub last_final_s: f64,
    /// Some outage darkens a network segment, not a whole head-end (its breaker is not
    /// expected to open).
    #[serde(default)]
    pub segment: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scenario: Scenario,
    pub broker: String,
    /// The store switchyard ran on (absent in reports from before 2026-12-03: embedded).
    #[serde(default = "embedded_store")]
    pub store: String,
    pub machine: Machine,
    pub command: String,
    pub summary: Summary,
    pub raw: Raw,
    pub recovery: Option<Recovery>,
    pub latency_before_kill: Option<(LatencySummary, LatencySummary)>,
    pub registry_produce_secs: f64,
    pub preload_produce_secs: f64,
    pub baseline_ready_secs: f64,
    pub storm_at_s: Option<f64>,
    pub samples: Vec<Sample>,
}

fn embedded_store() -> String {
    "embedded (redb), in the run's data directory".into()
}

/// Rate of `f` over about one second ending at each sample (same process life only).
fn rate_series(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> Vec<(f64, f64)> {
    rate_series_over(samples, f, 1.0)
}

/// Rate of `f` over about `window` seconds ending at each sample (same process life only).
fn rate_series_over(
    samples: &[Sample],
    f: impl Fn(&Sample) -> f64,
    window: f64,
) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        let Some(j) = (0..i)
            .rev()
            .find(|&j| samples[j].life == s.life && s.t - samples[j].t >= window * 0.95)
        else {
            continue;
        };
        let dt = s.t - samples[j].t;
        if dt > 0.0 && dt < window * 5.0 {
            out.push((s.t, ((f(s) - f(&samples[j])) / dt).max(0.0)));
        }
    }
    out
}

fn peak(series: &[(f64, f64)]) -> f64 {
    series.iter().map(|p| p.1).fold(0.0, f64::max)
}

impl Report {
    pub(crate) fn build(i: Inputs) -> Report {
        // The first process life carries the rates (after a kill -9, counters restart).
        let life0: Vec<Sample> = i.samples.iter().filter(|s| s.life == 0).cloned().collect();
        let max = |f: &dyn Fn(&Sample) -> f64| life0.iter().map(f).fold(0.0, f64::max);
        let accepted = max(&|s| s.received);
        let finals = max(&|s| s.terminal);
        let audit = max(&|s| s.audit_rows);
        // Work starts at the last scrape that saw nothing accepted (0 when orders were waiting
        // on the topic: the intake starts when switchyard becomes ready, which is t = 0).
        let t_start = life0
            .iter()
            .take_while(|s| s.received == 0.0)
            .last()
            .map(|s| s.t)
            .unwrap_or(0.0);
        let first_at = |f: &dyn Fn(&Sample) -> f64, target: f64| {
            life0
                .iter()
                .find(|s| f(s) >= target)
                .map(|s| s.t)
                .unwrap_or(t_start)
        };
        let t_accepted = first_at(&|s| s.received, accepted);
        let t_final = first_at(&|s| s.terminal, finals);
        let per_sec = |n: f64, t_end: f64| {
            if t_end > t_start {
                n / (t_end - t_start)
            } else {
                0.0
            }
        };
        let ingest = per_sec(accepted, t_accepted);
        let e2e = per_sec(finals, t_final);
        let audit_rate = per_sec(audit, t_final.max(t_accepted));
        let ingest_series = rate_series(&i.samples, |s| s.received);
        let final_series = rate_series(&i.samples, |s| s.terminal);
        let audit_series = rate_series(&i.samples, |s| s.audit_rows);
        let peak_live = i.samples.iter().map(|s| s.live_actors).fold(0.0, f64::max);
        // Measured in the first process life (after a restart the baseline is not known).
        let bytes_per_live = life0
            .iter()
            .max_by(|a, b| a.live_actors.total_cmp(&b.live_actors))
            .filter(|s| s.live_actors >= 10_000.0)
            .map(|s| (s.rss as f64 - i.rss_ready as f64) / s.live_actors);
        // The longest time nothing moved (nothing accepted, sent or finished) while orders
        // were open.
        let mut stall: f64 = 0.0;
        let mut since: Option<f64> = None;
        for w in i.samples.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            let open = b.received > b.terminal;
            let moved = b.life != a.life
                || b.received != a.received
                || b.commands != a.commands
                || b.terminal != a.terminal;
            if open && !moved {
                let s0 = *since.get_or_insert(a.t);
                stall = stall.max(b.t - s0);
            } else {
                since = None;
            }
        }
        let releases = i.samples.iter().map(|s| s.releases).fold(0.0, f64::max);
        let release_rate = i.scenario.campaign.as_ref().and_then(|_| {
            // From the first release seen to the first sample that saw the last one: the run
            // may go on after the campaign stops releasing (its shutdown), which is not a rate.
            let first = i.samples.iter().find(|s| s.releases >= 1.0)?;
            let life = i.samples.iter().filter(|s| s.life == first.life);
            let most = life.clone().map(|s| s.releases).fold(0.0, f64::max);
            let last = life.clone().find(|s| s.releases >= most)?;
            (last.t > first.t)
                .then(|| (last.releases - first.releases) / (last.t - first.t) * 3600.0)
        });
        let raw = i.raw.consume_per_sec.max(1e-9);
        // Reads: from the last scrape that saw none to the first that saw them all.
        let reads_taken = max(&|s| s.reads);
        let reads_per_sec = (i.scenario.preload.meter_reads > 0 && reads_taken > 0.0).then(|| {
            let t0 = life0
                .iter()
                .take_while(|s| s.reads == 0.0)
                .last()
                .map(|s| s.t)
                .unwrap_or(0.0);
            let t1 = life0
                .iter()
                .find(|s| s.reads >= reads_taken)
                .map(|s| s.t)
                .unwrap_or(t0);
            if t1 > t0 {
                reads_taken / (t1 - t0)
            } else {
                0.0
            }
        });
        let reads_peak = reads_per_sec.map(|_| peak(&rate_series(&i.samples, |s| s.reads)));
        let outage = (!i.scenario.head_end.outages.is_empty()).then(|| OutageSummary {
            outages: i
                .scenario
                .head_end
                .outages
                .iter()
                .map(|o| {
                    let what = match (o.head_end.is_empty(), o.segment.is_empty()) {
                        (_, true) => o.head_end.clone(),
                        (true, false) => format!("segment {}", o.segment),
                        (false, false) => format!("segment {} of {}", o.segment, o.head_end),
                    };
                    format!("{what} from {} s for {} s", o.after_secs, o.for_secs)
                })
                .collect::<Vec<_>>()
                .join(", "),
            breaker_opens: i
                .samples
                .iter()
                .map(|s| s.breaker_opens)
                .fold(0.0, f64::max) as u64,
            held_orders: i.held_by_head_end,
            failed_by_reason: i.failed_by_reason.clone(),
            last_final_s: first_at(&|s| s.terminal, finals),
            segment: i
                .scenario
                .head_end
                .outages
                .iter()
                .any(|o| !o.segment.is_empty()),
        });
        let summary = Summary {
            outage,
            orders_produced: i.produced,
            orders_accepted: total_over_lives(&i.samples, |s| s.received) as u64,
            orders_final: i.orders_final,
            expected_final: i.expected_final,
            other_final: i.other_final,
            timed_out: i.timed_out,
            ingest_per_sec: ingest,
            ingest_peak_1s: peak(&ingest_series),
            end_to_end_per_sec: e2e,
            end_to_end_peak_1s: peak(&final_series),
            end_to_end_vs_raw_consume: e2e / raw,
            ingest_vs_raw_consume: ingest / raw,
            audit_rows_per_sec: audit_rate,
            audit_rows_peak_1s: peak(&audit_series),
            audit_vs_raw_append: audit_rate / i.raw.store_append_rows_per_sec.max(1e-9),
            dispatch: i
                .latency_before_kill
                .or(i.latency)
                .map(|l| l.0)
                .filter(|l| l.count > 0),
            completion: i
                .latency_before_kill
                .or(i.latency)
                .map(|l| l.1)
                .filter(|l| l.count > 0),
            dispatch_stages: i.stages.filter(|s| s.0.count > 0),
            store_waits: i.store_waits,
            peak_in_flight: i.samples.iter().map(|s| s.in_flight).fold(0.0, f64::max) as u64,
            peak_live_actors: peak_live as u64,
            timed_out_commands: first_life_timeouts(&i.samples) as u64,
            timed_out_after_restart: timeouts_after_restart(&i.samples),
            longest_stall_s: stall,
            startup_secs: i.startup_secs,
            baseline_rss_bytes: i.baseline_rss,
            rss_ready_bytes: i.rss_ready,
            peak_rss_bytes: i.peak_rss,
            bytes_per_registered_meter: (i.rss_ready as f64 - i.baseline_rss as f64)
                / i.scenario.meters as f64,
            bytes_per_live_actor: bytes_per_live,
            actor_memory: i.actor_memory,
            campaign_releases: releases as u64,
            campaign_releases_per_hour: release_rate,
            reads_per_sec,
            reads_peak_1s: reads_peak,
            reads_taken: reads_taken as u64,
        };
        Report {
            scenario: i.scenario,
            broker: i.broker,
            store: i.store,
            machine: i.machine,
            command: i.command,
            summary,
            raw: i.raw,
            recovery: i.recovery,
            latency_before_kill: i.latency_before_kill,
            registry_produce_secs: i.registry_produce_secs,
            preload_produce_secs: i.preload_produce_secs,
            baseline_ready_secs: i.baseline_ready_secs,
            storm_at_s: i.storm_at,
            samples: i.samples,
        }
    }

    /// Reads a `report.json` written by [`write`](Self::write).
    pub fn read(dir: &Path) -> std::io::Result<Report> {
        let bytes = std::fs::read(dir.join("report.json"))?;
        let mut report: Report = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
        // Reports written before this figure existed have the samples to derive it from.
        report.summary.timed_out_after_restart = timeouts_after_restart(&report.samples);
        Ok(report)
    }

    /// Writes `report.json`, the plots and `report.md` (which links the plots drawn) to `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        let plots = plots::draw(self, dir);
        std::fs::write(dir.join("report.md"), self.markdown(&plots))
    }
}

/// A counter over the whole run (counters restart with the process after a kill: the last
/// value of each process life is added up). Work counted just before a kill -9 whose write was
/// lost is counted again when it is redone: totals across a kill are slightly high.
fn total_over_lives(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    let mut total = 0.0;
    for (i, s) in samples.iter().enumerate() {
        let end_of_life = samples.get(i + 1).is_none_or(|n| n.life != s.life);
        if end_of_life {
            total += f(s);
        }
    }
    total
}

/// Commands timed out in the lives after the first (the process counts from zero again after
/// each restart).
fn timeouts_after_restart(samples: &[Sample]) -> u64 {
    (total_over_lives(samples, |s| s.timed_out) - first_life_timeouts(samples)).max(0.0) as u64
}

/// Commands timed out before the first kill (the whole run when nothing is killed).
fn first_life_timeouts(samples: &[Sample]) -> f64 {
    samples
        .iter()
        .filter(|s| s.life == 0)
        .map(|s| s.timed_out)
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    /// A report says what the store's writers waited on when the run measured it, and a
    /// report from before that reads and renders as it did.
    #[test]
    fn the_store_writers_row_shows_checkpoints_and_rounds_when_measured() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/steady");
        let mut r = super::Report::read(&dir).expect("the committed steady report");
        r.summary.store_waits = None;
        assert!(!r.table().contains("store writers"));
        r.summary.store_waits = Some(super::StoreWaits {
            checkpoints: 139,
            checkpoint_mean_ms: 127.6,
            checkpoints_over_100ms: Some(106),
            requests: 586_536,
            round_mean_ms: 11.34,
            rounds_over_100ms: Some(0.0096),
        });
        let table = r.table();
        assert!(
            table.contains("| store writers: checkpoints · a write's round (taken → answered) | 139 checkpoints, mean 128 ms, 106 over 100 ms · 586536 writes, mean 11.3 ms, 0.96 % over 100 ms |"),
            "{table}"
        );
        let json = serde_json::to_value(&r.summary).unwrap();
        let back: super::Summary = serde_json::from_value(json).unwrap();
        assert_eq!(back.store_waits, r.summary.store_waits);
        if let Some(w) = r.summary.store_waits.as_mut() {
            (w.checkpoints_over_100ms, w.rounds_over_100ms) = (None, None);
        }
        let table = r.table();
        assert!(
            table.contains("139 checkpoints, mean 128 ms, n/a over 100 ms · 586536 writes, mean 11.3 ms, n/a over 100 ms"),
            "{table}"
        );
    }

    /// Memory per live actor is judged on the actor's own overhead, measured apart with a
    /// counting allocator, where the report has it; the table shows both numbers and the
    /// run's own resident-set figure; a report from before that measurement keeps its verdict
    /// on the run's figure.
    #[test]
    fn memory_per_actor_is_judged_on_the_overhead_without_the_order_and_shows_both() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/month-end");
        let mut r = super::Report::read(&dir).expect("the committed month-end report");
        let targets = r.scenario.targets.clone();
        let goal = crate::targets::Goal::MemoryPerActor;
        let measured = super::ActorMemory {
            meters: 100_000,
            floor_heap_bytes: 744.0,
            floor_rss_bytes: 1_049.0,
            idle_heap_bytes: 998.0,
            idle_rss_bytes: 1_454.0,
            with_order_heap_bytes: 4_903.0,
            with_order_rss_bytes: 14_985.0,
            after_order_heap_bytes: 4_853.0,
            after_order_rss_bytes: 15_103.0,
        };
        r.summary.bytes_per_live_actor = Some(6_150.0);
        r.summary.actor_memory = None;
        assert!(
            !targets.met(goal, &r.summary, None),
            "6,150 B with the order is over 1 KiB"
        );
        r.summary.actor_memory = Some(measured);
        assert!(
            targets.met(goal, &r.summary, None),
            "998 B without the order"
        );
        let table = r.table();
        assert!(table.contains("| memory per live meter actor, its own overhead (no order) | 998 B heap, 1454 B RSS growth"), "{table}");
        assert!(table.contains("4903 B heap, 14985 B RSS growth"), "{table}");
        assert!(table.contains("in this run: 6150 B (peak"), "{table}");
        assert!(
            table.contains("after the order completed: 4853 B heap"),
            "{table}"
        );
        r.summary.actor_memory = Some(super::ActorMemory {
            idle_heap_bytes: 1_126.0,
            ..measured
        });
        assert!(
            !targets.met(goal, &r.summary, None),
            "1,126 B is over 1 KiB"
        );
    }

    use super::*;

    fn at(life: u32, timed_out: f64) -> Sample {
        Sample {
            life,
            timed_out,
            ..Sample::default()
        }
    }

    #[test]
    fn timeouts_are_split_at_the_kill_and_summed_over_later_lives() {
        // Life 0 reaches 3; the counter restarts at 0 after each kill: 5 in life 1, 2 in life 2.
        let samples = [
            at(0, 0.0),
            at(0, 3.0),
            at(1, 0.0),
            at(1, 5.0),
            at(2, 1.0),
            at(2, 2.0),
        ];
        assert_eq!(first_life_timeouts(&samples), 3.0);
        assert_eq!(timeouts_after_restart(&samples), 7);
        // Without a kill there is nothing after a restart.
        assert_eq!(timeouts_after_restart(&samples[..2]), 0);
    }
}
