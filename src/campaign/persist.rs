//! Campaign store I/O. The actor's write: one per machine step, on the campaign's own arbiter
//! without yielding (so the paused test clock cannot move between deciding a release and
//! storing it); when the store refuses it, the actor's mailbox is held while the write is
//! retried on tokio timers, never a blocking sleep. The registry's writes (a new campaign,
//! adopted orders), retried until the store takes them, and the read of a stored campaign's
//! orders.

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::actor::CampaignServices;
use std::time::Duration;

use super::CampaignOrder;
use crate::commit::StoreHandle;
use crate::domain::OrderStatus;
use crate::retry::{self, Backoff};
use crate::store::WriteBatch;

/// The wait after a refused write: 50 ms, doubled up to 5 s.
fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(50), Duration::from_secs(5))
}

/// One attempt of a campaign step's write, only while the campaign's unit is leased here.
fn attempt(svc: &CampaignServices, batch: &WriteBatch, campaign_id: &str) -> Attempt {
    let mut r = Attempt::NotLeased;
    svc.sink.fenced(campaign_id, &mut || {
        r = match svc.store.write_now(batch.clone()) {
            Ok(()) => Attempt::Stored,
            Err(e) => Attempt::Refused(e),
        }
    });
    r
}

enum Attempt {
    Stored,
    Refused(crate::store::StoreError),
    NotLeased,
}

/// Stores `batch` durably at once, on the calling thread, if the campaign's unit is leased
/// here. Otherwise (the store refuses it, or the lease is not held here now: a rebalance in
/// progress, a freeze just ended) returns the retry: a future that tries again on tokio
/// timers (backing off to 5 s) until the store takes it (`true`), or until `stopping` says
/// the campaign went to another instance (`false`: nothing stored). The actor holds its
/// mailbox on that future (`ctx.wait`), so it handles nothing else meanwhile, while its
/// thread stays free for other actors and timers.
pub(crate) fn write_fenced(
    svc: &CampaignServices,
    batch: WriteBatch,
    campaign_id: &str,
    stopping: Arc<AtomicBool>,
) -> Option<impl Future<Output = bool> + 'static> {
    let first = attempt(svc, &batch, campaign_id);
    match &first {
        Attempt::Stored => return None,
        Attempt::Refused(e) => {
            tracing::error!(error = %e, campaign = %campaign_id, "campaign state not stored; holding the campaign until the store accepts it")
        }
        Attempt::NotLeased => {
            tracing::info!(campaign = %campaign_id, "the campaign's unit is not leased here now; holding its step until it is (or the campaign moves)")
        }
    }
    let svc = svc.clone();
    let campaign_id = campaign_id.to_string();
    Some(async move {
        let mut backoff = backoff();
        loop {
            backoff.wait().await;
            if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                return false;
            }
            match attempt(&svc, &batch, &campaign_id) {
                Attempt::Stored => return true,
                Attempt::Refused(e) => {
                    tracing::error!(error = %e, campaign = %campaign_id, "campaign state still not stored");
                }
                Attempt::NotLeased => {}
            }
        }
    })
}

/// Stores `batch` through the group-commit writer, retrying until the store takes it.
pub(crate) async fn write_until_stored(store: &StoreHandle, batch: WriteBatch, what: &str) {
    let what = format!("{what} not stored");
    retry::until_ok(&what, backoff(), || store.write(batch.clone())).await
}

/// A stored campaign's orders, each with its order's status in the store (none when the store
/// cannot tell).
pub(crate) fn stored_orders(
    store: &StoreHandle,
    campaign_id: &str,
) -> (Vec<CampaignOrder>, impl Fn(&str) -> Option<OrderStatus>) {
    let orders = store
        .store()
        .campaign_orders(campaign_id)
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read campaign orders");
            Vec::new()
        });
    let store = store.store().clone();
    let status = move |id: &str| store.order(id).ok().flatten().map(|r| r.status);
    (orders, status)
}
