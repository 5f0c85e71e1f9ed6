//! `switchyard demo`: a synthetic day on embedded defaults. Registers meters on the registry
//! topic, produces a mix of service orders (plus a few invalid records and a redelivered
//! duplicate) to the orders topic of the embedded Kafka, follows the order-events topic to the
//! end with a progress bar, and prints what happened: counts by outcome, throughput, and command
//! and order latency percentiles measured from the events themselves.

use std::collections::HashMap;
use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::domain::{OrderEvent, OrderStatus};
use crate::App;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the demo runs on embedded Kafka: leave kafka.brokers empty (it is `{0}`)")]
    NotEmbedded(String),
    #[error(transparent)]
    App(#[from] crate::AppError),
    #[error("demo Kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("demo data directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out: {0}")]
    Timeout(String),
}

pub struct DemoOptions {
    pub meters: usize,
    pub orders: usize,
    pub invalid: usize,
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Default)]
pub struct DemoSummary {
    pub(crate) meters: usize,
    pub(crate) orders_produced: usize,
    pub(crate) invalid_produced: usize,
    pub(crate) dead_letters: i64,
    /// Final orders only (rejected, completed, failed, cancelled), by status and reason.
    pub(crate) by_outcome: Vec<(String, usize)>,
    /// Orders that reached a final status, of `expected` (valid orders and the invalid records
    /// whose order id is readable).
    pub(crate) final_orders: usize,
    pub(crate) expected: usize,
    /// Held by policy at the end, not final: awaiting an approval nobody gives in a demo.
    pub(crate) awaiting_approval: usize,
    /// Held by policy at the end, not final: deferred past the demo's end.
    pub(crate) deferred: usize,
    /// The latest time a deferred order waits for, when known.
    pub(crate) deferred_until: Option<jiff::Timestamp>,
    pub(crate) accepted_per_sec: f64,
    pub(crate) completed_per_sec: f64,
    pub(crate) elapsed: Duration,
    pub(crate) command_p50_ms: u64,
    pub(crate) command_p99_ms: u64,
    pub(crate) order_p50_ms: u64,
    pub(crate) order_p99_ms: u64,
    pub(crate) data_dir: String,
    pub(crate) settings: String,
}

impl fmt::Display for DemoSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\nswitchyard demo summary")?;
        writeln!(f, "  settings:            {}", self.settings)?;
        writeln!(f, "  meters registered:   {}", self.meters)?;
        writeln!(
            f,
            "  orders produced:     {} valid + {} invalid + 1 redelivered duplicate",
            self.orders_produced, self.invalid_produced
        )?;
        writeln!(f, "  dead letters:        {}", self.dead_letters)?;
        writeln!(
            f,
            "  wall time:           {:.1} s",
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "  intake:              {:.0} orders/s accepted (validated, stored, offset committed)",
            self.accepted_per_sec
        )?;
        writeln!(
            f,
            "  end to end:          {:.0} orders/s reached a final status",
            self.completed_per_sec
        )?;
        writeln!(f, "  command latency:     p50 {} ms, p99 {} ms (dispatched -> head-end answer, simulated)", self.command_p50_ms, self.command_p99_ms)?;
        writeln!(
            f,
            "  order latency:       p50 {} ms, p99 {} ms (received -> final status)",
            self.order_p50_ms, self.order_p99_ms
        )?;
        writeln!(
            f,
            "  final:               {} of {} orders",
            self.final_orders, self.expected
        )?;
        if self.awaiting_approval + self.deferred > 0 {
            let until = self
                .deferred_until
                .map(|t| format!(" until as late as {t}"))
                .unwrap_or_default();
            writeln!(
                f,
                "  held, not final:     {} ({} awaiting approval, which nobody gives in a demo; {} deferred{until})",
                self.awaiting_approval + self.deferred,
                self.awaiting_approval,
                self.deferred
            )?;
        }
        writeln!(f, "  final outcomes (status / reason):")?;
        for (k, v) in &self.by_outcome {
            writeln!(f, "    {k:<48} {v:>7}")?;
        }
        write!(f, "  data (store, bootstrap file): {}", self.data_dir)
    }
}

/// How often progress is written when stderr is not a terminal.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// A deferred order due later than this is held for the demo (a window tomorrow, a weekday
/// bar): the demo does not wait for it.
const HELD_AFTER: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// The orders not yet final: their latest status (and, deferred or retrying, until when).
#[derive(Default)]
struct Open {
    latest: HashMap<String, (OrderStatus, Option<jiff::Timestamp>)>,
    by_status: HashMap<OrderStatus, usize>,
}

impl Open {
    fn set(&mut self, order: String, status: OrderStatus, until: Option<jiff::Timestamp>) {
        if let Some((old, _)) = self.latest.insert(order, (status, until)) {
            *self.by_status.entry(old).or_default() -= 1;
        }
        *self.by_status.entry(status).or_default() += 1;
    }

    fn remove(&mut self, order: &str) {
        if let Some((old, _)) = self.latest.remove(order) {
            *self.by_status.entry(old).or_default() -= 1;
        }
    }

    fn count(&self, status: OrderStatus) -> usize {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    /// Awaiting approval plus every deferred order: at least as many as `held`.
    fn held_at_most(&self) -> usize {
        self.count(OrderStatus::AwaitingApproval) + self.count(OrderStatus::Deferred)
    }

    fn deferred_far(&self, now: jiff::Timestamp) -> usize {
        self.latest
            .values()
            .filter(|(s, until)| {
                *s == OrderStatus::Deferred && until.is_none_or(|t| t > now + HELD_AFTER)
            })
            .count()
    }

    /// Orders the demo does not wait for: awaiting approval, or deferred beyond `HELD_AFTER`.
    fn held(&self, now: jiff::Timestamp) -> usize {
        self.count(OrderStatus::AwaitingApproval) + self.deferred_far(now)
    }

    fn latest_deferral(&self) -> Option<jiff::Timestamp> {
        self.latest
            .values()
            .filter(|(s, _)| *s == OrderStatus::Deferred)
            .filter_map(|(_, until)| *until)
            .max()
    }

    fn held_summary(&self, now: jiff::Timestamp) -> String {
        let mut parts = Vec::new();
        let a = self.count(OrderStatus::AwaitingApproval);
        if a > 0 {
            parts.push(format!("{a} awaiting approval"));
        }
        let d = self.deferred_far(now);
        if d > 0 {
            parts.push(format!("{d} deferred"));
        }
        parts.join(", ")
    }

    /// What the open orders are waiting on, for the progress line.
    fn describe(&self, now: jiff::Timestamp, deadline_secs: u64) -> String {
        let until = |status: OrderStatus| {
            self.latest
                .values()
                .filter(|(s, _)| *s == status)
                .filter_map(|(_, t)| *t)
                .min()
                .map(|t| {
                    let secs = (t.as_second() - now.as_second()).max(0);
                    if secs < 120 {
                        format!(", next in {secs} s")
                    } else {
                        format!(", next at {t}")
                    }
                })
                .unwrap_or_default()
        };
        let mut parts = Vec::new();
        for (status, what) in [
            (OrderStatus::Received, "received, queued at their meter".to_string()),
            (OrderStatus::Scheduled, "scheduled".to_string()),
            (
                OrderStatus::Dispatched,
                format!("dispatched, awaiting the head-end's answer or the {deadline_secs} s command deadline"),
            ),
            (OrderStatus::Confirmed, "confirmed, completing".to_string()),
            (
                OrderStatus::RetryScheduled,
                format!("retry scheduled{}", until(OrderStatus::RetryScheduled)),
            ),
            (
                OrderStatus::Deferred,
                format!("deferred by policy until a window{}", until(OrderStatus::Deferred)),
            ),
            (
                OrderStatus::AwaitingApproval,
                "awaiting approval (not final; nobody approves in a demo)".to_string(),
            ),
        ] {
            let n = self.count(status);
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        if parts.is_empty() {
            "waiting for order events".into()
        } else {
            format!("waiting on: {}", parts.join("; "))
        }
    }
}

fn meter_id(i: usize) -> String {
    format!("MTR-{i:07}")
}

pub async fn run(mut config: Config, opts: DemoOptions) -> Result<DemoSummary, DemoError> {
    if !config.embedded_kafka() {
        return Err(DemoError::NotEmbedded(config.kafka.brokers.clone()));
    }
    let tmp;
    config.data_dir = match &opts.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("switchyard-demo-")
                .tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.meters.idle_passivate_secs = config.meters.idle_passivate_secs.min(5);
    let s = &config.head_end.simulator;
    let settings = format!(
        "simulated head-end latency median {} ms / p99 {} ms, failures {:.1}%, no answer {:.1}%, LSV rejects {:.1}%, deadline {} s, {} attempts",
        s.latency_median_ms, s.latency_p99_ms, s.failure_rate * 100.0, s.no_answer_rate * 100.0, s.lsv_reject_rate * 100.0,
        config.head_end.command_deadline_secs, config.head_end.max_attempts
    );
    let app = App::start(config.clone(), Arc::new(SystemClock)).await?;
    eprintln!(
        "embedded Kafka at {} ; operator http at http://{}",
        app.bootstrap, app.http_addr
    );
    let producer: FutureProducer =
        crate::kafka::producer_config(&config, &app.bootstrap).create()?;

    // 1. The registry.
    let mut rng = SmallRng::seed_from_u64(7);
    let started = Instant::now();
    let mut no_switch = Vec::new();
    let mut sends = Vec::with_capacity(opts.meters);
    for i in 0..opts.meters {
        let has_switch = rng.random::<f64>() >= 0.02;
        if !has_switch {
            no_switch.push(i);
        }
        let rec = serde_json::json!({
            "schema_version": 1, "meter_id": meter_id(i), "service_point_id": format!("SP-{i:07}"),
            "zone": format!("zone-{}", i % 20), "head_end_id": format!("HE-{}", i % 4), "has_switch": has_switch,
            "life_support": rng.random::<f64>() < 0.01, "multiplier": 1.0,
        });
        let payload = serde_json::to_vec(&rec).expect("json");
        let key = meter_id(i);
        sends.push(send(&producer, &config.topics.registry, key, payload));
        if sends.len() >= 10_000 {
            futures::future::join_all(sends.drain(..)).await;
        }
    }
    futures::future::join_all(sends.drain(..)).await;
    let until = Instant::now() + Duration::from_secs(300);
    while app.registry.len() < opts.meters || !app.is_ready() {
        if Instant::now() > until {
            return Err(DemoError::Timeout(format!(
                "registry reached {} of {} meters",
                app.registry.len(),
                opts.meters
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{} meters registered in {:.1} s",
        opts.meters,
        started.elapsed().as_secs_f64()
    );

    // 2. The observer of order events.
    let observer: StreamConsumer = crate::kafka::client_config(&config, &app.bootstrap)
        .set("group.id", "switchyard-demo-observer")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    observer.subscribe(&[&config.topics.order_events])?;

    // 3. The day's orders.
    let now = jiff::Timestamp::now();
    let mut disconnects: Vec<(String, String)> = Vec::new();
    let mut expected = 0usize;
    let t0 = Instant::now();
    let mut first_payload = None;
    for n in 0..opts.orders {
        let roll: f64 = rng.random();
        let order_id = format!("SO-{n:07}");
        let (kind, reason, meter, target) = if roll < 0.55 {
            let m = if !no_switch.is_empty() && rng.random::<f64>() < 0.02 {
                no_switch[rng.random_range(0..no_switch.len())]
            } else {
                rng.random_range(0..opts.meters)
            };
            disconnects.push((order_id.clone(), meter_id(m)));
            ("disconnect", "non_payment", meter_id(m), None)
        } else if roll < 0.77 {
            let m = if !disconnects.is_empty() && rng.random::<f64>() < 0.5 {
                disconnects[rng.random_range(0..disconnects.len())]
                    .1
                    .clone()
            } else {
                meter_id(rng.random_range(0..opts.meters))
            };
            ("reconnect", "payment_received", m, None)
        } else if roll < 0.95 || disconnects.is_empty() {
            (
                "read",
                "billing",
                meter_id(rng.random_range(0..opts.meters)),
                None,
            )
        } else {
            let (target, m) = disconnects[rng.random_range(0..disconnects.len())].clone();
            ("cancel", "customer_request", m, Some(target))
        };
        let mut v = serde_json::json!({
            "schema_version": 1, "order_id": order_id, "kind": kind, "reason": reason, "meter_id": meter,
            "priority": if kind == "reconnect" { 2 } else { 5 }, "created_at": now.to_string(),
        });
        if kind == "disconnect" {
            v["notice_sent_at"] = (now - jiff::SignedDuration::from_hours(24 * 15))
                .to_string()
                .into();
            v["amount_due"] = serde_json::json!((rng.random_range(5000..90000) as f64) / 100.0);
        }
        if let Some(t) = target {
            v["target_order_id"] = t.into();
        }
        if rng.random::<f64>() < 0.1 {
            v["notes"] = "customer called; confirm the premise is vacant before reconnect".into();
        }
        let payload = serde_json::to_vec(&v).expect("json");
        if first_payload.is_none() {
            first_payload = Some((meter.clone(), payload.clone()));
        }
        sends.push(send(&producer, &config.topics.orders, meter, payload));
        expected += 1;
        if sends.len() >= 10_000 {
            futures::future::join_all(sends.drain(..)).await;
        }
    }
    // Invalid records and a redelivered duplicate.
    let bad_meter = meter_id(0);
    for i in 0..opts.invalid {
        let id = format!("BAD-{i:03}");
        let (key, payload): (String, Vec<u8>) = match i % 6 {
            0 => (bad_meter.clone(), format!("{{\"schema_version\":1,\"order_id\":\"{id}\",").into_bytes()),
            1 => ("NO-SUCH-METER".into(), serde_json::to_vec(&serde_json::json!({"schema_version":1,"order_id":id,"kind":"disconnect","reason":"non_payment","meter_id":"NO-SUCH-METER"})).unwrap()),
            2 => (bad_meter.clone(), serde_json::to_vec(&serde_json::json!({"schema_version":1,"order_id":id,"kind":"disconnect","reason":"non_payment","meter_id":bad_meter,"notes":"x".repeat(300)})).unwrap()),
            3 => (bad_meter.clone(), serde_json::to_vec(&serde_json::json!({"schema_version":1,"order_id":id,"kind":"unplug","reason":"non_payment","meter_id":bad_meter})).unwrap()),
            4 => (bad_meter.clone(), serde_json::to_vec(&serde_json::json!({"schema_version":1,"order_id":id,"kind":"read","reason":"billing","meter_id":bad_meter,"latest_at":"2020-01-01T00:00:00Z"})).unwrap()),
            _ => (bad_meter.clone(), serde_json::to_vec(&serde_json::json!({"schema_version":1,"order_id":id,"kind":"read","reason":"billing","meter_id":meter_id(1)})).unwrap()),
        };
        if i % 6 != 0 {
            expected += 1; // a rejected event is published when the order id is readable
        }
        sends.push(send(&producer, &config.topics.orders, key, payload));
    }
    if let Some((k, p)) = first_payload {
        sends.push(send(&producer, &config.topics.orders, k, p));
    }
    futures::future::join_all(sends.drain(..)).await;
    eprintln!(
        "{} orders + {} invalid records produced in {:.1} s",
        opts.orders,
        opts.invalid,
        t0.elapsed().as_secs_f64()
    );

    // 4. Follow the events to the end: until every order is final, or held by policy where
    // a demo cannot move it (awaiting an approval nobody gives here, or deferred to a time
    // beyond HELD_AFTER).
    let deadline_secs = config.head_end.command_deadline_secs;
    let on_terminal = std::io::stderr().is_terminal();
    let bar = if on_terminal {
        indicatif::ProgressBar::new(expected as u64)
    } else {
        // No escape codes into a pipe or file: plain progress lines instead (below).
        indicatif::ProgressBar::with_draw_target(
            Some(expected as u64),
            indicatif::ProgressDrawTarget::hidden(),
        )
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} orders final ({per_sec}) {wide_msg}",
        )
        .expect("template"),
    );
    let mut received: HashMap<String, jiff::Timestamp> = HashMap::new();
    let mut dispatched: HashMap<String, jiff::Timestamp> = HashMap::new();
    let produce_started_at =
        jiff::Timestamp::now() - jiff::SignedDuration::try_from(t0.elapsed()).unwrap_or_default();
    let mut last_received_at = produce_started_at;
    let mut final_status: HashMap<String, String> = HashMap::new();
    let mut open = Open::default();
    let mut cmd_lat = Histogram::<u64>::new(3).expect("hist");
    let mut order_lat = Histogram::<u64>::new(3).expect("hist");
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut next_line = Instant::now() + PLAIN_PROGRESS_EVERY;
    let mut next_msg = Instant::now();
    loop {
        // Cheap test first: the held statuses are a subset of the open ones.
        if final_status.len() + open.held_at_most() >= expected
            && final_status.len() + open.held(jiff::Timestamp::now()) >= expected
        {
            break;
        }
        if Instant::now() >= next_msg {
            next_msg = Instant::now() + Duration::from_millis(500);
            let waiting = open.describe(jiff::Timestamp::now(), deadline_secs);
            if on_terminal {
                bar.set_message(waiting);
            } else if Instant::now() >= next_line {
                next_line = Instant::now() + PLAIN_PROGRESS_EVERY;
                eprintln!(
                    "{:>6.1} s  {}/{} orders final; {}",
                    t0.elapsed().as_secs_f64(),
                    final_status.len(),
                    expected,
                    waiting
                );
            }
        }
        if Instant::now() > deadline {
            bar.abandon();
            return Err(DemoError::Timeout(format!(
                "{} of {} orders reached a final status; {}",
                final_status.len(),
                expected,
                open.describe(jiff::Timestamp::now(), deadline_secs)
            )));
        }
        let msg = match tokio::time::timeout(Duration::from_secs(1), observer.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "observer");
                continue;
            }
            Err(_) => continue,
        };
        let Some(Ok(ev)) = msg.payload().map(serde_json::from_slice::<OrderEvent>) else {
            continue;
        };
        let ms = |a: jiff::Timestamp, b: jiff::Timestamp| {
            (b.as_millisecond() - a.as_millisecond()).max(0) as u64
        };
        match ev.status {
            OrderStatus::Received => {
                received.insert(ev.order_id.clone(), ev.at);
                last_received_at = last_received_at.max(ev.at);
            }
            OrderStatus::Dispatched => {
                dispatched.insert(ev.order_id.clone(), ev.at);
            }
            OrderStatus::Confirmed
            | OrderStatus::RetryScheduled
            | OrderStatus::Failed
            | OrderStatus::Completed => {
                if let Some(d) = dispatched.remove(&ev.order_id) {
                    let _ = cmd_lat.record(ms(d, ev.at));
                }
            }
            _ => {}
        }
        if final_status.contains_key(&ev.order_id) {
            continue;
        }
        if ev.status.is_terminal() {
            open.remove(&ev.order_id);
            if let Some(r) = received.get(&ev.order_id) {
                let _ = order_lat.record(ms(*r, ev.at));
            }
            final_status.insert(
                ev.order_id.clone(),
                format!(
                    "{} / {}",
                    ev.status.as_str(),
                    ev.reason.as_deref().unwrap_or("-")
                ),
            );
            bar.inc(1);
        } else {
            open.set(ev.order_id.clone(), ev.status, ev.retry_at);
        }
    }
    let now = jiff::Timestamp::now();
    let held = open.held_summary(now);
    if held.is_empty() {
        bar.finish();
    } else {
        bar.abandon_with_message(format!("the rest held by policy: {held}"));
    }
    let elapsed = t0.elapsed();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for s in final_status.values() {
        *counts.entry(s.clone()).or_default() += 1;
    }
    let mut by_outcome: Vec<(String, usize)> = counts.into_iter().collect();
    by_outcome.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut dead_letters = 0;
    for p in 0..config.kafka.embedded_partitions {
        if let Ok((lo, hi)) =
            observer.fetch_watermarks(&config.topics.dead_letter, p, Duration::from_secs(5))
        {
            dead_letters += hi - lo;
        }
    }
    // Measured on switchyard's own event timestamps: from the first record produced to the
    // last order accepted (an observer's consumer-group join does not count).
    let accept_secs = (last_received_at.as_microsecond() - produce_started_at.as_microsecond())
        .max(1000) as f64
        / 1e6;
    let summary = DemoSummary {
        meters: opts.meters,
        orders_produced: opts.orders,
        invalid_produced: opts.invalid,
        dead_letters,
        by_outcome,
        final_orders: final_status.len(),
        expected,
        awaiting_approval: open.count(OrderStatus::AwaitingApproval),
        deferred: open.count(OrderStatus::Deferred),
        deferred_until: open.latest_deferral(),
        accepted_per_sec: received.len() as f64 / accept_secs,
        completed_per_sec: final_status.len() as f64 / elapsed.as_secs_f64(),
        elapsed,
        command_p50_ms: cmd_lat.value_at_quantile(0.5),
        command_p99_ms: cmd_lat.value_at_quantile(0.99),
        order_p50_ms: order_lat.value_at_quantile(0.5),
        order_p99_ms: order_lat.value_at_quantile(0.99),
        data_dir: if opts.data_dir.is_some() {
            config.data_dir.display().to_string()
        } else {
            "(temporary, removed)".into()
        },
        settings,
    };
    drop(sends);
    drop(observer);
    drop(producer);
    app.shutdown().await;
    Ok(summary)
}

async fn send(producer: &FutureProducer, topic: &str, key: String, payload: Vec<u8>) {
    loop {
        match producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&payload),
                Duration::from_secs(30),
            )
            .await
        {
            Ok(_) => return,
            Err((e, _)) => {
                tracing::warn!(error = %e, "demo produce failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
