//! Campaign store I/O. The actor's write: one per machine step, on the campaign's own arbiter
//! without yielding (so the paused test clock cannot move between deciding a release and
//! storing it); when the store refuses it, the actor's mailbox is held while the write is
//! retried on tokio timers, never a blocking sleep. The registry's writes (a new campaign,
//! adopted orders), retried until the store takes them, and the read of a stored campaign's
//! orders.

use std::future::Future;
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

/// Stores `batch` durably at once, on the calling thread. When the store refuses it, returns
/// the retry: a future that writes again on tokio timers (backing off to 5 s) until the store
/// takes it. The actor holds its mailbox on that future (`ctx.wait`), so it handles nothing
/// else meanwhile, while its thread stays free for other actors and timers.
pub(crate) fn write_now_or_retry(
    store: &StoreHandle,
    batch: WriteBatch,
    campaign_id: &str,
) -> Option<impl Future<Output = ()> + 'static> {
    let e = store.write_now(batch.clone()).err()?;
    tracing::error!(error = %e, campaign = %campaign_id, "campaign state not stored; holding the campaign until the store accepts it");
    let store = store.clone();
    let campaign_id = campaign_id.to_string();
    Some(async move {
        let mut backoff = backoff();
        loop {
            backoff.wait().await;
            match store.write_now(batch.clone()) {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(error = %e, campaign = %campaign_id, "campaign state still not stored");
                }
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
