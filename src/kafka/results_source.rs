//! Head-end results (Kafka bridge mode): a real head-end adapter answers each command on the
//! results topic, keyed by meter id, with the command id in the value. Each result is routed to
//! its meter actor, which correlates it with the command in flight. Bad records are
//! dead-lettered; a lost result is harmless (the command deadline passes and the switch status
//! is asked).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::Message;
use tokio::sync::{oneshot, watch};

use crate::clock::Clock;
use crate::domain::{CommandResult, DeadLetterReason};
use crate::meter::{Directory, MeterMsg};

pub struct ResultsSource {
    pub consumer: StreamConsumer,
    pub producer: FutureProducer,
    pub directory: Arc<Directory>,
    pub clock: Arc<dyn Clock>,
    pub topic: String,
    pub dead_letter_topic: String,
}

pub fn consumer(
    config: &crate::config::Config,
    bootstrap: &str,
) -> Result<StreamConsumer, super::KafkaSetupError> {
    super::consumer(
        config,
        bootstrap,
        Some("head-end-results"),
        super::Commit::Auto,
        "head-end results consumer",
    )
}

impl ResultsSource {
    /// `assigned` fires once this member owns results partitions: commands are only sent (and
    /// recovered work resumed) once their answers can be heard.
    pub async fn run(self, assigned: oneshot::Sender<()>, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = self.consumer.subscribe(&[&self.topic]) {
            tracing::error!(error = %e, "cannot subscribe to head-end results");
            return;
        }
        let mut assigned = Some(assigned);
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            let msg = tokio::select! {
                m = self.consumer.recv() => m,
                _ = tick.tick(), if assigned.is_some() => {
                    if self.consumer.assignment().map(|a| a.count() > 0).unwrap_or(false) {
                        tracing::info!(topic = %self.topic, "head-end results partitions assigned");
                        let _ = assigned.take().expect("some").send(());
                    }
                    continue;
                }
                _ = shutdown.changed() => return,
            };
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "head-end results consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let parsed = msg
                .payload()
                .ok_or_else(|| "result has no value".to_string())
                .and_then(|b| {
                    serde_json::from_slice::<CommandResult>(b)
                        .map_err(|e| format!("not a v1 command result: {e}"))
                })
                .and_then(|r| {
                    let id_ok = !r.meter_id.is_empty()
                        && r.meter_id.len() <= 128
                        && r.meter_id.chars().all(|c| c.is_ascii_graphic());
                    if !id_ok {
                        Err("meter_id must be 1-128 printable ASCII characters".to_string())
                    } else if r.schema_version == 1 {
                        Ok(r)
                    } else {
                        Err(format!(
                            "schema_version {} is not supported (use 1)",
                            r.schema_version
                        ))
                    }
                })
                .and_then(|r| match msg.key() {
                    Some(k) if k != r.meter_id.as_bytes() => {
                        Err(format!("record key differs from meter_id `{}`", r.meter_id))
                    }
                    _ => Ok(r),
                });
            match parsed {
                Ok(r) => {
                    let meter = r.meter_id.clone();
                    self.directory.deliver(&meter, MeterMsg::Result(r));
                }
                Err(reason) => {
                    let owned = msg.detach();
                    super::dead_letter::send(
                        &self.producer,
                        &self.dead_letter_topic,
                        &owned,
                        DeadLetterReason::InvalidHeadEndResult,
                        &reason,
                        self.clock.now(),
                    )
                    .await;
                }
            }
        }
    }
}
