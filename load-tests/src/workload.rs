//! What the harness puts on Kafka (registry records, orders, a campaign and its reconnect storm)
//! and the two raw limits it measures in the same run: a bare librdkafka consumer on the orders
//! topic, and bare durable appends to a fresh embedded store.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use switchyard::domain::{AuditEvent, AuditKind};
use switchyard::store::{EmbeddedStore, Store, WriteBatch};
use switchyard::{kafka, Config};

use crate::scenario::{CampaignLoad, Scenario, Steady};
use crate::LoadtestError;

pub(crate) const CAMPAIGN_ID: &str = "loadtest-campaign";

/// Counts delivery failures: a record the broker did not take is reported, never ignored.
#[derive(Default)]
pub(crate) struct Deliveries {
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}
impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if r.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Clone)]
pub(crate) struct Generator {
    producer: Arc<ThreadedProducer<Deliveries>>,
    config: Config,
    scenario: Scenario,
    now: jiff::Timestamp,
}

fn meter_id(i: usize) -> String {
    format!("LT-{i:08}")
}

/// The id of the `i`th campaign order (on meter `i`).
fn campaign_order_id(i: usize) -> String {
    format!("CO-{i:08}")
}

/// `i` if `order_id` is the id of the `i`th campaign order.
pub(crate) fn campaign_index(order_id: &str) -> Option<usize> {
    order_id.strip_prefix("CO-")?.parse().ok()
}

impl Generator {
    pub fn new(
        config: &Config,
        bootstrap: &str,
        scenario: &Scenario,
    ) -> Result<Generator, LoadtestError> {
        let mut pc = kafka::producer_config(config, bootstrap);
        pc.set("linger.ms", "20").set("batch.num.messages", "10000");
        let producer: ThreadedProducer<Deliveries> =
            pc.create_with_context(Deliveries::default())?;
        Ok(Generator {
            producer: Arc::new(producer),
            config: config.clone(),
            scenario: scenario.clone(),
            now: jiff::Timestamp::now(),
        })
    }

    fn send(&self, topic: &str, key: &str, payload: &[u8]) -> Result<(), LoadtestError> {
        let mut rec = BaseRecord::<str, [u8], ()>::to(topic)
            .key(key)
            .payload(payload);
        loop {
            match self.producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Waits until every record is acknowledged; a failed delivery is an error.
    fn flush(&self) -> Result<(), LoadtestError> {
        self.producer.flush(Duration::from_secs(300))?;
        let failed = self.producer.context().failed.load(Ordering::Relaxed);
        if failed > 0 {
            return Err(LoadtestError::Child(format!(
                "{failed} records were not accepted by the broker"
            )));
        }
        Ok(())
    }

    pub fn registry(&self, meters: usize) -> Result<(), LoadtestError> {
        let topic = &self.config.topics.registry;
        for i in 0..meters {
            let id = meter_id(i);
            let rec = serde_json::json!({
                "schema_version": 1, "meter_id": id, "service_point_id": format!("SP-{i:08}"),
                "zone": format!("zone-{}", i % 20), "head_end_id": format!("HE-{}", i % 4),
                // 250 collectors per head-end (a segment outage darkens one: `COLL-1-7`).
                "collector_id": format!("COLL-{}-{}", i % 4, (i / 4) % 250),
                "has_switch": true, "multiplier": 1.0,
            });
            self.send(topic, &id, &serde_json::to_vec(&rec).expect("json"))?;
        }
        self.flush()
    }

    fn order(&self, id: &str, kind: &str, meter: &str, campaign: Option<&str>) -> Vec<u8> {
        let reason = match kind {
            "disconnect" => "non_payment",
            "reconnect" => "payment_received",
            _ => "billing",
        };
        let mut v = serde_json::json!({
            "schema_version": 1, "order_id": id, "kind": kind, "reason": reason, "meter_id": meter,
            "priority": if kind == "reconnect" { 2 } else { 5 }, "created_at": self.now.to_string(),
        });
        if kind == "disconnect" {
            v["notice_sent_at"] = (self.now - jiff::SignedDuration::from_hours(24 * 15))
                .to_string()
                .into();
            v["amount_due"] = serde_json::json!(250.0);
        }
        if let Some(c) = campaign {
            v["campaign_id"] = c.into();
        }
        serde_json::to_vec(&v).expect("json")
    }

    /// The campaign (definition and orders, on meters `0..orders`) and the preloaded orders
    /// (on the meters after the campaign's, one per meter while meters last). Returns how many
    /// orders were produced.
    pub fn preload(&self) -> Result<usize, LoadtestError> {
        let s = &self.scenario;
        let t = &self.config.topics;
        let mut n = 0;
        let mut next = 0usize;
        if let Some(c) = &s.campaign {
            let w = serde_json::json!(["00:00", "23:59"]);
            let def = serde_json::json!({"type":"define","schema_version":1,"campaign":{
                "schema_version":1,"campaign_id":CAMPAIGN_ID,"rate_per_hour":c.rate_per_hour,"time_zone":"UTC",
                "windows":{"monday":w,"tuesday":w,"wednesday":w,"thursday":w,"friday":w,"saturday":w,"sunday":w},
                "start_at":(self.now - jiff::SignedDuration::from_hours(1)).to_string(),"ordering":"arrival"}});
            self.send(
                &t.campaign_control,
                CAMPAIGN_ID,
                &serde_json::to_vec(&def).expect("json"),
            )?;
            for i in 0..c.orders {
                let m = meter_id(i);
                let id = campaign_order_id(i);
                self.send(
                    &t.orders,
                    &m,
                    &self.order(&id, "disconnect", &m, Some(CAMPAIGN_ID)),
                )?;
                n += 1;
            }
            next = c.orders;
        }
        let p = &s.preload;
        for (kind, count) in [
            ("disconnect", p.disconnects),
            ("reconnect", p.reconnects),
            ("read", p.reads),
        ] {
            for i in 0..count {
                let m = meter_id(next % s.meters);
                next += 1;
                let id = format!("PO-{kind}-{i:08}");
                self.send(&t.orders, &m, &self.order(&id, kind, &m, None))?;
                n += 1;
            }
        }
        self.flush()?;
        Ok(n)
    }

    /// The scenario's meter reads on the reads topic: register reads, meter after meter
    /// (`meter_reads` of them over every meter), each a little above the last. Returns how many.
    pub fn meter_reads(&self) -> Result<usize, LoadtestError> {
        let (n, meters) = (self.scenario.preload.meter_reads, self.scenario.meters);
        let topic = &self.config.topics.reads;
        let at = self.now.to_string();
        for i in 0..n {
            let (m, round) = (i % meters, i / meters);
            let id = meter_id(m);
            let value = (m % 50_000) as f64 + round as f64 * 0.75;
            let rec = format!(
                r#"{{"schema_version":1,"read_id":"RD-{i:09}","meter_id":"{id}","kind":"register","source":"head_end","read_at":"{at}","values":[{{"usage":"active","value":{value}}}]}}"#
            );
            self.send(topic, &id, rec.as_bytes())?;
        }
        self.flush()?;
        Ok(n)
    }

    /// Orders at a fixed rate on random meters; paced every 10 ms. Returns how many.
    pub fn steady(&self, st: &Steady) -> Result<usize, LoadtestError> {
        let total = st.rate_per_sec as usize * st.duration_secs as usize;
        let sum: f64 = st.mix.iter().sum();
        let (d, r) = (st.mix[0] / sum, st.mix[1] / sum);
        let mut rng = SmallRng::seed_from_u64(11);
        let started = Instant::now();
        let mut sent = 0usize;
        while sent < total {
            let due =
                ((started.elapsed().as_secs_f64() * st.rate_per_sec as f64) as usize).min(total);
            while sent < due {
                let roll: f64 = rng.random();
                let kind = if roll < d {
                    "disconnect"
                } else if roll < d + r {
                    "reconnect"
                } else {
                    "read"
                };
                let m = meter_id(rng.random_range(0..self.scenario.meters));
                let id = format!("ST-{sent:08}");
                self.send(
                    &self.config.topics.orders,
                    &m,
                    &self.order(&id, kind, &m, None),
                )?;
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.flush()?;
        Ok(total)
    }

    /// Reconnects at once on every other campaign meter (0, 2, 4, ...).
    pub fn storm(&self, c: &CampaignLoad) -> Result<usize, LoadtestError> {
        for i in 0..c.storm_reconnects {
            let m = meter_id(2 * i);
            let id = format!("RC-{i:08}");
            self.send(
                &self.config.topics.orders,
                &m,
                &self.order(&id, "reconnect", &m, None),
            )?;
        }
        self.flush()?;
        Ok(c.storm_reconnects)
    }
}

/// A bare librdkafka consumer (fresh group, from the beginning) reading `expected` records of
/// `topic`: records per second from the first record to the last (the group join excluded).
pub(crate) fn raw_consume(
    config: &Config,
    bootstrap: &str,
    topic: &str,
    expected: usize,
) -> Result<f64, LoadtestError> {
    let c: BaseConsumer = kafka::client_config(config, bootstrap)
        .set(
            "group.id",
            format!("raw-consume-{}", jiff::Timestamp::now().as_millisecond()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    c.subscribe(&[topic])?;
    let give_up = Instant::now() + Duration::from_secs(600);
    let mut n = 0usize;
    let mut first = None;
    while n < expected && Instant::now() < give_up {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            if m.is_ok() {
                first.get_or_insert_with(Instant::now);
                n += 1;
            }
        }
    }
    let secs = first
        .map(|f| f.elapsed().as_secs_f64())
        .unwrap_or(0.0)
        .max(1e-6);
    if n < expected {
        return Err(LoadtestError::Child(format!(
            "raw consumer read {n} of {expected} records"
        )));
    }
    Ok(n as f64 / secs)
}

/// Durable appends of 1,000 audit rows per transaction to a fresh embedded store for about
/// 3 s: rows per second.
pub(crate) fn raw_store_append(dir: &Path) -> Result<f64, LoadtestError> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let store = EmbeddedStore::open(dir)?;
    let started = Instant::now();
    let mut rows = 0u64;
    let now = jiff::Timestamp::now();
    while started.elapsed() < Duration::from_secs(3) {
        let mut batch = WriteBatch::default();
        for _ in 0..1000 {
            rows += 1;
            batch.audit.push(
                AuditEvent::new(
                    &meter_id((rows % 1_000_000) as usize),
                    now,
                    AuditKind::CommandResult,
                )
                .order("SO-1")
                .reason("confirmed"),
            );
        }
        store.apply(&[batch])?;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}
