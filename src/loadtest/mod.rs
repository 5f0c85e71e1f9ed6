//! `switchyard loadtest`: the load-test harness. A scenario (a TOML file in
//! `load-tests/scenarios/`) says how many meters are registered, which orders are on the topic
//! before switchyard starts, what traffic arrives while it runs (a steady rate, a campaign and a
//! reconnect storm), how the simulated head-end behaves, and whether switchyard is killed with
//! `kill -9` mid-run. The harness
//! - hosts the Kafka side: librdkafka's mock cluster in-process (the same one switchyard's
//!   embedded mode runs, here outliving the switchyard process so that a kill -9 loses nothing
//!   Kafka holds) or an external Kafka-API broker (`--brokers`, e.g. the tansu broker started
//!   by `load-tests/tansu.sh`, or your own cluster);
//! - runs switchyard as a child process (`switchyard run`, embedded store, simulated head-end)
//!   and watches it from outside: `/readyz`, `/metrics` every 200 ms, `/stats/latency`,
//!   `/proc/<pid>/status`;
//! - measures the raw limits of the parts in the same run, after switchyard has stopped: a bare
//!   librdkafka consumer reading the same orders topic, and bare durable appends to a fresh
//!   embedded store on the same disk;
//! - writes `report.md`, `report.json` and SVG plots to the output directory.

mod child;
mod finals;
pub mod report;
mod workload;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use child::{Scrape, Switchyard};
use report::{Machine, Raw, Report, Sample};

#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    #[error("scenario {path}: {message}")]
    Scenario { path: String, message: String },
    #[error("load-test i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("load-test Kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("Kafka set-up: {0}")]
    KafkaSetup(#[from] crate::kafka::KafkaSetupError),
    #[error("switchyard under test: {0}")]
    Child(String),
    #[error("raw store benchmark: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// One scenario file. Counts are scaled by `--scale`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Registered meters (produced to the registry topic before switchyard starts).
    pub meters: usize,
    /// Orders on the orders topic before switchyard starts: ingested at once.
    #[serde(default)]
    pub preload: Mix,
    /// Orders produced while switchyard runs, at a fixed rate.
    #[serde(default)]
    pub steady: Option<Steady>,
    /// A campaign of disconnects released at its rate, and a storm of reconnects on its meters.
    #[serde(default)]
    pub campaign: Option<CampaignLoad>,
    #[serde(default)]
    pub head_end: HeadEndLoad,
    /// `kill -9` switchyard once this many commands are in flight (or, if that is never
    /// reached, once every order is accepted and in flight has fallen from its peak), restart
    /// it, and time the recovery of the open orders.
    #[serde(default)]
    pub kill_at_in_flight: Option<usize>,
    /// Partitions per topic (embedded Kafka; topics created by the harness on an external one).
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Give up waiting for the orders to finish after this long (the report says so).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_partitions() -> i32 {
    4
}
fn default_timeout() -> u64 {
    900
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    #[serde(default)]
    pub disconnects: usize,
    #[serde(default)]
    pub reconnects: usize,
    #[serde(default)]
    pub reads: usize,
}

impl Mix {
    pub fn total(&self) -> usize {
        self.disconnects + self.reconnects + self.reads
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Steady {
    pub rate_per_sec: u32,
    pub duration_secs: u64,
    /// Shares of disconnects, reconnects and reads (normalised).
    pub mix: [f64; 3],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignLoad {
    /// Disconnects in the campaign (on the topic before switchyard starts).
    pub orders: usize,
    pub rate_per_hour: u32,
    /// Reconnects produced at once, on every other campaign meter, once the campaign has
    /// released `storm_after_releases` orders.
    pub storm_reconnects: usize,
    pub storm_after_releases: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadEndLoad {
    #[serde(default)]
    pub latency_median_ms: u64,
    #[serde(default)]
    pub latency_p99_ms: u64,
    #[serde(default)]
    pub failure_rate: f64,
    #[serde(default)]
    pub no_answer_rate: f64,
    #[serde(default = "default_deadline")]
    pub command_deadline_secs: u64,
}

fn default_deadline() -> u64 {
    30
}

impl Default for HeadEndLoad {
    fn default() -> Self {
        HeadEndLoad {
            latency_median_ms: 0,
            latency_p99_ms: 0,
            failure_rate: 0.0,
            no_answer_rate: 0.0,
            command_deadline_secs: default_deadline(),
        }
    }
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, LoadtestError> {
        let err = |message: String| LoadtestError::Scenario {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let s: Scenario = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        s.validate().map_err(err)?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), String> {
        if self.meters == 0 {
            return Err("`meters` must be at least 1".into());
        }
        if let Some(c) = &self.campaign {
            if c.rate_per_hour == 0 {
                return Err("`campaign.rate_per_hour` must be at least 1".into());
            }
            if c.orders > self.meters {
                return Err("`campaign.orders` must not exceed `meters` (one per meter)".into());
            }
            if c.storm_reconnects > c.orders.div_ceil(2) {
                return Err("`campaign.storm_reconnects` must not exceed half of `campaign.orders` (one per other campaign meter)".into());
            }
        }
        if let Some(s) = &self.steady {
            if s.mix.iter().any(|x| *x < 0.0) || s.mix.iter().sum::<f64>() <= 0.0 {
                return Err("`steady.mix` needs non-negative shares with a positive sum".into());
            }
        }
        let h = &self.head_end;
        for (k, v) in [
            ("head_end.failure_rate", h.failure_rate),
            ("head_end.no_answer_rate", h.no_answer_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("`{k}` must be between 0 and 1"));
            }
        }
        if self.partitions < 1 {
            return Err("`partitions` must be at least 1".into());
        }
        Ok(())
    }

    /// Multiplies every count by `f` (at least 1 where it was not 0).
    pub fn scaled(mut self, f: f64) -> Scenario {
        if (f - 1.0).abs() < f64::EPSILON {
            return self;
        }
        let s = |n: usize| {
            if n == 0 {
                0
            } else {
                ((n as f64 * f).round() as usize).max(1)
            }
        };
        self.meters = s(self.meters);
        self.preload = Mix {
            disconnects: s(self.preload.disconnects),
            reconnects: s(self.preload.reconnects),
            reads: s(self.preload.reads),
        };
        if let Some(st) = &mut self.steady {
            st.rate_per_sec = (s(st.rate_per_sec as usize) as u32).max(1);
        }
        if let Some(c) = &mut self.campaign {
            c.orders = s(c.orders).min(self.meters);
            c.storm_reconnects = s(c.storm_reconnects).min(c.orders.div_ceil(2));
            c.storm_after_releases = s(c.storm_after_releases);
        }
        if let Some(k) = &mut self.kill_at_in_flight {
            *k = s(*k);
        }
        self
    }

    /// Orders that must reach a final status for the run to be complete.
    fn expected_final(&self) -> usize {
        let steady = self
            .steady
            .as_ref()
            .map(|s| s.rate_per_sec as usize * s.duration_secs as usize)
            .unwrap_or(0);
        let storm = self
            .campaign
            .as_ref()
            .map(|c| 2 * c.storm_reconnects)
            .unwrap_or(0);
        self.preload.total() + steady + storm
    }

    /// Whether the order with this id (as the workload names them) is one of the
    /// `expected_final` orders: every preloaded, steady and storm order, and the campaign
    /// disconnects on the storm's meters (withdrawn or superseded by its reconnects, or
    /// released and finished before them). The other campaign orders finish only if the
    /// campaign happens to release them before the run ends.
    pub(crate) fn expects_final(&self, order_id: &str) -> bool {
        match workload::campaign_index(order_id) {
            Some(i) => self
                .campaign
                .as_ref()
                .is_some_and(|c| i % 2 == 0 && i / 2 < c.storm_reconnects),
            None => true,
        }
    }
}

/// Where a run writes its report when no `--out` is given: a new directory
/// `target/loadtest/<scenario>-<UTC time>` under the working directory (never
/// `load-tests/reports/`, whose committed reports only an explicit `--out` replaces).
pub fn fresh_out_dir(scenario: &str) -> PathBuf {
    let base = std::env::current_dir()
        .unwrap_or_else(|_| PathBuf::from("."))
        .join("target/loadtest");
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let mut dir = base.join(format!("{scenario}-{stamp}"));
    let mut n = 2;
    while dir.exists() {
        dir = base.join(format!("{scenario}-{stamp}-{n}"));
        n += 1;
    }
    dir
}

pub struct LoadtestOptions {
    pub scenario: PathBuf,
    /// An external Kafka-API broker; `None` = the mock cluster in the harness process.
    pub brokers: Option<String>,
    pub out: PathBuf,
    pub scale: f64,
    /// The command line, for the report's "reproduce" line.
    pub command_line: String,
}

/// Runs a scenario and writes its report. Needs a tokio runtime.
pub async fn run(opts: LoadtestOptions) -> Result<Report, LoadtestError> {
    let scenario = Scenario::load(&opts.scenario)?.scaled(opts.scale);
    let run_id = jiff::Timestamp::now().as_second().to_string();
    std::fs::create_dir_all(&opts.out)?;
    let data = opts.out.join("data");
    let _ = std::fs::remove_dir_all(&data);
    let log = opts.out.join("switchyard.log");
    let _ = std::fs::remove_file(&log);
    eprintln!(
        "scenario {} ({}), output in {}",
        scenario.name,
        scenario.description,
        opts.out.display()
    );

    // The Kafka side. On an external broker every topic and group gets this run's suffix, so
    // that runs never read each other's records.
    // The built-in configuration with the environment's overrides (e.g. the
    // `SWITCHYARD__KAFKA__CLIENT__*` security settings of an external cluster, which the
    // switchyard under test inherits too).
    let mut config = crate::Config::load(None)
        .map_err(|e| LoadtestError::Child(format!("configuration: {e}")))?;
    let mut env: Vec<(String, String)> = Vec::new();
    let embedded;
    let (bootstrap, broker_label) = match &opts.brokers {
        None => {
            let topics = config.topics.names();
            // librdkafka's mock cluster keeps about 5 MB per partition: enough partitions
            // that nothing produced in this run is dropped (4 MB each, with room).
            let parts = |bytes: usize| (bytes.div_ceil(4_000_000) as i32).max(scenario.partitions);
            let orders = scenario.expected_final()
                + scenario.campaign.as_ref().map(|c| c.orders).unwrap_or(0);
            let sized: Vec<(String, i32)> = topics
                .iter()
                .map(|t| {
                    let p = if *t == config.topics.registry {
                        parts(scenario.meters * 220)
                    } else if *t == config.topics.orders || *t == config.topics.dead_letter {
                        parts(orders * 400)
                    } else if *t == config.topics.order_events {
                        parts(orders * 5 * 500)
                    } else {
                        scenario.partitions
                    };
                    (t.clone(), p)
                })
                .collect();
            embedded = Some(crate::kafka::EmbeddedKafka::start_with(&sized)?);
            let b = embedded
                .as_ref()
                .map(|e| e.bootstrap_servers().to_string())
                .unwrap_or_default();
            (b, "embedded (librdkafka mock cluster)".to_string())
        }
        Some(b) => {
            embedded = None;
            config.topics.suffix_all(&format!(".{run_id}"));
            config.kafka.brokers = b.clone();
            config.kafka.embedded_partitions = scenario.partitions;
            crate::kafka::ensure_topics(&config, b).await?;
            for (key, t) in config.topics.all() {
                env.push((
                    format!("SWITCHYARD__{}", key.replace('.', "__").to_uppercase()),
                    t.to_string(),
                ));
            }
            (b.clone(), format!("external Kafka API at {b}"))
        }
    };
    config.kafka.brokers = bootstrap.clone();
    let h = &scenario.head_end;
    env.extend(
        [
            ("KAFKA__BROKERS", bootstrap.clone()),
            ("KAFKA__GROUP_ID", format!("switchyard-lt-{run_id}")),
            ("DATA_DIR", data.display().to_string()),
            (
                "LOG__LEVEL",
                std::env::var("SWITCHYARD_LOADTEST_LOG").unwrap_or_else(|_| "warn".into()),
            ),
            ("HEAD_END__MODE", "simulator".to_string()),
            (
                "HEAD_END__COMMAND_DEADLINE_SECS",
                h.command_deadline_secs.to_string(),
            ),
            (
                "HEAD_END__SIMULATOR__LATENCY_MEDIAN_MS",
                h.latency_median_ms.to_string(),
            ),
            (
                "HEAD_END__SIMULATOR__LATENCY_P99_MS",
                h.latency_p99_ms.to_string(),
            ),
            (
                "HEAD_END__SIMULATOR__FAILURE_RATE",
                h.failure_rate.to_string(),
            ),
            (
                "HEAD_END__SIMULATOR__NO_ANSWER_RATE",
                h.no_answer_rate.to_string(),
            ),
            ("HEAD_END__SIMULATOR__LSV_REJECT_RATE", "0".to_string()),
            ("HEAD_END__BACKOFF_INITIAL_MS", "500".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("SWITCHYARD__{k}"), v)),
    );

    // 1. Baseline: switchyard on empty topics (its resident memory with no meters).
    eprintln!("baseline: switchyard with an empty registry");
    let mut base_env = env.clone();
    for (k, v) in base_env.iter_mut() {
        if k == "SWITCHYARD__DATA_DIR" {
            *v = opts.out.join("baseline-data").display().to_string();
        }
        if k == "SWITCHYARD__KAFKA__GROUP_ID" {
            v.push_str("-baseline");
        }
    }
    let _ = std::fs::remove_dir_all(opts.out.join("baseline-data"));
    let mut baseline = Switchyard::spawn(&base_env, &log)?;
    let baseline_ready = baseline.wait_ready(Duration::from_secs(120)).await?;
    let (baseline_rss, _) = child::memory(baseline.pid());
    baseline.stop()?;
    drop(baseline);
    let _ = std::fs::remove_dir_all(opts.out.join("baseline-data"));

    // 2. The registry and the orders already waiting.
    let gen = workload::Generator::new(&config, &bootstrap, &scenario)?;
    // Final statuses per distinct order, from the order events themselves.
    let mut follower =
        finals::Follower::start(&config, &bootstrap, &config.topics.order_events, &scenario)?;
    let t = Instant::now();
    gen.registry(scenario.meters)?;
    let registry_produce = t.elapsed();
    eprintln!(
        "{} meters produced to the registry topic in {:.1} s",
        scenario.meters,
        registry_produce.as_secs_f64()
    );
    let t = Instant::now();
    let preloaded = gen.preload()?;
    let preload_produce = t.elapsed();
    eprintln!(
        "{preloaded} orders produced to the orders topic in {:.1} s",
        preload_produce.as_secs_f64()
    );

    // 3. switchyard.
    let mut sy = Switchyard::spawn(&env, &log)?;
    let pid = Arc::new(Mutex::new((sy.pid(), sy.http, 0u32)));
    let startup = sy.wait_ready(Duration::from_secs(1800)).await?;
    let (rss_ready, _) = child::memory(sy.pid());
    eprintln!(
        "switchyard ready in {:.1} s (registry of {} meters replayed), RSS {} MiB",
        startup.as_secs_f64(),
        scenario.meters,
        rss_ready / (1 << 20)
    );
    let run_started = Instant::now();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let sampler = tokio::spawn(sample_loop(pid.clone(), samples.clone(), run_started));

    // 4. Traffic while it runs.
    let mut storm_at = None;
    let mut produced_live = 0usize;
    if let Some(st) = scenario.steady.clone() {
        let g = gen.clone();
        produced_live += tokio::task::spawn_blocking(move || g.steady(&st))
            .await
            .map_err(|e| LoadtestError::Child(e.to_string()))??;
    }
    if let Some(c) = scenario.campaign.clone() {
        let until = Instant::now() + Duration::from_secs(scenario.timeout_secs);
        loop {
            let released = last(&samples).map(|s| s.releases).unwrap_or(0.0);
            if released as usize >= c.storm_after_releases {
                break;
            }
            if Instant::now() > until {
                return Err(LoadtestError::Child(format!(
                    "the campaign released {released} orders, not {} (see the log)",
                    c.storm_after_releases
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        storm_at = Some(run_started.elapsed().as_secs_f64());
        let g = gen.clone();
        produced_live += tokio::task::spawn_blocking(move || g.storm(&c))
            .await
            .map_err(|e| LoadtestError::Child(e.to_string()))??;
        eprintln!("storm of reconnects produced");
    }

    // 5. kill -9 at the peak, restart, time the recovery.
    let mut recovery = None;
    let mut latency_before_kill = None;
    if let Some(at) = scenario.kill_at_in_flight {
        // At the trigger, or at the peak if the trigger is never reached (a machine too slow
        // to get that many commands out before the first answers come back): every order
        // accepted and in flight 10 % below its peak.
        let until = Instant::now() + Duration::from_secs(scenario.timeout_secs);
        let mut peak = 0.0f64;
        let (in_flight_at_kill, trigger_missed) = loop {
            let (f, received) = last(&samples)
                .map(|s| (s.in_flight, s.received))
                .unwrap_or((0.0, 0.0));
            peak = peak.max(f);
            let all_accepted = received as usize >= preloaded + produced_live;
            if let Some(missed) = kill_now(f, peak, at, all_accepted) {
                if missed {
                    eprintln!(
                        "in flight peaked at {peak} (not {at}) and is falling: killing now, at {f}"
                    );
                }
                break (f as u64, missed);
            }
            if Instant::now() > until {
                return Err(LoadtestError::Child(format!(
                    "in-flight commands reached {f}, not {at}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        latency_before_kill = sy.latency().await;
        let open = last(&samples)
            .map(|s| (s.received - s.terminal).max(0.0) as u64)
            .unwrap_or(0);
        let killed_at = run_started.elapsed().as_secs_f64();
        sy.kill9()?;
        eprintln!("kill -9 with {open} open orders; restarting");
        let mut again = Switchyard::spawn(&env, &log)?;
        *pid.lock().expect("lock") = (again.pid(), again.http, 1);
        let ready = again.wait_ready(Duration::from_secs(1800)).await?;
        eprintln!("recovered in {:.1} s", ready.as_secs_f64());
        recovery = Some(report::Recovery {
            open_orders: open,
            killed_at_s: killed_at,
            ready_secs: ready.as_secs_f64(),
            in_flight_at_kill,
            trigger_missed,
        });
        sy = again;
    }

    // 6. Until every order has a final status.
    let produced = preloaded + produced_live;
    let expected = scenario.expected_final();
    let until = Instant::now() + Duration::from_secs(scenario.timeout_secs);
    let mut timed_out = false;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let s = samples.lock().expect("lock");
        let done = s.len() >= 2 && {
            let a = &s[s.len() - 1];
            let b = &s[s.len() - 2];
            follower.finals.expected() as usize >= expected
                && a.in_flight == 0.0
                && a.pending_commit == 0.0
                && b.pending_commit == 0.0
        };
        drop(s);
        if done {
            break;
        }
        if Instant::now() > until {
            timed_out = true;
            eprintln!("timed out waiting for final statuses; reporting what was reached");
            break;
        }
    }
    let latency = sy.latency().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    sampler.abort();
    let (_, peak_rss) = child::memory(sy.pid());
    sy.stop()?;
    drop(sy);
    follower.stop();

    // 7. The raw limits, same machine, same run.
    eprintln!("raw limits: bare librdkafka consumer on the orders topic, bare store appends");
    let orders_topic = config.topics.orders.clone();
    let raw_consume = {
        let cfg = config.clone();
        let b = bootstrap.clone();
        tokio::task::spawn_blocking(move || {
            workload::raw_consume(&cfg, &b, &orders_topic, produced)
        })
        .await
        .map_err(|e| LoadtestError::Child(e.to_string()))??
    };
    let raw_dir = opts.out.join("raw-store");
    let raw_store = tokio::task::spawn_blocking(move || workload::raw_store_append(&raw_dir))
        .await
        .map_err(|e| LoadtestError::Child(e.to_string()))??;
    let _ = std::fs::remove_dir_all(opts.out.join("raw-store"));

    let samples = samples.lock().expect("lock").clone();
    let report = Report::build(report::Inputs {
        scenario,
        broker: broker_label,
        machine: Machine::here(),
        command: opts.command_line,
        produced,
        expected_final: expected,
        orders_final: follower.finals.expected(),
        other_final: follower.finals.other(),
        timed_out,
        baseline_rss,
        baseline_ready_secs: baseline_ready.as_secs_f64(),
        rss_ready,
        peak_rss,
        startup_secs: startup.as_secs_f64(),
        registry_produce_secs: registry_produce.as_secs_f64(),
        preload_produce_secs: preload_produce.as_secs_f64(),
        samples,
        storm_at,
        latency,
        latency_before_kill,
        recovery,
        raw: Raw {
            consume_per_sec: raw_consume,
            store_append_rows_per_sec: raw_store,
        },
    });
    report.write(&opts.out)?;
    let _ = std::fs::remove_dir_all(&data);
    drop(gen);
    drop(embedded);
    Ok(report)
}

fn last(samples: &Mutex<Vec<Sample>>) -> Option<Sample> {
    samples.lock().expect("lock").last().cloned()
}

/// A counter over the whole run (counters restart with the process after a kill: the last
/// value of each process life is added up). Work counted just before a kill -9 whose write was
/// lost is counted again when it is redone: totals across a kill are slightly high.
/// When to `kill -9`: `Some(false)` at the scenario's in-flight trigger, `Some(true)` once the
/// trigger can no longer be reached (every order accepted and in flight 10 % below its peak),
/// `None` to keep waiting.
fn kill_now(in_flight: f64, peak: f64, trigger: usize, all_accepted: bool) -> Option<bool> {
    if in_flight as usize >= trigger {
        Some(false)
    } else if all_accepted && in_flight < 0.9 * peak {
        Some(true)
    } else {
        None
    }
}

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

async fn sample_loop(
    target: Arc<Mutex<(u32, std::net::SocketAddr, u32)>>,
    out: Arc<Mutex<Vec<Sample>>>,
    started: Instant,
) {
    loop {
        let (pid, http, life) = *target.lock().expect("lock");
        if let Ok((200, body)) = child::get(http, "/metrics").await {
            let m = Scrape::parse(&body);
            let (rss, _) = child::memory(pid);
            let terminal = ["completed", "failed", "cancelled", "rejected"]
                .iter()
                .map(|s| {
                    m.sum(
                        "switchyard_order_status_total",
                        &[&format!("status=\"{s}\"")],
                    )
                })
                .sum();
            out.lock().expect("lock").push(Sample {
                t: started.elapsed().as_secs_f64(),
                life,
                received: m.sum("switchyard_orders_received_total", &[]),
                terminal,
                commands: m.sum("switchyard_commands_sent_total", &[]),
                audit_rows: m.sum("switchyard_audit_rows_total", &[]),
                releases: m.sum("switchyard_campaign_releases_total", &[]),
                in_flight: m.sum("switchyard_commands_in_flight", &[]),
                live_actors: m.sum("switchyard_meter_actors_live", &[]),
                pending_commit: m.sum("switchyard_intake_records_pending_commit", &[]),
                outbox_pending: m.sum("switchyard_outbox_pending", &[]),
                timed_out: m.sum(
                    "switchyard_command_results_total",
                    &["outcome=\"timed_out\""],
                ),
                rss,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::{kill_now, CampaignLoad, Scenario};

    #[test]
    fn the_expected_finals_are_the_workload_orders_and_the_storm_meters_campaign_orders() {
        let mut s: Scenario =
            toml::from_str("name = \"x\"\ndescription = \"x\"\nmeters = 10\n").unwrap();
        assert!(s.expects_final("PO-read-00000001"));
        assert!(s.expects_final("ST-00000001"));
        assert!(s.expects_final("RC-00000001"));
        s.campaign = Some(CampaignLoad {
            orders: 10,
            rate_per_hour: 1,
            storm_reconnects: 3,
            storm_after_releases: 1,
        });
        // Storm reconnects on meters 0, 2 and 4: those campaign orders are expected.
        let expected: Vec<usize> = (0..10)
            .filter(|i| s.expects_final(&format!("CO-{i:08}")))
            .collect();
        assert_eq!(expected, vec![0, 2, 4]);
        assert_eq!(s.expected_final(), 6);
    }

    #[test]
    fn the_kill_comes_at_the_trigger_or_once_the_peak_has_passed() {
        // The trigger reached: kill, not missed.
        assert_eq!(kill_now(150_000.0, 150_000.0, 150_000, false), Some(false));
        // Still rising, or orders still arriving: wait.
        assert_eq!(kill_now(120_000.0, 120_000.0, 150_000, true), None);
        assert_eq!(kill_now(80_000.0, 125_000.0, 150_000, false), None);
        // A dip of less than 10 % is noise: wait.
        assert_eq!(kill_now(115_000.0, 125_000.0, 150_000, true), None);
        // Every order accepted and well past the peak: the trigger will never come.
        assert_eq!(kill_now(85_000.0, 125_000.0, 150_000, true), Some(true));
    }
}
