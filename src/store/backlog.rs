//! The backlog of an embedded store file whose writes are logged, then applied (the meter
//! shards under the group-commit writer, `embedded.rs` "Logged, then applied"): the write
//! batches whose write-ahead log record is durable (so acknowledged) and which redb does not
//! hold yet, in log order, and which meters and orders they touch.
//!
//! Invariants:
//! - records are queued in log order (the logger queues a record while it still holds the
//!   log), and the applier takes them in that order: redb holds exactly the records up to
//!   `applied`;
//! - a read waits until redb holds every record that touches what it reads: the records that
//!   write its meter's snapshot (a meter actor's activation), that have rows of its meter (the
//!   meter's open orders), that store its order ids (the duplicate check), or all records
//!   logged before the read began (any other read). So a read never misses a write that was
//!   acknowledged before it started. (A meter's activation must not wait for the intake's
//!   record of the order it is activated for: that record has no snapshot, and waiting for it
//!   would hold the actor's thread for as long as the applier is behind, a checkpoint long.)
//! - a key's entry goes only when the record that last touched it is applied.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::{StoreError, WriteBatch};

/// What a read needs applied before it reads.
pub(crate) enum Keys<'a> {
    /// Everything logged before the read began.
    All,
    /// The records that write this meter's snapshot.
    Snapshot(&'a str),
    /// The records that have rows of this meter.
    Meter(&'a str),
    /// The records that store these orders (new or carried to a meter).
    Orders(&'a [&'a str]),
    /// The records up to this one (a direct write waiting for its own).
    Through(u64),
}

/// One transaction of an applier. (Named and described in `crate::observability::CATALOGUE`;
/// recorded here because the store sits on `domain` alone.)
pub(crate) fn record_apply(elapsed: Duration) {
    metrics::histogram!("switchyard_store_apply_seconds").record(elapsed.as_secs_f64());
}

/// Records queued at most: above this the logger waits for the applier (so its callers' requests
/// queue, and the intake's gate, `StoreHandle::congested`, holds new work), instead of the log
/// and the queue growing without bound.
pub(crate) const MAX_QUEUED: usize = 4096;
/// Records one applier transaction takes at most.
const MAX_PER_TRANSACTION: usize = 512;

/// A record of the log: its number and its batches.
pub(crate) type Record = (u64, Vec<WriteBatch>);

#[derive(Default)]
struct State {
    queue: VecDeque<Record>,
    /// The last record logged, and the last redb holds.
    logged: u64,
    applied: u64,
    /// The last record that touches a meter / stores an order, while not applied.
    snapshots: HashMap<String, u64>,
    meters: HashMap<String, u64>,
    orders: HashMap<String, u64>,
    /// The logger has stopped: the applier drains the queue and stops.
    closed: bool,
}

pub(crate) struct Backlog {
    state: Mutex<State>,
    changed: Condvar,
}

/// The orders a batch stores (what the duplicate check asks about).
fn orders(b: &WriteBatch) -> impl Iterator<Item = &str> {
    b.new_orders
        .iter()
        .chain(&b.carried_in)
        .map(|r| r.order.order_id.as_str())
}

fn mark(keys: &mut HashMap<String, u64>, key: &str, lsn: u64) {
    match keys.get_mut(key) {
        Some(at) => *at = lsn,
        None => {
            keys.insert(key.to_string(), lsn);
        }
    }
}

/// Clears `key` unless a record after `through` touched it.
fn unmark(keys: &mut HashMap<String, u64>, key: &str, through: u64) {
    if keys.get(key).is_some_and(|at| *at <= through) {
        keys.remove(key);
    }
}

impl Backlog {
    /// A backlog of a file that holds the log's records up to `applied` (its `wal_lsn`).
    pub(crate) fn new(applied: u64) -> Backlog {
        Backlog {
            state: Mutex::new(State {
                logged: applied,
                applied,
                ..State::default()
            }),
            changed: Condvar::new(),
        }
    }

    /// Waits while the queue is full (the applier behind); `false` once the logger has been
    /// stopped (nothing may be logged any more: no applier would apply it).
    pub(crate) fn room(&self) -> bool {
        let s = self.lock();
        let s = self
            .changed
            .wait_while(s, |s| s.queue.len() >= MAX_QUEUED && !s.closed)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        !s.closed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Record `lsn` is durable in the log: queued for the applier, its meters and orders
    /// marked. Called while the logger still holds the log.
    pub(crate) fn logged(&self, lsn: u64, batches: Vec<WriteBatch>) {
        let mut s = self.lock();
        for b in &batches {
            if let Some(m) = &b.meter {
                mark(&mut s.snapshots, &m.meter_id, lsn);
            }
            for m in b.meter_ids() {
                mark(&mut s.meters, m, lsn);
            }
            for o in orders(b) {
                s.orders.insert(o.to_string(), lsn);
            }
        }
        s.logged = lsn;
        s.queue.push_back((lsn, batches));
        drop(s);
        self.changed.notify_all();
    }

    /// Everything queued, in order, once there is something; `None` once the logger has
    /// stopped and the queue is empty.
    pub(crate) fn take(&self) -> Option<Vec<Record>> {
        let mut s = self.lock();
        loop {
            if !s.queue.is_empty() {
                let n = s.queue.len().min(MAX_PER_TRANSACTION);
                let taken = s.queue.drain(..n).collect();
                drop(s);
                self.changed.notify_all(); // room for a waiting logger
                return Some(taken);
            }
            if s.closed {
                return None;
            }
            s = self
                .changed
                .wait(s)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Records taken and not applied (the transaction failed): back to the front, in order.
    pub(crate) fn give_back(&self, records: Vec<Record>) {
        let mut s = self.lock();
        for r in records.into_iter().rev() {
            s.queue.push_front(r);
        }
    }

    /// redb holds the records up to `through` (taken together): their keys are cleared where
    /// no later record touched them, and waiting reads go on.
    pub(crate) fn applied(&self, through: u64, records: &[Record]) {
        let mut s = self.lock();
        s.applied = through;
        for (_, batches) in records {
            for b in batches {
                if let Some(m) = &b.meter {
                    unmark(&mut s.snapshots, &m.meter_id, through);
                }
                for m in b.meter_ids() {
                    unmark(&mut s.meters, m, through);
                }
                for o in orders(b) {
                    unmark(&mut s.orders, o, through);
                }
            }
        }
        drop(s);
        self.changed.notify_all();
    }

    pub(crate) fn applied_lsn(&self) -> u64 {
        self.lock().applied
    }

    /// Waits until redb holds what a read of `keys` needs, at most `limit`.
    pub(crate) fn settle(&self, keys: Keys<'_>, limit: Duration) -> Result<(), StoreError> {
        let s = self.lock();
        let needed = match keys {
            Keys::All => s.logged,
            Keys::Snapshot(m) => s.snapshots.get(m).copied().unwrap_or(0),
            Keys::Meter(m) => s.meters.get(m).copied().unwrap_or(0),
            Keys::Orders(ids) => ids
                .iter()
                .filter_map(|o| s.orders.get(*o).copied())
                .max()
                .unwrap_or(0),
            Keys::Through(lsn) => lsn,
        };
        if s.applied >= needed {
            return Ok(());
        }
        let (s, timeout) = self
            .changed
            .wait_timeout_while(s, limit, |s| s.applied < needed)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if timeout.timed_out() {
            return Err(StoreError::Backend(format!(
                "the store has not applied its log's record {needed} after {limit:?} (it holds up to {}): a read now would miss acknowledged writes; the applier's errors say why",
                s.applied
            )));
        }
        Ok(())
    }

    /// The logger has stopped: the applier drains what is queued and stops.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(meter: &str) -> WriteBatch {
        WriteBatch {
            audit: vec![crate::domain::AuditEvent::new(
                meter,
                "2026-12-06T12:00:00Z".parse().unwrap(),
                crate::domain::AuditKind::OrderReceived,
            )],
            ..WriteBatch::default()
        }
    }

    #[test]
    fn a_read_waits_only_for_the_records_of_what_it_reads() {
        let b = std::sync::Arc::new(Backlog::new(0));
        b.logged(1, vec![step("M-1")]);
        b.logged(2, vec![step("M-2")]);
        let short = Duration::from_millis(20);
        // Nothing of M-3 is waiting; M-1's record is.
        assert!(b.settle(Keys::Meter("M-3"), short).is_ok());
        assert!(b.settle(Keys::Meter("M-1"), short).is_err());
        assert!(b.settle(Keys::All, short).is_err());
        let taken = b.take().unwrap();
        assert_eq!(taken.len(), 2);
        // A read of M-1 that started before record 1 was applied goes on once it is.
        let waiting = {
            let b = b.clone();
            std::thread::spawn(move || b.settle(Keys::Meter("M-1"), Duration::from_secs(10)))
        };
        b.applied(2, &taken);
        assert!(waiting.join().unwrap().is_ok());
        assert!(b.settle(Keys::All, short).is_ok());
    }

    #[test]
    fn a_meters_activation_does_not_wait_for_a_record_without_its_snapshot() {
        let b = Backlog::new(0);
        // The intake's record of a new order: rows of M-1, no snapshot.
        b.logged(1, vec![step("M-1")]);
        let short = Duration::from_millis(20);
        assert!(b.settle(Keys::Snapshot("M-1"), short).is_ok());
        assert!(b.settle(Keys::Meter("M-1"), short).is_err());
        // The meter's own step writes its snapshot: its next activation waits for it.
        let mut own = step("M-1");
        own.meter = Some(crate::domain::MeterState::new("M-1"));
        b.logged(2, vec![own]);
        assert!(b.settle(Keys::Snapshot("M-1"), short).is_err());
        let taken = b.take().unwrap();
        b.applied(2, &taken);
        assert!(b.settle(Keys::Snapshot("M-1"), short).is_ok());
    }

    #[test]
    fn a_key_touched_again_stays_marked_until_its_last_record_is_applied() {
        let b = Backlog::new(0);
        b.logged(1, vec![step("M-1")]);
        let first = b.take().unwrap();
        b.logged(2, vec![step("M-1")]);
        b.applied(1, &first);
        let short = Duration::from_millis(20);
        assert!(b.settle(Keys::Meter("M-1"), short).is_err());
        let second = b.take().unwrap();
        b.applied(2, &second);
        assert!(b.settle(Keys::Meter("M-1"), short).is_ok());
    }

    #[test]
    fn a_full_queue_holds_the_logger_until_the_applier_takes_records() {
        let b = std::sync::Arc::new(Backlog::new(0));
        for lsn in 1..=MAX_QUEUED as u64 {
            b.logged(lsn, vec![step("M-1")]);
        }
        let logger = {
            let b = b.clone();
            std::thread::spawn(move || b.room())
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !logger.is_finished(),
            "the logger waits while the queue is full"
        );
        let taken = b.take().unwrap();
        assert_eq!(
            taken.len(),
            MAX_PER_TRANSACTION,
            "one transaction takes a bounded part"
        );
        assert!(logger.join().unwrap(), "room again once records are taken");
        b.close();
        assert!(
            !b.room(),
            "nothing may be logged once the logger has stopped"
        );
    }

    #[test]
    fn records_given_back_come_again_first_and_a_closed_backlog_drains_then_stops() {
        let b = Backlog::new(0);
        b.logged(1, vec![step("M-1")]);
        b.logged(2, vec![step("M-2")]);
        let taken = b.take().unwrap();
        b.logged(3, vec![step("M-3")]);
        b.give_back(taken);
        b.close();
        let again = b.take().unwrap();
        assert_eq!(again.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(b.take().is_none());
    }
}
