//! The meter-registry source: reads the compacted registry topic from the beginning on every
//! start (keyed by meter id; a null value removes the meter), signals when it has caught up with
//! the high watermarks seen at start (the intake waits for that, so no order is rejected for a
//! meter that is merely not loaded yet), then follows updates. Bad records are dead-lettered.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::{oneshot, watch};

use crate::clock::Clock;
use crate::domain::{DeadLetterReason, MeterRecord};
use crate::observability::metrics;
use crate::registry::Registry;

pub struct RegistrySource {
    pub consumer: StreamConsumer,
    pub producer: FutureProducer,
    pub registry: Arc<Registry>,
    pub clock: Arc<dyn Clock>,
    pub topic: String,
    pub dead_letter_topic: String,
}

pub fn consumer(
    config: &crate::config::Config,
    bootstrap: &str,
) -> Result<StreamConsumer, super::KafkaSetupError> {
    let mut c = super::client_config(config, bootstrap);
    c.set("group.id", format!("{}-registry", config.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    c.create().map_err(|source| super::KafkaSetupError::Client {
        what: "registry consumer",
        source,
    })
}

impl RegistrySource {
    pub async fn run(self, caught_up: oneshot::Sender<usize>, mut shutdown: watch::Receiver<bool>) {
        let m = metrics();
        // Partitions and their high watermarks at start.
        let (tpl, mut remaining) = loop {
            match self.assignment() {
                Ok(v) => break v,
                Err(e) => {
                    tracing::warn!(error = %e, topic = %self.topic, "registry topic metadata not available yet; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        };
        if let Err(e) = self.consumer.assign(&tpl) {
            tracing::error!(error = %e, "cannot assign registry partitions");
            return;
        }
        let mut caught_up = Some(caught_up);
        let mut read = 0usize;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        if remaining.iter().all(|(_, hw)| *hw <= 0) {
            if let Some(tx) = caught_up.take() {
                let _ = tx.send(0);
            }
        }
        loop {
            let msg = tokio::select! {
                m = self.consumer.recv() => m,
                _ = tick.tick(), if caught_up.is_some() => {
                    // The last offsets may never be delivered (compacted-away tombstones,
                    // transaction markers): compare the consumer's position too.
                    if let Ok(pos) = self.consumer.position() {
                        remaining.retain(|(p, hw)| {
                            !matches!(pos.find_partition(&self.topic, *p).map(|e| e.offset()), Some(rdkafka::Offset::Offset(o)) if o >= *hw)
                        });
                    }
                    if remaining.is_empty() {
                        m.registry_meters.set(self.registry.len() as f64);
                        tracing::info!(records = read, meters = self.registry.len(), "meter registry caught up");
                        let _ = caught_up.take().expect("some").send(read);
                    }
                    continue;
                }
                _ = shutdown.changed() => return,
            };
            let msg = match msg {
                Ok(msg) => msg,
                Err(e) => {
                    tracing::warn!(error = %e, "registry consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            read += 1;
            let key = msg.key().map(|k| String::from_utf8_lossy(k).to_string());
            match msg.payload() {
                None => {
                    if let Some(k) = &key {
                        self.registry.remove(k);
                    }
                }
                Some(bytes) => {
                    let parsed = serde_json::from_slice::<MeterRecord>(bytes)
                        .map_err(|e| format!("not a v1 meter record: {e}"))
                        .and_then(|r| r.validate().map(|_| r))
                        .and_then(|r| match &key {
                            Some(k) if *k != r.meter_id => Err(format!(
                                "record key `{k}` differs from meter_id `{}`",
                                r.meter_id
                            )),
                            _ => Ok(r),
                        })
                        .and_then(|r| self.registry.upsert(&r).map_err(|e| e.to_string()));
                    if let Err(reason) = parsed {
                        m.registry_rejected.increment(1);
                        let owned = msg.detach();
                        super::dead_letter::send(
                            &self.producer,
                            &self.dead_letter_topic,
                            &owned,
                            DeadLetterReason::InvalidRegistryRecord,
                            &reason,
                            self.clock.now(),
                        )
                        .await;
                    }
                }
            }
            if caught_up.is_some() {
                let p = msg.partition();
                let off = msg.offset();
                remaining.retain(|(part, hw)| !(*part == p && off + 1 >= *hw));
                if remaining.is_empty() {
                    m.registry_meters.set(self.registry.len() as f64);
                    tracing::info!(
                        records = read,
                        meters = self.registry.len(),
                        "meter registry caught up"
                    );
                    let _ = caught_up.take().expect("some").send(read);
                }
            } else if read % 10_000 == 0 {
                m.registry_meters.set(self.registry.len() as f64);
            }
        }
    }

    fn assignment(&self) -> Result<(TopicPartitionList, Vec<(i32, i64)>), String> {
        let md = self
            .consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .ok_or("topic missing from metadata")?;
        if t.partitions().is_empty() {
            return Err("topic has no partitions".into());
        }
        let mut tpl = TopicPartitionList::new();
        let mut remaining = Vec::new();
        for p in t.partitions() {
            tpl.add_partition_offset(&self.topic, p.id(), Offset::Beginning)
                .map_err(|e| e.to_string())?;
            let (lo, hi) = self
                .consumer
                .fetch_watermarks(&self.topic, p.id(), Duration::from_secs(5))
                .map_err(|e| e.to_string())?;
            if hi > lo {
                remaining.push((p.id(), hi));
            }
        }
        Ok((tpl, remaining))
    }
}
