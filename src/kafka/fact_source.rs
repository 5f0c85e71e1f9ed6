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
    /// The assigned partitions whose committed offset is below the high watermark, once the
    /// group has assigned partitions (`None` before).
    fn behind_at_start(&self) -> Option<Vec<(String, i32, i64)>> {
        let assignment = self.consumer.assignment().ok()?;
        if assignment.count() == 0 {
            return None;
        }
        let committed = self.consumer.committed(Duration::from_secs(5)).ok()?;
        let mut behind = Vec::new();
        for e in assignment.elements() {
            let (lo, hi) = self
                .consumer
                .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(5))
                .ok()?;
            let from = match committed
                .find_partition(e.topic(), e.partition())
                .map(|c| c.offset())
            {
                Some(rdkafka::Offset::Offset(o)) => o,
                _ => lo,
            };
            if from < hi {
                behind.push((e.topic().to_string(), e.partition(), hi));
            }
        }
        Some(behind)
    }

    /// `caught_up` fires once every fact that was on the topics at start is applied (and at once
    /// if the partitions are not assigned within 60 s): held orders are resumed only after that,
    /// so a payment or certificate sent while switchyard was down is known before anything is
    /// decided.
    pub async fn run(self, caught_up: oneshot::Sender<()>, mut shutdown: watch::Receiver<bool>) {
        let topics = [
            self.customer_facts_topic.as_str(),
            self.control_topic.as_str(),
        ];
        if let Err(e) = self.consumer.subscribe(&topics) {
            tracing::error!(error = %e, ?topics, "cannot subscribe to the meter-fact topics");
            return;
        }
        tracing::info!(?topics, "meter-fact source started");
        let mut caught_up = Some(caught_up);
        // Partition → high watermark at start, for the partitions still behind.
        let mut behind: Option<Vec<(String, i32, i64)>> = None;
        let started = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut gaps = super::GapWatch::default();
        loop {
            let msg = tokio::select! {
                m = self.consumer.recv() => m,
                _ = tick.tick(), if caught_up.is_some() => {
                    if behind.is_none() {
                        behind = self.behind_at_start();
                    }
                    let done = behind.as_ref().is_some_and(|b| b.is_empty())
                        || started.elapsed() > Duration::from_secs(60);
                    if done {
                        if behind.is_none() {
                            tracing::warn!("meter-fact partitions not assigned after 60 s; resuming held orders anyway");
                        }
                        let _ = caught_up.take().expect("some").send(());
                    }
                    continue;
                }
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
            gaps.observe(&self.consumer, &msg);
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
                    // Until the meter has stored it: an actor that stops before storing (it
                    // passivated, or failed) drops the acknowledgement; deliver again (facts
                    // are idempotent). The offset is never stored past an unstored fact.
                    loop {
                        let (tx, rx) = oneshot::channel();
                        self.directory.deliver_acked(
                            &meter,
                            MeterMsg::Fact(fact.clone()),
                            Some(tx),
                        );
                        tokio::select! {
                            r = rx => match r {
                                Ok(()) => break,
                                Err(_) => {
                                    tracing::warn!(meter = %meter, fact = fact.fact_id(), "fact not acknowledged by its meter; delivering again");
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                            },
                            _ = shutdown.changed() => return,
                        }
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
            if let Some(b) = &mut behind {
                let (t, p, o) = (msg.topic(), msg.partition(), msg.offset());
                b.retain(|(bt, bp, hw)| !(bt == t && *bp == p && o + 1 >= *hw));
            }
        }
    }
}
