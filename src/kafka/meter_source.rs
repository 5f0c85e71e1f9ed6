//! The meter consumer: one member of the group `kafka.group_id` reads every meter-keyed input
//! (orders, customer facts, control, and head-end results in Kafka head-end mode) and campaign
//! control (keyed by campaign id), so that the group's assignment decides which instance owns
//! which meters and which campaigns ([`crate::ownership`]). The
//! topics are co-partitioned (same partition count, keys hashed by the same partitioner) and
//! the range assignor gives partition *i* of each to the same member: unit *i*.
//!
//! [`Rebalancing`] hears the group's rebalances (inside the consumer's poll, between two
//! batches of the loop, so never while a batch is handled):
//! - *revoke*: the stored offsets are committed (unless the assignment was lost: the units are
//!   someone else's already); the units stop being owned here (the directory drops messages
//!   for their meters, and their actors start no command); records of them already fetched
//!   are dropped ([`Handler::keep`]).
//! - *assign*: units that were revoked and not given back are relinquished (their actors
//!   stop; a unit given back to this instance stays warm); the new units are owned; their
//!   orders partitions are paused until the facts and control records that were on their
//!   partitions at assignment are applied (a payment sent before the hand-over is known before
//!   a held disconnect resumes), then their open work is read from the store (one bulk read
//!   per unit) and each meter resumes with `Recover` (a command whose outcome is unknown is
//!   status-checked first: the machine's rule), and the orders partitions are resumed.
//!
//! With a shared store, units are fenced by leases ([`crate::lease`]): an assignment's open work
//! is read once its leases are held, a graceful revoke releases them, and orders of a unit
//! whose lease lapsed wait.
//!
//! Campaigns go with their units: resumed from the store once an assignment's open work is
//! read (under its leases), stopped with the meters of units that leave; every campaign here
//! sends its open releases again at each assignment (one delivered to a meter's actor just
//! before its unit left may have been dropped with it).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::oneshot;

use super::fact_source::Facts;
use super::intake::Intake;
use super::results_source::Results;
use super::source::{Handled, Handler, Io, Rejected, TablesReady};
use super::{SourceConsumer, SourceContext};
use crate::commit::StoreHandle;
use crate::domain::DeadLetterReason;
use crate::meter::Directory;
use crate::ownership::Ownership;

/// This source's consumer (its group is `kafka.group_id`, as the order intake's always was).
pub(crate) const CONSUMER: super::ConsumerSpec<'static> = super::ConsumerSpec {
    group_suffix: None,
    commit: super::Commit::AfterWork,
    what: "meter consumer",
};

/// The meter-keyed topics this instance reads.
#[derive(Clone)]
pub(crate) struct MeterTopics {
    pub(crate) orders: String,
    pub(crate) customer_facts: String,
    pub(crate) control: String,
    /// Keyed by campaign id: a campaign is owned by the owner of its partition.
    pub(crate) campaign_control: String,
    /// Kafka head-end mode only.
    pub(crate) results: Option<String>,
    /// Meter reads (paused with the orders until an assignment's watches are loaded).
    pub(crate) reads: String,
}

impl MeterTopics {
    pub(crate) fn all(&self) -> Vec<String> {
        let mut t = vec![
            self.orders.clone(),
            self.customer_facts.clone(),
            self.control.clone(),
            self.campaign_control.clone(),
            self.reads.clone(),
        ];
        t.extend(self.results.clone());
        t
    }
}

/// The dead letter for a record whose meter (or campaign) this instance does not own (its key
/// hashes to a unit other than the partition it was read from, and that unit is another
/// instance's).
/// `what`: "meter" or "campaign".
pub(crate) fn misrouted(
    dir: &Directory,
    what: &str,
    id: &str,
    msg: &OwnedMessage,
) -> Option<Rejected> {
    if dir.owns(id) {
        return None;
    }
    Some(Rejected::new(
        DeadLetterReason::Misrouted,
        format!(
            "{what} {id} is owned by another switchyard instance (its id hashes to another partition of the orders topic than {}/{}): produce meter-keyed and campaign-keyed records with the id as key and the orders topic's partitioner",
            msg.topic(),
            msg.partition()
        ),
    ))
}

/// Every meter-keyed input, in one handler: facts and control first, then head-end results,
/// then orders (Kafka orders nothing across topics; within a topic the order is kept).
pub(crate) struct MeterInputs {
    pub(crate) intake: Intake,
    pub(crate) facts: Facts,
    pub(crate) campaigns: super::campaign_source::CampaignControl,
    pub(crate) results: Option<Results>,
    pub(crate) reads: super::read_source::Reads,
    pub(crate) topics: MeterTopics,
    pub(crate) rebalancing: Arc<Rebalancing>,
}

/// Hands `idx` (indices into `batch`) to `h`, mapping its dead letters back to `batch`.
async fn part<H: Handler>(
    h: &H,
    batch: &[OwnedMessage],
    idx: &[usize],
    io: &mut Io<'_>,
    rejected: &mut Vec<(usize, Rejected)>,
) -> bool {
    if idx.is_empty() {
        return true;
    }
    let handled = if idx.len() == batch.len() {
        h.handle(batch, io).await
    } else {
        let records: Vec<OwnedMessage> = idx.iter().map(|&i| batch[i].clone()).collect();
        h.handle(&records, io).await
    };
    match handled {
        Handled::Done(r) => {
            rejected.extend(r.into_iter().map(|(j, r)| (idx[j], r)));
            true
        }
        Handled::Stopped => false,
    }
}

impl Handler for MeterInputs {
    fn name(&self) -> &str {
        "meter inputs"
    }

    async fn handle(&self, batch: &[OwnedMessage], io: &mut Io<'_>) -> Handled {
        let (mut facts, mut results, mut orders) = (Vec::new(), Vec::new(), Vec::new());
        let (mut campaigns, mut reads) = (Vec::new(), Vec::new());
        for (i, m) in batch.iter().enumerate() {
            let t = m.topic();
            if t == self.topics.orders {
                orders.push(i);
            } else if t == self.topics.reads {
                reads.push(i);
            } else if t == self.topics.campaign_control {
                campaigns.push(i);
            } else if Some(t) == self.topics.results.as_deref() {
                results.push(i);
            } else {
                facts.push(i);
            }
        }
        let mut rejected = Vec::new();
        if !part(&self.facts, batch, &facts, io, &mut rejected).await {
            return Handled::Stopped;
        }
        if let Some(r) = &self.results {
            if !part(r, batch, &results, io, &mut rejected).await {
                return Handled::Stopped;
            }
        }
        if !part(&self.reads, batch, &reads, io, &mut rejected).await {
            return Handled::Stopped;
        }
        // Fencing: orders and campaign records of a unit whose lease lapsed (this process was
        // frozen, or the store does not answer the renewals) wait, polling, until it is
        // renewed or the unit is revoked (then the batch is abandoned: its records are the
        // new owner's). A campaign started here reads its orders only under its lease.
        let r = &self.rebalancing.ownership;
        while orders.iter().chain(&campaigns).any(|&i| {
            let u = batch[i].partition() as u32;
            r.owns_unit(u) && !r.leased(u)
        }) {
            if !io.pause_for(Duration::from_millis(100)).await {
                return Handled::Stopped;
            }
        }
        if !part(&self.campaigns, batch, &campaigns, io, &mut rejected).await {
            return Handled::Stopped;
        }
        if !part(&self.intake, batch, &orders, io, &mut rejected).await {
            return Handled::Stopped;
        }
        Handled::Done(rejected)
    }

    fn keep(&self, msg: &OwnedMessage) -> bool {
        let r = &self.rebalancing;
        if msg.topic() == self.topics.orders && r.intake_is_stopped() {
            return false; // read again at the next start (its offset is not stored)
        }
        r.ownership.owns_unit(msg.partition() as u32)
    }

    fn tick(&self, consumer: &SourceConsumer, handled: &[OwnedMessage]) {
        self.rebalancing.progress(consumer, handled);
    }

    fn generation(&self) -> u64 {
        self.rebalancing
            .revokes
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn resumed(&self, consumer: &SourceConsumer) {
        let st = self.rebalancing.state.lock().expect("lock");
        if let Some(a) = &st.assigning {
            let _ = consumer.pause(&a.orders);
        }
        if st.intake_paused {
            if let Ok(a) = consumer.assignment() {
                let mut orders = TopicPartitionList::new();
                for e in a.elements_for_topic(&self.topics.orders) {
                    orders.add_partition(&self.topics.orders, e.partition());
                }
                let _ = consumer.pause(&orders);
            }
        }
    }
}

/// Partitions not read to the high watermark they had at assignment: `(topic, partition) →
/// high watermark`.
type Behind = HashMap<(String, i32), i64>;

/// An assignment on its way to resuming its units' open work.
struct Assigning {
    units: BTreeSet<u32>,
    /// The orders partitions, paused until the open work is resumed.
    orders: TopicPartitionList,
    /// Its facts and control partitions.
    fact_partitions: Vec<(String, i32)>,
    /// `None` until measured (once the tables have caught up).
    behind: Option<Behind>,
    /// The open-work read, once started.
    #[allow(clippy::type_complexity)]
    loading: Option<
        tokio::task::JoinHandle<
            Result<(Vec<String>, Vec<crate::domain::ReadWatch>), crate::store::StoreError>,
        >,
    >,
    started: Instant,
}

#[derive(Default)]
struct State {
    /// Revoked at the last revoke, not yet assigned again (relinquished at the next assign,
    /// unless given back).
    revoked: BTreeSet<u32>,
    assigning: Option<Assigning>,
    /// Fires once the first assignment's open work is resumed (the instance is ready).
    first: Option<oneshot::Sender<()>>,
    /// The orders partitions were paused for the shutdown.
    intake_paused: bool,
}

/// The meter consumer's rebalance listener and the progress of its assignments.
pub(crate) struct Rebalancing {
    pub(crate) ownership: Arc<Ownership>,
    directory: Arc<Directory>,
    store: StoreHandle,
    topics: MeterTopics,
    tables: TablesReady,
    /// Shutdown began: no order is taken any more (facts and results still are, while the
    /// commands in flight drain).
    intake_stopped: tokio::sync::watch::Receiver<bool>,
    state: Mutex<State>,
    /// Raised by every revoke ([`Handler::generation`]).
    revokes: std::sync::atomic::AtomicU64,
    /// Asks for high watermarks (the meter consumer itself answers one only after its fetch:
    /// 100 partitions of facts and control took 70 s on the mock cluster).
    probe: rdkafka::consumer::BaseConsumer,
    /// Fencing by unit leases (a shared store); set once, before the first assignment.
    leases: std::sync::OnceLock<Arc<crate::lease::Leases>>,
    /// The campaigns: those of arriving units resume with them, those of departing units
    /// stop with their meters. Set once, before the first assignment.
    campaigns: std::sync::OnceLock<Arc<crate::campaign::registry::Campaigns>>,
}

impl Rebalancing {
    pub(crate) fn set_leases(&self, leases: Arc<crate::lease::Leases>) {
        let _ = self.leases.set(leases);
    }

    pub(crate) fn set_campaigns(&self, campaigns: Arc<crate::campaign::registry::Campaigns>) {
        let _ = self.campaigns.set(campaigns);
    }

    /// The campaigns whose units left stop here (the new owner resumes them from the store).
    fn stop_campaigns(&self) {
        if let Some(c) = self.campaigns.get() {
            c.stop_unowned();
        }
    }

    /// `first` fires once the first assignment's open work has been handed to its meters.
    pub(crate) fn new(
        ownership: Arc<Ownership>,
        directory: Arc<Directory>,
        store: StoreHandle,
        topics: MeterTopics,
        tables: TablesReady,
        intake_stopped: tokio::sync::watch::Receiver<bool>,
        first: oneshot::Sender<()>,
        probe: rdkafka::consumer::BaseConsumer,
    ) -> Rebalancing {
        Rebalancing {
            ownership,
            directory,
            store,
            topics,
            tables,
            intake_stopped,
            state: Mutex::new(State {
                first: Some(first),
                ..State::default()
            }),
            revokes: std::sync::atomic::AtomicU64::new(0),
            probe,
            leases: std::sync::OnceLock::new(),
            campaigns: std::sync::OnceLock::new(),
        }
    }

    fn intake_is_stopped(&self) -> bool {
        *self.intake_stopped.borrow()
    }

    fn units_in(&self, tpl: &TopicPartitionList, topic: &str) -> BTreeSet<u32> {
        tpl.elements_for_topic(topic)
            .iter()
            .map(|e| e.partition() as u32)
            .collect()
    }

    /// Between batches (and every 50 ms): measure how far the new facts partitions are
    /// behind, follow them, then read and resume the open work, then resume the orders.
    fn progress(&self, consumer: &SourceConsumer, handled: &[OwnedMessage]) {
        let mut st = self.state.lock().expect("lock");
        if self.intake_is_stopped() && !st.intake_paused {
            st.intake_paused = true;
            if let Ok(a) = consumer.assignment() {
                let mut orders = TopicPartitionList::new();
                for e in a.elements_for_topic(&self.topics.orders) {
                    orders.add_partition(&self.topics.orders, e.partition());
                }
                let _ = consumer.pause(&orders);
            }
            tracing::info!("order intake stopped; facts and head-end results are still read");
        }
        let Some(a) = &mut st.assigning else { return };
        if let Some(behind) = &mut a.behind {
            for m in handled {
                let k = (m.topic().to_string(), m.partition());
                if behind.get(&k).is_some_and(|hw| m.offset() + 1 >= *hw) {
                    behind.remove(&k);
                }
            }
        }
        if !self.tables.ready() {
            return;
        }
        if a.behind.is_none() {
            match measure(consumer, &self.probe, &a.fact_partitions) {
                Some(b) => a.behind = Some(b),
                None => return, // the broker did not answer: next tick
            }
        }
        let behind = a.behind.as_mut().expect("measured");
        if !behind.is_empty() {
            // The last offsets may never be delivered (transaction markers, compaction).
            if let Ok(pos) = consumer.position() {
                behind.retain(|(t, p), hw| {
                    !matches!(pos.find_partition(t, *p).map(|e| e.offset()), Some(Offset::Offset(o)) if o >= *hw)
                });
            }
            if !behind.is_empty() {
                return;
            }
        }
        // Fencing: the open work is read once the units' leases are held here (a previous
        // holder that did not release them has stopped acting by then: crate::lease), so
        // nothing it stores afterwards can be missing from what is read.
        if !self.ownership.leased_all(&a.units) {
            self.ownership.lease_wanted.notify_one();
            return;
        }
        if a.loading.is_none() {
            let (store, units, n, p) = (
                self.store.store().clone(),
                a.units.clone(),
                self.ownership.unit_count(),
                self.ownership.partitioner(),
            );
            a.loading = Some(tokio::task::spawn_blocking(move || {
                let meters = store.meters_with_open_work_in(&units, n, p)?;
                Ok((meters, store.read_watches_in(&units, n, p)?))
            }));
            return;
        }
        let Some(done) = a.loading.as_mut().expect("loading").now_or_never() else {
            return;
        };
        let (meters, watches) = match done {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the open work of the assigned units; retrying");
                a.loading = None;
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "the open-work read failed; retrying");
                a.loading = None;
                return;
            }
        };
        let a = st.assigning.take().expect("assigning");
        tracing::info!(
            units = a.units.len(),
            meters = meters.len(),
            secs = a.started.elapsed().as_secs_f64(),
            watched = watches.len(),
            "assigned units: facts applied, open work and read watches read; resuming it, their orders and reads"
        );
        self.directory.services().watches.load(watches);
        crate::observability::metrics()
            .handover_seconds
            .record(a.started.elapsed().as_secs_f64());
        // Their meters may act from now on; those with open work are handed it (and woken).
        self.ownership.caught_up(&a.units);
        if !meters.is_empty() {
            let d = self.directory.clone();
            tokio::spawn(async move { d.recover_paced(meters).await });
        }
        // Their campaigns too (under the same leases, so the releases a previous owner stored
        // are all read); every campaign here sends its open releases again, since a rebalance
        // may have dropped one on its way to a meter that changed hands.
        if let Some(c) = self.campaigns.get() {
            let n = c.resume_owned();
            if n > 0 {
                tracing::info!(campaigns = n, "campaigns resumed with their units");
            }
            c.resend_open();
        }
        if self.intake_is_stopped() {
            // (Shutdown began meanwhile: the orders stay paused.)
        } else if let Err(e) = consumer.resume(&a.orders) {
            tracing::error!(error = %e, "cannot resume the orders partitions of the assignment");
        }
        if let Some(first) = st.first.take() {
            let _ = first.send(());
        }
    }
}

/// The facts and control partitions whose start (committed offset, else the first offset)
/// is below their high watermark; `None` if the broker did not answer.
fn measure(
    consumer: &SourceConsumer,
    probe: &rdkafka::consumer::BaseConsumer,
    parts: &[(String, i32)],
) -> Option<Behind> {
    if parts.is_empty() {
        return Some(Behind::new());
    }
    let mut tpl = TopicPartitionList::new();
    for (t, p) in parts {
        tpl.add_partition(t, *p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .ok()?;
    let mut behind = Behind::new();
    for (t, p) in parts {
        let (lo, hi) = probe.fetch_watermarks(t, *p, Duration::from_secs(5)).ok()?;
        let from = match committed.find_partition(t, *p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o.max(lo),
            _ => lo,
        };
        if from < hi {
            behind.insert((t.clone(), *p), hi);
        }
    }
    Some(behind)
}

impl super::RebalanceListener for Rebalancing {
    fn revoking(&self, consumer: &BaseConsumer<SourceContext>, tpl: &TopicPartitionList) {
        self.revokes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let units = self.units_in(tpl, &self.topics.orders);
        if units.is_empty() {
            return;
        }
        let lost = consumer.assignment_lost();
        if lost {
            tracing::warn!(units = ?units, "assignment lost (this member's session expired): its units are another instance's already");
        } else if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::warn!(error = %e, "cannot commit offsets before the revoke; the new owner reads again from the last commit (redelivered records are recognised)");
        }
        self.ownership.lose(&units);
        if !lost {
            // Given up in the store, so that the next owner need not wait for them to lapse,
            // once the writes that passed the lease check before the revoke have landed (a
            // lost assignment's leases lapse: what this instance still has in flight is not
            // known here). Writes still running after 2 s: the leases lapse instead.
            if let Some(l) = self.leases.get() {
                if self
                    .ownership
                    .wait_for_writes(&units, Duration::from_secs(2))
                {
                    l.release(&units);
                } else {
                    tracing::warn!(units = ?units, "writes of revoked units still in progress after 2 s: their leases are left to lapse (the next owner waits a lease)");
                    l.forget(&units);
                }
            }
        }
        let mut st = self.state.lock().expect("lock");
        st.assigning = None;
        if lost {
            // Someone else may have acted for these meters meanwhile: nothing here is warm.
            let actors = self.directory.relinquish(&units);
            self.stop_campaigns();
            tracing::info!(units = ?units, actors, "lost units: their actors stop");
        } else {
            // Kept warm until the assignment that follows: given back, they are not reloaded.
            st.revoked.extend(units.iter().copied());
        }
        tracing::info!(units = ?units, "units revoked: this instance stops acting for their meters");
    }

    fn assigned(&self, consumer: &BaseConsumer<SourceContext>, tpl: &TopicPartitionList) {
        let units = self.units_in(tpl, &self.topics.orders);
        let mut st = self.state.lock().expect("lock");
        let gone: BTreeSet<u32> = st.revoked.difference(&units).copied().collect();
        let warm: BTreeSet<u32> = st.revoked.intersection(&units).copied().collect();
        st.revoked.clear();
        if !units.is_empty() {
            self.ownership.gain(&units);
        }
        if !gone.is_empty() {
            let actors = self.directory.relinquish(&gone);
            self.stop_campaigns();
            tracing::info!(units = ?gone, actors, "units handed to another instance: their actors stop");
        }
        for t in [
            &self.topics.customer_facts,
            &self.topics.control,
            &self.topics.campaign_control,
            &self.topics.reads,
        ]
        .into_iter()
        .chain(self.topics.results.as_ref())
        {
            let other = self.units_in(tpl, t);
            if other != units {
                tracing::error!(topic = %t, units = ?units, partitions = ?other, "the assignment is not co-partitioned: this topic's partitions differ from the orders topic's; give the meter-keyed topics the same partition count (docs/architecture.md, Scale out)");
            }
        }
        if units.is_empty() {
            return;
        }
        // The reads wait with the orders: a read handled before the units' watches are loaded
        // would be ignored for a meter that is watched.
        let mut orders = TopicPartitionList::new();
        for u in &units {
            orders.add_partition(&self.topics.orders, *u as i32);
            orders.add_partition(&self.topics.reads, *u as i32);
        }
        // Pauses set by the application survive a re-assignment in librdkafka: set every time.
        if let Err(e) = consumer.pause(&orders) {
            tracing::error!(error = %e, "cannot pause the assigned orders partitions");
        }
        let fact_partitions = tpl
            .elements()
            .iter()
            .filter(|e| {
                e.topic() == self.topics.customer_facts
                    || e.topic() == self.topics.control
                    || e.topic() == self.topics.campaign_control
            })
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        // Facts, control and results partitions are never paused on purpose: a pause left by
        // `Io::pause_for` across a revoke would survive in librdkafka (an application pause
        // is kept per partition) and hold this assignment's facts, and so its orders, for good.
        let mut others = TopicPartitionList::new();
        for e in tpl.elements() {
            if e.topic() != self.topics.orders && e.topic() != self.topics.reads {
                others.add_partition(e.topic(), e.partition());
            }
        }
        if let Err(e) = consumer.resume(&others) {
            tracing::error!(error = %e, "cannot resume the assigned facts and results partitions");
        }
        // Warm units (given back) are resumed like fresh ones: a wake-up that fell between the
        // revoke and this assignment was dropped, and `Recover` on a live meter only hands it
        // what it does not hold yet, then wakes it.
        tracing::info!(units = ?units, warm = ?warm, "units assigned: applying their facts, then resuming their open work");
        st.assigning = Some(Assigning {
            units: units.clone(),
            orders,
            fact_partitions,
            behind: None,
            loading: None,
            started: Instant::now(),
        });
    }
}
