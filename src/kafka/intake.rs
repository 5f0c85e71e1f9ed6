//! The order intake: a consumer-group member on the orders topic. Records are taken in batches;
//! each is validated; bad ones are dead-lettered (and acknowledged by the broker); good ones are
//! stored durably with their `received` audit row and event; only then are the offsets stored
//! for commit, and the orders handed to their meter actors. A redelivered or duplicate order id
//! is recognised in the store and never reaches a meter actor twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::OwnedMessage;
use rdkafka::Message;

use super::source::{Handled, Handler, Io, Rejected};
use crate::clock::Clock;
use crate::commit::StoreHandle;
use crate::domain::{
    validate_order, AuditEvent, AuditKind, Order, OrderEvent, OrderKind, OrderRecord, OrderStatus,
    Rejection, SourcePosition,
};
use crate::meter::Directory;
use crate::observability::metrics;
use crate::registry::Registry;
use crate::retry::{self, Backoff};
use crate::store::{OutboxMessage, WriteBatch};

/// The order intake's handler (its source reads the orders topic in batches, as a member of
/// the group `kafka.group_id`).
pub(crate) struct Intake {
    pub(crate) store: StoreHandle,
    pub(crate) registry: Arc<Registry>,
    pub(crate) directory: Arc<Directory>,
    /// Orders that carry a campaign id join their campaign's queue.
    pub(crate) campaigns: Arc<crate::campaign::registry::Campaigns>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) events_topic: std::sync::Arc<str>,
    /// How long an order for a meter the registry does not know yet waits for the registry
    /// (the two topics race) before it is rejected `unknown_meter`.
    pub(crate) unknown_meter_grace: Duration,
    /// Orders handed to their meters whose first step is not stored yet.
    pub(crate) window: Window,
}

/// The intake's window (`kafka.intake_window`): orders handed to their meter actors whose first
/// step (the decision, and the command it sends) is not durable yet. While it is full the
/// intake takes no new batch, so that under a burst (month-end) the meters' dispatch writes
/// are not queued behind new orders: work already accepted goes first. Without it the intake
/// ran ahead of the meters (ingest 8,820/s against 5,090/s end to end in a month-end run,
/// dispatch p99 12 s, decisions gone stale before they could be sent). The limit is soft: a
/// batch is taken whole once there is room, so up to `limit + intake_batch_max - 1` are open.
pub(crate) struct Window {
    limit: usize,
    open: Arc<WindowCount>,
}

#[derive(Default)]
struct WindowCount {
    n: std::sync::atomic::AtomicUsize,
    freed: tokio::sync::Notify,
}

/// The longest the intake waits for room in its window per batch: it paces the intake, it
/// never stops it (a meter that never answers must not hold the orders of every other meter).
const WINDOW_WAIT: Duration = Duration::from_secs(5);

impl Window {
    /// `limit` orders at most (0: no window).
    pub(crate) fn new(limit: usize) -> Window {
        Window {
            limit,
            open: Arc::default(),
        }
    }

    /// How many handed-over orders are not stored by their meters yet.
    pub(crate) fn open(&self) -> usize {
        self.open.n.load(std::sync::atomic::Ordering::Acquire)
    }

    fn full(&self) -> bool {
        let open = self.open();
        metrics().intake_window.set(open as f64);
        self.limit > 0 && open >= self.limit
    }

    /// Fires when an order of the window settles (or at once, if one settled since the last).
    async fn freed(&self) {
        self.open.freed.notified().await;
    }

    /// An acknowledgement for one order handed over (none without a window): the order counts
    /// until it fires or is dropped (the message dropped: its meter's unit moved away).
    fn ticket(&self) -> Option<tokio::sync::oneshot::Sender<()>> {
        if self.limit == 0 {
            return None;
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let count = self.open.clone();
        count.n.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        tokio::spawn(async move {
            let _ = rx.await;
            count.n.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            count.freed.notify_one();
            // (Read again, not computed: settles on other workers may set it meanwhile.)
            metrics()
                .intake_window
                .set(count.n.load(std::sync::atomic::Ordering::Acquire) as f64);
        });
        Some(tx)
    }
}

impl Handler for Intake {
    fn name(&self) -> &str {
        "order intake"
    }

    fn handle<'a>(
        &'a self,
        batch: &'a [OwnedMessage],
        io: &'a mut Io<'_>,
    ) -> impl std::future::Future<Output = Handled> + Send + 'a {
        self.process(batch, io)
    }
}

impl Intake {
    fn validate(&self, batch: &[OwnedMessage]) -> (Vec<(Order, usize)>, Vec<(usize, Rejection)>) {
        let now = self.clock.now();
        let mut accepted = Vec::new();
        let mut rejected = Vec::new();
        for (i, msg) in batch.iter().enumerate() {
            match validate_order(
                msg.key(),
                msg.payload(),
                |id| self.registry.contains(id),
                now,
            ) {
                Ok(order) => {
                    match super::meter_source::misrouted(
                        &self.directory,
                        "meter",
                        &order.meter_id,
                        msg,
                    ) {
                        None => accepted.push((order, i)),
                        Some(r) => rejected.push((
                            i,
                            Rejection {
                                reason: r.reason,
                                detail: r.detail,
                                order_id: Some(order.order_id),
                                meter_id: Some(order.meter_id),
                            },
                        )),
                    }
                }
                Err(rej) => rejected.push((i, rej)),
            }
        }
        (accepted, rejected)
    }

    /// Validate, store, deliver. The source loop then sends the dead letters and stores the
    /// offsets (only after this returned: the accepted orders are durable).
    async fn process(&self, batch: &[OwnedMessage], io: &mut Io<'_>) -> Handled {
        let m = metrics();
        let started = std::time::Instant::now();
        m.pending_commit.increment(batch.len() as f64);
        let (mut accepted, mut rejected) = self.validate(batch);
        // The registry and the orders are separate topics: an order may arrive just before
        // its meter's registration. Wait a bounded grace for the registry, then decide again.
        if !self.unknown_meter_grace.is_zero()
            && rejected
                .iter()
                .any(|(_, r)| r.reason == crate::domain::DeadLetterReason::UnknownMeter)
        {
            let until = tokio::time::Instant::now() + self.unknown_meter_grace;
            loop {
                let waiting = rejected.iter().any(|(_, r)| {
                    r.reason == crate::domain::DeadLetterReason::UnknownMeter
                        && r.meter_id
                            .as_deref()
                            .is_some_and(|id| !self.registry.contains(id))
                });
                if !waiting || tokio::time::Instant::now() >= until {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = io.stopping() => {
                        m.pending_commit.decrement(batch.len() as f64);
                        return Handled::Stopped;
                    }
                }
            }
            (accepted, rejected) = self.validate(batch);
        }
        // Work already accepted goes first (waited for before the rows are stamped: a row
        // stamped before the wait would land behind later-stamped rows of the same meter, out
        // of order in its trail): while the store writers have more queued than a
        // round takes, wait (bounded: this only paces the intake, it never stops it).
        // The window: the consumer keeps polling while the intake waits (rebalances and
        // shutdown are heard; records fetched meanwhile are held for the next batch).
        let until = tokio::time::Instant::now() + WINDOW_WAIT;
        while self.window.full() {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::select! {
                _ = self.window.freed() => {}
                going_on = io.pause_for(left.min(Duration::from_millis(50))) => {
                    if !going_on {
                        m.pending_commit.decrement(batch.len() as f64);
                        return Handled::Stopped;
                    }
                }
            }
        }
        let gate = std::time::Instant::now();
        while self.store.congested() && gate.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let now = self.clock.now();
        let mut write = WriteBatch::default();
        // Duplicates: already stored, or twice in this batch. Refused records are checked too:
        // a record accepted before a crash and read again after it (when, say, its latest_at
        // has passed) is a duplicate, not a rejection.
        let ids: Vec<&str> = accepted
            .iter()
            .map(|(o, _)| o.order_id.as_str())
            .chain(rejected.iter().filter_map(|(_, r)| r.order_id.as_deref()))
            .collect();
        const WHAT: &str = "cannot check for duplicate orders";
        let mut stored = retry::until_ok(
            WHAT,
            Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            || std::future::ready(self.store.read(WHAT, |s| s.orders_exist(&ids))),
        )
        .await;
        let stored_rejected = stored.split_off(accepted.len());
        let mut stored_rejected = stored_rejected.into_iter();
        let mut dead = Vec::new();
        for (i, rej) in rejected {
            let msg = &batch[i];
            if rej.order_id.is_some() && stored_rejected.next() == Some(true) {
                m.orders_duplicate.increment(1);
                tracing::info!(order_id = ?rej.order_id, "a record of an already accepted order was read again; ignored");
                continue;
            }
            m.orders_rejected[rej.reason.index()].increment(1);
            tracing::info!(reason = rej.reason.as_str(), detail = %rej.detail, partition = msg.partition(), offset = msg.offset(), "order rejected to dead letter");
            if let Some(order_id) = &rej.order_id {
                let meter = rej.meter_id.clone().unwrap_or_default();
                let ev = OrderEvent::new(order_id, &meter, None, OrderStatus::Rejected, now)
                    .reason(rej.reason.as_str())
                    .detail(rej.detail.clone());
                m.order_status[OrderStatus::Rejected as usize].increment(1);
                write.outbox.push(OutboxMessage {
                    topic: self.events_topic.clone(),
                    key: meter.as_str().into(),
                    payload: serde_json::to_vec(&ev).expect("serialize"),
                });
                if !meter.is_empty() && self.registry.contains(&meter) {
                    write.audit.push(
                        AuditEvent::new(&meter, now, AuditKind::OrderRejected)
                            .order(order_id)
                            .reason(rej.reason.as_str())
                            .detail(rej.detail.clone()),
                    );
                }
            }
            dead.push((i, Rejected::new(rej.reason, rej.detail)));
        }
        let mut seen = HashSet::new();
        let mut deliver = Vec::new();
        let mut to_campaigns = Vec::new();
        // Meters of orders already stored: handed their open orders again (`Recover` is
        // idempotent). An order stored by an instance that lost its unit after the new owner
        // read the open work (a write of the old owner that landed late) is then still taken
        // up by its meter, never stranded as "a duplicate of itself".
        let mut adopt = Vec::new();
        for ((order, i), already) in accepted.into_iter().zip(stored) {
            let msg = &batch[i];
            if already && !adopt.contains(&order.meter_id) {
                adopt.push(order.meter_id.clone());
            }
            if already || !seen.insert(order.order_id.clone()) {
                m.orders_duplicate.increment(1);
                write.audit.push(
                    AuditEvent::new(&order.meter_id, now, AuditKind::DuplicateIgnored)
                        .order(&order.order_id)
                        .reason("duplicate_order_id")
                        .detail(format!(
                            "redelivered or duplicate record at {}/{}",
                            msg.partition(),
                            msg.offset()
                        )),
                );
                continue;
            }
            let mut ev = OrderEvent::new(
                &order.order_id,
                &order.meter_id,
                Some(order.kind),
                OrderStatus::Received,
                now,
            );
            ev.campaign_id = order.campaign_id.clone();
            write.outbox.push(OutboxMessage {
                topic: self.events_topic.clone(),
                key: order.meter_id.as_str().into(),
                payload: serde_json::to_vec(&ev).expect("serialize"),
            });
            write.audit.push(
                AuditEvent::new(&order.meter_id, now, AuditKind::OrderReceived)
                    .order(&order.order_id)
                    .status(OrderStatus::Received)
                    .detail(format!(
                        "{} {} from {}/{}/{}",
                        order.kind.as_str(),
                        serde_json::to_string(&order.reason).unwrap_or_default(),
                        msg.topic(),
                        msg.partition(),
                        msg.offset()
                    )),
            );
            write.new_orders.push(OrderRecord {
                order: order.clone(),
                status: OrderStatus::Received,
                received_at: now,
                updated_at: now,
                reason: None,
                source: Some(SourcePosition {
                    topic: msg.topic().to_string(),
                    partition: msg.partition(),
                    offset: msg.offset(),
                }),
            });
            if let (Some(cid), OrderKind::Disconnect) = (&order.campaign_id, order.kind) {
                let zone = self
                    .registry
                    .get(&order.meter_id)
                    .map(|m| m.zone.to_string())
                    .unwrap_or_default();
                let co = crate::campaign::CampaignOrder {
                    order_id: order.order_id.clone(),
                    meter_id: order.meter_id.clone(),
                    zone,
                    priority: order.priority,
                    amount_cents: order
                        .amount_due
                        .map(|a| (a * 100.0).round() as i64)
                        .unwrap_or(0),
                    seq: now.as_nanosecond() as u64 + deliver.len() as u64,
                    released: false,
                    released_at: None,
                };
                write.campaign_orders.push((cid.clone(), co.clone()));
                match self.campaigns.joined_elsewhere(&cid, &co) {
                    Some(m) => write.outbox.push(m),
                    None => to_campaigns.push((cid.clone(), co)),
                }
            }
            deliver.push(order);
        }
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut paused = false;
        let mut parts = self.store.split(write);
        let mut units_of: Vec<&str> = deliver.iter().map(|o| o.meter_id.as_str()).collect();
        units_of.sort_unstable();
        units_of.dedup();
        loop {
            // Fencing (crate::lease), before every attempt: each order's unit still leased
            // here, and the write counted while it runs (a graceful revoke waits for it).
            let writing = loop {
                let w: Option<Vec<_>> = units_of
                    .iter()
                    .map(|meter| self.directory.writing(meter))
                    .collect();
                if let Some(w) = w {
                    break w;
                }
                if !io.pause_for(Duration::from_millis(100)).await {
                    m.pending_commit.decrement(batch.len() as f64);
                    return Handled::Stopped;
                }
            };
            let written = self.store.try_write(parts).await;
            // (Not held while paused below: a revoke heard there waits for counted writes.)
            drop(writing);
            match written {
                Ok(()) => break,
                // Shutting down: what was not written is read again at the next start.
                Err((crate::store::StoreError::Closed, _)) => {
                    m.pending_commit.decrement(batch.len() as f64);
                    return Handled::Stopped;
                }
                Err((e, rest)) => {
                    parts = rest;
                    // The store refuses writes (a full disk, say). Pause the intake (nothing
                    // new is fetched; the group keeps this member) and try again.
                    tracing::debug!(error = %e, "cannot store accepted orders; offsets stay uncommitted, retrying");
                    if !paused {
                        tracing::warn!("order intake paused until the store accepts writes again");
                        paused = true;
                    }
                    if !io.pause_for(backoff.next_delay()).await {
                        m.pending_commit.decrement(batch.len() as f64);
                        return Handled::Stopped;
                    }
                }
            }
        }
        m.pending_commit.decrement(batch.len() as f64);
        // Counted once stored: `received` means durably accepted.
        for order in &deliver {
            m.orders_received[order.kind.index()].increment(1);
            m.order_status[OrderStatus::Received as usize].increment(1);
        }
        for order in deliver {
            let meter = order.meter_id.clone();
            self.directory.deliver_acked(
                &meter,
                crate::meter::MeterMsg::Order(order),
                self.window.ticket(),
            );
        }
        for meter in adopt {
            self.directory
                .deliver(&meter, crate::meter::MeterMsg::Recover);
        }
        for (cid, co) in to_campaigns {
            self.campaigns.enqueue(&cid, co);
        }
        m.intake_batch_seconds
            .record(started.elapsed().as_secs_f64());
        Handled::Done(dead)
    }
}

#[cfg(test)]
mod tests {
    use super::Window;
    use std::time::Duration;

    /// An order counts in the window until its meter acknowledges the step or drops the
    /// message, and a settled order wakes the waiting intake at once.
    #[tokio::test(start_paused = true)]
    async fn the_window_counts_an_order_until_its_meter_has_stored_its_step() {
        let w = Window::new(2);
        let first = w.ticket().expect("a window hands out tickets");
        let second = w.ticket().expect("a window hands out tickets");
        assert_eq!(w.open(), 2);
        assert!(w.full());

        // Nothing settles: no wake-up.
        assert!(
            tokio::time::timeout(Duration::from_secs(1), w.freed())
                .await
                .is_err(),
            "woken with nothing settled"
        );

        // A step stored (acknowledged) wakes the intake and makes room.
        let ack = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            first.send(()).unwrap();
        });
        tokio::time::timeout(Duration::from_secs(1), w.freed())
            .await
            .expect("woken once the step is acknowledged");
        ack.await.unwrap();
        assert_eq!(w.open(), 1);
        assert!(!w.full());

        // A message dropped on the way (its meter stopped) does not hold the window.
        drop(second);
        tokio::time::timeout(Duration::from_secs(1), w.freed())
            .await
            .expect("woken once the message is dropped");
        assert_eq!(w.open(), 0);

        // No window: no tickets, never full.
        let off = Window::new(0);
        assert!(off.ticket().is_none());
        assert!(!off.full());
    }
}
