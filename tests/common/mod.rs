//! Test harness: switchyard started in-process on embedded defaults (librdkafka's mock cluster,
//! embedded redb store in a temp dir, fast simulated head-end), and real Kafka clients that
//! produce orders and read what switchyard publishes.
#![allow(dead_code)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use switchyard::clock::SystemClock;
use switchyard::config::Config;
use switchyard::domain::{
    Command as HeadEndCommand, CommandKind, CommandOutcome, CommandResult, OrderEvent, OrderStatus,
    SwitchState,
};
use switchyard::App;

/// Embedded defaults, tuned for tests: instant-ish head-end, short backoffs, any free port.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config::load_with_env(None, Vec::<(String, String)>::new()).unwrap();
    c.data_dir = dir.to_path_buf();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.kafka.embedded_partitions = 3;
    c.kafka.intake_linger_ms = 2;
    // Rejections of unknown meters come quickly (a test that needs the grace sets it).
    c.kafka.unknown_meter_grace_ms = 200;
    c.meters.arbiters = 2;
    c.meters.idle_passivate_secs = 1;
    c.head_end.command_deadline_secs = 1;
    c.head_end.max_attempts = 3;
    c.head_end.backoff_initial_ms = 10;
    c.head_end.backoff_max_ms = 50;
    let s = &mut c.head_end.simulator;
    s.latency_median_ms = 2;
    s.latency_p99_ms = 10;
    s.failure_rate = 0.0;
    s.no_answer_rate = 0.0;
    s.lsv_reject_rate = 0.0;
    c
}

pub async fn start(config: Config) -> App {
    let app = App::start(config, Arc::new(SystemClock))
        .await
        .expect("switchyard starts");
    assert!(
        app.wait_ready(Duration::from_secs(30)).await,
        "switchyard became ready"
    );
    app
}

pub fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "1")
        .create()
        .unwrap()
}

pub async fn produce(p: &FutureProducer, topic: &str, key: &str, value: &[u8]) {
    p.send(
        FutureRecord::to(topic).key(key).payload(value),
        Duration::from_secs(10),
    )
    .await
    .map_err(|(e, _)| e)
    .expect("produced");
}

pub async fn produce_json(p: &FutureProducer, topic: &str, key: &str, value: serde_json::Value) {
    produce(p, topic, key, &serde_json::to_vec(&value).unwrap()).await
}

pub fn meter(id: &str, has_switch: bool) -> serde_json::Value {
    serde_json::json!({"schema_version":1,"meter_id":id,"zone":"zone-a","head_end_id":"HE-1","has_switch":has_switch})
}

pub fn order(id: &str, kind: &str, meter: &str) -> serde_json::Value {
    let reason = match kind {
        "disconnect" => "non_payment",
        "reconnect" => "payment_received",
        "read" => "billing",
        _ => "customer_request",
    };
    serde_json::json!({"schema_version":1,"order_id":id,"kind":kind,"reason":reason,"meter_id":meter})
}

/// Registers meters on the registry topic and waits until switchyard knows them.
pub async fn register(app: &App, p: &FutureProducer, meters: &[(&str, bool)]) {
    for (id, sw) in meters {
        produce_json(p, &app.config.topics.registry, id, meter(id, *sw)).await;
    }
    let until = Instant::now() + Duration::from_secs(20);
    while !meters.iter().all(|(id, _)| app.registry.contains(id)) {
        assert!(
            Instant::now() < until,
            "registry did not pick up the meters"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every record of a topic, read continuously in the background.
#[derive(Clone)]
pub struct TopicLog {
    pub messages: Arc<Mutex<Vec<OwnedMessage>>>,
    /// Values that parse as order events, parsed once on arrival.
    parsed: Arc<Mutex<Vec<OrderEvent>>>,
}

impl TopicLog {
    pub fn follow(bootstrap: &str, topic: &str) -> TopicLog {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set(
                "group.id",
                format!("test-observer-{topic}-{}", std::process::id()),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let parsed = Arc::new(Mutex::new(Vec::new()));
        let (m, p) = (messages.clone(), parsed.clone());
        tokio::spawn(async move {
            loop {
                match consumer.recv().await {
                    Ok(msg) => {
                        if let Some(Ok(ev)) =
                            msg.payload().map(serde_json::from_slice::<OrderEvent>)
                        {
                            p.lock().unwrap().push(ev);
                        }
                        m.lock().unwrap().push(msg.detach());
                        // rdkafka's recv() is always ready under a flood; let others run.
                        tokio::task::yield_now().await;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        TopicLog { messages, parsed }
    }

    pub fn len(&self) -> usize {
        self.messages.lock().unwrap().len()
    }

    pub fn events(&self) -> Vec<OrderEvent> {
        self.parsed.lock().unwrap().clone()
    }

    /// Order ids that reached a final status.
    pub fn finals(&self) -> std::collections::HashSet<String> {
        let p = self.parsed.lock().unwrap();
        p.iter()
            .filter(|e| e.status.is_terminal())
            .map(|e| e.order_id.clone())
            .collect()
    }

    pub fn json(&self) -> Vec<serde_json::Value> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| m.payload().and_then(|p| serde_json::from_slice(p).ok()))
            .collect()
    }

    pub fn of(&self, order_id: &str) -> Vec<OrderEvent> {
        let p = self.parsed.lock().unwrap();
        p.iter()
            .filter(|e| e.order_id == order_id)
            .cloned()
            .collect()
    }

    pub fn statuses(&self, order_id: &str) -> Vec<OrderStatus> {
        self.of(order_id).iter().map(|e| e.status).collect()
    }

    /// Waits until `cond` holds on the log, or panics with `what` after `timeout`.
    pub async fn wait(&self, what: &str, timeout: Duration, cond: impl Fn(&TopicLog) -> bool) {
        let until = Instant::now() + timeout;
        while !cond(self) {
            if Instant::now() > until {
                panic!("timed out waiting for {what}; saw: {:#?}", self.json());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a terminal status of `order_id` and returns its events.
    pub async fn wait_final(&self, order_id: &str, timeout: Duration) -> Vec<OrderEvent> {
        self.wait(&format!("a final status of {order_id}"), timeout, |l| {
            l.of(order_id).iter().any(|e| e.status.is_terminal())
        })
        .await;
        self.of(order_id)
    }
}

pub fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    let h = m.headers()?;
    (0..h.count())
        .map(|i| h.get(i))
        .find(|h| h.key == name)
        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).to_string()))
}

/// A plain HTTP/1.1 GET against the operator endpoint: (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A JSON Schema of docs/schemas, with format checks.
pub fn schema(name: &str) -> jsonschema::Validator {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("docs/schemas").join(name)).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    jsonschema::options()
        .should_validate_formats(true)
        .build(&v)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn assert_valid(v: &jsonschema::Validator, instance: &serde_json::Value, what: &str) {
    let errors: Vec<String> = v
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match its schema: {errors:?}\n{instance:#}"
    );
}

/// A mock cluster hosted by the test (it outlives an app restart); `cfg` points at it. It is
/// never dropped: it must outlive the test's consumers, which leave their group when the
/// runtime drops them (after the test body, or while a failing test unwinds); against a
/// stopped broker that close would hang and hide the failure.
pub fn host_kafka(cfg: &mut Config) -> std::mem::ManuallyDrop<switchyard::kafka::EmbeddedKafka> {
    host_kafka_with(cfg, 3)
}

/// As [`host_kafka`], with `partitions` per topic.
pub fn host_kafka_with(
    cfg: &mut Config,
    partitions: i32,
) -> std::mem::ManuallyDrop<switchyard::kafka::EmbeddedKafka> {
    let topics: Vec<String> = cfg
        .topics
        .all()
        .iter()
        .map(|(_, t)| t.to_string())
        .collect();
    let kafka = switchyard::kafka::EmbeddedKafka::start(&topics, partitions).unwrap();
    cfg.kafka.brokers = kafka.bootstrap_servers().to_string();
    std::mem::ManuallyDrop::new(kafka)
}

/// Asserts that sorted release times are at least `secs` apart (the campaign rate).
pub fn assert_spaced(mut times: Vec<jiff::Timestamp>, secs: i64) {
    times.sort();
    for w in times.windows(2) {
        assert!(
            w[1].duration_since(w[0]) >= jiff::SignedDuration::from_secs(secs),
            "releases closer than {secs} s: {times:?}"
        );
    }
}

/// Starts switchyard again on the same store, with a head-end that answers. The embedded Kafka
/// is new (and empty), so the meters come from a registry file this time.
pub async fn restart_answering(
    mut cfg: switchyard::Config,
    dir: &std::path::Path,
    meters: &[&str],
) -> switchyard::App {
    let reg = dir.join("meters.ndjson");
    let lines: String = meters
        .iter()
        .map(|m| format!("{}\n", meter(m, true)))
        .collect();
    std::fs::write(&reg, lines).unwrap();
    cfg.registry.file = Some(reg);
    cfg.head_end.simulator.no_answer_rate = 0.0;
    start(cfg).await
}

// ---- the head-end adapter and switchyard as a child process (kill and fault tests) ----

#[derive(Default)]
pub struct Field {
    pub switch: HashMap<String, SwitchState>,
    /// Every command id received, in order (duplicates kept).
    pub received: Vec<HeadEndCommand>,
    /// Command ids answered so far.
    pub answered: usize,
}

/// The head-end adapter: answers every command, in partition order, from the true switch state.
pub fn run_adapter(bootstrap: &str, commands: &str, results: &str, field: Arc<Mutex<Field>>) {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-head-end-adapter")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[commands]).unwrap();
    let producer: FutureProducer = producer(bootstrap);
    let results = results.to_string();
    tokio::spawn(async move {
        loop {
            tokio::task::yield_now().await;
            let Ok(msg) = consumer.recv().await else {
                continue;
            };
            let Some(Ok(cmd)) = msg.payload().map(serde_json::from_slice::<HeadEndCommand>) else {
                continue;
            };
            let state = {
                let mut f = field.lock().unwrap();
                f.received.push(cmd.clone());
                let s = f
                    .switch
                    .entry(cmd.meter_id.clone())
                    .or_insert(SwitchState::Connected);
                match cmd.kind {
                    CommandKind::Disconnect => *s = SwitchState::Disconnected,
                    CommandKind::Connect => *s = SwitchState::Connected,
                    _ => {}
                }
                *s
            };
            let r = CommandResult {
                schema_version: 1,
                command_id: cmd.command_id.clone(),
                meter_id: cmd.meter_id.clone(),
                outcome: CommandOutcome::Confirmed {
                    switch_state: state,
                    register_kwh: Some(1.0),
                },
                at: jiff::Timestamp::now(),
            };
            // The field changed on receipt; the answer takes 0-40 ms to come back, so that
            // commands are in flight when the process is killed.
            let payload = serde_json::to_vec(&r).unwrap();
            let delay = cmd
                .command_id
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
                % 40;
            let (producer, results, key) =
                (producer.clone(), results.clone(), cmd.meter_id.clone());
            let answered = field.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                produce(&producer, &results, &key, &payload).await;
                answered.lock().unwrap().answered += 1;
            });
        }
    });
}

pub fn spawn_switchyard(config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .env("RUST_LOG", "warn,switchyard=info")
        .spawn()
        .expect("start switchyard")
}

/// Writes a config file for a switchyard child process: the embedded defaults with its data
/// directory under `dir`, Kafka at `bootstrap`, any free HTTP port, and `edits` (pairs of
/// `from`, `to` applied to the default TOML text). Checked valid before it is used.
pub fn write_child_config(
    dir: &std::path::Path,
    bootstrap: &str,
    edits: &[(&str, &str)],
) -> std::path::PathBuf {
    let data = dir.join("data");
    let mut text = switchyard::config::DEFAULT_TOML
        .replace(
            "data_dir = \"./switchyard-data\"",
            &format!("data_dir = {:?}", data.display().to_string()),
        )
        .replace("brokers = \"\"", &format!("brokers = {bootstrap:?}"))
        .replace("listen = \"127.0.0.1:9464\"", "listen = \"127.0.0.1:0\"");
    for (from, to) in edits {
        assert!(text.contains(from), "default config has no `{from}`");
        text = text.replace(from, to);
    }
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, &text).unwrap();
    switchyard::Config::load_with_env(Some(&path), Vec::<(String, String)>::new())
        .expect("test config is valid");
    path
}

/// Waits until `log` contains `line` (the child logs it), or panics with the log.
pub async fn wait_for_log(log: &std::path::Path, line: &str, timeout: Duration) {
    let until = Instant::now() + timeout;
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(line)
    {
        assert!(
            Instant::now() < until,
            "no `{line}` in the log: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An order as the intake stores it on acceptance (`received`), for tests that write a store
/// as a crash leaves it.
pub fn accepted(id: &str, kind: &str, meter: &str) -> switchyard::domain::OrderRecord {
    let now = jiff::Timestamp::now();
    let bytes = serde_json::to_vec(&order(id, kind, meter)).unwrap();
    let o = switchyard::domain::validate_order(Some(meter.as_bytes()), Some(&bytes), |_| true, now)
        .unwrap();
    switchyard::domain::OrderRecord {
        order: o,
        status: OrderStatus::Received,
        received_at: now,
        updated_at: now,
        reason: None,
        source: None,
    }
}
