//! The Kafka bridge to a real head-end: each command is produced to the head-end-commands topic
//! (keyed by meter id, JSON v1, see docs/topics.md); the adapter executes it and answers on the
//! head-end-results topic (consumed by `kafka::results_source`). The command id is
//! deterministic, so an adapter can drop a command id it has already executed.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};

use super::HeadEnd;
use crate::domain::Command;

pub(crate) struct KafkaBridge {
    producer: FutureProducer,
    topic: String,
}

impl KafkaBridge {
    pub(crate) fn new(producer: FutureProducer, topic: String) -> KafkaBridge {
        KafkaBridge { producer, topic }
    }
}

impl HeadEnd for KafkaBridge {
    fn dispatch(&self, command: std::sync::Arc<Command>) {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        tokio::spawn(async move {
            let payload = serde_json::to_vec(&command).expect("serialize");
            let rec = FutureRecord::to(&topic)
                .key(&command.meter_id)
                .payload(&payload);
            if let Err((e, _)) = producer.send(rec, Duration::from_secs(30)).await {
                // Not turned into a failure: a timed-out produce may still have reached the
                // broker, and a retry could then switch twice. The command's deadline passes
                // and the switch status is asked before anything is sent again.
                tracing::warn!(error = %e, command_id = %command.command_id, "command may not have reached the head-end topic; its deadline will resolve it");
            }
        });
    }
}
