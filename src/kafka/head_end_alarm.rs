//! The head-end outage exception: when a head-end's circuit breaker opens, an `open`
//! `head_end_unavailable` exception goes to the exceptions topic (key = the head-end id); when
//! it closes again, the same exception id goes out `resolved`. A breaker that re-opens after
//! a failed probe is the same outage (no new record). Produced straight to Kafka (a head-end
//! outage is not a meter's step; best effort, retried by the producer, then logged); the
//! metrics `switchyard_head_end_breaker_state{head_end}` and
//! `switchyard_head_end_breaker_opens_total{head_end}` say the same without Kafka.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio::sync::{broadcast, watch};

use crate::domain::{ExceptionKind, ExceptionRecord, Timestamp};
use crate::head_end::breaker::Transition;
use crate::head_end::health::HeadEndTransition;
use crate::observability;

pub(crate) struct HeadEndAlarm {
    pub(crate) producer: FutureProducer,
    pub(crate) topic: String,
}

impl HeadEndAlarm {
    /// Follows the breakers' transitions until shutdown.
    pub(crate) async fn run(
        self,
        mut transitions: broadcast::Receiver<HeadEndTransition>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // The opening time of each head-end's outage under way.
        let mut open: HashMap<Arc<str>, Timestamp> = HashMap::new();
        loop {
            let t = tokio::select! {
                t = transitions.recv() => match t {
                    Ok(t) => t,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "head-end alarm missed breaker transitions");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = shutdown.changed() => return,
            };
            let record = match (&t.transition, open.get(&t.head_end)) {
                (Transition::Opened { at, until }, None) => {
                    open.insert(t.head_end.clone(), *at);
                    observability::exception(ExceptionKind::HeadEndUnavailable);
                    ExceptionRecord::head_end_unavailable(&t.head_end, *at, Some(*until), None)
                }
                (Transition::Closed { at }, Some(since)) => {
                    let r =
                        ExceptionRecord::head_end_unavailable(&t.head_end, *since, None, Some(*at));
                    open.remove(&t.head_end);
                    r
                }
                _ => continue,
            };
            let payload = serde_json::to_vec(&record).expect("serialize");
            let sent = self
                .producer
                .send(
                    FutureRecord::to(&self.topic)
                        .key(&*t.head_end)
                        .payload(&payload),
                    Timeout::After(Duration::from_secs(30)),
                )
                .await;
            if let Err((e, _)) = sent {
                tracing::error!(error = %e, head_end = %t.head_end, status = %record.status, "cannot produce the head_end_unavailable exception; switchyard_head_end_breaker_state still says it");
            }
        }
    }
}
