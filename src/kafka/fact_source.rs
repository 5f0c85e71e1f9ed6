//! The meter-fact source: payments and medical certificates (customer-facts topic) and
//! approvals / rejections (control topic), keyed by meter id. Each record is validated (a bad one
//! is dead-lettered with the reason and acknowledged by the broker), delivered to its meter's
//! actor, and its offset is stored only once that actor has durably stored the outcome: a fact
//! is never lost in a crash, and one that is replayed is harmless (facts are idempotent).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::Message;
use tokio::sync::{oneshot, watch};

use crate::clock::Clock;
use crate::domain::DeadLetterReason;
use crate::facts::MeterFact;
use crate::meter::{Directory, MeterMsg};
use crate::observability::{self, metrics};
use crate::registry::Registry;

pub struct FactSource {
    pub consumer: StreamConsumer,
    pub producer: FutureProducer,
    pub directory: Arc<Directory>,
    pub registry: Arc<Registry>,
    pub clock: Arc<dyn Clock>,
    pub customer_facts_topic: String,
    pub control_topic: String,
    pub dead_letter_topic: String,
}

pub fn consumer(
    config: &crate::config::Config,
    bootstrap: &str,
) -> Result<StreamConsumer, super::KafkaSetupError> {
    super::consumer(
        config,
        bootstrap,
        Some("facts"),
        super::Commit::AfterWork,
        "meter-facts consumer",
    )
}

impl FactSource {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let topics = [
            self.customer_facts_topic.as_str(),
            self.control_topic.as_str(),
        ];
        if let Err(e) = self.consumer.subscribe(&topics) {
            tracing::error!(error = %e, ?topics, "cannot subscribe to the meter-fact topics");
            return;
        }
        tracing::info!(?topics, "meter-fact source started");
        loop {
            let msg = tokio::select! {
                m = self.consumer.recv() => m,
                _ = shutdown.changed() => return,
            };
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "meter-fact consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let control = msg.topic() == self.control_topic;
            let key = msg.key().map(|k| String::from_utf8_lossy(k).to_string());
            let parsed = match msg.payload() {
                None => Err((
                    DeadLetterReason::InvalidFact,
                    "record has no value".to_string(),
                )),
                Some(b) => MeterFact::parse(key.as_deref(), b, control)
                    .map_err(|e| (DeadLetterReason::InvalidFact, e.0))
                    .and_then(|f| {
                        if self.registry.get(f.meter_id()).is_some() {
                            Ok(f)
                        } else {
                            Err((
                                DeadLetterReason::UnknownMeter,
                                format!(
                                    "meter {} is not in the registry: register it first, then replay this fact",
                                    f.meter_id()
                                ),
                            ))
                        }
                    }),
            };
            match parsed {
                Ok(fact) => {
                    observability::fact_received(fact.type_label());
                    let meter = fact.meter_id().to_string();
                    let (tx, rx) = oneshot::channel();
                    self.directory
                        .deliver_acked(&meter, MeterMsg::Fact(fact), Some(tx));
                    tokio::select! {
                        r = rx => if r.is_err() {
                            // The actor stopped before storing it (shutdown): do not store the
                            // offset; the fact is read again on the next start.
                            return;
                        },
                        _ = shutdown.changed() => return,
                    }
                }
                Err((why, reason)) => {
                    metrics().facts_rejected.increment(1);
                    let owned = msg.detach();
                    super::dead_letter::send(
                        &self.producer,
                        &self.dead_letter_topic,
                        &owned,
                        why,
                        &reason,
                        self.clock.now(),
                    )
                    .await;
                }
            }
            if let Err(e) = self.consumer.store_offset_from_message(&msg) {
                tracing::warn!(error = %e, "cannot store meter-fact offset");
            }
        }
    }
}
