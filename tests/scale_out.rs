//! Scale out (issue 14): two `switchyard` processes in one consumer group on the real Kafka
//! broker, sharing one keyspace on the real CQL server (Cassandra 5, the protocol ScyllaDB
//! speaks), with the Kafka head-end bridge and this test as the head-end adapter (it keeps
//! the true switch state of every meter and records every command it receives).
//!
//! Ownership and hand-over: the second instance takes a share of the units when it joins;
//! one instance is killed with SIGKILL mid-run and the other takes its units once its session
//! expires, loads their open work and finishes it; the killed one is started again and takes
//! units back (a graceful hand-over from the survivor). At the end every order is final and
//! no meter got a switch command twice. Needs the real servers (tests/run.sh starts them);
//! skipped otherwise. Not covered yet: an instance frozen (SIGSTOP) past its session, which
//! needs the fencing of docs/architecture.md "Scale out".

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use switchyard::domain::{CommandKind, OrderStatus, SwitchState};

const UNITS: i32 = 4;

/// One instance's directory: its config (the shared environment plus its instance id).
fn instance(
    root: &Path,
    name: &str,
    bootstrap: &str,
    env: &[(String, String)],
) -> (PathBuf, PathBuf) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_child_config(
        &dir,
        bootstrap,
        &[
            ("mode = \"simulator\"", "mode = \"kafka\""),
            ("command_deadline_secs = 30", "command_deadline_secs = 5"),
            ("backoff_initial_ms = 2000", "backoff_initial_ms = 50"),
        ],
    );
    let mut env = env.to_vec();
    env.push((
        "SWITCHYARD__KAFKA__INSTANCE_ID".to_string(),
        format!("switchyard-{name}"),
    ));
    let lines: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(dir.join("switchyard.env"), lines).unwrap();
    (config, dir.join("switchyard.log"))
}

fn count(log: &Path, line: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(line)
        .count()
}

fn tail(log: &Path) -> String {
    let t = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

#[actix_rt::test]
async fn two_instances_share_the_meters_and_a_killed_ones_units_are_finished_by_the_other() {
    if std::env::var("SWITCHYARD_TEST_BACKEND").as_deref() == Ok("scylla") {
        return; // on the real servers already in the first pass
    }
    let (Some(kafka), Some(cql)) = (
        common::servers::kafka("scale out"),
        common::servers::cql("scale out"),
    ) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let (tag, mut env) = real_broker_env(&kafka, "switchyard-scale");
    env.extend([
        (
            "SWITCHYARD__KAFKA__SESSION_TIMEOUT_MS".to_string(),
            "6s".to_string(),
        ),
        (
            "SWITCHYARD__STORE__BACKEND".to_string(),
            "scylla".to_string(),
        ),
        ("SWITCHYARD__STORE__SCYLLA__NODES".to_string(), cql),
        (
            "SWITCHYARD__STORE__SCYLLA__KEYSPACE".to_string(),
            format!("scale_{}", &tag[tag.len() - 9..]),
        ),
        (
            "SWITCHYARD__STORE__SCYLLA__OWNERSHIP_UNITS".to_string(),
            UNITS.to_string(),
        ),
    ]);
    let mut cfg = switchyard::Config::load_with_env(None, env.clone()).unwrap();
    let _no_mock = host_kafka_with(&mut cfg, UNITS); // creates the topics on the broker
    let (a_config, a_log) = instance(root.path(), "a", &kafka, &env);
    let (b_config, b_log) = instance(root.path(), "b", &kafka, &env);

    let p = producer(&kafka);
    let events = TopicLog::follow(&kafka, &cfg.topics.order_events);
    let field = Arc::new(Mutex::new(Field::default()));
    run_adapter(
        &kafka,
        &cfg.topics.head_end_commands,
        &cfg.topics.head_end_results,
        field.clone(),
    );
    let n = 1200;
    let meter_id = |i: usize| format!("SO-M-{i:05}");
    for i in 0..n {
        let m = meter_id(i);
        produce_json(&p, &cfg.topics.registry, &m, meter(&m, true)).await;
    }

    // A alone (it applies the schema), then B joins: the group shares the units.
    let mut a = spawn_switchyard(&a_config, &a_log);
    wait_for_log(&a_log, "order intake started", Duration::from_secs(90)).await;
    let mut b = spawn_switchyard(&b_config, &b_log);
    wait_for_log(&b_log, "order intake started", Duration::from_secs(90)).await;
    eventually(
        Lazy(|| format!("A gives units to B; A: {}", tail(&a_log))),
        Duration::from_secs(60),
        async || count(&a_log, "units handed to another instance") >= 1,
    )
    .await;

    // Wave 1: a disconnect per meter, as a stream. Once a third is sent, kill A.
    let (stream, orders) = (p.clone(), cfg.topics.orders.clone());
    tokio::spawn(async move {
        for chunk in (0..n).collect::<Vec<_>>().chunks(20) {
            futures::future::join_all(chunk.iter().map(|&i| {
                let (p, t) = (&stream, &orders);
                async move {
                    Order::disconnect(&format!("SO-D-{i:05}"), &meter_id(i))
                        .produce(p, t)
                        .await
                }
            }))
            .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    eventually(
        Lazy(|| format!("a third of the commands sent; A: {}", tail(&a_log))),
        Duration::from_secs(120),
        async || field.lock().unwrap().received.len() >= n / 3,
    )
    .await;
    a.kill().unwrap(); // SIGKILL
    a.wait().unwrap();
    let killed = Instant::now();
    let final_at_kill = events.finals().len();
    assert!(final_at_kill < n, "the kill must land mid-run");
    // B takes A's units once A's session (6 s) has expired, and finishes all of wave 1.
    eventually(
        Lazy(|| {
            format!(
                "all {n} disconnects final with A dead ({} are); B: {}",
                events.finals().len(),
                tail(&b_log)
            )
        }),
        Duration::from_secs(180),
        async || events.finals().len() >= n,
    )
    .await;
    let handover = killed.elapsed();
    assert!(
        count(&b_log, "units assigned: applying their facts") >= 2,
        "B was assigned A's units: {}",
        tail(&b_log)
    );

    // A comes back: B hands units over (a graceful revoke), and wave 2 (a reconnect per
    // meter) is served by both.
    let mut a = spawn_switchyard(&a_config, &a_log);
    eventually(
        Lazy(|| format!("A ready again; A: {}", tail(&a_log))),
        Duration::from_secs(90),
        async || count(&a_log, "order intake started") >= 2,
    )
    .await;
    eventually(
        Lazy(|| format!("B gives units back; B: {}", tail(&b_log))),
        Duration::from_secs(60),
        async || count(&b_log, "units handed to another instance") >= 1,
    )
    .await;
    for i in 0..n {
        Order::reconnect(&format!("SO-R-{i:05}"), &meter_id(i))
            .produce(&p, &cfg.topics.orders)
            .await;
    }
    eventually(
        Lazy(|| {
            format!(
                "all {} orders final ({}); A: {}\nB: {}",
                2 * n,
                events.finals().len(),
                tail(&a_log),
                tail(&b_log)
            )
        }),
        Duration::from_secs(180),
        async || events.finals().len() >= 2 * n,
    )
    .await;
    for c in [&mut a, &mut b] {
        c.kill().unwrap();
        c.wait().unwrap();
    }

    // Every order completed; no command id twice; per meter exactly one disconnect and one
    // connect reached the head-end; the field ends connected.
    let by_order = events.statuses_by_order();
    for i in 0..n {
        for id in [format!("SO-D-{i:05}"), format!("SO-R-{i:05}")] {
            let st = by_order.get(&id).cloned().unwrap_or_default();
            assert!(
                st.contains(&OrderStatus::Completed),
                "{id}: {:?}",
                events.of(&id)
            );
        }
    }
    let f = field.lock().unwrap();
    let mut ids = HashSet::new();
    let mut per_meter: HashMap<(&str, CommandKind), usize> = HashMap::new();
    for c in &f.received {
        assert!(
            ids.insert(c.command_id.clone()),
            "command {} sent twice",
            c.command_id
        );
        if c.kind != CommandKind::SwitchStatus {
            *per_meter.entry((c.meter_id.as_str(), c.kind)).or_default() += 1;
        }
    }
    let twice: Vec<_> = per_meter.iter().filter(|(_, k)| **k > 1).collect();
    assert!(
        twice.is_empty(),
        "switch commands executed twice: {twice:?}"
    );
    assert_eq!(
        per_meter.len(),
        2 * n,
        "one disconnect and one connect each"
    );
    assert!(f.switch.values().all(|s| *s == SwitchState::Connected));
    let checks = f
        .received
        .iter()
        .filter(|c| c.kind == CommandKind::SwitchStatus)
        .count();
    eprintln!(
        "scale out: {n} meters on {UNITS} units, 2 instances; A killed with {final_at_kill} of {n} final; B finished wave 1 {handover:?} after the kill (session 6 s); {checks} status checks; 0 duplicate commands"
    );
}
