//! Fencing: per-unit leases in the shared store, so that an instance that was frozen (SIGSTOP,
//! a long stall of the process) past its Kafka session and wakes up neither starts a command
//! nor starts storing a step for a meter that another instance took over meanwhile. (A guest
//! whose monotonic clock stops with it, a VM paused by its hypervisor, is not covered: its
//! leases do not lapse by its own clock.)
//!
//! Kafka's group protocol decides who *should* own a unit; the lease in the store decides who
//! *may act* for it. A lease row (`unit_leases`: epoch, owner, beat) changes only by
//! compare-and-set (a lightweight transaction on ScyllaDB, [`Store::swap_unit_lease`]):
//!
//! - **Holding.** The owner renews every `lease / 5` (beat + 1). A renewal sent at `t` that
//!   applied makes the unit count as leased here until `t + 4/5 · lease`
//!   ([`Ownership::lease_held`]). A renewal that did not apply means someone took the lease:
//!   the unit is fenced here at once. A store that does not answer lets the lease lapse on its
//!   own.
//!   A lease found taken at a renewal is lost for good here: the unit is no longer owned
//!   (the consumer's revoke follows) and its live actors stop.
//! - **Taking.** An instance assigned a unit takes a released (or never taken) lease at once
//!   (epoch + 1). A lease held by another instance is taken only after this instance has seen
//!   the same row, unchanged, for a whole `lease`: its holder then has not renewed for that
//!   long, so by its own clock (the same rate: only monotonic clocks are compared, never wall
//!   clocks of two machines) its lease stopped counting at least `lease / 5` earlier.
//! - **Releasing.** A graceful revoke and a graceful stop release their units (owner ``),
//!   so that the next owner need not wait; a lost assignment is not released (this instance
//!   does not know what it may still have in flight) and lapses.
//!
//! Invariant: at any instant at most one instance counts a unit as leased, given that two
//! instances' monotonic clocks run at rates within 20 % of each other. What a frozen instance
//! had already begun when it froze (a statement on the wire, a record in the producer's queue)
//! is outside a lease's reach: docs/architecture.md "Fencing" says what bounds it.
//!
//! [`Store::swap_unit_lease`]: crate::store::Store::swap_unit_lease

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::ownership::Ownership;
use crate::store::{Store, UnitLease};

/// What this instance knows of one assigned unit's lease.
#[derive(Debug, Clone)]
enum Slot {
    /// Held here, as last written.
    Held(UnitLease),
    /// Held by another instance (or not read yet): the row as first seen, and when.
    Watching {
        seen: Option<UnitLease>,
        since: Instant,
    },
}

/// Takes, renews and releases the leases of the units this instance owns.
pub(crate) struct Leases {
    store: Arc<dyn Store>,
    ownership: Arc<Ownership>,
    me: String,
    lease: Duration,
    slots: Mutex<HashMap<u32, Slot>>,
    /// Where a failing store is reported (`/readyz`, `switchyard_store_available`): an instance
    /// whose leases lapse for want of a store is as unavailable as one whose writes fail.
    health: Option<crate::commit::StoreHandle>,
    /// The last lease call failed (reported; cleared at the next that works).
    failing: std::sync::atomic::AtomicBool,
    /// Told when a held lease is found taken by another instance (the units' live actors
    /// stop: the directory relinquishes them).
    on_lost: Option<Box<dyn Fn(&BTreeSet<u32>) + Send + Sync>>,
    /// Set by a graceful stop: no round after it.
    stopped: std::sync::atomic::AtomicBool,
}

impl Leases {
    /// `me`: this instance's id (its `kafka.instance_id`); `lease`: `store.scylla.lease_ms`.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        ownership: Arc<Ownership>,
        me: String,
        lease: Duration,
    ) -> Leases {
        Leases {
            store,
            ownership,
            me,
            lease,
            slots: Mutex::default(),
            health: None,
            failing: std::sync::atomic::AtomicBool::new(false),
            on_lost: None,
            stopped: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// What to do with units whose lease was found taken (stop their actors).
    pub(crate) fn on_lost(mut self, f: impl Fn(&BTreeSet<u32>) + Send + Sync + 'static) -> Leases {
        self.on_lost = Some(Box::new(f));
        self
    }

    /// Reports the lease calls' failures (and recovery) to the store's health.
    pub(crate) fn reporting_to(mut self, handle: crate::commit::StoreHandle) -> Leases {
        self.health = Some(handle);
        self
    }

    fn report<T>(&self, r: &Result<T, crate::store::StoreError>) {
        use std::sync::atomic::Ordering;
        let Some(h) = &self.health else { return };
        match r {
            Err(e) => {
                self.failing.store(true, Ordering::SeqCst);
                h.report_call("unit leases", Err(e));
            }
            Ok(_) => {
                if self.failing.swap(false, Ordering::SeqCst) {
                    h.report_call("unit leases", Ok(true));
                }
            }
        }
    }

    /// How long a renewal counts here.
    fn valid(&self) -> Duration {
        self.lease * 4 / 5
    }

    /// Renews and takes leases until `shutdown` (every `lease / 5`, and at once when an
    /// assignment asks, [`Ownership::lease_wanted`]). Store calls block: run it on a thread of
    /// its own or through `spawn_blocking` rounds, as [`Leases::spawn`] does.
    /// Runs until [`Leases::release_all`] (a graceful stop, after the meters stopped: leases
    /// are kept renewed while they drain).
    pub(crate) fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let period = self.lease / 5;
            // An assignment waiting for its leases asks at every tick: at most 4 rounds a
            // period, each a compare-and-set per held unit.
            let least = period / 4;
            loop {
                if self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let started = Instant::now();
                let me = self.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || me.round()).await {
                    tracing::error!(error = %e, "lease round failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(started + period) => {}
                    _ = self.ownership.lease_wanted.notified() => {
                        tokio::time::sleep_until(started + least).await;
                    }
                }
            }
        })
    }

    /// One pass over the owned units: renew what is held, take what may be taken.
    /// Holds the slots throughout, so that a release (a revoke) comes between two rounds,
    /// never inside one.
    pub(crate) fn round(&self) {
        let mut slots = self.slots.lock().expect("lock");
        if self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let owned = self.ownership.owned_units();
        slots.retain(|u, _| {
            let keep = owned.contains(u);
            if !keep {
                self.ownership.lease_gone(*u);
            }
            keep
        });
        let mut lost = BTreeSet::new();
        for u in &owned {
            let slot = slots.entry(*u).or_insert(Slot::Watching {
                seen: None,
                since: Instant::now(),
            });
            let next = self.step(*u, slot.clone());
            if matches!((&*slot, &next), (Slot::Held(_), Slot::Watching { .. })) {
                lost.insert(*u);
            }
            *slot = next;
        }
        if !lost.is_empty() {
            // Another instance acts for them now: they are not this instance's any more
            // (the consumer's revoke follows), and their live actors stop.
            self.ownership.lose(&lost);
            if let Some(f) = &self.on_lost {
                f(&lost);
            }
        }
    }

    fn step(&self, unit: u32, slot: Slot) -> Slot {
        let sent = Instant::now();
        match slot {
            Slot::Held(l) => {
                let next = UnitLease {
                    beat: l.beat + 1,
                    ..l.clone()
                };
                let r = self.store.swap_unit_lease(unit, Some(&l), &next);
                self.report(&r);
                match r {
                    Ok(true) => {
                        self.ownership.lease_held(unit, sent + self.valid());
                        Slot::Held(next)
                    }
                    Ok(false) => {
                        self.ownership.lease_gone(unit);
                        // An earlier renewal that timed out may have applied after all: the
                        // row is then still this instance's, same epoch (kept, counted again
                        // only after the next renewal applies).
                        if let Ok(Some(now)) = self.store.unit_lease(unit) {
                            if now.owner == self.me && now.epoch == l.epoch {
                                return Slot::Held(now);
                            }
                        }
                        crate::observability::metrics().leases_lost.increment(1);
                        tracing::warn!(unit, epoch = l.epoch, "this instance's lease of the unit was taken by another instance: it no longer commands or writes for the unit's meters");
                        Slot::Watching {
                            seen: None,
                            since: Instant::now(),
                        }
                    }
                    Err(e) => {
                        // Not known: lapses on its own unless a later renewal applies.
                        tracing::warn!(unit, error = %e, "cannot renew the unit's lease");
                        Slot::Held(l)
                    }
                }
            }
            Slot::Watching { seen, since } => {
                let read = self.store.unit_lease(unit);
                self.report(&read);
                let now = match read {
                    Ok(now) => now,
                    Err(e) => {
                        tracing::warn!(unit, error = %e, "cannot read the unit's lease");
                        return Slot::Watching { seen, since };
                    }
                };
                let free = now.as_ref().is_none_or(|l| l.owner.is_empty());
                let stale = seen.is_some() && seen == now && since.elapsed() >= self.lease;
                if !free && !stale {
                    return if seen == now && seen.is_some() {
                        Slot::Watching { seen, since }
                    } else {
                        Slot::Watching {
                            seen: now,
                            since: Instant::now(),
                        }
                    };
                }
                let mine = UnitLease {
                    epoch: now.as_ref().map_or(1, |l| l.epoch + 1),
                    owner: self.me.clone(),
                    beat: 0,
                };
                let sent = Instant::now();
                let r = self.store.swap_unit_lease(unit, now.as_ref(), &mine);
                self.report(&r);
                match r {
                    Ok(true) => {
                        self.ownership.lease_held(unit, sent + self.valid());
                        tracing::info!(unit, epoch = mine.epoch, taken_from = ?now.as_ref().map(|l| l.owner.as_str()).filter(|o| !o.is_empty()), "unit lease taken");
                        Slot::Held(mine)
                    }
                    Ok(false) => Slot::Watching {
                        seen: None,
                        since: Instant::now(),
                    },
                    Err(e) => {
                        tracing::warn!(unit, error = %e, "cannot take the unit's lease");
                        Slot::Watching {
                            seen: None,
                            since: Instant::now(),
                        }
                    }
                }
            }
        }
    }

    /// Gives `units` up in the store (a graceful revoke or stop: they are not counted as
    /// leased here any more, [`Ownership::lose`]), so that their next owner takes them at once.
    pub(crate) fn release(&self, units: &BTreeSet<u32>) {
        let mut slots = self.slots.lock().expect("lock");
        for u in units {
            self.ownership.lease_gone(*u);
            if let Some(Slot::Held(l)) = slots.remove(u) {
                let free = UnitLease {
                    epoch: l.epoch,
                    owner: String::new(),
                    beat: l.beat + 1,
                };
                if let Err(e) = self.store.swap_unit_lease(*u, Some(&l), &free) {
                    tracing::warn!(unit = u, error = %e, "cannot release the unit's lease; its next owner waits for it to lapse");
                }
            }
        }
    }

    /// Forgets `units` without releasing them (their leases lapse: writes of them may still be
    /// in progress).
    pub(crate) fn forget(&self, units: &BTreeSet<u32>) {
        let mut slots = self.slots.lock().expect("lock");
        for u in units {
            self.ownership.lease_gone(*u);
            slots.remove(u);
        }
    }

    /// Every lease held (a graceful stop, after the meters stopped); no round after it.
    pub(crate) fn release_all(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let held: BTreeSet<u32> = self.slots.lock().expect("lock").keys().copied().collect();
        self.release(&held);
    }
}

#[cfg(test)]
mod tests {
    //! Two instances on one store (the embedded store's leases are compare-and-set too), time
    //! paused: a lease goes to the second instance only once the first has stopped renewing
    //! long enough that the first no longer counts it; a frozen holder that wakes is fenced.
    use super::*;
    use crate::domain::partition::Partitioner;
    use crate::store::EmbeddedStore;

    const LEASE: Duration = Duration::from_secs(5);

    fn instance(store: &Arc<dyn Store>, me: &str) -> (Arc<Ownership>, Leases) {
        let o = Arc::new(Ownership::fenced_by_leases(Partitioner::Murmur2, 4));
        o.gain(&BTreeSet::from([0, 1]));
        let l = Leases::new(store.clone(), o.clone(), me.to_string(), LEASE);
        (o, l)
    }

    fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = EmbeddedStore::open(dir.path()).expect("open");
        (dir, Arc::new(s))
    }

    async fn run_for(rounds: u32, who: &[&Leases]) {
        for _ in 0..rounds {
            for l in who {
                l.round();
            }
            tokio::time::advance(LEASE / 5).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_moves_only_after_its_holder_stopped_counting_it() {
        let (_d, s) = store();
        let (oa, a) = instance(&s, "a");
        let (ob, b) = instance(&s, "b");
        a.round();
        assert!(
            oa.leased(0) && oa.leased(1),
            "a free lease is taken at once"
        );
        // Both think they own the units (b assigned, a not yet told): b must not take them
        // while a renews.
        run_for(30, &[&a, &b]).await;
        assert!(oa.leased(0) && !ob.leased(0) && !ob.leased(1));
        // (a's last renewal was one period ago.)
        let last_renewal = Instant::now() - LEASE / 5;
        // a freezes (no more rounds). b takes the units only once a's lease has stopped
        // counting by a's own clock: check at every step that never both count one.
        let mut took = None;
        for step in 0..40 {
            b.round();
            for u in [0, 1] {
                assert!(
                    !(oa.leased(u) && ob.leased(u)),
                    "unit {u} counted as leased by both at step {step}"
                );
            }
            if ob.leased(0) && took.is_none() {
                took = Some(Instant::now() - last_renewal);
            }
            tokio::time::advance(LEASE / 20).await;
        }
        let took = took.expect("b took the lease of a frozen holder");
        assert!(
            took >= LEASE && took <= LEASE * 2,
            "b took the lease {took:?} after the holder's last renewal (a whole lease, not much more)"
        );
        assert!(
            !oa.leased(0),
            "the frozen holder's lease lapsed by its own clock"
        );
        // a wakes: its renewal does not apply, and the unit stays fenced for it.
        a.round();
        assert!(!oa.leased(0) && !oa.leased(1));
        run_for(10, &[&a, &b]).await;
        assert!(!oa.leased(0) && ob.leased(0) && ob.leased(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_lease_is_taken_at_once_and_a_revoked_unit_stops_counting_at_once() {
        let (_d, s) = store();
        let (oa, a) = instance(&s, "a");
        let (ob, b) = instance(&s, "b");
        a.round();
        b.round();
        assert!(oa.leased(0) && !ob.leased(0));
        // A graceful revoke: a loses the units (no longer counted at once), then releases them.
        let both = BTreeSet::from([0, 1]);
        oa.lose(&both);
        assert!(!oa.leased(0) && !oa.may_write("m"));
        a.release(&both);
        b.round();
        assert!(
            ob.leased(0) && ob.leased(1),
            "a released lease is taken without waiting"
        );
        // The epoch rose with the change of owner.
        let l = s.unit_lease(0).expect("read").expect("row");
        assert_eq!((l.owner.as_str(), l.epoch), ("b", 2));
        // a is given a unit back while b still holds it: a waits (b renews).
        oa.gain(&BTreeSet::from([0]));
        run_for(40, &[&a, &b]).await;
        assert!(!oa.leased(0) && ob.leased(0));
    }
}
