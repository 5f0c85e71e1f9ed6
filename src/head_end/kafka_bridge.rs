//! The Kafka bridge to a real head-end: each command is produced to the head-end-commands topic
//! (keyed by meter id, JSON v1, see docs/topics.md); the adapter executes it and answers on the
//! head-end-results topic (consumed by `kafka::results_source`). The command id is
//! deterministic, so an adapter can drop a command id it has already executed.

use std::sync::{Arc, Weak};
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};

use super::{HeadEnd, ResultSink};
use crate::clock::Clock;
use crate::domain::{Command, CommandOutcome, CommandResult, FailureCode};

pub struct KafkaBridge {
    producer: FutureProducer,
    topic: String,
    sink: Weak<dyn ResultSink>,
    clock: Arc<dyn Clock>,
}

impl KafkaBridge {
    pub fn new(
        producer: FutureProducer,
        topic: String,
        sink: Weak<dyn ResultSink>,
        clock: Arc<dyn Clock>,
    ) -> KafkaBridge {
        KafkaBridge {
            producer,
            topic,
            sink,
            clock,
        }
    }
}

impl HeadEnd for KafkaBridge {
    fn dispatch(&self, command: Command) {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        let sink = self.sink.clone();
        let clock = self.clock.clone();
        tokio::spawn(async move {
            let payload = serde_json::to_vec(&command).expect("serialize");
            let rec = FutureRecord::to(&topic)
                .key(&command.meter_id)
                .payload(&payload);
            if let Err((e, _)) = producer.send(rec, Duration::from_secs(30)).await {
                tracing::warn!(error = %e, command_id = %command.command_id, "command not delivered to the head-end topic");
                if let Some(sink) = sink.upgrade() {
                    sink.deliver_result(CommandResult {
                        schema_version: 1,
                        command_id: command.command_id,
                        meter_id: command.meter_id,
                        outcome: CommandOutcome::Failed {
                            code: FailureCode::HeadEndUnavailable,
                            detail: Some(e.to_string()),
                        },
                        at: clock.now(),
                    });
                }
            }
        });
    }
}
