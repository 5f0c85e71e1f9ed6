//! Which meters this instance owns. A meter belongs to an *ownership unit*: the partition of
//! the orders topic its id hashes to (with the producers' partitioner). The consumer group
//! gives each instance a set of units (the meter consumer's assignment, co-partitioned over
//! orders, customer facts, control and head-end results: docs/architecture.md "Scale out");
//! this set is what the meter directory, the intake and the fact and result sources consult
//! before they act for a meter. A meter owned elsewhere gets no actor here and no command from
//! here.
//!
//! Invariants: the set changes only in the meter consumer's rebalance callbacks (revoke first,
//! then assign), so it never changes while one of its batches is handled. A directory given no
//! ownership (tests, tools, benches without a consumer group) owns every meter.

use std::collections::BTreeSet;
use std::sync::RwLock;

use crate::domain::partition::Partitioner;

pub(crate) struct Ownership {
    partitioner: Partitioner,
    /// The orders topic's partition count (0: every meter is owned).
    units: u32,
    owned: RwLock<BTreeSet<u32>>,
    /// Owned units whose facts are not all applied yet since their assignment: their meters
    /// take facts and answers in but start no command.
    catching_up: RwLock<BTreeSet<u32>>,
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
        }
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

    /// Owned, and its unit caught up since its assignment.
    pub(crate) fn acting(&self, meter_id: &str) -> bool {
        let u = self.unit_of(meter_id);
        self.owns_unit(u) && !self.catching_up.read().expect("lock").contains(&u)
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

    pub(crate) fn lose(&self, units: &BTreeSet<u32>) {
        let mut o = self.owned.write().expect("lock");
        o.retain(|u| !units.contains(u));
        crate::observability::metrics()
            .owned_units
            .set(o.len() as f64);
        drop(o);
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
