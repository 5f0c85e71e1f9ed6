//! The one run loop every Kafka source uses (orders, tables, meter facts, head-end results,
//! campaign control). A source is a [`Handler`] (what to do with a batch of records) plus a
//! [`Source`] (which consumer, how it reads, when its offsets are stored); the loop owns what
//! they all share:
//!
//! - reading: a batch is the first record plus whatever arrives within `linger`, up to
//!   `batch_max` (one record for every source but the intake); consumer errors are logged and
//!   retried after a pause;
//! - bad records: the handler names a [`Rejected`] record with its reason, the loop sends it to
//!   the dead-letter topic and waits for the broker's acknowledgement;
//! - offsets: with [`Offsets::AfterWork`] the offsets of a batch are stored only once the
//!   handler has returned (its work is durable) and the batch's dead letters are acknowledged;
//!   stored offsets are committed by librdkafka, and once more synchronously at shutdown;
//! - lost records: [`super::GapWatch`] on group subscriptions;
//! - gates: a oneshot that fires once every record that was on
//!   them at assignment has been handled ([`Gate`]);
//! - pausing: a handler that cannot make progress (the store refuses writes) waits through
//!   [`Io::pause_for`], which stops fetching but keeps the group membership alive.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};

use super::SourceConsumer as StreamConsumer;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::{oneshot, watch};

use crate::clock::Clock;
use crate::domain::DeadLetterReason;
use crate::retry::Backoff;

/// A record that goes to the dead-letter topic, and why.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rejected {
    pub(crate) reason: DeadLetterReason,
    pub(crate) detail: String,
}

impl Rejected {
    pub(crate) fn new(reason: DeadLetterReason, detail: impl Into<String>) -> Rejected {
        Rejected {
            reason,
            detail: detail.into(),
        }
    }
}

/// What a handler did with a batch.
/// The tables (registry, weather, emergencies) have caught up: sources that start earlier, to
/// join their consumer groups meanwhile (after a kill -9 a join waits out the dead member's
/// session, 10 s), hold their first records until then.
#[derive(Clone)]
pub(crate) struct TablesReady(pub(crate) tokio::sync::watch::Receiver<bool>);

impl TablesReady {
    /// Have they caught up (now)?
    pub(crate) fn ready(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until the tables have caught up; false if startup was abandoned (shutdown).
    pub(crate) async fn wait(&self) -> bool {
        self.0.clone().wait_for(|ready| *ready).await.is_ok()
    }
}

pub(crate) enum Handled {
    /// Done and durable; these records (index in the batch) go to the dead-letter topic.
    Done(Vec<(usize, Rejected)>),
    /// Shutdown came first: nothing of the batch is acknowledged (it is read again next time).
    Stopped,
}

/// What a source does with its records.
pub(crate) trait Handler: Send + Sync + 'static {
    /// For logs: "order intake", "meter registry", ...
    fn name(&self) -> &str;
    /// Handles a batch. Returns when its work is durable (offsets are stored after that).
    fn handle<'a>(
        &'a self,
        batch: &'a [OwnedMessage],
        io: &'a mut Io<'_>,
    ) -> impl Future<Output = Handled> + Send + 'a;
    /// The gate opened ([`Gate::CaughtUp`]): every record that was there at start is handled.
    fn caught_up(&self, _records: usize) {}
    /// False for a record read before its partition was revoked (it is the new owner's now):
    /// dropped before the batch is handled, its offset not stored.
    fn keep(&self, _msg: &OwnedMessage) -> bool {
        true
    }
    /// Called every 50 ms and after every batch (handled, offsets stored), with the consumer:
    /// for handlers that follow their partitions' progress (the meter source's assignments).
    fn tick(&self, _consumer: &StreamConsumer, _handled: &[OwnedMessage]) {}
    /// The loop resumed every assigned partition after [`Io::pause_for`]: pause again what
    /// the handler keeps paused.
    fn resumed(&self, _consumer: &StreamConsumer) {}
    /// Raised by every revoke of this source's partitions (0: never). Records fetched before
    /// a revoke are dropped unhandled (their offsets not stored): whoever is assigned those
    /// partitions next reads them again from the last commit.
    fn generation(&self) -> u64 {
        0
    }
}

/// How the source reads its topics.
pub(crate) enum Subscription {
    /// As a member of the consumer's group (partitions shared, committed offsets).
    Group(Vec<String>),
    /// Every partition of one topic from its beginning (tables replayed at every start).
    FromStart(String),
}

/// When offsets are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offsets {
    /// After the batch's work and its dead letters are acknowledged.
    AfterWork,
    /// Not by the loop (auto-commit of what was read, or never committed).
    NotStored,
}

/// A signal for the wiring to wait on.
pub(crate) enum Gate {
    None,
    /// Fires once every record that was on the assigned partitions when they were assigned is
    /// handled. With `give_up_after`, also when no partition was assigned within that time.
    CaughtUp {
        done: oneshot::Sender<()>,
        give_up_after: Option<Duration>,
    },
}

pub(crate) struct Source<H: Handler> {
    pub(crate) consumer: StreamConsumer,
    pub(crate) producer: FutureProducer,
    pub(crate) dead_letter_topic: String,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) subscription: Subscription,
    pub(crate) offsets: Offsets,
    pub(crate) batch_max: usize,
    pub(crate) linger: Duration,
    pub(crate) handler: H,
}

impl<H: Handler> Source<H> {
    /// A source that handles one record at a time.
    pub(crate) fn one_at_a_time(
        consumer: StreamConsumer,
        producer: FutureProducer,
        dead_letter_topic: String,
        clock: Arc<dyn Clock>,
        subscription: Subscription,
        offsets: Offsets,
        handler: H,
    ) -> Source<H> {
        Source {
            consumer,
            producer,
            dead_letter_topic,
            clock,
            subscription,
            offsets,
            batch_max: 1,
            linger: Duration::ZERO,
            handler,
        }
    }
}

/// What a handler may do to the loop while it works on a batch.
pub(crate) struct Io<'a> {
    consumer: &'a StreamConsumer,
    shutdown: &'a mut watch::Receiver<bool>,
    /// Records handed over while paused, for the next batch.
    held: &'a mut Vec<OwnedMessage>,
    paused: bool,
    /// The handler's generation when the batch was read, and how to ask for it now.
    generation: (u64, &'a (dyn Fn() -> u64 + Send + Sync)),
    /// A revoke came during [`Io::pause_for`]: the batch is abandoned, not stopped.
    abandoned: bool,
}

impl Io<'_> {
    /// Waits `d` with the source paused: nothing new is fetched (records already handed over
    /// are kept for the next batch, their offsets not stored), but the consumer keeps polling
    /// so that the group keeps this member. `false`: shutdown came first, or the partitions
    /// were revoked meanwhile (the handler returns [`Handled::Stopped`] either way; the loop
    /// then abandons the batch, unhandled, and goes on).
    pub(crate) async fn pause_for(&mut self, d: Duration) -> bool {
        if *self.shutdown.borrow() {
            return false; // already stopping: `changed()` would not fire again
        }
        self.paused = true;
        let until = tokio::time::Instant::now() + d;
        loop {
            // Every pass: a partition assigned meanwhile is paused too.
            if let Ok(a) = self.consumer.assignment() {
                let _ = self.consumer.pause(&a);
            }
            tokio::select! {
                r = tokio::time::timeout_at(until, self.consumer.recv()) => {
                    let revoked = (self.generation.1)() != self.generation.0;
                    if revoked {
                        // What was held came before the revoke; a record returned now after it.
                        self.held.clear();
                        self.abandoned = true;
                    }
                    match r {
                        Err(_) => return !revoked,
                        Ok(Ok(m)) => self.held.push(m.detach()),
                        Ok(Err(e)) => tracing::debug!(error = %e, "consumer error while paused"),
                    }
                    if revoked {
                        return false;
                    }
                },
                _ = self.shutdown.changed() => return false,
            }
        }
    }

    /// Resolves when shutdown begins.
    pub(crate) async fn stopping(&mut self) {
        if *self.shutdown.borrow() {
            return;
        }
        let _ = self.shutdown.changed().await;
    }
}

/// Partitions still behind the high watermark they had when assigned.
struct CatchUp {
    done: Option<oneshot::Sender<()>>,
    give_up_after: Option<Duration>,
    started: tokio::time::Instant,
    remaining: Option<Behind>,
}

impl CatchUp {
    /// The assigned partitions whose start (the group's committed offset, else the first
    /// offset) is below the high watermark; `None` while nothing is assigned. `group`: ask the
    /// group coordinator for committed offsets (a table read from the start has none, and the
    /// question costs seconds on a fresh group).
    fn behind(consumer: &StreamConsumer, group: bool) -> Option<Behind> {
        let assignment = consumer.assignment().ok()?;
        if assignment.count() == 0 {
            return None;
        }
        let committed = if group {
            consumer.committed(Duration::from_secs(5)).ok()
        } else {
            None
        };
        let mut behind = Vec::new();
        for e in assignment.elements() {
            let (lo, hi) = consumer
                .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(5))
                .ok()?;
            let from = match committed
                .as_ref()
                .and_then(|c| c.find_partition(e.topic(), e.partition()))
                .map(|c| c.offset())
            {
                Some(Offset::Offset(o)) => o.max(lo),
                _ => lo,
            };
            if from < hi {
                behind.push((e.topic().to_string(), e.partition(), hi));
            }
        }
        Some(behind)
    }
}

/// Partitions not read to their end yet: `(topic, partition, high watermark)`.
type Behind = Vec<(String, i32, i64)>;

impl<H: Handler> Source<H> {
    /// Subscribes or assigns. A table read from the start also says which partitions hold
    /// records (its catch-up list), measured here, before the assignment: once the consumer
    /// fetches, every watermark query waits behind its fetch (up to `fetch.wait.max.ms`), and
    /// a registry of 550 partitions then took minutes to say it had caught up.
    fn subscribe(&self) -> Result<Option<Behind>, String> {
        match &self.subscription {
            Subscription::Group(topics) => {
                // Subscribed early by the wiring (to join the group while the store opens):
                // subscribing again would leave and rejoin the group.
                let mut have: Vec<String> = self
                    .consumer
                    .subscription()
                    .map(|l| l.elements().iter().map(|e| e.topic().to_string()).collect())
                    .unwrap_or_default();
                let mut want = topics.clone();
                have.sort();
                want.sort();
                if have != want {
                    let t: Vec<&str> = topics.iter().map(String::as_str).collect();
                    self.consumer.subscribe(&t).map_err(|e| e.to_string())?;
                }
                Ok(None)
            }
            Subscription::FromStart(topic) => {
                let md = self
                    .consumer
                    .fetch_metadata(Some(topic), Duration::from_secs(5))
                    .map_err(|e| e.to_string())?;
                let t = md
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic)
                    .ok_or("topic missing from metadata")?;
                if t.partitions().is_empty() {
                    return Err("topic has no partitions".into());
                }
                let mut tpl = TopicPartitionList::new();
                let mut behind = Behind::new();
                for p in t.partitions() {
                    tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                        .map_err(|e| e.to_string())?;
                    let (lo, hi) = self
                        .consumer
                        .fetch_watermarks(topic, p.id(), Duration::from_secs(5))
                        .map_err(|e| e.to_string())?;
                    if lo < hi {
                        behind.push((topic.clone(), p.id(), hi));
                    }
                    if lo > 0 {
                        crate::observability::records_lost(topic, lo as u64);
                        tracing::warn!(%topic, partition = p.id(), first_offset = lo, "the first {lo} records of this table partition are no longer on the topic; entries only they held are missing. (librdkafka's mock cluster, the embedded Kafka, keeps about 5 MB per partition: load a large registry with registry.file or use a Kafka cluster.)");
                    }
                }
                self.consumer.assign(&tpl).map_err(|e| e.to_string())?;
                Ok(Some(behind))
            }
        }
    }

    /// Runs until shutdown. `gate` fires as described by its kind.
    pub(crate) async fn run(self, gate: Gate, mut shutdown: watch::Receiver<bool>) {
        let name = self.handler.name().to_string();
        // Topic metadata may not be there yet (a broker starting): retry.
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        let behind_at_start = loop {
            match self.subscribe() {
                Ok(behind) => break behind,
                Err(e) => {
                    tracing::warn!(error = %e, source = %name, "cannot subscribe yet; retrying");
                    tokio::select! {
                        _ = backoff.wait() => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        };
        // A consumer error (a broker unreachable, say) is retried after a short fixed wait:
        // librdkafka reconnects by itself, and most such errors are transient.
        let mut on_error = Backoff::fixed(Duration::from_millis(200));
        // "order intake started" is what operators (and the process tests) wait for.
        tracing::info!(source = %name, "{name} started");
        let mut catch_up = None;
        match gate {
            Gate::None => {}
            Gate::CaughtUp {
                done,
                give_up_after,
            } => {
                catch_up = Some(CatchUp {
                    done: Some(done),
                    give_up_after,
                    started: tokio::time::Instant::now(),
                    remaining: behind_at_start,
                })
            }
        }
        let group = matches!(self.subscription, Subscription::Group(_));
        let mut gaps = super::GapWatch::default();
        let mut held: Vec<OwnedMessage> = Vec::new();
        let mut handled_records = 0usize;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut batch = std::mem::take(&mut held);
            if batch.is_empty() {
                let gate_open = catch_up.as_ref().is_some_and(|c| c.done.is_some());
                let first = tokio::select! {
                    m = self.consumer.recv() => m,
                    _ = tick.tick() => {
                        if gate_open {
                            self.gate_tick(&mut catch_up, handled_records, &name);
                        }
                        self.handler.tick(&self.consumer, &[]);
                        continue;
                    }
                    _ = shutdown.changed() => break,
                };
                match first {
                    Ok(m) => batch.push(m.detach()),
                    Err(e) => {
                        tracing::warn!(error = %e, source = %name, "consumer error; retrying");
                        tokio::select! {
                            _ = on_error.wait() => {}
                            _ = shutdown.changed() => break,
                        }
                        continue;
                    }
                }
            }
            // (A record is returned after the rebalance callbacks its poll ran.)
            let mut generation = self.handler.generation();
            if self.batch_max > 1 {
                let until = tokio::time::Instant::now() + self.linger;
                while batch.len() < self.batch_max {
                    match tokio::time::timeout_at(until, self.consumer.recv()).await {
                        Ok(Ok(m)) => {
                            let now = self.handler.generation();
                            if now != generation {
                                // Fetched before a revoke: read again by the next owner.
                                batch.clear();
                                generation = now;
                            }
                            batch.push(m.detach())
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, source = %name, "consumer error");
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            batch.retain(|m| self.handler.keep(m));
            if batch.is_empty() {
                continue;
            }
            if group {
                for msg in &batch {
                    gaps.observe(&self.consumer, msg);
                }
            }
            let now_generation = || self.handler.generation();
            let mut io = Io {
                consumer: &self.consumer,
                shutdown: &mut shutdown,
                held: &mut held,
                paused: false,
                generation: (generation, &now_generation),
                abandoned: false,
            };
            let handled = self.handler.handle(&batch, &mut io).await;
            let abandoned = io.abandoned;
            if io.paused {
                match self
                    .consumer
                    .assignment()
                    .and_then(|a| self.consumer.resume(&a))
                {
                    Ok(()) => {
                        self.handler.resumed(&self.consumer);
                        tracing::warn!(source = %name, "resumed")
                    }
                    Err(e) => tracing::error!(error = %e, source = %name, "cannot resume"),
                }
            }
            let rejected = match handled {
                Handled::Done(r) => r,
                Handled::Stopped if abandoned => {
                    tracing::info!(source = %name, records = batch.len(), "batch abandoned: its partitions were revoked while it waited; whoever owns them reads it again from the last commit");
                    continue;
                }
                Handled::Stopped => break,
            };
            // Dead letters are acknowledged before any offset of the batch is stored.
            let now = self.clock.now();
            futures::future::join_all(rejected.iter().filter_map(|(i, r)| {
                let msg = batch.get(*i)?;
                Some(super::dead_letter::send(
                    &self.producer,
                    &self.dead_letter_topic,
                    msg,
                    r.reason,
                    &r.detail,
                    now,
                ))
            }))
            .await;
            if self.offsets == Offsets::AfterWork {
                self.store_offsets(&batch, &name);
            }
            handled_records += batch.len();
            self.handler.tick(&self.consumer, &batch);
            if let Some(c) = &mut catch_up {
                if let Some(rem) = &mut c.remaining {
                    for msg in &batch {
                        let (t, p, o) = (msg.topic(), msg.partition(), msg.offset());
                        rem.retain(|(rt, rp, hw)| !(rt == t && *rp == p && o + 1 >= *hw));
                    }
                }
                self.open_if_caught_up(c, handled_records, &name);
            }
        }
        if self.offsets == Offsets::AfterWork {
            if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(error = %e, source = %name, "final offset commit");
            }
        }
        tracing::info!(source = %name, "{name} stopped");
    }

    /// Stores the next offset to read for each partition of the batch.
    fn store_offsets(&self, batch: &[OwnedMessage], name: &str) {
        let mut last: HashMap<(&str, i32), i64> = HashMap::new();
        for msg in batch {
            let e = last
                .entry((msg.topic(), msg.partition()))
                .or_insert(msg.offset());
            *e = (*e).max(msg.offset());
        }
        for ((topic, partition), offset) in last {
            if let Err(e) = self.consumer.store_offset(topic, partition, offset) {
                // The partition was revoked meanwhile; the work is durable and a redelivered
                // record is recognised (duplicates, idempotent facts).
                tracing::warn!(error = %e, source = %name, topic, partition, offset, "could not store offset");
            }
        }
    }

    /// On every tick while a gate is closed: how far behind at start?
    fn gate_tick(&self, catch_up: &mut Option<CatchUp>, handled: usize, name: &str) {
        let Some(c) = catch_up else { return };
        if c.done.is_none() {
            return;
        }
        if c.remaining.is_none() {
            let group = matches!(self.subscription, Subscription::Group(_));
            c.remaining = CatchUp::behind(&self.consumer, group);
        }
        if let Some(rem) = &mut c.remaining {
            // The last offsets may never be delivered (compacted-away records, transaction
            // markers): the consumer's position counts too.
            if !rem.is_empty() {
                if let Ok(pos) = self.consumer.position() {
                    rem.retain(|(t, p, hw)| {
                        !matches!(pos.find_partition(t, *p).map(|e| e.offset()), Some(Offset::Offset(o)) if o >= *hw)
                    });
                }
            }
        } else if c.give_up_after.is_some_and(|g| c.started.elapsed() > g) {
            tracing::warn!(source = %name, "no partitions assigned in time; going on without them");
            self.handler.caught_up(handled);
            let _ = c.done.take().expect("some").send(());
            return;
        }
        self.open_if_caught_up(c, handled, name);
    }

    fn open_if_caught_up(&self, c: &mut CatchUp, handled: usize, name: &str) {
        if c.done.is_some() && c.remaining.as_ref().is_some_and(|r| r.is_empty()) {
            tracing::info!(source = %name, records = handled, "caught up");
            self.handler.caught_up(handled);
            let _ = c.done.take().expect("some").send(());
        }
    }
}
