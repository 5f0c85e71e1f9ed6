//! The outbox publisher: every order event and exception is first committed to the store's
//! outbox in the same transaction as the state change it reports; this task produces it to Kafka
//! and deletes it from the outbox once the broker acknowledged it. A crash therefore re-publishes
//! (at least once, in order per meter) instead of losing events. Consumers dedupe on
//! `(order_id, status)` if they need exactly once.
//!
//! The store keeps entries in rows (`OutboxEntry::packet`: the embedded store packs one
//! transaction's entries into one row); a row is deleted once Kafka has acknowledged every
//! entry in it, so a crash re-publishes at most the rows not yet wholly acknowledged.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::{mpsc, watch};

use crate::commit::StoreHandle;
use crate::observability::metrics;
use crate::store::{OutboxEntry, WriteBatch};

const MAX_IN_FLIGHT: usize = 50_000;

pub(crate) struct Publisher {
    pub(crate) producer: FutureProducer,
    pub(crate) store: StoreHandle,
    /// Entries left in the outbox by an earlier run, published first.
    pub(crate) backlog: Vec<OutboxEntry>,
    pub(crate) committed: mpsc::UnboundedReceiver<Vec<OutboxEntry>>,
}

impl Publisher {
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let m = metrics();
        let mut queue: VecDeque<OutboxEntry> = std::mem::take(&mut self.backlog).into();
        m.outbox_pending.set(queue.len() as f64);
        let mut unacked = Unacked::default();
        for e in &queue {
            unacked.add(e);
        }
        let mut in_flight = FuturesOrdered::new();
        let mut acked: Vec<u64> = Vec::new();
        let mut flush = tokio::time::interval(Duration::from_millis(100));
        let mut stopping = false;
        loop {
            // Hand queued entries to librdkafka.
            while in_flight.len() < MAX_IN_FLIGHT {
                let Some(entry) = queue.pop_front() else {
                    break;
                };
                let rec = FutureRecord::to(&entry.message.topic)
                    .key(&*entry.message.key)
                    .payload(&entry.message.payload);
                match self.producer.send_result(rec) {
                    Ok(fut) => in_flight.push_back(async move { (entry, fut.await) }),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        queue.push_front(entry);
                        break;
                    }
                    Err((e, _)) => {
                        m.publish_errors.increment(1);
                        tracing::error!(error = %e, topic = %entry.message.topic, "cannot produce event; will retry");
                        queue.push_front(entry);
                        break;
                    }
                }
            }
            if stopping && queue.is_empty() && in_flight.is_empty() {
                break;
            }
            tokio::select! {
                Some(entries) = self.committed.recv(), if !stopping => {
                    m.outbox_pending.increment(entries.len() as f64);
                    for e in &entries {
                        unacked.add(e);
                    }
                    queue.extend(entries);
                }
                Some((entry, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    match result {
                        Ok(Ok(_)) => {
                            m.events_published.increment(1);
                            m.outbox_pending.decrement(1.0);
                            acked.extend(unacked.delivered(&entry));
                        }
                        _ => {
                            m.publish_errors.increment(1);
                            tracing::warn!(topic = %entry.message.topic, "event delivery failed; retrying");
                            // Back at the front, in sequence order, so a meter's events stay ordered.
                            let pos = queue.iter().position(|e| e.seq > entry.seq).unwrap_or(queue.len());
                            queue.insert(pos, entry);
                        }
                    }
                }
                _ = flush.tick() => {
                    if !acked.is_empty() {
                        let batch = WriteBatch { outbox_acked: std::mem::take(&mut acked), ..Default::default() };
                        let store = self.store.clone();
                        tokio::spawn(async move {
                            if let Err(e) = store.write(batch).await {
                                tracing::warn!(error = %e, "could not trim the outbox; entries will be re-published");
                            }
                        });
                    }
                    if stopping && !queue.is_empty() && in_flight.is_empty() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                _ = shutdown.changed(), if !stopping => {
                    stopping = true;
                }
            }
        }
        if !acked.is_empty() {
            let _ = self
                .store
                .write(WriteBatch {
                    outbox_acked: acked,
                    ..Default::default()
                })
                .await;
        }
    }
}

/// The entries of each stored outbox row not yet acknowledged by Kafka: a row may be deleted
/// only once all of them are.
#[derive(Default)]
struct Unacked(HashMap<u64, u32>);

impl Unacked {
    /// An entry handed to the publisher (once: a failed delivery is retried, not added again).
    fn add(&mut self, e: &OutboxEntry) {
        *self.0.entry(e.packet).or_default() += 1;
    }

    /// Kafka acknowledged `e`: the row to delete, when it was the row's last entry.
    fn delivered(&mut self, e: &OutboxEntry) -> Option<u64> {
        let left = self.0.get_mut(&e.packet)?;
        *left -= 1;
        if *left > 0 {
            return None;
        }
        self.0.remove(&e.packet);
        Some(e.packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::OutboxMessage;

    fn entry(seq: u64, packet: u64) -> OutboxEntry {
        OutboxEntry {
            seq,
            packet,
            message: OutboxMessage::new("t", "M-1", vec![]),
        }
    }

    #[test]
    fn a_row_is_deleted_only_after_kafka_acknowledged_its_last_entry() {
        let mut u = Unacked::default();
        let (a, b, c) = (entry(10, 10), entry(11, 10), entry(12, 10));
        let other = entry(13, 13);
        for e in [&a, &b, &c, &other] {
            u.add(e);
        }
        assert_eq!(u.delivered(&b), None);
        assert_eq!(u.delivered(&other), Some(13), "a row of one entry");
        // (`a` is delivered last, as after a failed first delivery: retried, not added again.)
        assert_eq!(u.delivered(&c), None);
        assert_eq!(u.delivered(&a), Some(10), "the row's last entry");
        assert_eq!(u.delivered(&a), None, "an entry it does not know");
    }

    /// The publisher itself, against the embedded Kafka and store: a row whose second entry
    /// cannot be produced (larger than the producer's `message.max.bytes`) keeps both entries,
    /// although Kafka has the first, while a row Kafka has whole is deleted.
    #[tokio::test]
    async fn a_row_stays_while_kafka_lacks_one_of_its_entries() {
        use std::sync::Arc;

        use crate::store::{EmbeddedStore, Store};

        let kafka =
            crate::kafka::embedded::EmbeddedKafka::start_with(&[("events".into(), 1)]).unwrap();
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", kafka.bootstrap_servers())
            .set("message.max.bytes", "10000")
            .create()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let msg = |payload: Vec<u8>| OutboxMessage::new("events", "M-1", payload);
        let whole = store
            .apply(&[WriteBatch {
                outbox: vec![msg(b"first".to_vec())],
                ..Default::default()
            }])
            .unwrap();
        let lacking = store
            .apply(&[WriteBatch {
                outbox: vec![msg(b"second".to_vec()), msg(vec![b'x'; 20_000])],
                ..Default::default()
            }])
            .unwrap();
        assert_eq!(lacking[0].packet, lacking[1].packet, "one row");
        let (published, _published) = mpsc::unbounded_channel();
        let (_committed_tx, committed) = mpsc::unbounded_channel();
        let publisher = Publisher {
            producer,
            store: StoreHandle::start(store.clone(), 64, published),
            backlog: whole.iter().chain(&lacking).cloned().collect(),
            committed,
        };
        let (_stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(publisher.run(shutdown));
        let rows = |s: &Arc<dyn Store>| {
            let mut r: Vec<u64> = s.outbox(100).unwrap().iter().map(|e| e.packet).collect();
            r.dedup();
            r
        };
        // The whole row goes once Kafka has its entry (the row after it has been produced
        // in part by then: entries go out in order).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while rows(&store).contains(&whole[0].packet) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the acknowledged row was never deleted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Several acknowledgement rounds (every 100 ms) later, the other row is still whole.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let numbers = |v: &[OutboxEntry]| {
            v.iter()
                .map(|e| (e.seq, e.packet, e.message.payload.len()))
                .collect::<Vec<_>>()
        };
        let left = store.outbox(100).unwrap();
        task.abort();
        assert_eq!(
            numbers(&left),
            numbers(&lacking),
            "both entries of the row Kafka lacks one of"
        );
    }
}
