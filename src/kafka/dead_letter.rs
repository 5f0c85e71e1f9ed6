//! Dead letters: the original record (key and value byte for byte) re-produced on the
//! dead-letter topic, with the reason and the source position in headers (the Kafka Connect
//! convention), so that it can be inspected, fixed and replayed. Sent and acknowledged before
//! the source offset is committed: a bad record is never lost.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

use crate::domain::{DeadLetterReason, Timestamp};

pub const H_REASON: &str = "switchyard.dlq.reason";
pub const H_DETAIL: &str = "switchyard.dlq.detail";
pub const H_TOPIC: &str = "switchyard.dlq.source.topic";
pub const H_PARTITION: &str = "switchyard.dlq.source.partition";
pub const H_OFFSET: &str = "switchyard.dlq.source.offset";
pub const H_AT: &str = "switchyard.dlq.rejected_at";

/// Produces the dead letter and waits for the broker's acknowledgement, retrying until it is
/// acknowledged (the source offset must not be committed before).
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    msg: &OwnedMessage,
    reason: DeadLetterReason,
    detail: &str,
    at: Timestamp,
) {
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    let at = at.to_string();
    let mut headers = OwnedHeaders::new();
    if let Some(h) = msg.headers() {
        use rdkafka::message::Headers;
        for i in 0..h.count() {
            let hd = h.get(i);
            headers = headers.insert(Header {
                key: hd.key,
                value: hd.value,
            });
        }
    }
    let headers = headers
        .insert(Header {
            key: H_REASON,
            value: Some(reason.as_str()),
        })
        .insert(Header {
            key: H_DETAIL,
            value: Some(detail),
        })
        .insert(Header {
            key: H_TOPIC,
            value: Some(msg.topic()),
        })
        .insert(Header {
            key: H_PARTITION,
            value: Some(&partition),
        })
        .insert(Header {
            key: H_OFFSET,
            value: Some(&offset),
        })
        .insert(Header {
            key: H_AT,
            value: Some(&at),
        });
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut rec: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).headers(headers.clone());
        if let Some(k) = msg.key() {
            rec = rec.key(k);
        }
        if let Some(v) = msg.payload() {
            rec = rec.payload(v);
        }
        match producer.send(rec, Duration::from_secs(30)).await {
            Ok(_) => return,
            Err((e, _)) => {
                tracing::error!(error = %e, topic, "dead letter not acknowledged; retrying (source offset stays uncommitted)");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}
