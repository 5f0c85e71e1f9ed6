//! Dead letters: the original record (key and value byte for byte) re-produced on the
//! dead-letter topic, with the reason and the source position in headers (the Kafka Connect
//! convention), so that it can be inspected, fixed and replayed. Sent and acknowledged before
//! the source offset is committed: a bad record is never lost.
//!
//! No single record may block a partition. A record that cannot be dead-lettered whole (its
//! value plus the `switchyard.dlq.*` headers exceed switchyard's producer limit
//! `message.max.bytes`, or the broker refuses it as too large) is dead-lettered truncated: the
//! value is cut to fit, `switchyard.dlq.truncated` says so with the original size, and the
//! source topic / partition / offset headers say where the whole record still is. Only an
//! error that is not about size (the broker is unreachable) is retried until acknowledged.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

use crate::domain::{DeadLetterReason, Timestamp};

pub(crate) const H_REASON: &str = "switchyard.dlq.reason";
pub(crate) const H_DETAIL: &str = "switchyard.dlq.detail";
pub(crate) const H_TOPIC: &str = "switchyard.dlq.source.topic";
pub(crate) const H_PARTITION: &str = "switchyard.dlq.source.partition";
pub(crate) const H_OFFSET: &str = "switchyard.dlq.source.offset";
pub(crate) const H_AT: &str = "switchyard.dlq.rejected_at";
/// Present when the dead letter does not carry the whole original record: a comma-separated
/// list of `original_headers_dropped`, `original_header_keys_not_utf8` (such keys are carried
/// with U+FFFD in place of the bad bytes), `original_key_dropped,original_key_bytes=<n>` and
/// `original_value_bytes=<n>,kept_bytes=<m>` (the whole record stays at its source position
/// until the topic's retention removes it).
pub(crate) const H_TRUNCATED: &str = "switchyard.dlq.truncated";

/// librdkafka's default `message.max.bytes`.
pub(crate) const DEFAULT_MAX_RECORD_BYTES: usize = 1_000_000;
/// Room left for the record and batch framing librdkafka and the broker add.
const FRAMING_BYTES: usize = 1_024;
/// The detail header is cut to this length (a detail quotes the parse error, which may quote
/// the input).
const MAX_DETAIL_BYTES: usize = 1_024;

/// switchyard's producer limit, set from the producer configuration at start
/// ([`super::producer_config`]); the dead letters are sized to fit it.
static MAX_RECORD_BYTES: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_RECORD_BYTES);

pub(crate) fn set_max_record_bytes(n: usize) {
    MAX_RECORD_BYTES.store(n.max(4 * FRAMING_BYTES), Ordering::Relaxed);
}

/// How much of the original the dead letter carries: everything that fits the budget, then
/// (if the broker still refuses it as too large) a 64 KiB prefix without the original headers,
/// then only the headers that say where the record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Fit,
    Prefix,
    PositionOnly,
}

const PREFIX_BYTES: usize = 64 * 1024;

/// A dead letter as it will be produced.
#[derive(Debug)]
pub(crate) struct Letter<'a> {
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) truncated: bool,
}

fn header_bytes(h: &[(String, Vec<u8>)]) -> usize {
    // Key, value and two varint lengths each.
    h.iter().map(|(k, v)| k.len() + v.len() + 10).sum()
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Builds the dead letter of `msg` at `level` so that key + value + headers stay within
/// `budget` bytes (the producer limit less framing).
fn letter<'a>(
    msg: &'a OwnedMessage,
    reason: DeadLetterReason,
    detail: &str,
    at: Timestamp,
    budget: usize,
    level: Level,
) -> Letter<'a> {
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    if level == Level::Fit {
        if let Some(h) = msg.headers() {
            let raw = raw_headers(h);
            if raw.iter().any(|(k, _)| std::str::from_utf8(k).is_err()) {
                notes.push("original_header_keys_not_utf8".into());
            }
            for (k, v) in raw {
                headers.push((String::from_utf8_lossy(&k).into_owned(), v));
            }
        }
    }
    let own = |headers: &mut Vec<(String, Vec<u8>)>| {
        headers.push((H_REASON.into(), reason.as_str().as_bytes().to_vec()));
        headers.push((
            H_DETAIL.into(),
            cut(detail, MAX_DETAIL_BYTES).as_bytes().to_vec(),
        ));
        headers.push((H_TOPIC.into(), msg.topic().as_bytes().to_vec()));
        headers.push((H_PARTITION.into(), msg.partition().to_string().into_bytes()));
        headers.push((H_OFFSET.into(), msg.offset().to_string().into_bytes()));
        headers.push((H_AT.into(), at.to_string().into_bytes()));
    };
    own(&mut headers);
    // A key too large for any letter is dropped below the first level (it is still at the
    // source position).
    let key = msg
        .key()
        .filter(|k| level == Level::Fit || k.len() <= MAX_KEPT_KEY_BYTES);
    if key.is_none() && msg.key().is_some() {
        notes.push(format!(
            "original_key_dropped,original_key_bytes={}",
            msg.key().map_or(0, <[u8]>::len)
        ));
    }
    let value = msg.payload();
    let original = value.map_or(0, <[u8]>::len);
    let had_headers = msg.headers().is_some_and(|h| h.count() > 0);
    if had_headers && level != Level::Fit {
        notes.push("original_headers_dropped".into());
    }
    let truncated_header = 96 + H_TRUNCATED.len();
    let mut fixed = key.map_or(0, <[u8]>::len) + header_bytes(&headers);
    if fixed + truncated_header > budget && level == Level::Fit {
        // The original headers alone are too large: drop them (still at the source position).
        headers.clear();
        own(&mut headers);
        notes.push("original_headers_dropped".into());
        fixed = key.map_or(0, <[u8]>::len) + header_bytes(&headers);
    }
    let room = match level {
        Level::Fit => budget.saturating_sub(fixed),
        Level::Prefix => PREFIX_BYTES.min(budget.saturating_sub(fixed + truncated_header)),
        Level::PositionOnly => 0,
    };
    let value = match value {
        Some(v) if v.len() > room || level == Level::PositionOnly => {
            let keep = if level == Level::Fit {
                room.saturating_sub(truncated_header)
            } else {
                room
            };
            let kept = &v[..keep.min(v.len())];
            notes.push(format!(
                "original_value_bytes={original},kept_bytes={}",
                kept.len()
            ));
            Some(kept)
        }
        v => v,
    };
    let truncated = !notes.is_empty();
    if truncated {
        headers.push((H_TRUNCATED.into(), notes.join(",").into_bytes()));
    }
    Letter {
        key,
        value,
        headers,
        truncated,
    }
}

/// Keys longer than this are dropped from letters below the first level.
const MAX_KEPT_KEY_BYTES: usize = 1_024;

/// The headers of a record as raw bytes. rdkafka's `Headers::get` panics on a header key that
/// is not UTF-8 (it unwraps `CStr::to_str`): a poison record must not panic a source, so the
/// keys are read through librdkafka directly.
fn raw_headers(h: &OwnedHeaders) -> Vec<(Vec<u8>, Vec<u8>)> {
    use rdkafka::bindings as rd;
    // `BorrowedHeaders` is librdkafka's `rd_kafka_headers_t` behind a reference (rdkafka casts it
    // the same way).
    let p = h.as_borrowed() as *const rdkafka::message::BorrowedHeaders
        as *const rd::rd_kafka_headers_t;
    let n = unsafe { rd::rd_kafka_header_cnt(p) };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut name = std::ptr::null();
        let mut value = std::ptr::null();
        let mut size = 0usize;
        let err = unsafe { rd::rd_kafka_header_get_all(p, i, &mut name, &mut value, &mut size) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            continue;
        }
        let key = unsafe { std::ffi::CStr::from_ptr(name) }
            .to_bytes()
            .to_vec();
        let value = if value.is_null() {
            Vec::new()
        } else {
            unsafe { std::slice::from_raw_parts(value as *const u8, size) }.to_vec()
        };
        out.push((key, value));
    }
    out
}

/// The broker or the producer refused the record for its size: a smaller letter may pass.
fn size_error(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::MessageBatchTooLarge
        )
    )
}

/// Produces the dead letter and waits for the broker's acknowledgement (the source offset must
/// not be committed before). A size refusal moves to a smaller letter at once; any other error
/// is retried with backoff until acknowledged.
pub(crate) async fn send(
    producer: &FutureProducer,
    topic: &str,
    msg: &OwnedMessage,
    reason: DeadLetterReason,
    detail: &str,
    at: Timestamp,
) {
    let budget = MAX_RECORD_BYTES
        .load(Ordering::Relaxed)
        .saturating_sub(FRAMING_BYTES);
    let mut level = Level::Fit;
    let mut backoff = Duration::from_millis(100);
    loop {
        let l = letter(msg, reason, detail, at, budget, level);
        let mut headers = OwnedHeaders::new_with_capacity(l.headers.len());
        for (k, v) in &l.headers {
            headers = headers.insert(Header {
                key: k.as_str(),
                value: Some(v.as_slice()),
            });
        }
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(k) = l.key {
            rec = rec.key(k);
        }
        if let Some(v) = l.value {
            rec = rec.payload(v);
        }
        match producer.send(rec, Duration::from_secs(30)).await {
            Ok(_) => {
                if l.truncated {
                    crate::observability::metrics()
                        .dead_letters_truncated
                        .increment(1);
                    tracing::warn!(
                        source_topic = msg.topic(),
                        partition = msg.partition(),
                        offset = msg.offset(),
                        original_bytes = msg.payload().map_or(0, <[u8]>::len),
                        "record too large to dead-letter whole: dead-lettered truncated (the whole record stays at its source position)"
                    );
                }
                return;
            }
            Err((e, _)) if size_error(&e) && level == Level::PositionOnly => {
                // Nothing smaller can be sent: count it and move on rather than block the
                // partition (the record stays at its source position).
                crate::observability::metrics()
                    .dead_letters_truncated
                    .increment(1);
                tracing::error!(error = %e, topic, source_topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), "not even a position-only dead letter fits the broker's limit; the record is skipped (it is still at its source position)");
                return;
            }
            Err((e, _)) if size_error(&e) => {
                tracing::warn!(error = %e, topic, ?level, "dead letter refused as too large; sending a smaller one");
                level = match level {
                    Level::Fit => Level::Prefix,
                    _ => Level::PositionOnly,
                };
            }
            Err((e, _)) => {
                tracing::error!(error = %e, topic, "dead letter not acknowledged; retrying (source offset stays uncommitted)");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Timestamp as KTimestamp;

    fn record(value: Vec<u8>, headers: Option<OwnedHeaders>) -> OwnedMessage {
        OwnedMessage::new(
            Some(value),
            Some(b"MTR-1".to_vec()),
            "switchyard.orders.v1".into(),
            KTimestamp::NotAvailable,
            3,
            42,
            headers,
        )
    }

    fn size(l: &Letter) -> usize {
        l.key.map_or(0, <[u8]>::len) + l.value.map_or(0, <[u8]>::len) + header_bytes(&l.headers)
    }

    fn header<'a>(l: &'a Letter, k: &str) -> Option<&'a str> {
        l.headers
            .iter()
            .find(|(hk, _)| hk == k)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn a_small_record_is_dead_lettered_whole_with_its_headers() {
        let h = OwnedHeaders::new().insert(Header {
            key: "ce_id",
            value: Some("abc"),
        });
        let m = record(b"not json".to_vec(), Some(h));
        let l = letter(
            &m,
            DeadLetterReason::MalformedJson,
            "expected value",
            Timestamp::UNIX_EPOCH,
            999_000,
            Level::Fit,
        );
        assert!(!l.truncated);
        assert_eq!(l.value, Some(&b"not json"[..]));
        assert_eq!(header(&l, "ce_id"), Some("abc"));
        assert_eq!(header(&l, H_OFFSET), Some("42"));
        assert_eq!(header(&l, H_TRUNCATED), None);
    }

    #[test]
    fn a_record_that_does_not_fit_is_cut_to_the_budget_and_says_so() {
        let m = record(vec![b'x'; 999_700], None);
        let budget = DEFAULT_MAX_RECORD_BYTES - FRAMING_BYTES;
        let l = letter(
            &m,
            DeadLetterReason::MalformedJson,
            &"d".repeat(5000),
            Timestamp::UNIX_EPOCH,
            budget,
            Level::Fit,
        );
        assert!(l.truncated);
        assert!(size(&l) <= budget, "{} > {budget}", size(&l));
        let kept = l.value.unwrap().len();
        assert!(kept > 900_000, "keeps as much as fits: {kept}");
        assert_eq!(
            header(&l, H_TRUNCATED),
            Some(format!("original_value_bytes=999700,kept_bytes={kept}").as_str())
        );
        assert_eq!(header(&l, H_PARTITION), Some("3"));
        assert_eq!(header(&l, H_OFFSET), Some("42"));
        assert!(header(&l, H_DETAIL).unwrap().len() <= MAX_DETAIL_BYTES);
        // Smaller levels after a broker refusal.
        let p = letter(
            &m,
            DeadLetterReason::MalformedJson,
            "x",
            Timestamp::UNIX_EPOCH,
            budget,
            Level::Prefix,
        );
        assert_eq!(p.value.unwrap().len(), PREFIX_BYTES);
        let z = letter(
            &m,
            DeadLetterReason::MalformedJson,
            "x",
            Timestamp::UNIX_EPOCH,
            budget,
            Level::PositionOnly,
        );
        assert_eq!(z.value.unwrap().len(), 0);
        assert_eq!(
            header(&z, H_TRUNCATED),
            Some("original_value_bytes=999700,kept_bytes=0")
        );
    }

    #[test]
    fn a_header_key_that_is_not_utf8_does_not_panic() {
        // Built through librdkafka: the safe API only takes `&str` keys.
        let mut h = OwnedHeaders::new();
        let key = std::ffi::CString::new(vec![0xffu8, 0xfe, b'k']).unwrap();
        let err = unsafe {
            rdkafka::bindings::rd_kafka_header_add(
                h.as_borrowed() as *const rdkafka::message::BorrowedHeaders
                    as *mut rdkafka::bindings::rd_kafka_headers_t,
                key.as_ptr(),
                3,
                b"v".as_ptr() as *const std::ffi::c_void,
                1,
            )
        };
        assert_eq!(
            err,
            rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        );
        h = h.insert(Header {
            key: "ok",
            value: Some("1"),
        });
        let m = record(b"x".to_vec(), Some(h));
        let l = letter(
            &m,
            DeadLetterReason::MalformedJson,
            "x",
            Timestamp::UNIX_EPOCH,
            999_000,
            Level::Fit,
        );
        assert_eq!(header(&l, "ok"), Some("1"));
        assert_eq!(
            header(&l, H_TRUNCATED),
            Some("original_header_keys_not_utf8")
        );
    }

    #[test]
    fn a_key_too_large_for_any_letter_is_dropped_below_the_first_level() {
        let m = OwnedMessage::new(
            Some(b"x".to_vec()),
            Some(vec![b'k'; 2_000_000]),
            "switchyard.orders.v1".into(),
            KTimestamp::NotAvailable,
            0,
            7,
            None,
        );
        let l = letter(
            &m,
            DeadLetterReason::MalformedJson,
            "x",
            Timestamp::UNIX_EPOCH,
            999_000,
            Level::PositionOnly,
        );
        assert!(l.key.is_none());
        assert!(size(&l) < 2_000);
        assert!(header(&l, H_TRUNCATED)
            .unwrap()
            .contains("original_key_dropped,original_key_bytes=2000000"));
    }

    #[test]
    fn huge_original_headers_are_dropped_before_the_value_is() {
        let big = "h".repeat(1_100_000);
        let h = OwnedHeaders::new().insert(Header {
            key: "big",
            value: Some(big.as_str()),
        });
        let m = record(vec![b'x'; 500_000], Some(h));
        let budget = DEFAULT_MAX_RECORD_BYTES - FRAMING_BYTES;
        let l = letter(
            &m,
            DeadLetterReason::MalformedJson,
            "x",
            Timestamp::UNIX_EPOCH,
            budget,
            Level::Fit,
        );
        assert!(size(&l) <= budget);
        assert_eq!(l.value.unwrap().len(), 500_000, "the value is kept whole");
        assert_eq!(header(&l, "big"), None);
        assert_eq!(header(&l, H_TRUNCATED), Some("original_headers_dropped"));
        assert_eq!(header(&l, H_REASON), Some("malformed_json"));
    }
}
