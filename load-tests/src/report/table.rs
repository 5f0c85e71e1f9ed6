//! The report's Markdown: the summary table (each figure, the raw limit of its part measured
//! in the same run, and the target where the scenario tests one) and `report.md` around it.

use switchyard::observability::LatencySummary;

use super::Report;
use crate::targets::Goal;

impl Report {
    /// The summary table alone (what the closing note pastes).
    pub fn table(&self) -> String {
        let s = &self.summary;
        let raw = &self.raw;
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
            &self.target(Goal::Ingest),
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
            &self.target(Goal::EndToEnd),
        );
        if let Some(o) = &s.outage {
            let failed = if o.failed_by_reason.is_empty() {
                "none failed".to_string()
            } else {
                o.failed_by_reason
                    .iter()
                    .map(|(r, n)| format!("{n} failed {r}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let burned = o
                .failed_by_reason
                .get("retries_exhausted")
                .copied()
                .unwrap_or(0);
            let all_final = s.orders_final as usize == s.expected_final;
            // A dark segment: its meters' commands are resolved by deadlines and status
            // checks, nothing fails. A dark head-end: its breaker holds the orders.
            let verdict = if o.segment {
                format!(
                    "only its meters delayed, none failed: {}",
                    if o.failed_by_reason.is_empty() && all_final {
                        "met"
                    } else {
                        "not met"
                    }
                )
            } else {
                format!(
                    "held, not burned through retries: {}",
                    if burned == 0 && o.held_orders > 0 && all_final {
                        "met"
                    } else {
                        "not met"
                    }
                )
            };
            row(
                &format!("outage ({}, from switchyard's start)", o.outages),
                format!(
                    "breaker opened {} times; {} orders held (deferred head_end_unavailable); {failed}; last order final {:.1} s after ready",
                    o.breaker_opens, o.held_orders, o.last_final_s
                ),
                String::new(),
                &verdict,
            );
        }
        if let Some(rate) = s.reads_per_sec {
            let bare = raw.consume_reads_per_sec.unwrap_or(0.0);
            row(
                "meter reads taken (validated, looked up, offset stored)",
                format!(
                    "{rate:.0} reads/s (peak 1 s: {:.0}; {} taken)",
                    s.reads_peak_1s.unwrap_or(0.0),
                    s.reads_taken
                ),
                format!(
                    "bare consumer on the reads topic {bare:.0} rec/s ({:.1} %)",
                    100.0 * rate / bare.max(1e-9)
                ),
                &self.target(Goal::Reads),
            );
        }
        row(
            "audit rows written",
            format!(
                "{:.0} rows/s (peak 1 s: {:.0})",
                s.audit_rows_per_sec, s.audit_rows_peak_1s
            ),
            format!(
                "{} {:.0} rows/s ({:.1} %)",
                raw.store_what.as_deref().unwrap_or("bare appends"),
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
            &self.target(Goal::DispatchLatency),
        );
        if let Some((queue, write)) = &s.dispatch_stages {
            let pp = |l: &LatencySummary| format!("p50 {} / p99 {}", ms(l.p50_us), ms(l.p99_us));
            row(
                if self.recovery.is_some() {
                    "dispatch stages, after the restart: actor mailbox · store write"
                } else {
                    "dispatch stages: actor mailbox · store write"
                },
                format!("{} · {}", pp(queue), pp(write)),
                "".into(),
                "",
            );
        }
        if let Some(w) = &s.store_waits {
            row(
                "store writers: checkpoints · a write's round (taken → answered)",
                format!(
                    "{} checkpoints, mean {:.0} ms, {} over 100 ms · {} writes, mean {:.1} ms, {} over 100 ms",
                    w.checkpoints,
                    w.checkpoint_mean_ms,
                    w.checkpoints_over_100ms
                        .map_or("n/a".into(), |n| n.to_string()),
                    w.requests,
                    w.round_mean_ms,
                    w.rounds_over_100ms
                        .map_or("n/a".into(), |f| format!("{:.2} %", f * 100.0))
                ),
                "".into(),
                "",
            );
        }
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
            &self.target(Goal::InFlight),
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
            &self.target(Goal::MemoryPerMeter),
        );
        let in_run = match s.bytes_per_live_actor {
            Some(b) => format!("{b:.0} B (peak {} live)", s.peak_live_actors),
            None => format!(
                "not measured (peak {} live; needs 10,000 before any restart)",
                s.peak_live_actors
            ),
        };
        match &s.actor_memory {
            Some(a) => {
                row(
                    "memory per live meter actor, its own overhead (no order)",
                    format!(
                        "{:.0} B heap, {:.0} B RSS growth ({} idle actors, measured after the run; a bare actix actor {:.0} B heap, {:.0} B RSS)",
                        a.idle_heap_bytes,
                        a.idle_rss_bytes,
                        a.meters,
                        a.floor_heap_bytes,
                        a.floor_rss_bytes
                    ),
                    "".into(),
                    &self.target(Goal::MemoryPerActor),
                );
                row(
                    "memory per live meter actor, with its open order",
                    format!(
                        "{:.0} B heap, {:.0} B RSS growth (the same actors, one disconnect each, in flight; after the order completed: {:.0} B heap, {:.0} B RSS growth); in this run: {in_run} RSS growth",
                        a.with_order_heap_bytes,
                        a.with_order_rss_bytes,
                        a.after_order_heap_bytes,
                        a.after_order_rss_bytes
                    ),
                    "".into(),
                    "",
                );
            }
            None => row(
                "memory per live meter actor",
                in_run,
                "".into(),
                &self.target(Goal::MemoryPerActor),
            ),
        }
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
                    "ready in {:.1} s with {} open orders ({:.0} open orders/s){}{}",
                    r.ready_secs,
                    r.open_orders,
                    r.open_orders as f64 / r.ready_secs.max(1e-9),
                    match r.resumed_secs {
                        Some(s) => format!("; every meter with open work resumed after {s:.1} s"),
                        None => String::new(),
                    },
                    match (r.trigger_missed, self.scenario.kill_at_in_flight) {
                        (true, Some(at)) => format!(
                            "; killed at {} in flight after the peak: the scenario's {at} was never reached",
                            r.in_flight_at_kill
                        ),
                        _ => String::new(),
                    }
                ),
                "".into(),
                &self.target(Goal::Recovery),
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

    /// The target cell: the target, and whether the run met it where this scenario tests it.
    fn target(&self, goal: Goal) -> String {
        let targets = &self.scenario.targets;
        let label = targets.label(goal);
        if !targets.tested(&self.scenario).contains(&goal) {
            return format!("{label}: n/a here");
        }
        let met = targets.met(goal, &self.summary, self.recovery.as_ref());
        format!("{label}: {}", if met { "met" } else { "not met" })
    }

    pub(super) fn markdown(&self, plots: &[String]) -> String {
        let s = &self.summary;
        let m = &self.machine;
        let mut out = format!(
            "# Load test: {}\n\n{}\n\n- machine: {} cores ({}), {:.1} GiB, {}\n- Kafka: {}\n- store: {}\n- reproduce: `{}`\n- orders produced: {} (accepted {}, final {} of {} expected{}){}\n\n",
            self.scenario.name,
            self.scenario.description,
            m.cores,
            m.cpu,
            m.memory_gib,
            m.os,
            self.broker,
            self.store,
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
             from a fresh group, and {}. \
             Latencies are exact (HDR histograms, `/stats/latency`) and exclude head-end time. Memory per registered meter is the \
             resident memory at ready minus that of the same binary with an empty registry (baseline {} MiB), divided by the meters; \
             per live actor in this run, the growth from ready to the peak of live actors divided by them (open orders and their buffers included). \
             The actor's own overhead, and with one open order, are measured after the run by `switchyard-actor-memory` (the bench \
             `actor_memory` as a binary: 100,000 actors on the real directory, store and policy, a counting allocator); its heap bytes \
             per idle actor are what the memory-per-actor target judges. The campaign release rate \
             runs from the first release seen to the first sample that saw the last one.\n\n\
             Produce times (harness side): registry {:.1} s, orders on the topic before start {:.1} s.\n",
            match &self.raw.store_what {
                Some(_) => "a bare scylla-driver loop of the audit trail's prepared INSERT on the same cluster and keyspace, \
                            at the store's own concurrency (`store.scylla.max_in_flight`), for 10 s",
                None => "durable appends of 1,000 audit rows per transaction to a fresh embedded store on the same disk",
            },
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
