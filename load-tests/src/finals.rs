//! Final statuses per distinct order, read from the order-events topic.
//!
//! The `switchyard_order_status_total` counters count status *events*: an order that reaches a
//! final status twice (its event published again after a `kill -9` lost the write that recorded
//! it) counts twice, and so does every campaign order released and finished outside the set the
//! scenario expects (a campaign keeps releasing while the storm's orders finish). Summed that
//! way a smoke run said `final 1209 of 1200 expected`. The harness therefore follows the
//! order-events topic itself and counts each order id once, apart for the orders the scenario
//! expects to finish and for the others.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;
use serde::Deserialize;

use switchyard::domain::OrderStatus;
use switchyard::Config;

use crate::scenario::Scenario;
use crate::LoadtestError;

/// Distinct orders with a final status, as seen so far.
#[derive(Default)]
pub(crate) struct Finals {
    /// Orders the scenario expects to finish (`Scenario::expects_final`).
    expected: AtomicU64,
    /// Other orders that finished (campaign orders released outside the storm's meters).
    other: AtomicU64,
    /// Orders held by a down head-end, and failed orders by reason.
    seen: std::sync::Mutex<Seen>,
    stop: AtomicBool,
    /// The follower missed events: a partition's offsets jumped (the embedded Kafka dropped
    /// what it no longer keeps, 5 MB per partition, before the follower read it; librdkafka
    /// then moves on to the earliest kept offset without telling the application). The
    /// counts are short, and the run says so.
    lost: AtomicBool,
}

#[derive(Default)]
struct Seen {
    held: HashSet<String>,
    failed: std::collections::BTreeMap<String, HashSet<String>>,
}

impl Finals {
    pub fn expected(&self) -> u64 {
        self.expected.load(Ordering::Relaxed)
    }
    pub fn other(&self) -> u64 {
        self.other.load(Ordering::Relaxed)
    }
    /// Whether the follower fell behind what the embedded Kafka kept (its counts are short).
    pub fn lost_events(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }
    /// Distinct orders held by a down head-end (`deferred`, reason `head_end_unavailable`).
    pub fn held_by_head_end(&self) -> u64 {
        self.seen.lock().expect("lock").held.len() as u64
    }
    /// Distinct failed orders by the reason of their `failed` event.
    pub fn failed_by_reason(&self) -> std::collections::BTreeMap<String, u64> {
        let seen = self.seen.lock().expect("lock");
        seen.failed
            .iter()
            .map(|(r, ids)| (r.clone(), ids.len() as u64))
            .collect()
    }
}

/// Only what the count needs from an order event.
#[derive(Deserialize)]
struct Event {
    order_id: String,
    status: OrderStatus,
    #[serde(default)]
    reason: Option<String>,
}

/// Follows `topic` (the order events) from its beginning on a thread of its own until
/// [`Follower::stop`].
pub(crate) struct Follower {
    pub finals: Arc<Finals>,
    thread: Option<JoinHandle<()>>,
}

impl Follower {
    pub fn start(
        config: &Config,
        bootstrap: &str,
        topic: &str,
        scenario: &Scenario,
    ) -> Result<Follower, LoadtestError> {
        let c: BaseConsumer = switchyard::kafka::client_config(config, bootstrap)
            .set(
                "group.id",
                format!(
                    "loadtest-finals-{}",
                    jiff::Timestamp::now().as_millisecond()
                ),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()?;
        c.subscribe(&[topic])?;
        let finals = Arc::new(Finals::default());
        let f = finals.clone();
        let scenario = scenario.clone();
        let thread = std::thread::Builder::new()
            .name("loadtest-finals".into())
            .spawn(move || {
                let mut seen: HashSet<String> = HashSet::new();
                // Each partition's next offset: the topic is new for the run and its producer
                // idempotent, not transactional, so its offsets have no gaps of their own.
                let mut next: std::collections::HashMap<i32, i64> =
                    std::collections::HashMap::new();
                while !f.stop.load(Ordering::Relaxed) {
                    let Some(Ok(m)) = c.poll(Duration::from_millis(100)) else {
                        continue;
                    };
                    if skipped(&mut next, m.partition(), m.offset()) {
                        f.lost.store(true, Ordering::Relaxed);
                    }
                    let Some(Ok(ev)) = m.payload().map(serde_json::from_slice::<Event>) else {
                        continue;
                    };
                    match (ev.status, ev.reason.as_deref()) {
                        (OrderStatus::Deferred, Some("head_end_unavailable")) => {
                            f.seen
                                .lock()
                                .expect("lock")
                                .held
                                .insert(ev.order_id.clone());
                        }
                        (OrderStatus::Failed, reason) => {
                            f.seen
                                .lock()
                                .expect("lock")
                                .failed
                                .entry(reason.unwrap_or("").to_string())
                                .or_default()
                                .insert(ev.order_id.clone());
                        }
                        _ => {}
                    }
                    if ev.status.is_terminal() && !seen.contains(&ev.order_id) {
                        if scenario.expects_final(&ev.order_id) {
                            f.expected.fetch_add(1, Ordering::Relaxed);
                        } else {
                            f.other.fetch_add(1, Ordering::Relaxed);
                        }
                        seen.insert(ev.order_id);
                    }
                }
            })?;
        Ok(Follower {
            finals,
            thread: Some(thread),
        })
    }

    /// Stops following; the counts stay readable.
    pub fn stop(&mut self) {
        self.finals.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether `offset` of `partition` comes after a gap (records the follower never saw), given
/// each partition's next offset so far (from 0: the topic is new for the run). A record seen
/// again (a redelivery) is no gap.
fn skipped(next: &mut std::collections::HashMap<i32, i64>, partition: i32, offset: i64) -> bool {
    let expected = next.entry(partition).or_insert(0);
    let gap = offset > *expected;
    *expected = (*expected).max(offset + 1);
    gap
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::skipped;

    #[test]
    fn a_jump_in_a_partitions_offsets_is_a_gap_and_a_redelivery_is_not() {
        let mut next = std::collections::HashMap::new();
        assert!(!skipped(&mut next, 0, 0));
        assert!(!skipped(&mut next, 0, 1));
        assert!(!skipped(&mut next, 1, 0), "each partition counts from 0");
        assert!(!skipped(&mut next, 0, 1), "seen again");
        assert!(skipped(&mut next, 0, 5), "2 to 4 were never seen");
        assert!(!skipped(&mut next, 0, 6));
        assert!(
            skipped(&mut next, 2, 3),
            "a partition first read past its start"
        );
    }
}
