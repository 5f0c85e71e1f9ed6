//! Which meters this instance owns. A meter belongs to an *ownership unit*: the partition of
//! the orders topic its id hashes to (with the producers' partitioner). The consumer group
//! gives each instance a set of units (the meter consumer's assignment, co-partitioned over
//! orders, customer facts, control and head-end results: docs/architecture.md "Scale out");
//! this set is what the meter directory, the intake and the fact and result sources consult
//! before they act for a meter. A meter owned elsewhere gets no actor here and no command from
//! here.
//!
//! Owning is not acting. With a shared store (ScyllaDB) a unit must also be *leased*
//! ([`crate::lease`]): its lease in the store is this instance's and was renewed recently enough
//! that no other instance can have taken it. A meter starts a command only while its unit is
//! owned, caught up and leased ([`Ownership::acting`]), and its steps are stored only while the
//! unit is leased ([`Ownership::leased`]): an instance frozen past its session wakes up with
//! every lease lapsed, so it neither commands nor writes before it hears it lost its units.
//!
//! Invariants: the set changes only in the meter consumer's rebalance callbacks (revoke first,
//! then assign), so it never changes while one of its batches is handled. A directory given no
//! ownership (tests, tools, benches without a consumer group) owns every meter; an ownership
//! without fencing (the embedded store: one process) holds every owned unit's lease.

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

use tokio::time::Instant;

use crate::domain::partition::Partitioner;

pub(crate) struct Ownership {
    partitioner: Partitioner,
    /// The orders topic's partition count (0: every meter is owned).
    units: u32,
    owned: RwLock<BTreeSet<u32>>,
    /// Owned units whose facts are not all applied yet since their assignment: their meters
    /// take facts and answers in but start no command.
    catching_up: RwLock<BTreeSet<u32>>,
    /// Fencing by leases ([`crate::lease`]); else every owned unit counts as leased.
    fencing: bool,
    /// Leased units and the instant their lease stops counting here (set by the lease keeper).
    leased_until: RwLock<HashMap<u32, Instant>>,
    /// Raised when an assignment wants its leases now (the lease keeper's next round).
    pub(crate) lease_wanted: tokio::sync::Notify,
    /// Store writes in progress per unit that passed the lease check ([`Ownership::writing`]):
    /// a graceful revoke waits for them before it releases the unit's lease.
    writes: std::sync::Mutex<HashMap<u32, usize>>,
}

/// A write of a unit's meter in progress (counted until dropped).
pub(crate) struct Writing<'a> {
    ownership: &'a Ownership,
    /// `None`: not counted (no fencing: nothing waits for it).
    unit: Option<u32>,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let Some(unit) = self.unit else { return };
        let mut w = self.ownership.writes.lock().expect("lock");
        if let Some(n) = w.get_mut(&unit) {
            *n -= 1;
            if *n == 0 {
                w.remove(&unit);
            }
        }
    }
}

impl Ownership {
    /// Owns nothing until [`Ownership::gain`]: `units` partitions of the orders topic, hashed by
    /// `partitioner`.
    pub(crate) fn by_partition(partitioner: Partitioner, units: u32) -> Ownership {
        Ownership {
            partitioner,
            units: units.max(1),
            owned: RwLock::default(),
            catching_up: RwLock::default(),
            fencing: false,
            leased_until: RwLock::default(),
            lease_wanted: tokio::sync::Notify::new(),
            writes: std::sync::Mutex::default(),
        }
    }

    /// As [`Ownership::by_partition`], and a unit is acted and written for only while its lease
    /// in the shared store is held ([`crate::lease::Leases`] keeps them).
    pub(crate) fn fenced_by_leases(partitioner: Partitioner, units: u32) -> Ownership {
        Ownership {
            fencing: true,
            ..Ownership::by_partition(partitioner, units)
        }
    }

    /// Is `unit`'s lease held here (always, without fencing)?
    pub(crate) fn leased(&self, unit: u32) -> bool {
        !self.fencing
            || self
                .leased_until
                .read()
                .expect("lock")
                .get(&unit)
                .is_some_and(|until| Instant::now() < *until)
    }

    pub(crate) fn leased_all(&self, units: &BTreeSet<u32>) -> bool {
        units.iter().all(|u| self.leased(*u))
    }

    /// May this meter's steps be stored from here: its unit leased (whether or not still
    /// owned: a unit revoked and given straight back keeps its live actors)?
    pub(crate) fn may_write(&self, meter_id: &str) -> bool {
        self.units == 0 || self.leased(self.unit_of(meter_id))
    }

    /// The lease keeper renewed (or took) `unit`'s lease: it counts until `until` (only while
    /// the unit is owned: a revoke that came meanwhile wins).
    pub(crate) fn lease_held(&self, unit: u32, until: Instant) {
        let owned = self.owned.read().expect("lock");
        if owned.contains(&unit) {
            self.leased_until.write().expect("lock").insert(unit, until);
        }
    }

    /// Starts a store write for `meter_id` if its unit is leased here: counted until the
    /// returned guard drops, so that a graceful revoke can wait for it before releasing the
    /// lease ([`Ownership::wait_for_writes`]). `None`: not leased (do not write now).
    pub(crate) fn writing(&self, meter_id: &str) -> Option<Writing<'_>> {
        if !self.fencing {
            // Every owned unit is leased and nothing waits for writes: no shared counter on
            // the embedded store's hot path.
            return Some(Writing {
                ownership: self,
                unit: None,
            });
        }
        let unit = self.unit_of(meter_id);
        // Counted first, checked second; the revoke clears the lease first and counts second:
        // either this write sees the lease gone, or the revoke sees this write.
        *self.writes.lock().expect("lock").entry(unit).or_default() += 1;
        let w = Writing {
            ownership: self,
            unit: Some(unit),
        };
        self.may_write(meter_id).then_some(w)
    }

    /// Waits (up to `limit`) until no write that passed the lease check is in progress for
    /// `units`; `false`: some still are.
    pub(crate) fn wait_for_writes(
        &self,
        units: &BTreeSet<u32>,
        limit: std::time::Duration,
    ) -> bool {
        let until = std::time::Instant::now() + limit;
        loop {
            let busy = {
                let w = self.writes.lock().expect("lock");
                units.iter().any(|u| w.contains_key(u))
            };
            if !busy {
                return true;
            }
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// `unit`'s lease is not held here any more (released, or taken by another instance).
    pub(crate) fn lease_gone(&self, unit: u32) {
        self.leased_until.write().expect("lock").remove(&unit);
    }

    pub(crate) fn owned_units(&self) -> BTreeSet<u32> {
        self.owned.read().expect("lock").clone()
    }

    /// The unit of `meter_id` (0 when every meter is owned).
    pub(crate) fn unit_of(&self, meter_id: &str) -> u32 {
        if self.units == 0 {
            return 0;
        }
        self.partitioner.partition(meter_id.as_bytes(), self.units)
    }

    pub(crate) fn owns(&self, meter_id: &str) -> bool {
        self.units == 0
            || self
                .owned
                .read()
                .expect("lock")
                .contains(&self.unit_of(meter_id))
    }

    /// Owned, its unit caught up since its assignment, and leased.
    pub(crate) fn acting(&self, meter_id: &str) -> bool {
        let u = self.unit_of(meter_id);
        self.owns_unit(u)
            && !self.catching_up.read().expect("lock").contains(&u)
            && (self.units == 0 || self.leased(u))
    }

    /// These units' facts are applied: their meters may act.
    pub(crate) fn caught_up(&self, units: &BTreeSet<u32>) {
        self.catching_up
            .write()
            .expect("lock")
            .retain(|u| !units.contains(u));
    }

    pub(crate) fn owns_unit(&self, unit: u32) -> bool {
        self.units == 0 || self.owned.read().expect("lock").contains(&unit)
    }

    /// The orders topic's partition count (0: all owned).
    pub(crate) fn unit_count(&self) -> u32 {
        self.units
    }

    pub(crate) fn partitioner(&self) -> Partitioner {
        self.partitioner
    }

    /// `units` are assigned here: owned, and catching up until [`Ownership::caught_up`].
    pub(crate) fn gain(&self, units: &BTreeSet<u32>) {
        self.catching_up.write().expect("lock").extend(units);
        let mut o = self.owned.write().expect("lock");
        o.extend(units);
        crate::observability::metrics()
            .owned_units
            .set(o.len() as f64);
    }

    /// `units` are revoked: not owned, and their leases stop counting at once (the lease keeper
    /// releases them in the store, or lets them lapse when the assignment was lost).
    pub(crate) fn lose(&self, units: &BTreeSet<u32>) {
        // Not owned first: a renewal that lands after this no longer counts the lease
        // ([`Ownership::lease_held`] checks under the same lock).
        let mut o = self.owned.write().expect("lock");
        o.retain(|u| !units.contains(u));
        crate::observability::metrics()
            .owned_units
            .set(o.len() as f64);
        drop(o);
        self.leased_until
            .write()
            .expect("lock")
            .retain(|u, _| !units.contains(u));
        self.caught_up(units);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_is_owned_only_while_its_unit_is() {
        let o = Ownership::by_partition(Partitioner::Crc32, 4);
        let u = o.unit_of("M-1");
        assert!(!o.owns("M-1"), "nothing is owned before an assignment");
        o.gain(&BTreeSet::from([u]));
        assert!(o.owns("M-1"));
        assert!(!o.acting("M-1"), "not before its unit's facts are applied");
        o.caught_up(&BTreeSet::from([u]));
        assert!(o.acting("M-1"));
        let other = (0..1000)
            .map(|i| format!("M-{i}"))
            .find(|m| o.unit_of(m) != u)
            .expect("some meter hashes elsewhere");
        assert!(!o.owns(&other));
        o.lose(&BTreeSet::from([u]));
        assert!(!o.owns("M-1"));
    }
}
