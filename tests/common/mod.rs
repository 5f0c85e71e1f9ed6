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
use switchyard::clock::{Clock, SystemClock};
use switchyard::config::Config;
use switchyard::domain::{
    Command as HeadEndCommand, CommandKind, CommandOutcome, CommandResult, OrderEvent, OrderStatus,
    SwitchState,
};
use switchyard::App;

#[path = "../support/servers.rs"]
pub mod servers;

/// With `SWITCHYARD_TEST_BACKEND=scylla` the tests that start switchyard through
/// [`test_config`] run on the production parts instead of the embedded ones: the ScyllaDB store
/// on the real CQL server, and the real Kafka broker (`tests/run.sh` runs the end-to-end test
/// binaries once more this way). Each test gets its own keyspace, topics and consumer group,
/// named after its temporary directory. The environment overrides an operator would set.
fn production_parts(dir: &std::path::Path) -> Vec<(String, String)> {
    if std::env::var("SWITCHYARD_TEST_BACKEND").as_deref() != Ok("scylla") {
        return Vec::new();
    }
    let cql = servers::cql("SWITCHYARD_TEST_BACKEND=scylla")
        .expect("SWITCHYARD_TEST_BACKEND=scylla needs a CQL server");
    let kafka = servers::kafka("SWITCHYARD_TEST_BACKEND=scylla")
        .expect("SWITCHYARD_TEST_BACKEND=scylla needs a Kafka broker");
    let tag: String = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let mut env = vec![
        (
            "SWITCHYARD__STORE__BACKEND".to_string(),
            "scylla".to_string(),
        ),
        ("SWITCHYARD__STORE__SCYLLA__NODES".to_string(), cql),
        (
            "SWITCHYARD__STORE__SCYLLA__KEYSPACE".to_string(),
            format!("t_{tag}"),
        ),
        ("SWITCHYARD__KAFKA__BROKERS".to_string(), kafka),
        (
            "SWITCHYARD__KAFKA__GROUP_ID".to_string(),
            format!("switchyard-{tag}"),
        ),
    ];
    let defaults = Config::load_with_env(None, Vec::<(String, String)>::new()).unwrap();
    for (key, topic) in defaults.topics.all() {
        let var = format!(
            "SWITCHYARD__TOPICS__{}",
            key.trim_start_matches("topics.").to_ascii_uppercase()
        );
        env.push((var, format!("{topic}.{tag}")));
    }
    env
}

/// For a test of its own on the real broker at `kafka`: a tag unique to this run, and the
/// environment an operator would set: the broker, a consumer group `<group>-<tag>` and every
/// topic suffixed with the tag.
pub fn real_broker_env(kafka: &str, group: &str) -> (String, Vec<(String, String)>) {
    let tag = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let defaults = Config::load_with_env(None, Vec::<(String, String)>::new()).unwrap();
    let mut env = vec![
        ("SWITCHYARD__KAFKA__BROKERS".to_string(), kafka.to_string()),
        (
            "SWITCHYARD__KAFKA__GROUP_ID".to_string(),
            format!("{group}-{tag}"),
        ),
    ];
    for (key, topic) in defaults.topics.all() {
        let var = format!(
            "SWITCHYARD__TOPICS__{}",
            key.trim_start_matches("topics.").to_ascii_uppercase()
        );
        env.push((var, format!("{topic}.{tag}")));
    }
    (tag, env)
}

/// Embedded defaults, tuned for tests: instant-ish head-end, short backoffs, any free port.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config::load_with_env(None, production_parts(dir)).unwrap();
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
    start_on(config, Arc::new(SystemClock)).await
}

/// Starts switchyard on `clock` (a test's manual clock) and waits until it is ready.
pub async fn start_on(config: Config, clock: Arc<dyn Clock>) -> App {
    let app = App::start(config, clock).await.expect("switchyard starts");
    assert!(
        app.wait_ready(Duration::from_secs(30)).await,
        "switchyard became ready"
    );
    app
}

/// The usual start of a test: switchyard on [`test_config`] (with `edit` applied) in a fresh
/// directory, a producer, and the order events followed from the start.
pub struct Started {
    /// Kept for the test's lifetime (the store lives in it).
    pub dir: tempfile::TempDir,
    /// The configuration it started with (to start it again on the same store).
    pub cfg: Config,
    pub app: App,
    pub p: FutureProducer,
    pub events: TopicLog,
}

impl Started {
    /// (directory, app, producer, order events): `let (_dir, app, p, events) = started(..).await.split();`
    pub fn split(self) -> (tempfile::TempDir, App, FutureProducer, TopicLog) {
        (self.dir, self.app, self.p, self.events)
    }
}

pub async fn started(edit: impl FnOnce(&mut Config)) -> Started {
    started_on(Arc::new(SystemClock), edit).await
}

/// As [`started`], on `clock`.
pub async fn started_on(clock: Arc<dyn Clock>, edit: impl FnOnce(&mut Config)) -> Started {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    edit(&mut cfg);
    let app = start_on(cfg.clone(), clock).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    Started {
        dir,
        cfg,
        app,
        p,
        events,
    }
}

// ---- waiting for something to happen ----

/// How often [`eventually`] looks again.
pub const POLL: Duration = Duration::from_millis(10);

/// What one look of [`eventually`] found: done (with a value), or not yet (with what it saw,
/// for the failure message; empty when there is nothing to tell).
pub trait Settled {
    type Value;
    fn settled(self) -> Result<Self::Value, String>;
}

impl Settled for bool {
    type Value = ();
    fn settled(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err(String::new())
        }
    }
}

impl<T> Settled for Option<T> {
    type Value = T;
    fn settled(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T, E: std::fmt::Display> Settled for Result<T, E> {
    type Value = T;
    fn settled(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// A description formatted only if it is shown (a failure message that reads a whole log).
pub struct Lazy<F: Fn() -> String>(pub F);

impl<F: Fn() -> String> std::fmt::Display for Lazy<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&(self.0)())
    }
}

fn timed_out(what: &dyn std::fmt::Display, timeout: Duration, last: String) -> ! {
    if last.is_empty() {
        panic!("timed out after {timeout:?} waiting for {what}")
    }
    panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
}

/// Looks with `check` every [`POLL`] until it settles (true, `Some`, `Ok`) and returns its
/// value; after `timeout`, panics naming `what` and what the last look saw.
pub async fn eventually<R: Settled>(
    what: impl std::fmt::Display,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> R,
) -> R::Value {
    let until = Instant::now() + timeout;
    loop {
        let last = match check().await.settled() {
            Ok(v) => return v,
            Err(last) => last,
        };
        if Instant::now() >= until {
            timed_out(&what, timeout, last)
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for a test without a runtime (a child process watched from a plain thread).
pub fn eventually_sync<R: Settled>(
    what: impl std::fmt::Display,
    timeout: Duration,
    mut check: impl FnMut() -> R,
) -> R::Value {
    let until = Instant::now() + timeout;
    loop {
        let last = match check().settled() {
            Ok(v) => return v,
            Err(last) => last,
        };
        if Instant::now() >= until {
            timed_out(&what, timeout, last)
        }
        std::thread::sleep(POLL);
    }
}

/// The value of the sample `name` (the whole series name, labels included) in a Prometheus
/// text exposition; `None` when it is not exposed.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.rsplit_once(' ')?;
        (n == name).then(|| v.trim().parse().ok())?
    })
}

/// The value of the sample `name` on the app's `/metrics`.
pub async fn metric_of(addr: std::net::SocketAddr, name: &str) -> Option<f64> {
    let (code, body) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200, "/metrics: {body}");
    metric(&body, name)
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

/// A meter's registry record in zone `zone-a`.
pub fn meter(id: &str, has_switch: bool) -> serde_json::Value {
    meter_in(id, "zone-a", has_switch)
}

pub fn meter_in(id: &str, zone: &str, has_switch: bool) -> serde_json::Value {
    serde_json::json!({"schema_version":1,"meter_id":id,"zone":zone,"head_end_id":"HE-1","has_switch":has_switch})
}

/// An order as an integrator produces it on the orders topic: `Order::disconnect("SO-1",
/// "M-1").notice("2026-11-10T15:00:00Z").json()`. The reason defaults by kind.
#[derive(Clone, Debug)]
pub struct Order(serde_json::Value);

impl Order {
    pub fn new(id: &str, kind: &str, meter: &str) -> Order {
        let reason = match kind {
            "disconnect" => "non_payment",
            "reconnect" => "payment_received",
            "read" => "billing",
            _ => "customer_request",
        };
        Order(
            serde_json::json!({"schema_version":1,"order_id":id,"kind":kind,"reason":reason,"meter_id":meter}),
        )
    }
    pub fn disconnect(id: &str, meter: &str) -> Order {
        Order::new(id, "disconnect", meter)
    }
    pub fn reconnect(id: &str, meter: &str) -> Order {
        Order::new(id, "reconnect", meter)
    }
    pub fn read(id: &str, meter: &str) -> Order {
        Order::new(id, "read", meter)
    }
    /// A cancel of `target`.
    pub fn cancel(id: &str, meter: &str, target: &str) -> Order {
        Order::new(id, "cancel", meter).set("target_order_id", target)
    }
    /// Any field, as given.
    pub fn set(mut self, key: &str, value: impl Into<serde_json::Value>) -> Order {
        self.0[key] = value.into();
        self
    }
    pub fn reason(self, reason: &str) -> Order {
        self.set("reason", reason)
    }
    pub fn notice(self, sent_at: &str) -> Order {
        self.set("notice_sent_at", sent_at)
    }
    pub fn amount_due(self, amount: f64) -> Order {
        self.set("amount_due", amount)
    }
    pub fn account(self, account: &str) -> Order {
        self.set("account_id", account)
    }
    pub fn earliest_at(self, at: &str) -> Order {
        self.set("earliest_at", at)
    }
    pub fn campaign(self, campaign: &str) -> Order {
        self.set("campaign_id", campaign)
    }
    pub fn priority(self, priority: u8) -> Order {
        self.set("priority", priority)
    }
    pub fn notes(self, notes: &str) -> Order {
        self.set("notes", notes)
    }
    pub fn id(&self) -> &str {
        self.0["order_id"].as_str().unwrap()
    }
    pub fn meter(&self) -> &str {
        self.0["meter_id"].as_str().unwrap()
    }
    pub fn json(self) -> serde_json::Value {
        self.0
    }
    pub fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).unwrap()
    }
    /// Produced on `topic`, keyed by its meter (as an integrator keys orders).
    pub async fn produce(&self, p: &FutureProducer, topic: &str) {
        produce(p, topic, self.meter(), &self.bytes()).await
    }
    /// As switchyard's own validation reads it at `now`.
    pub fn validated(&self, now: jiff::Timestamp) -> switchyard::domain::Order {
        switchyard::domain::validate_order(
            Some(self.meter().as_bytes()),
            Some(&self.bytes()),
            |_| true,
            now,
        )
        .unwrap_or_else(|r| panic!("{} refused: {:?} {}", self.id(), r.reason, r.detail))
    }
    /// As the intake stores it on acceptance (`received`), for tests that write a store as a
    /// crash leaves it.
    pub fn accepted(&self) -> switchyard::domain::OrderRecord {
        let now = jiff::Timestamp::now();
        switchyard::domain::OrderRecord {
            order: self.validated(now),
            status: OrderStatus::Received,
            received_at: now,
            updated_at: now,
            reason: None,
            source: None,
        }
    }
}

impl From<Order> for serde_json::Value {
    fn from(o: Order) -> serde_json::Value {
        o.0
    }
}

/// Registers meters (in zone `zone-a`) on the registry topic and waits until switchyard knows
/// them.
pub async fn register(app: &App, p: &FutureProducer, meters: &[(&str, bool)]) {
    let records: Vec<serde_json::Value> = meters.iter().map(|(id, sw)| meter(id, *sw)).collect();
    register_records(app, p, &records).await
}

/// Produces registry records and waits until switchyard knows every meter of them.
pub async fn register_records(app: &App, p: &FutureProducer, records: &[serde_json::Value]) {
    let ids: Vec<&str> = records
        .iter()
        .map(|r| r["meter_id"].as_str().unwrap())
        .collect();
    for (id, r) in ids.iter().zip(records) {
        produce_json(p, &app.config.topics.registry, id, r.clone()).await;
    }
    eventually(
        Lazy(|| format!("the registry to know {ids:?}")),
        Duration::from_secs(30),
        async || ids.iter().all(|id| app.registry.contains(id)),
    )
    .await
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
                // One group per log: two logs of one topic (a test that restarts switchyard
                // against a broker that keeps its topics) must each read all of it.
                format!("test-observer-{topic}-{}-{}", std::process::id(), {
                    static LOGS: std::sync::atomic::AtomicU64 =
                        std::sync::atomic::AtomicU64::new(0);
                    LOGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                }),
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
    /// Every status each order went through, in the order they were published.
    pub fn statuses_by_order(&self) -> HashMap<String, Vec<OrderStatus>> {
        let mut by_order: HashMap<String, Vec<OrderStatus>> = HashMap::new();
        for e in self.events() {
            by_order
                .entry(e.order_id.clone())
                .or_default()
                .push(e.status);
        }
        by_order
    }

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
        eventually(
            Lazy(|| format!("{what}; saw: {:#?}", self.json())),
            timeout,
            async || cond(self),
        )
        .await
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

/// The first offsets still on `topic`, summed over its partitions: how many of its records the
/// broker has removed.
pub fn first_offsets(bootstrap: &str, topic: &str) -> i64 {
    let c: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            c.fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap()
                .0
        })
        .sum()
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
    http_call(addr, "GET", path, None, None).await
}

/// An HTTP/1.1 request against the operator endpoint, with a bearer token and a JSON body if
/// given: (status, body).
pub async fn http_call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body.as_bytes()).await.unwrap();
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
/// stopped broker that close would hang and hide the failure. On the production parts
/// (`SWITCHYARD_TEST_BACKEND=scylla`) the real broker keeps the topics across a restart: they
/// are created there instead, and there is no mock cluster (`None`).
pub fn host_kafka(
    cfg: &mut Config,
) -> Option<std::mem::ManuallyDrop<switchyard::kafka::EmbeddedKafka>> {
    host_kafka_with(cfg, 3)
}

/// As [`host_kafka`], with `partitions` per topic.
pub fn host_kafka_with(
    cfg: &mut Config,
    partitions: i32,
) -> Option<std::mem::ManuallyDrop<switchyard::kafka::EmbeddedKafka>> {
    if !cfg.kafka.brokers.is_empty() {
        cfg.kafka.embedded_partitions = partitions;
        let (c, b) = (cfg.clone(), cfg.kafka.brokers.clone());
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(switchyard::kafka::ensure_topics(&c, &b))
        })
        .join()
        .unwrap()
        .expect("topics created on the real broker");
        return None;
    }
    let topics: Vec<String> = cfg
        .topics
        .all()
        .iter()
        .map(|(_, t)| t.to_string())
        .collect();
    let kafka = switchyard::kafka::EmbeddedKafka::start(&topics, partitions).unwrap();
    cfg.kafka.brokers = kafka.bootstrap_servers().to_string();
    Some(std::mem::ManuallyDrop::new(kafka))
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
    /// Answer the first attempt of the disconnects of one meter in this many (by a hash of
    /// its id) with a retryable failure (meter busy), the switch unmoved; 0: never.
    pub busy_every: u64,
    /// Commands received after their deadline: dropped unexecuted and unanswered (the
    /// adapter contract, docs/topics.md); not in `received`.
    pub expired: Vec<HeadEndCommand>,
}

fn hash(s: &str) -> u64 {
    s.bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
}

/// The head-end adapter: answers every command, in partition order, from the true switch state.
pub fn run_adapter(bootstrap: &str, commands: &str, results: &str, field: Arc<Mutex<Field>>) {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-head-end-adapter-{commands}"))
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
            let (state, busy) = {
                let mut f = field.lock().unwrap();
                if jiff::Timestamp::now() > cmd.deadline {
                    f.expired.push(cmd);
                    continue;
                }
                f.received.push(cmd.clone());
                let busy = f.busy_every > 0
                    && cmd.kind == CommandKind::Disconnect
                    && cmd.attempt == 1
                    && hash(&cmd.meter_id) % f.busy_every == 0;
                let s = f
                    .switch
                    .entry(cmd.meter_id.clone())
                    .or_insert(SwitchState::Connected);
                match cmd.kind {
                    _ if busy => {}
                    CommandKind::Disconnect => *s = SwitchState::Disconnected,
                    CommandKind::Connect => *s = SwitchState::Connected,
                    _ => {}
                }
                (*s, busy)
            };
            let r = CommandResult {
                schema_version: 1,
                command_id: cmd.command_id.clone(),
                meter_id: cmd.meter_id.clone(),
                outcome: if busy {
                    CommandOutcome::Failed {
                        code: switchyard::domain::FailureCode::MeterBusy,
                        detail: Some("capacitor charging".into()),
                    }
                } else {
                    CommandOutcome::Confirmed {
                        load_side_voltage: None,
                        switch_state: state,
                        register_kwh: Some(1.0),
                    }
                },
                at: jiff::Timestamp::now(),
            };
            // The field changed on receipt; the answer takes 0-40 ms to come back, so that
            // commands are in flight when the process is killed.
            let payload = serde_json::to_vec(&r).unwrap();
            let delay = hash(&cmd.command_id) % 40;
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
    let env: Vec<(String, String)> =
        std::fs::read_to_string(config.with_file_name("switchyard.env"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["run", "--config"])
        .arg(config)
        .envs(env)
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
    // On the production parts the child gets them as an operator would: from its environment
    // (spawn_switchyard reads this file).
    let env = production_parts(dir);
    let lines: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(dir.join("switchyard.env"), lines).unwrap();
    switchyard::Config::load_with_env(Some(&path), env).expect("test config is valid");
    path
}

/// Waits until `log` contains `line` (the child logs it), or panics with the log.
pub async fn wait_for_log(log: &std::path::Path, line: &str, timeout: Duration) {
    let text = || std::fs::read_to_string(log).unwrap_or_default();
    eventually(
        Lazy(|| format!("`{line}` in the log: {}", text())),
        timeout,
        async || text().contains(line),
    )
    .await
}

/// The audit trail of `order` on `meter`, as (kind, status) pairs in time order.
pub fn audit_trail(
    app: &App,
    meter: &str,
    order: &str,
) -> Vec<(switchyard::domain::AuditKind, Option<OrderStatus>)> {
    app.store
        .store()
        .audit(meter)
        .unwrap()
        .into_iter()
        .filter(|a| a.order_id.as_deref() == Some(order))
        .map(|a| (a.kind, a.status))
        .collect()
}

/// While the store refuses writes: `/readyz` answers 503 naming the store, and
/// `switchyard_store_available` is 0 (the fault suite's full disk, a CQL outage).
pub async fn assert_store_refusing(app: &App, timeout: Duration) {
    let reason = eventually("/readyz to say 503", timeout, async || {
        let (code, body) = http_get(app.http_addr, "/readyz").await;
        if code == 503 {
            Ok(body)
        } else {
            Err(format!("{code} {body}"))
        }
    })
    .await;
    assert!(reason.contains("store"), "{reason}");
    assert_eq!(
        metric_of(app.http_addr, "switchyard_store_available").await,
        Some(0.0),
        "store_available is 0 while writes fail"
    );
}

/// Each of `ids` has exactly one final status on the order events, `completed`, and the store
/// says the same (after an outage: nothing lost, nothing finished twice).
pub fn assert_completed_once(app: &App, events: &TopicLog, ids: &[String]) {
    let store = app.store.store();
    for id in ids {
        let finals: Vec<_> = events
            .of(id)
            .into_iter()
            .filter(|e| e.status.is_terminal())
            .collect();
        assert_eq!(finals.len(), 1, "{id}: {finals:?}");
        assert_eq!(finals[0].status, OrderStatus::Completed, "{id}");
        assert_eq!(
            store.order(id).unwrap().unwrap().status,
            OrderStatus::Completed,
            "{id}"
        );
    }
}

/// After the store came back: ready again, `switchyard_store_available` 1, and the failures
/// (of writes, or of the reads the intake needs) were counted.
pub async fn assert_store_back(app: &App) {
    let (code, body) = http_get(app.http_addr, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        metric_of(app.http_addr, "switchyard_store_available").await,
        Some(1.0)
    );
    // A write or a read the intake needed, whichever met the outage first.
    let writes = metric_of(app.http_addr, "switchyard_store_write_failures_total")
        .await
        .expect("store write failures are exposed");
    let reads = metric_of(app.http_addr, "switchyard_store_read_failures_total")
        .await
        .unwrap_or(0.0);
    assert!(
        writes + reads > 0.0,
        "failures were counted: {writes} writes, {reads} reads"
    );
}
