//! The ScyllaDB store's cluster goes away under load (issue 13): a CQL node of the test's own
//! (Apache Cassandra from `deploy/local/cassandra.sh`, on its own ports, so the other tests'
//! server is untouched) is stopped for 30 s while orders keep arriving. Then: the intake pauses
//! without storing offsets, `/readyz` says why, the store metrics say so, no command reaches the
//! head-end whose write failed, a `store_unavailable` exception is raised (and resolved), and
//! when the node returns everything resumes by itself with every order final once.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use switchyard::config::HeadEndMode;

const T: Duration = Duration::from_secs(120);

/// A Cassandra node of this test's own, stopped (and its data removed) on drop.
struct Node {
    env: Vec<(&'static str, &'static str)>,
}

impl Node {
    fn script(&self, verb: &str) -> bool {
        std::process::Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/local/cassandra.sh"
        ))
        .arg(verb)
        .envs(self.env.iter().copied())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
    }
    /// The node of this test (started or not); dropping it stops and wipes it.
    fn handle() -> Node {
        Node {
            env: vec![
                ("CASSANDRA_NAME", "cassandra-outage-test"),
                ("CASSANDRA_PORT", "9142"),
                ("CASSANDRA_STORAGE_PORT", "7100"),
                ("CASSANDRA_JMX_PORT", "7299"),
            ],
        }
    }
    fn start() -> Node {
        let n = Node::handle();
        n.script("stop");
        n.script("wipe");
        assert!(n.script("start"), "the test's own Cassandra node starts");
        n
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.script("stop");
        self.script("wipe");
    }
}

#[actix_rt::test]
async fn a_cql_outage_pauses_intake_sends_nothing_unstored_and_resumes_by_itself() {
    // The node is started from the jars the shared server uses: run where there is one.
    if servers::cql("store_outage").is_none() {
        return;
    }
    // A failed assertion stops the node and exits the process at once with its message (the
    // harness's capture of it would die with a process that hangs while unwinding).
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Straight to stderr: the test harness's capture of the default report dies with the
        // process.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "store_outage failed: {info}\n{}",
            std::backtrace::Backtrace::force_capture()
        );
        report(info);
        drop(Node::handle());
        std::process::exit(101);
    }));
    let node = Node::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.store_on_scylla("127.0.0.1:9142", "outage");
    // Kafka outlives the app: the test's head-end adapter closes its consumer after the app
    // has stopped, and a consumer closing against a cluster already gone waits for ever.
    let _kafka = host_kafka(&mut cfg);
    cfg.head_end.mode = HeadEndMode::Kafka;
    let app = start(cfg).await;
    let field = Arc::new(Mutex::new(Field::default()));
    run_adapter(
        &app.bootstrap,
        &app.config.topics.head_end_commands,
        &app.config.topics.head_end_results,
        field.clone(),
    );
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    let exceptions = TopicLog::follow(&app.bootstrap, &app.config.topics.exceptions);
    let n = 20;
    let meters: Vec<String> = (0..n).map(|i| format!("M-{i:02}")).collect();
    let pairs: Vec<(&str, bool)> = meters.iter().map(|m| (m.as_str(), true)).collect();
    register(&app, &p, &pairs).await;
    let orders = app.config.topics.orders.clone();
    for (i, m) in meters.iter().enumerate() {
        Order::disconnect(&format!("SO-BEFORE-{i:02}"), m)
            .produce(&p, &orders)
            .await;
    }
    events
        .wait("the orders before the outage final", T, move |l| {
            (0..n).all(|i| l.finals().contains(&format!("SO-BEFORE-{i:02}")))
        })
        .await;

    // The node goes away; orders keep arriving (reconnects of the same meters).
    assert!(node.script("stop"), "the node stops");
    for (i, m) in meters.iter().enumerate() {
        Order::reconnect(&format!("SO-DURING-{i:02}"), m)
            .produce(&p, &orders)
            .await;
    }
    assert_store_refusing(&app, T).await;
    let store_exception = |status: &'static str| {
        move |l: &TopicLog| {
            l.json()
                .iter()
                .any(|v| v["kind"] == "store_unavailable" && v["status"] == status)
        }
    };
    exceptions
        .wait(
            "an open store_unavailable exception",
            T,
            store_exception("open"),
        )
        .await;
    // The outage lasts 30 s; nothing produced during it becomes final meanwhile.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let during_final = (0..n)
        .filter(|i| events.finals().contains(&format!("SO-DURING-{i:02}")))
        .count();
    assert_eq!(
        during_final, 0,
        "no order completes while the store is away"
    );
    let sent_during = field.lock().unwrap().received.len();

    // The node returns: everything flows on by itself.
    assert!(node.script("start"), "the node starts again");
    events
        .wait("every order final after the node returned", T, move |l| {
            (0..n).all(|i| l.finals().contains(&format!("SO-DURING-{i:02}")))
        })
        .await;
    let during: Vec<String> = (0..n).map(|i| format!("SO-DURING-{i:02}")).collect();
    assert_completed_once(&app, &events, &during);
    let store = app.store.store();
    // Every command that reached the head-end was stored first, and none was sent twice.
    let received = field.lock().unwrap().received.clone();
    assert!(
        received.len() > sent_during,
        "commands flowed again after the outage"
    );
    for c in &received {
        assert!(
            store.command(&c.command_id).unwrap().is_some(),
            "{} was sent but not stored",
            c.command_id
        );
    }
    let mut ids: Vec<&str> = received.iter().map(|c| c.command_id.as_str()).collect();
    ids.sort_unstable();
    let all = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), all, "a command was sent twice");
    assert_store_back(&app).await;
    // The exception was raised for this outage and resolved under the same id (a node that
    // comes back can refuse once more while it starts: each such outage has its own pair).
    exceptions
        .wait(
            "the last store_unavailable exception resolved",
            T,
            |l: &TopicLog| {
                l.json()
                    .iter()
                    .filter(|v| v["kind"] == "store_unavailable")
                    .next_back()
                    .is_some_and(|v| v["status"] == "resolved")
            },
        )
        .await;
    let raised: Vec<serde_json::Value> = exceptions
        .json()
        .into_iter()
        .filter(|v| v["kind"] == "store_unavailable")
        .collect();
    let schema = schema("exception.v1.schema.json");
    let with = |status: &str| -> Vec<&serde_json::Value> {
        raised
            .iter()
            .map(|v| &v["exception_id"])
            .zip(&raised)
            .filter(|(_, v)| v["status"] == status)
            .map(|(id, _)| id)
            .collect()
    };
    for v in &raised {
        assert_valid(&schema, v, "store_unavailable exception");
        assert_eq!(v["meter_id"], "", "service-level: no meter");
    }
    assert_eq!(
        with("open"),
        with("resolved"),
        "each outage opened and resolved once: {raised:#?}"
    );
    assert_eq!(raised.last().unwrap()["status"], "resolved", "{raised:#?}");
    app.shutdown().await;
    drop(node);
}
