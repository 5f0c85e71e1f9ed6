//! The order intake: a consumer-group member on the orders topic. Records are taken in batches;
//! each is validated; bad ones are dead-lettered (and acknowledged by the broker); good ones are
//! stored durably with their `received` audit row and event; only then are the offsets stored
//! for commit, and the orders handed to their meter actors. A redelivered or duplicate order id
//! is recognised in the store and never reaches a meter actor twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::Message;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::domain::{
    validate_order, AuditEvent, AuditKind, Order, OrderEvent, OrderKind, OrderRecord, OrderStatus,
    SourcePosition,
};
use crate::meter::Directory;
use crate::observability::metrics;
use crate::registry::Registry;
use crate::store::{OutboxMessage, StoreHandle, WriteBatch};

pub struct Intake {
    pub consumer: StreamConsumer,
    pub producer: FutureProducer,
    pub store: StoreHandle,
    pub registry: Arc<Registry>,
    pub directory: Arc<Directory>,
    pub clock: Arc<dyn Clock>,
    pub orders_topic: String,
    pub events_topic: String,
    pub dead_letter_topic: String,
    pub batch_max: usize,
    pub linger: Duration,
}

pub fn consumer(
    config: &crate::config::Config,
    bootstrap: &str,
) -> Result<StreamConsumer, super::KafkaSetupError> {
    super::consumer(
        config,
        bootstrap,
        None,
        super::Commit::AfterWork,
        "orders consumer",
    )
}

impl Intake {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = self.consumer.subscribe(&[&self.orders_topic]) {
            tracing::error!(error = %e, topic = %self.orders_topic, "cannot subscribe to the orders topic");
            return;
        }
        tracing::info!(topic = %self.orders_topic, "order intake started");
        let mut held: Vec<OwnedMessage> = Vec::new();
        let mut gaps = super::GapWatch::default();
        loop {
            let mut batch = std::mem::take(&mut held);
            if batch.is_empty() {
                let first = tokio::select! {
                    m = self.consumer.recv() => m,
                    _ = shutdown.changed() => break,
                };
                match first {
                    Ok(m) => batch.push(m.detach()),
                    Err(e) => {
                        tracing::warn!(error = %e, "orders consumer error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            let until = tokio::time::Instant::now() + self.linger;
            while batch.len() < self.batch_max {
                match tokio::time::timeout_at(until, self.consumer.recv()).await {
                    Ok(Ok(m)) => batch.push(m.detach()),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "orders consumer error");
                        break;
                    }
                    Err(_) => break,
                }
            }
            for msg in &batch {
                gaps.observe(&self.consumer, msg);
            }
            held = self.process(batch).await;
        }
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final offset commit");
        }
        tracing::info!("order intake stopped");
    }

    /// Validate, dead-letter, store, store offsets, deliver: in that order. Returns records
    /// received while the intake was paused (a store outage), for the next batch.
    pub async fn process(&self, batch: Vec<OwnedMessage>) -> Vec<OwnedMessage> {
        let mut held = Vec::new();
        let m = metrics();
        let started = std::time::Instant::now();
        m.pending_commit.increment(batch.len() as f64);
        let now = self.clock.now();
        let mut accepted: Vec<(Order, &OwnedMessage)> = Vec::new();
        let mut write = WriteBatch::default();
        let mut rejected = Vec::new();
        for msg in &batch {
            match validate_order(
                msg.key(),
                msg.payload(),
                |id| self.registry.contains(id),
                now,
            ) {
                Ok(order) => accepted.push((order, msg)),
                Err(rej) => rejected.push((msg, rej)),
            }
        }
        // Duplicates: already stored, or twice in this batch. Refused records are checked too:
        // a record accepted before a crash and read again after it (when, say, its latest_at
        // has passed) is a duplicate, not a rejection.
        let ids: Vec<&str> = accepted
            .iter()
            .map(|(o, _)| o.order_id.as_str())
            .chain(rejected.iter().filter_map(|(_, r)| r.order_id.as_deref()))
            .collect();
        let mut stored = loop {
            match self.store.store().orders_exist(&ids) {
                Ok(v) => break v,
                Err(e) => {
                    tracing::error!(error = %e, "cannot check for duplicate orders; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let stored_rejected = stored.split_off(accepted.len());
        let mut stored_rejected = stored_rejected.into_iter();
        let mut dead = Vec::new();
        for (msg, rej) in rejected {
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
                    key: meter.clone(),
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
            dead.push((msg, rej));
        }
        let mut seen = HashSet::new();
        let mut deliver = Vec::new();
        let mut to_campaigns = Vec::new();
        for ((order, msg), already) in accepted.into_iter().zip(stored) {
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
                key: order.meter_id.clone(),
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
                };
                write.campaign_orders.push((cid.clone(), co.clone()));
                to_campaigns.push((cid.clone(), co));
            }
            deliver.push(order);
        }
        // Dead letters first (acknowledged), then the durable write; only then offsets.
        futures::future::join_all(dead.iter().map(|(msg, rej)| {
            super::dead_letter::send(
                &self.producer,
                &self.dead_letter_topic,
                msg,
                rej.reason,
                &rej.detail,
                now,
            )
        }))
        .await;
        let mut backoff = Duration::from_millis(100);
        let mut paused = false;
        loop {
            match self.store.write(write.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    // The store refuses writes (a full disk, say). Pause the intake: stop
                    // fetching (librdkafka drops what it prefetched and resumes after the
                    // last record handed over, i.e. after this batch, which is held here), but
                    // keep polling so that the group keeps this member (a consumer that does
                    // not poll for max.poll.interval.ms is removed from its group).
                    tracing::debug!(error = %e, "cannot store accepted orders; offsets stay uncommitted, retrying");
                    if !paused {
                        tracing::warn!("order intake paused until the store accepts writes again");
                        paused = true;
                    }
                    let until = tokio::time::Instant::now() + backoff;
                    loop {
                        // Every pass: a partition assigned meanwhile is paused too.
                        if let Ok(a) = self.consumer.assignment() {
                            let _ = self.consumer.pause(&a);
                        }
                        match tokio::time::timeout_at(until, self.consumer.recv()).await {
                            Err(_) => break,
                            // Handed over before its partition was paused: kept for the next
                            // batch (its offset is not stored yet).
                            Ok(Ok(m)) => held.push(m.detach()),
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "orders consumer error while paused")
                            }
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        if paused {
            match self
                .consumer
                .assignment()
                .and_then(|a| self.consumer.resume(&a))
            {
                Ok(()) => tracing::warn!("order intake resumed"),
                Err(e) => tracing::error!(error = %e, "cannot resume the order intake"),
            }
        }
        let mut last: HashMap<(&str, i32), i64> = HashMap::new();
        for msg in &batch {
            let e = last
                .entry((msg.topic(), msg.partition()))
                .or_insert(msg.offset());
            *e = (*e).max(msg.offset());
        }
        for ((topic, partition), offset) in last {
            if let Err(e) = self.consumer.store_offset(topic, partition, offset) {
                // Happens when the partition was revoked meanwhile; the records are stored and
                // will be recognised as duplicates when redelivered.
                tracing::warn!(error = %e, topic, partition, offset, "could not store offset");
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
            self.directory
                .deliver(&meter, crate::meter::MeterMsg::Order(order));
        }
        if let Some(cs) = self.directory.campaigns() {
            for (cid, co) in to_campaigns {
                cs.enqueue(&cid, co);
            }
        }
        m.intake_batch_seconds
            .record(started.elapsed().as_secs_f64());
        held
    }
}
