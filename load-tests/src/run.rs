//! One run of a scenario: the Kafka side, the baseline, the registry and the orders, switchyard
//! under load (a kill -9 and a restart if the scenario says so), the raw limits, the report.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard::config::TopicsConfig;
use switchyard::{kafka, Config};

use crate::child::{self, Scrape, Switchyard};
use crate::report::{self, Machine, Raw, Report, Sample};
use crate::scenario::Scenario;
use crate::{finals, workload, LoadtestError};

/// The switchyard binary in the harness's own directory (`target/release/` after
/// `cargo build --release`): the default of `--switchyard`.
pub fn switchyard_next_to_harness() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    Ok(dir.join(format!("switchyard{}", std::env::consts::EXE_SUFFIX)))
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
    /// The switchyard binary under test (run as `switchyard run`).
    pub switchyard: PathBuf,
    /// An external Kafka-API broker; `None` = the mock cluster in the harness process.
    pub brokers: Option<String>,
    pub out: PathBuf,
    pub scale: f64,
    /// The command line, for the report's "reproduce" line.
    pub command_line: String,
    /// switchyard processes in one consumer group (1: the single instance).
    pub instances: usize,
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
    let mut config =
        Config::load(None).map_err(|e| LoadtestError::Child(format!("configuration: {e}")))?;
    let mut env: Vec<(String, String)> = Vec::new();
    // The store: embedded in the run's data directory, or (`SWITCHYARD__STORE__BACKEND=scylla`
    // in the environment) the CQL cluster, in a keyspace of this run's own.
    let cql_keyspace = config.cql_store().map(|_| format!("lt_{run_id}"));
    let embedded;
    let orders_partitions: i32;
    let (bootstrap, broker_label) = match &opts.brokers {
        None => {
            let topics = config.topics.names();
            // librdkafka's mock cluster keeps about 5 MB per partition: enough partitions
            // that nothing produced in this run is dropped (4 MB each, with room).
            let parts = |bytes: usize| (bytes.div_ceil(4_000_000) as i32).max(scenario.partitions);
            let orders = scenario.expected_final()
                + scenario.campaign.as_ref().map(|c| c.orders).unwrap_or(0);
            // The meter-keyed topics share the orders topic's count (switchyard refuses to start
            // otherwise: a meter's ownership unit is its partition of each).
            let t = &config.topics;
            let meter_keyed = [
                &t.orders,
                &t.customer_facts,
                &t.control,
                &t.head_end_results,
                &t.campaign_control,
                &t.reads,
            ];
            // A read record is about 230 bytes.
            let meter_keyed_bytes = (orders * 400).max(scenario.preload.meter_reads * 260);
            let sized: Vec<(String, i32)> = topics
                .iter()
                .map(|t| {
                    let p = if *t == config.topics.registry {
                        parts(scenario.meters * 220)
                    } else if meter_keyed.contains(&t) || *t == config.topics.dead_letter {
                        parts(meter_keyed_bytes)
                    } else if *t == config.topics.order_events {
                        // Only the harness's finals follower reads the order events, at the
                        // topic's end: it needs seconds of them kept, not the whole run. Each
                        // partition more makes the mock's batches smaller and its log longer,
                        // and the mock finds a fetch's offset by walking its log from the start
                        // (`rd_kafka_mock_msgset_find`): with one partition per 4 MB (169 in
                        // steady), that walk took a quarter of the machine. One per 40 MB keeps
                        // about 15 s of steady's events; the follower stops the run if it ever
                        // falls behind what the mock kept (`finals::Follower`).
                        (((orders * 5 * 500).div_ceil(40_000_000)) as i32).max(scenario.partitions)
                    } else {
                        scenario.partitions
                    };
                    (t.clone(), p)
                })
                .collect();
            orders_partitions = sized
                .iter()
                .find(|(t, _)| *t == config.topics.orders)
                .map(|(_, p)| *p)
                .unwrap_or(scenario.partitions);
            embedded = Some(kafka::EmbeddedKafka::start_with(&sized)?);
            let b = embedded
                .as_ref()
                .map(|e| e.bootstrap_servers().to_string())
                .unwrap_or_default();
            (b, "embedded (librdkafka mock cluster)".to_string())
        }
        Some(b) => {
            embedded = None;
            config.topics = suffixed(&config.topics, &format!(".{run_id}"));
            config.kafka.brokers = b.clone();
            config.kafka.embedded_partitions = scenario.partitions;
            orders_partitions = scenario.partitions;
            kafka::ensure_topics(&config, b).await?;
            for (key, t) in config.topics.all() {
                env.push((
                    format!("SWITCHYARD__{}", key.replace('.', "__").to_uppercase()),
                    t.to_string(),
                ));
            }
            (b.clone(), format!("external Kafka API at {b}"))
        }
    };
    let n = opts.instances.max(1);
    if n > 1 && (cql_keyspace.is_none() || scenario.kill_at_in_flight.is_some()) {
        return Err(LoadtestError::Child(format!(
            "{n} instances need the ScyllaDB store (SWITCHYARD__STORE__BACKEND=scylla: instances share it) and a scenario without kill_at_in_flight"
        )));
    }
    let store_label = match (config.cql_store(), &cql_keyspace) {
        (Some((nodes, _)), Some(ks)) => {
            env.push(("SWITCHYARD__STORE__SCYLLA__KEYSPACE".into(), ks.clone()));
            // The open-work index's units are the orders topic's partitions.
            env.push((
                "SWITCHYARD__STORE__SCYLLA__OWNERSHIP_UNITS".into(),
                orders_partitions.to_string(),
            ));
            format!("ScyllaDB store (store.backend = scylla): CQL at {nodes}, keyspace {ks}")
        }
        _ => "embedded (redb), in the run's data directory".to_string(),
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
    if !h.outages.is_empty() {
        // A TOML array of inline tables (environment overrides are TOML values).
        let list: Vec<String> = h
            .outages
            .iter()
            .map(|o| {
                format!(
                    "{{ head_end = \"{}\", segment = \"{}\", after_secs = {}, for_secs = {} }}",
                    o.head_end, o.segment, o.after_secs, o.for_secs
                )
            })
            .collect();
        env.push((
            "SWITCHYARD__HEAD_END__SIMULATOR__OUTAGES".into(),
            format!("[{}]", list.join(", ")),
        ));
        env.push((
            "SWITCHYARD__HEAD_END__BREAKER__ENABLED".into(),
            "true".into(),
        ));
    }
    for (k, v) in [
        ("OPEN_SECS", h.breaker_open_secs),
        ("OPEN_MAX_SECS", h.breaker_open_max_secs),
    ] {
        if let Some(v) = v {
            env.push((format!("SWITCHYARD__HEAD_END__BREAKER__{k}"), v.to_string()));
        }
    }

    // 1. Baseline: switchyard on empty topics (its resident memory with no meters).
    eprintln!("baseline: switchyard with an empty registry");
    let mut base_env = env.clone();
    for (k, v) in base_env.iter_mut() {
        if k == "SWITCHYARD__DATA_DIR" {
            *v = opts.out.join("baseline-data").display().to_string();
        }
        if k == "SWITCHYARD__KAFKA__GROUP_ID" || k == "SWITCHYARD__STORE__SCYLLA__KEYSPACE" {
            v.push_str(if k.ends_with("KEYSPACE") {
                "_baseline"
            } else {
                "-baseline"
            });
        }
    }
    let _ = std::fs::remove_dir_all(opts.out.join("baseline-data"));
    let mut baseline = Switchyard::spawn(&opts.switchyard, &base_env, &log)?;
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
    if scenario.preload.meter_reads > 0 {
        let t = Instant::now();
        let n = gen.meter_reads()?;
        eprintln!(
            "{n} meter reads produced to the reads topic in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }

    // 3. switchyard: one instance, or `n` in one consumer group (the schema applied first by
    // `switchyard migrate`, then all started at once, so that the group's first assignment
    // shares the units and no instance runs alone on the preloaded orders).
    let mut others = Vec::new();
    let mut store_label = store_label;
    if n > 1 {
        let status = std::process::Command::new(&opts.switchyard)
            .arg("migrate")
            .envs(env.iter().cloned())
            .stdout(std::process::Stdio::null())
            .status()?;
        if !status.success() {
            return Err(LoadtestError::Child(format!(
                "switchyard migrate failed ({status})"
            )));
        }
        env.push((
            "SWITCHYARD__STORE__SCYLLA__MIGRATE_AT_START".into(),
            "false".into(),
        ));
        store_label.push_str(&format!(
            "; {n} instances in one consumer group (memory figures are the first instance's; rates and counts are sums over all)"
        ));
    }
    let instance_env = |i: usize| {
        let mut e = env.clone();
        if n > 1 {
            e.push((
                "SWITCHYARD__KAFKA__INSTANCE_ID".into(),
                format!("lt-{run_id}-{i}"),
            ));
            e.push((
                "SWITCHYARD__DATA_DIR".into(),
                data.join(format!("instance-{i}")).display().to_string(),
            ));
        }
        e
    };
    let mut sy = Switchyard::spawn(&opts.switchyard, &instance_env(0), &log)?;
    for i in 1..n {
        others.push(Switchyard::spawn(
            &opts.switchyard,
            &instance_env(i),
            &opts.out.join(format!("switchyard-{i}.log")),
        )?);
    }
    let pid = Arc::new(Mutex::new((sy.pid(), sy.http, 0u32)));
    let startup = sy.wait_ready(Duration::from_secs(1800)).await?;
    for o in &mut others {
        o.wait_ready(Duration::from_secs(1800)).await?;
    }
    let other_targets: Vec<(u32, std::net::SocketAddr)> =
        others.iter().map(|o| (o.pid(), o.http)).collect();
    let (rss_ready, _) = child::memory(sy.pid());
    eprintln!(
        "switchyard ready in {:.1} s (registry of {} meters replayed), RSS {} MiB",
        startup.as_secs_f64(),
        scenario.meters,
        rss_ready / (1 << 20)
    );
    let run_started = Instant::now();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let sampler = tokio::spawn(sample_loop(
        pid.clone(),
        other_targets,
        samples.clone(),
        run_started,
    ));

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
        let mut again = Switchyard::spawn(&opts.switchyard, &env, &log)?;
        *pid.lock().expect("lock") = (again.pid(), again.http, 1);
        let ready = again.wait_ready(Duration::from_secs(1800)).await?;
        eprintln!("ready again in {:.1} s", ready.as_secs_f64());
        let resumed = again.wait_recovered(Duration::from_secs(1800)).await?;
        eprintln!(
            "every meter with open work resumed {:.1} s after the restart",
            resumed.as_secs_f64()
        );
        recovery = Some(report::Recovery {
            open_orders: open,
            killed_at_s: killed_at,
            ready_secs: ready.as_secs_f64(),
            resumed_secs: Some(resumed.as_secs_f64()),
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
                && a.reads as usize >= scenario.preload.meter_reads
                && a.in_flight == 0.0
                && a.pending_commit == 0.0
                && b.pending_commit == 0.0
        };
        drop(s);
        if done {
            break;
        }
        if follower.finals.lost_events() {
            return Err(LoadtestError::Child(LOST_EVENTS.into()));
        }
        if Instant::now() > until {
            timed_out = true;
            eprintln!("timed out waiting for final statuses; reporting what was reached");
            break;
        }
    }
    let latency = sy.latency().await;
    let stages = sy.stages().await;
    let store_waits = sy.store_waits().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    sampler.abort();
    let (_, peak_rss) = child::memory(sy.pid());
    sy.stop()?;
    drop(sy);
    for mut o in others {
        o.stop()?;
    }
    follower.stop();
    if follower.finals.lost_events() {
        return Err(LoadtestError::Child(LOST_EVENTS.into()));
    }

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
    let raw_reads = if scenario.preload.meter_reads > 0 {
        let (cfg, b, topic, n) = (
            config.clone(),
            bootstrap.clone(),
            config.topics.reads.clone(),
            scenario.preload.meter_reads,
        );
        Some(
            tokio::task::spawn_blocking(move || workload::raw_consume(&cfg, &b, &topic, n))
                .await
                .map_err(|e| LoadtestError::Child(e.to_string()))??,
        )
    } else {
        None
    };
    let raw_dir = opts.out.join("raw-store");
    let (raw_store, store_raw_what) = match cql_keyspace.clone() {
        // The same cluster and keyspace, the store's concurrency: a bare driver loop.
        Some(ks) => {
            let cfg = config.clone();
            let (rate, in_flight) = tokio::task::spawn_blocking(move || {
                switchyard::raw_cql_audit_limit(&cfg, &ks, Duration::from_secs(10))
            })
            .await
            .map_err(|e| LoadtestError::Child(e.to_string()))?
            .map_err(|e| LoadtestError::Child(format!("raw CQL inserts: {e}")))?
            .expect("a CQL store is configured");
            (
                rate,
                Some(format!("bare CQL audit inserts, {in_flight} in flight")),
            )
        }
        None => (
            tokio::task::spawn_blocking(move || workload::raw_store_append(&raw_dir))
                .await
                .map_err(|e| LoadtestError::Child(e.to_string()))??,
            None,
        ),
    };
    let _ = std::fs::remove_dir_all(opts.out.join("raw-store"));

    let samples = samples.lock().expect("lock").clone();
    // 8. Memory per live actor, apart: the actor's own overhead and with one open order
    // (what the run's resident-set growth cannot separate), where the scenario tests it at
    // scale.
    let peak_live = samples.iter().map(|s| s.live_actors).fold(0.0, f64::max);
    let actor_memory = if scenario
        .targets
        .tested(&scenario)
        .contains(&crate::targets::Goal::MemoryPerActor)
        && peak_live >= 10_000.0
    {
        eprintln!("memory per live actor: {ACTOR_MEMORY_METERS} actors with and without an order, counting allocator");
        Some(
            tokio::task::spawn_blocking(|| actor_memory(ACTOR_MEMORY_METERS))
                .await
                .map_err(|e| LoadtestError::Child(e.to_string()))??,
        )
    } else {
        None
    };
    let report = Report::build(report::Inputs {
        scenario,
        broker: broker_label,
        store: store_label,
        machine: Machine::here(),
        command: opts.command_line,
        produced,
        expected_final: expected,
        orders_final: follower.finals.expected(),
        other_final: follower.finals.other(),
        held_by_head_end: follower.finals.held_by_head_end(),
        failed_by_reason: follower.finals.failed_by_reason(),
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
        stages,
        store_waits,
        recovery,
        raw: Raw {
            consume_per_sec: raw_consume,
            store_append_rows_per_sec: raw_store,
            store_what: store_raw_what,
            consume_reads_per_sec: raw_reads,
        },
        actor_memory,
    });
    report.write(&opts.out)?;
    let _ = std::fs::remove_dir_all(&data);
    drop(gen);
    drop(embedded);
    Ok(report)
}

/// How many actors `switchyard-actor-memory` measures after a run (as its bench does).
const ACTOR_MEMORY_METERS: usize = 100_000;

/// Runs `switchyard-actor-memory` (next to the harness) on `meters` actors and reads its one
/// JSON object.
fn actor_memory(meters: usize) -> Result<report::ActorMemory, LoadtestError> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().unwrap_or(Path::new(".")).join(format!(
        "switchyard-actor-memory{}",
        std::env::consts::EXE_SUFFIX
    ));
    let out = std::process::Command::new(&bin)
        .args(["--meters", &meters.to_string(), "--json"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| {
            LoadtestError::Child(format!(
                "cannot run {} (built with the harness by `cargo build --release`): {e}",
                bin.display()
            ))
        })?;
    if !out.status.success() {
        return Err(LoadtestError::Child(format!(
            "{} failed: {}",
            bin.display(),
            out.status
        )));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        LoadtestError::Child(format!(
            "{} printed no measurement: {e}: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stdout)
        ))
    })
}

/// `topics` with `suffix` appended to every name (each run's records apart on a shared broker).
/// Through serde, so that a topic added to switchyard's configuration gets the suffix too.
fn suffixed(topics: &TopicsConfig, suffix: &str) -> TopicsConfig {
    let mut v = serde_json::to_value(topics).expect("topic names serialize");
    if let Some(names) = v.as_object_mut() {
        for name in names.values_mut() {
            if let Some(n) = name.as_str() {
                *name = format!("{n}{suffix}").into();
            }
        }
    }
    serde_json::from_value(v).expect("the same topic names, suffixed")
}

fn last(samples: &Mutex<Vec<Sample>>) -> Option<Sample> {
    samples.lock().expect("lock").last().cloned()
}

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

/// Every 200 ms: the metrics of `target` (the first instance, whose life changes at a restart)
/// and of `others` (more instances in its group), summed.
async fn sample_loop(
    target: Arc<Mutex<(u32, std::net::SocketAddr, u32)>>,
    others: Vec<(u32, std::net::SocketAddr)>,
    out: Arc<Mutex<Vec<Sample>>>,
    started: Instant,
) {
    loop {
        let (pid, http, life) = *target.lock().expect("lock");
        if let Ok((200, body)) = child::get(http, "/metrics").await {
            let mut bodies = vec![body];
            for (_, h) in &others {
                if let Ok((200, b)) = child::get(*h, "/metrics").await {
                    bodies.push(b);
                }
            }
            if bodies.len() != others.len() + 1 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue; // a sample is all instances or none
            }
            let m = Scrape::summed(bodies.iter().map(|b| Scrape::parse(b)));
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
                reads: m.sum("switchyard_reads_total", &[]),
                breaker_opens: m.sum("switchyard_head_end_breaker_opens_total", &[]),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::kill_now;

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

/// Why a run stops when its finals follower missed order events.
const LOST_EVENTS: &str = "the finals follower fell behind what the embedded Kafka keeps of the order events (5 MB per partition) and missed some: its counts would be short. Give the order-events topic more partitions (load-tests/src/run.rs)";
