//! The load-test report: what was measured, next to the raw limit of the part it uses (measured
//! in the same run) and the product's target; written as `report.md`, `report.json` and SVG
//! plots (plotters).

use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::Scenario;
use crate::observability::LatencySummary;

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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recovery {
    pub open_orders: u64,
    pub killed_at_s: f64,
    /// From restart to `/readyz` (registry replayed, every open order handed back to its
    /// meter, intake running).
    pub ready_secs: f64,
    /// Commands in flight when it was killed.
    #[serde(default)]
    pub in_flight_at_kill: u64,
    /// The scenario's `kill_at_in_flight` was never reached: the kill came when the peak had
    /// passed (every order accepted, in flight 10 % below its peak).
    #[serde(default)]
    pub trigger_missed: bool,
}

pub(crate) struct Inputs {
    pub scenario: Scenario,
    pub broker: String,
    pub machine: Machine,
    pub command: String,
    pub produced: usize,
    pub expected_final: usize,
    /// Distinct expected orders with a final status (from the order events).
    pub orders_final: u64,
    /// Distinct other orders with a final status.
    pub other_final: u64,
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
    pub recovery: Option<Recovery>,
    pub raw: Raw,
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
    pub campaign_releases: u64,
    pub campaign_releases_per_hour: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scenario: Scenario,
    pub broker: String,
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
            let first = i.samples.iter().find(|s| s.releases >= 1.0)?;
            let last = i.samples.iter().rev().find(|s| s.life == first.life)?;
            (last.t > first.t)
                .then(|| (last.releases - first.releases) / (last.t - first.t) * 3600.0)
        });
        let raw = i.raw.consume_per_sec.max(1e-9);
        let summary = Summary {
            orders_produced: i.produced,
            orders_accepted: super::total_over_lives(&i.samples, |s| s.received) as u64,
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
            campaign_releases: releases as u64,
            campaign_releases_per_hour: release_rate,
        };
        Report {
            scenario: i.scenario,
            broker: i.broker,
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

    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        let mut plots = Vec::new();
        let mut plot = |name: &str, r: Result<(), String>| match r {
            Ok(()) => plots.push(name.to_string()),
            Err(e) => eprintln!("plot {name} not drawn: {e}"),
        };
        let s = &self.samples;
        plot(
            "throughput.svg",
            line_chart(
                &dir.join("throughput.svg"),
                "orders per second (1 s windows)",
                "orders/s",
                &[
                    (
                        "accepted (stored, offset committed)",
                        rate_series(s, |x| x.received),
                        BLUE,
                    ),
                    ("final status stored", rate_series(s, |x| x.terminal), GREEN),
                    (
                        "commands to the head-end",
                        rate_series(s, |x| x.commands),
                        RED,
                    ),
                ],
            ),
        );
        plot(
            "audit.svg",
            line_chart(
                &dir.join("audit.svg"),
                "audit rows written per second (1 s windows)",
                "rows/s",
                &[("audit rows", rate_series(s, |x| x.audit_rows), BLUE)],
            ),
        );
        plot(
            "concurrency.svg",
            line_chart(
                &dir.join("concurrency.svg"),
                "commands in flight and live meter actors",
                "count",
                &[
                    (
                        "commands in flight",
                        s.iter().map(|x| (x.t, x.in_flight)).collect(),
                        RED,
                    ),
                    (
                        "live meter actors",
                        s.iter().map(|x| (x.t, x.live_actors)).collect(),
                        BLUE,
                    ),
                ],
            ),
        );
        plot(
            "memory.svg",
            line_chart(
                &dir.join("memory.svg"),
                "switchyard resident memory",
                "MiB",
                &[(
                    "RSS",
                    s.iter().map(|x| (x.t, x.rss as f64 / 1048576.0)).collect(),
                    BLUE,
                )],
            ),
        );
        if let (Some(d), Some(c)) = (self.summary.dispatch, self.summary.completion) {
            plot("latency.svg", latency_chart(&dir.join("latency.svg"), d, c));
        }
        if self.scenario.campaign.is_some() {
            plot(
                "campaign.svg",
                line_chart(
                    &dir.join("campaign.svg"),
                    "campaign releases per hour (rate over 30 s windows x 3600)",
                    "releases/h",
                    &[(
                        "campaign releases",
                        rate_series_over(s, |x| x.releases, 30.0)
                            .into_iter()
                            .map(|(t, r)| (t, r * 3600.0))
                            .collect(),
                        BLUE,
                    )],
                ),
            );
        }
        std::fs::write(dir.join("report.md"), self.markdown(&plots))
    }

    /// The summary table alone (what the closing note pastes).
    pub fn table(&self) -> String {
        let s = &self.summary;
        let raw = &self.raw;
        let sc = &self.scenario;
        // Which targets this scenario tests: throughput with an instant head-end and orders
        // waiting (not paced by the producer); latency at a fixed rate; in-flight with a slow
        // head-end; recovery where it kills.
        let instant = sc.head_end.latency_median_ms == 0;
        let throughput_applies = instant && sc.steady.is_none();
        let latency_applies = sc.steady.is_some();
        let in_flight_applies = sc.head_end.latency_median_ms >= 10_000;
        let mut t = String::from(
            "| measure | measured | raw limit, same run (ratio) | target (2 cores) |\n|---|---|---|---|\n",
        );
        let mut row = |m: &str, v: String, limit: String, target: &str| {
            t.push_str(&format!("| {m} | {v} | {limit} | {target} |\n"));
        };
        row(
            "ingest (accepted: validated, stored, offset committed)",
            format!(
                "{:.0} orders/s (peak 1 s: {:.0})",
                s.ingest_per_sec, s.ingest_peak_1s
            ),
            format!(
                "bare consumer {:.0} rec/s ({:.1} %)",
                raw.consume_per_sec,
                100.0 * s.ingest_vs_raw_consume
            ),
            &verdict_if(
                throughput_applies,
                s.ingest_per_sec >= 100_000.0,
                "≥ 100,000/s",
            ),
        );
        row(
            "end to end (final status stored)",
            format!(
                "{:.0} orders/s (peak 1 s: {:.0})",
                s.end_to_end_per_sec, s.end_to_end_peak_1s
            ),
            format!(
                "bare consumer {:.0} rec/s ({:.1} %)",
                raw.consume_per_sec,
                100.0 * s.end_to_end_vs_raw_consume
            ),
            &verdict_if(
                throughput_applies,
                s.end_to_end_per_sec >= 50_000.0 && s.end_to_end_vs_raw_consume >= 0.25,
                "≥ 50,000/s and ≥ 25 % of raw",
            ),
        );
        row(
            "audit rows written",
            format!(
                "{:.0} rows/s (peak 1 s: {:.0})",
                s.audit_rows_per_sec, s.audit_rows_peak_1s
            ),
            format!(
                "bare appends {:.0} rows/s ({:.1} %)",
                raw.store_append_rows_per_sec,
                100.0 * s.audit_vs_raw_append
            ),
            "",
        );
        let lat = |l: &Option<LatencySummary>| match l {
            Some(l) => format!(
                "p50 {} / p99 {} / p999 {} (n = {})",
                ms(l.p50_us),
                ms(l.p99_us),
                ms(l.p999_us),
                l.count
            ),
            None => "none recorded".into(),
        };
        row(
            "dispatch latency (accepted → handed to head-end)",
            lat(&s.dispatch),
            "".into(),
            &verdict_if(
                latency_applies,
                s.dispatch.is_some_and(|d| d.p99_us <= 10_000),
                "p99 ≤ 10 ms at half the max rate",
            ),
        );
        row(
            "completion latency (answer → final status stored)",
            lat(&s.completion),
            "".into(),
            "",
        );
        row(
            "commands in flight (peak)",
            if self.recovery.is_some() {
                format!(
                    "{} (timed out before the kill: {}, after the restart: {}; longest stall {:.1} s)",
                    s.peak_in_flight,
                    s.timed_out_commands,
                    s.timed_out_after_restart,
                    s.longest_stall_s
                )
            } else {
                format!(
                    "{} (timed out: {}, longest stall {:.1} s)",
                    s.peak_in_flight, s.timed_out_commands, s.longest_stall_s
                )
            },
            "".into(),
            &verdict_if(
                in_flight_applies,
                s.peak_in_flight >= 200_000 && s.longest_stall_s < 5.0,
                "≥ 200,000 without stalls",
            ),
        );
        row(
            "memory per registered meter",
            format!(
                "{:.0} B ({} meters; RSS {} → {} MiB)",
                s.bytes_per_registered_meter,
                self.scenario.meters,
                s.baseline_rss_bytes >> 20,
                s.rss_ready_bytes >> 20
            ),
            "".into(),
            &verdict(
                s.bytes_per_registered_meter <= 214.7,
                "≤ 215 B (5M per GiB)",
            ),
        );
        row(
            "memory per live meter actor",
            match s.bytes_per_live_actor {
                Some(b) => format!("{b:.0} B (peak {} live)", s.peak_live_actors),
                None => format!(
                    "not measured (peak {} live; needs 10,000 before any restart)",
                    s.peak_live_actors
                ),
            },
            "".into(),
            &verdict(
                s.bytes_per_live_actor.is_some_and(|b| b <= 1024.0),
                "≤ 1 KiB",
            ),
        );
        row(
            "peak resident memory",
            format!("{} MiB", s.peak_rss_bytes >> 20),
            "".into(),
            "",
        );
        row(
            "start-up (registry replay to ready)",
            format!("{:.1} s", s.startup_secs),
            "".into(),
            "",
        );
        if let Some(r) = &self.recovery {
            row(
                "recovery after kill -9",
                format!(
                    "{:.1} s with {} open orders ({:.0} open orders/s){}",
                    r.ready_secs,
                    r.open_orders,
                    r.open_orders as f64 / r.ready_secs.max(1e-9),
                    match (r.trigger_missed, self.scenario.kill_at_in_flight) {
                        (true, Some(at)) => format!(
                            "; killed at {} in flight after the peak: the scenario's {at} was never reached",
                            r.in_flight_at_kill
                        ),
                        _ => String::new(),
                    }
                ),
                "".into(),
                &verdict(
                    r.open_orders as f64 / r.ready_secs.max(1e-9) >= 100_000.0,
                    "1M open orders ≤ 10 s",
                ),
            );
        }
        if let Some(rate) = s.campaign_releases_per_hour {
            row(
                "campaign release rate",
                format!("{rate:.0}/h ({} released)", s.campaign_releases),
                format!(
                    "configured {}/h",
                    self.scenario
                        .campaign
                        .as_ref()
                        .map(|c| c.rate_per_hour)
                        .unwrap_or(0)
                ),
                "",
            );
        }
        t
    }

    fn markdown(&self, plots: &[String]) -> String {
        let s = &self.summary;
        let m = &self.machine;
        let mut out = format!(
            "# Load test: {}\n\n{}\n\n- machine: {} cores ({}), {:.1} GiB, {}\n- Kafka: {}\n- reproduce: `{}`\n- orders produced: {} (accepted {}, final {} of {} expected{}){}\n\n",
            self.scenario.name,
            self.scenario.description,
            m.cores,
            m.cpu,
            m.memory_gib,
            m.os,
            self.broker,
            self.command,
            s.orders_produced,
            s.orders_accepted,
            s.orders_final,
            s.expected_final,
            if s.other_final > 0 {
                format!(
                    "; {} more campaign orders released and final",
                    s.other_final
                )
            } else {
                String::new()
            },
            if s.timed_out { " — TIMED OUT before every order was final" } else { "" },
        );
        out.push_str(&self.table());
        out.push_str(&format!(
            "\nHow to read it: rates are averages from the first order accepted to the last (scraped from `/metrics` every 200 ms); \
             the raw limits were measured in the same run after switchyard stopped: a bare librdkafka consumer reading the same orders topic \
             from a fresh group, and durable appends of 1,000 audit rows per transaction to a fresh embedded store on the same disk. \
             Latencies are exact (HDR histograms, `/stats/latency`) and exclude head-end time. Memory per registered meter is the \
             resident memory at ready minus that of the same binary with an empty registry (baseline {} MiB), divided by the meters; \
             per live actor, the growth from ready to the peak of live actors divided by them (open orders and their buffers included).\n\n\
             Produce times (harness side): registry {:.1} s, orders on the topic before start {:.1} s.\n",
            s.baseline_rss_bytes >> 20,
            self.registry_produce_secs,
            self.preload_produce_secs
        ));
        if !plots.is_empty() {
            out.push_str("\n## Plots\n\n");
            for p in plots {
                out.push_str(&format!("![{p}]({p})\n\n"));
            }
        }
        out
    }
}

fn ms(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.0} ms", us as f64 / 1000.0)
    } else {
        format!("{:.2} ms", us as f64 / 1000.0)
    }
}

fn verdict(met: bool, target: &str) -> String {
    format!("{target}: {}", if met { "met" } else { "not met" })
}

/// The target's verdict where this scenario is the one that tests it, else "n/a".
fn verdict_if(applies: bool, met: bool, target: &str) -> String {
    if applies {
        verdict(met, target)
    } else {
        format!("{target}: n/a here")
    }
}

/// One line of a chart: its legend, its (x, y) points and its colour.
type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

fn line_chart(path: &Path, title: &str, y_desc: &str, series: &[Series<'_>]) -> Result<(), String> {
    let x_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds since switchyard was ready")
        .y_desc(y_desc)
        .draw()
        .map_err(|e| e.to_string())?;
    for (name, points, color) in series {
        let c = *color;
        chart
            .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn latency_chart(path: &Path, d: LatencySummary, c: LatencySummary) -> Result<(), String> {
    let bars = [
        ("dispatch p50", d.p50_us, BLUE),
        ("dispatch p99", d.p99_us, BLUE),
        ("dispatch p99.9", d.p999_us, BLUE),
        ("completion p50", c.p50_us, GREEN),
        ("completion p99", c.p99_us, GREEN),
        ("completion p99.9", c.p999_us, GREEN),
    ];
    let top = bars.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64 / 1000.0 * 1.15;
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "internal latency percentiles (head-end time excluded)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..bars.len() as f64, 0f64..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len())
        .x_label_formatter(&|x| {
            bars.get(*x as usize)
                .map(|b| b.0.to_string())
                .unwrap_or_default()
        })
        .y_desc("milliseconds")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, us, color))| {
            let x = i as f64;
            Rectangle::new(
                [(x + 0.1, 0.0), (x + 0.9, *us as f64 / 1000.0)],
                color.mix(0.6).filled(),
            )
        }))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Commands timed out in the lives after the first (the process counts from zero again after
/// each restart).
fn timeouts_after_restart(samples: &[Sample]) -> u64 {
    (super::total_over_lives(samples, |s| s.timed_out) - first_life_timeouts(samples)).max(0.0)
        as u64
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
