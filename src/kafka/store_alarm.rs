//! The store-outage exception: when the store starts refusing writes (or the reads the intake
//! needs), an `open` `store_unavailable` exception goes to the exceptions topic; when it accepts
//! writes again, the same exception id goes out `resolved`. These two records are produced
//! straight to Kafka, not through the outbox: the outbox lives in the store that is away. They
//! are best effort (retried for a while, then logged); the metric
//! `switchyard_store_available` and `/readyz` say the same thing without Kafka.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::commit::StoreHandle;
use crate::domain::{ExceptionKind, ExceptionRecord};
use crate::observability::metrics;

/// What the alarm needs: where to produce and under which name this instance raises.
pub(crate) struct StoreAlarm {
    pub(crate) producer: FutureProducer,
    pub(crate) topic: String,
    /// The instance's consumer group: the record key, and part of the exception id.
    pub(crate) group: String,
    pub(crate) clock: Arc<dyn Clock>,
}

impl StoreAlarm {
    /// Follows the store's availability until shutdown.
    pub(crate) async fn run(self, store: StoreHandle, mut shutdown: watch::Receiver<bool>) {
        let mut availability = store.availability();
        // (since, reason) of the outage under way.
        let mut open: Option<(jiff::Timestamp, String)> = None;
        loop {
            tokio::select! {
                changed = availability.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => return,
            }
            let now = self.clock.now();
            let failing = availability.borrow_and_update().clone();
            let record = match (failing, &open) {
                (Some(reason), None) => {
                    metrics().exceptions[ExceptionKind::StoreUnavailable as usize].increment(1);
                    let r = ExceptionRecord::store_unavailable(&self.group, now, &reason, None);
                    open = Some((now, reason));
                    r
                }
                (None, Some((since, reason))) => {
                    let r =
                        ExceptionRecord::store_unavailable(&self.group, *since, reason, Some(now));
                    open = None;
                    r
                }
                _ => continue,
            };
            self.produce(&record).await;
        }
    }

    async fn produce(&self, record: &ExceptionRecord) {
        let payload = serde_json::to_vec(record).expect("serialize");
        let sent = self
            .producer
            .send(
                FutureRecord::to(&self.topic)
                    .key(&self.group)
                    .payload(&payload),
                Timeout::After(Duration::from_secs(30)),
            )
            .await;
        match sent {
            Ok(_) => {
                tracing::warn!(status = %record.status, topic = %self.topic, "store_unavailable exception produced")
            }
            Err((e, _)) => {
                tracing::error!(error = %e, status = %record.status, "cannot produce the store_unavailable exception; /readyz and switchyard_store_available still say it")
            }
        }
    }
}
