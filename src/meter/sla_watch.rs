//! The service-level watch: every `sla.sweep_secs`, this instance counts the open orders of
//! the meters it owns by priority class and state against their due time (`crate::sla`), into
//! `switchyard_orders_sla{class, state}`. Summed over instances it is the whole fleet (each
//! meter is owned by one); the `SwitchyardOrdersBreachingSla` alert fires on `breached`.
//! A sweep reads the store's open work of the owned units (each open order's row once): cheap
//! next to the orders themselves, since open orders are few next to meters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Directory;
use crate::sla::{SlaClass, SlaState, SlaTargets};
use crate::store::StoreError;

/// Open orders by class and state.
pub(crate) type SlaCounts = BTreeMap<(SlaClass, SlaState), u64>;

/// One count of the owned meters' open orders at the directory's business time.
pub(crate) fn sweep(directory: &Directory, sla: &SlaTargets) -> Result<SlaCounts, StoreError> {
    let services = directory.services();
    let store = services.store.store();
    let now = services.clock.now();
    let meters = match directory.owned_units() {
        None => store.meters_with_open_work()?,
        Some((units, of, partitioner)) => {
            store.meters_with_open_work_in(&units, of, partitioner)?
        }
    };
    let mut counts = SlaCounts::new();
    for m in meters {
        for rec in store.open_orders(&m)? {
            if rec.status.is_terminal() {
                continue;
            }
            let v = sla.of(&rec, rec.status, rec.updated_at, now);
            *counts.entry((v.class, v.state)).or_default() += 1;
        }
    }
    Ok(counts)
}

/// Sweeps until `shutdown`, setting the gauges after each sweep (a failed sweep leaves them).
pub(crate) async fn run(
    directory: Arc<Directory>,
    sla: Arc<SlaTargets>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is now: skip it, so that the first sweep comes after the consumer group
    // has given this instance its units (before, it would count every meter).
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let (d, s) = (directory.clone(), sla.clone());
        match tokio::task::spawn_blocking(move || sweep(&d, &s)).await {
            Ok(Ok(counts)) => crate::observability::orders_sla(&counts_by_label(&counts)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "service-level sweep failed; trying again at the next one")
            }
            Err(e) => tracing::warn!(error = %e, "service-level sweep panicked"),
        }
    }
}

/// Every class and open state with its count (zeros included, so a cleared breach reads 0).
fn counts_by_label(c: &SlaCounts) -> Vec<(&'static str, &'static str, u64)> {
    let classes = [
        (SlaClass::P1, "p1"),
        (SlaClass::P2, "p2"),
        (SlaClass::P3, "p3"),
        (SlaClass::P4, "p4"),
    ];
    let mut out = Vec::new();
    for (class, cname) in classes {
        for state in [SlaState::OnTrack, SlaState::AtRisk, SlaState::Breached] {
            out.push((
                cname,
                state.into(),
                c.get(&(class, state)).copied().unwrap_or(0),
            ));
        }
    }
    out
}
