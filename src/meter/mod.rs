//! Meter actors. Every *active* meter has one actix actor that serialises everything that
//! happens to it; the pure [`machine`] decides, the [`actor`] performs (persist first, then
//! dispatch, publish, arm timers). The [`Directory`] finds live actors through a dashmap,
//! activates a meter on its first message (spreading actors over one arbiter per core) and lets
//! an idle actor passivate without losing a message.

pub(crate) mod actor;
pub(crate) mod sla_watch;
pub(crate) mod watch;
pub use actor::record_actions;
pub use watch::ReadWatches;
pub mod machine;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use std::time::Duration;
use tokio::sync::mpsc;

use actix::prelude::*;
use dashmap::DashMap;

use crate::clock::Clock;
use crate::commit::StoreHandle;
use crate::domain::{CampaignOutcome, CommandResult};
use crate::facts::FactBook;
use crate::head_end::{HeadEnd, ResultSink};
use crate::observability::metrics;
use crate::policy::Policy;
use crate::registry::Registry;

pub(crate) use actor::MeterActor;
pub use machine::{MeterMachine, RetryPolicy};

/// What can be sent to a meter: the machine's own inputs. The actor performs
/// [`Input::Recover`] itself first (it reads the meter's open orders behind its own writes, then
/// steps the machine), and results and facts get their own writes; the rest go to the machine
/// as they are.
pub type MeterMsg = machine::Input;

/// What every meter actor shares.
pub struct MeterServices {
    pub store: StoreHandle,
    pub registry: Arc<Registry>,
    pub clock: Arc<dyn Clock>,
    pub retry: RetryPolicy,
    pub idle: Duration,
    pub events_topic: std::sync::Arc<str>,
    pub exceptions_topic: std::sync::Arc<str>,
    /// Where links between the legs of a move go (the control topic, keyed by meter).
    pub control_topic: std::sync::Arc<str>,
    /// The rule pack in force (or the built-in baseline).
    pub policy: Arc<Policy>,
    /// Weather and emergencies by zone; which meters wait on them.
    pub facts: Arc<FactBook>,
    /// Where outcomes of campaign orders go (the receiver may be gone: then they are dropped).
    pub campaign_outcomes: mpsc::UnboundedSender<CampaignOutcome>,
    /// The meters whose reads are watched (kept current by their actors).
    pub watches: Arc<ReadWatches>,
    /// The post-disconnect watchdog's settings.
    pub read_rules: Arc<crate::reads::ReadRules>,
    /// Head-end profiles and circuit breakers.
    pub head_ends: Arc<crate::head_end::HeadEnds>,
}

struct Entry {
    addr: Addr<MeterActor>,
    /// Also the actor's identity: an entry is removed for an actor only if it is its own.
    live: Arc<Liveness>,
    /// Told to stop (its unit was revoked): messages wait in `parked` until it has stopped,
    /// then go to a new actor (if the unit is this instance's again) so that two actors of
    /// one meter never run at once, and none is handed to an actor that is stopping.
    relinquished: bool,
    parked: Option<Box<Vec<Parked>>>,
}

/// A message for a meter whose actor is stopping, and its acknowledgement.
type Parked = (MeterMsg, Option<tokio::sync::oneshot::Sender<()>>);

/// What the directory and a live actor share: how many messages are queued for it (raised
/// under the map's shard lock by `deliver`), and since when it has been idle.
pub(crate) struct Liveness {
    pub(crate) pending: AtomicU32,
    /// Milliseconds since the directory's epoch, plus one, of the meter's last step while
    /// dormant (nothing in flight, no deadline); 0 while it has work in progress.
    idle_since: AtomicU64,
}

impl Liveness {
    /// The actor says, after each step, whether it is dormant (the directory's sweep only
    /// looks at dormant ones, idle for the passivation time since their last step).
    pub(crate) fn set_idle(&self, idle: bool, dir: &Directory) {
        let now = if idle {
            dir.epoch.elapsed().as_millis() as u64 + 1
        } else {
            0
        };
        self.idle_since.store(now, Ordering::Relaxed);
    }

    /// How long since its last step while dormant (zero while it has work in progress).
    pub(crate) fn idle_for(&self, dir: &Directory) -> Duration {
        match self.idle_since.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            since => {
                let now = dir.epoch.elapsed().as_millis() as u64 + 1;
                Duration::from_millis(now.saturating_sub(since))
            }
        }
    }
}

pub struct Directory {
    live: DashMap<Arc<str>, Entry>,
    arbiters: Vec<ArbiterHandle>,
    services: MeterServices,
    head_end: Arc<dyn HeadEnd>,
    /// Round robin over the arbiters.
    activations: AtomicU64,
    /// Commands in flight (sent, not answered, not timed out) over all meters.
    in_flight: std::sync::atomic::AtomicI64,
    /// Stopping: meters take answers in but start no new command.
    draining: std::sync::atomic::AtomicBool,
    me: std::sync::Weak<Directory>,
    /// The clock of [`Liveness::idle_since`].
    epoch: std::time::Instant,
    /// When meters that hold an order until a time must be woken.
    wakes: Arc<Wakes>,
    /// Meters with open work at the last start not yet handed their recovery message.
    recovering: std::sync::atomic::AtomicUsize,
    /// Which meters this instance owns (set once by the wiring; unset: all of them).
    ownership: std::sync::OnceLock<Arc<crate::ownership::Ownership>>,
    /// The unit leases' keeper (a shared store), released at a graceful stop.
    leases: std::sync::OnceLock<Arc<crate::lease::Leases>>,
    /// Where campaign messages for a meter or a campaign owned by another instance go (set
    /// once by the wiring; unset: everything is delivered here).
    routes: std::sync::OnceLock<Routes>,
}

/// The topics that carry campaign messages between instances: to a meter on the control
/// topic (key = meter id), to a campaign on the campaign-control topic (key = campaign id).
/// Both are read by the one meter consumer, so a record reaches the owner of its key's unit.
#[derive(Debug, Clone)]
pub(crate) struct Routes {
    pub(crate) control: String,
    pub(crate) campaign_control: String,
}

pub use crate::domain::ToOwner;

/// The wake-ups of meters, live or passivated, that hold an order until a time (a window
/// opens, a deferral, a back-off or a retry ends): one timer, on the injected clock, for all
/// of them, instead of a timer in each actor (and a passivated meter needs no actor at all). A
/// meter held on zone facts is woken by [`Directory::wake_waiting`], one awaiting an approval
/// by the fact itself. A meter re-arming replaces its entry; a wake that finds nothing due any
/// more is a no-op step.
#[derive(Default)]
struct Wakes {
    due: std::sync::Mutex<WakeIndex>,
    changed: tokio::sync::Notify,
}

/// Meters by wake-up time, and each meter's one registered time.
#[derive(Default)]
struct WakeIndex {
    by_time: std::collections::BTreeSet<(crate::domain::Timestamp, Arc<str>)>,
    of_meter: std::collections::HashMap<Arc<str>, crate::domain::Timestamp>,
}

impl WakeIndex {
    fn first(&self) -> Option<crate::domain::Timestamp> {
        self.by_time.first().map(|(t, _)| *t)
    }

    /// Registers `meter` for `at`, replacing its earlier time; true if `at` is now the first.
    fn set(&mut self, meter: Arc<str>, at: crate::domain::Timestamp) -> bool {
        match self.of_meter.insert(meter.clone(), at) {
            Some(old) if old == at => return false,
            Some(old) => {
                self.by_time.remove(&(old, meter.clone()));
            }
            None => {}
        }
        let first = self.first().is_none_or(|t| at < t);
        self.by_time.insert((at, meter));
        first
    }

    /// Takes out the meters due at `now`.
    fn take_due(&mut self, now: crate::domain::Timestamp) -> Vec<Arc<str>> {
        let mut out = Vec::new();
        while self.first().is_some_and(|t| t <= now) {
            let (_, m) = self.by_time.pop_first().expect("first");
            self.of_meter.remove(&m);
            out.push(m);
        }
        out
    }
}

impl Directory {
    /// `arbiters` host the actors (round robin). `head_end` builds the head-end from the sink
    /// its answers go to (this directory).
    pub fn new(
        services: MeterServices,
        arbiters: Vec<ArbiterHandle>,
        head_end: impl FnOnce(std::sync::Weak<dyn ResultSink>) -> Arc<dyn HeadEnd>,
    ) -> Arc<Directory> {
        assert!(!arbiters.is_empty(), "at least one arbiter");
        let dir = Arc::new_cyclic(|me| Directory {
            live: DashMap::new(),
            arbiters,
            services,
            head_end: head_end(me.clone() as std::sync::Weak<dyn ResultSink>),
            activations: AtomicU64::new(0),
            in_flight: std::sync::atomic::AtomicI64::new(0),
            draining: std::sync::atomic::AtomicBool::new(false),
            me: me.clone(),
            epoch: std::time::Instant::now(),
            wakes: Arc::default(),
            recovering: std::sync::atomic::AtomicUsize::new(0),
            ownership: std::sync::OnceLock::new(),
            routes: std::sync::OnceLock::new(),
            leases: std::sync::OnceLock::new(),
        });
        // One sweep for every actor instead of a timer in each: an actor idle for
        // `meters.idle_passivate_secs` is asked to passivate.
        let idle = dir.services.idle;
        let every = (idle / 2).clamp(Duration::from_millis(10), Duration::from_secs(30));
        let me = Arc::downgrade(&dir);
        dir.arbiters[0].spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match me.upgrade() {
                    Some(dir) => dir.sweep(),
                    None => return,
                }
            }
        });
        let (wakes, clock, me) = (
            dir.wakes.clone(),
            dir.services.clock.clone(),
            Arc::downgrade(&dir),
        );
        dir.arbiters[0].spawn(async move {
            loop {
                let next = wakes.due.lock().expect("lock").first();
                let sleep = match next {
                    Some(t) => clock.sleep_until(t),
                    None => Box::pin(std::future::pending()),
                };
                tokio::select! {
                    () = sleep => {}
                    () = wakes.changed.notified() => continue,
                }
                let now = clock.now();
                let due = wakes.due.lock().expect("lock").take_due(now);
                let Some(dir) = me.upgrade() else { return };
                // Paced like a restart's recovery: a wake-up may decide a disconnect, and a
                // decision queued behind more than the store writes in a round goes stale.
                dir.deliver_paced(&due, || MeterMsg::Wake, |_| {}).await;
            }
        });
        // The head-end breakers' watcher: when a down head-end is due to be tried again, a
        // few held meters (power restorations first) are woken to probe it; when it closes,
        // all the meters it held (restorations first, paced like a recovery).
        let (mut transitions, clock, me) = (
            dir.services.head_ends.transitions(),
            dir.services.clock.clone(),
            Arc::downgrade(&dir),
        );
        dir.arbiters[0].spawn(async move {
            use crate::head_end::breaker::Transition;
            loop {
                let t = match transitions.recv().await {
                    Ok(t) => t,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let Some(dir) = me.upgrade() else { return };
                match t.transition {
                    Transition::Opened { until, .. } => {
                        let (clock, me) = (clock.clone(), me.clone());
                        actix::spawn(async move {
                            clock.sleep_until(until).await;
                            // Wake `probes` held meters; while it stays half-open with nobody
                            // answering (a woken meter had nothing to send), a few more each
                            // opening period. (A failed probe re-opens it: a new task.)
                            loop {
                                let Some(dir) = me.upgrade() else { return };
                                let he = &dir.services.head_ends;
                                let probes = he.take_held(&t.head_end, he.probes());
                                for m in &probes {
                                    dir.deliver(m, MeterMsg::Wake);
                                }
                                let period = he.open_period();
                                drop(dir);
                                let next = clock.now().checked_add(
                                    jiff::SignedDuration::try_from(period).unwrap_or_default(),
                                );
                                clock.sleep_until(next.unwrap_or(until)).await;
                                let Some(dir) = me.upgrade() else { return };
                                if probes.is_empty()
                                    || !dir.services.head_ends.half_open(&t.head_end)
                                {
                                    return;
                                }
                            }
                        });
                    }
                    Transition::Closed { .. } => {
                        // Its own task: a large held set on a congested store must not delay
                        // the other head-ends' transitions.
                        let held = dir.services.head_ends.take_held(&t.head_end, usize::MAX);
                        tracing::info!(head_end = %t.head_end, meters = held.len(), "waking the meters the head-end's breaker held");
                        actix::spawn(async move {
                            dir.deliver_paced(&held, || MeterMsg::Wake, |_| {}).await;
                            tracing::info!(meters = held.len(), "held meters woken");
                        });
                    }
                    Transition::HalfOpened { .. } => {}
                }
            }
        });
        dir
    }

    /// The meter must be woken at `at` (it holds an order until then), instead of at any time
    /// it registered before.
    pub(crate) fn wake_at(&self, meter_id: Arc<str>, at: crate::domain::Timestamp) {
        let earliest = self.wakes.due.lock().expect("lock").set(meter_id, at);
        if earliest {
            self.wakes.changed.notify_one();
        }
    }

    /// Startup recovery: hands every meter in `meters` (those with open work in the store) its
    /// recovery message, in slices, each only while the store writers keep up (the gate the
    /// intake uses). All at once, a million recovering meters once queued over 10 s of store
    /// writes, so that their disconnect decisions went stale before they could be sent (the
    /// recovery-1m load test; they are decided again, but each round is another write).
    pub(crate) async fn recover_paced(&self, meters: Vec<String>) {
        // Added, not set: the recoveries of two assignments may overlap.
        let now = self.recovering.fetch_add(meters.len(), Ordering::SeqCst) + meters.len();
        metrics().recovering.set(now as f64);
        self.deliver_paced(
            &meters,
            || MeterMsg::Recover,
            |n| {
                let left = self.recovering.fetch_sub(n, Ordering::SeqCst) - n;
                metrics().recovering.set(left as f64);
            },
        )
        .await;
    }

    /// Delivers `msg()` to each of `meters`, 256 at a time, each slice only while the store's
    /// writers keep up (the intake's gate); `sent(n)` after each slice of `n`.
    async fn deliver_paced<M: AsRef<str>>(
        &self,
        meters: &[M],
        msg: impl Fn() -> MeterMsg,
        mut sent: impl FnMut(usize),
    ) {
        for slice in meters.chunks(256) {
            while self.services.store.congested() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            for m in slice {
                self.deliver(m.as_ref(), msg());
            }
            sent(slice.len());
            tokio::task::yield_now().await;
        }
    }

    /// Meters with open work at startup not yet handed their recovery message.
    pub(crate) fn recovering(&self) -> usize {
        self.recovering.load(Ordering::SeqCst)
    }

    /// Meters (live or passivated) waiting for a wake-up time.
    pub(crate) fn wakes_waiting(&self) -> usize {
        self.wakes.due.lock().expect("lock").of_meter.len()
    }

    /// Asks every actor idle for longer than the passivation time, with nothing queued, to
    /// passivate (it checks again itself).
    fn sweep(&self) {
        let idle = self.services.idle.as_millis() as u64;
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        for e in self.live.iter() {
            let since = e.live.idle_since.load(Ordering::Relaxed);
            if since != 0
                && now.saturating_sub(since) >= idle
                && e.live.pending.load(Ordering::SeqCst) == 0
            {
                e.addr.do_send(actor::Passivate);
            }
        }
    }

    pub(crate) fn head_end(&self) -> &Arc<dyn HeadEnd> {
        &self.head_end
    }

    pub(crate) fn services(&self) -> &MeterServices {
        &self.services
    }

    pub(crate) fn live_actors(&self) -> usize {
        self.live.len()
    }

    /// Commands in flight now (what a graceful shutdown waits for).
    pub(crate) fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// From now on meters start no new command (a graceful stop drains what is in flight).
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub(crate) fn in_flight_changed(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::SeqCst);
        metrics().in_flight.increment(delta as f64);
    }

    /// From now on, only the meters `ownership` says are this instance's get an actor here
    /// (set once, before the first message; later calls are ignored).
    pub(crate) fn set_ownership(&self, ownership: Arc<crate::ownership::Ownership>) {
        let _ = self.ownership.set(ownership);
    }

    pub(crate) fn set_leases(&self, leases: Arc<crate::lease::Leases>) {
        let _ = self.leases.set(leases);
    }

    pub(crate) fn set_routes(&self, routes: Routes) {
        let _ = self.routes.set(routes);
    }

    /// When `key` (a meter id or a campaign id: both are spread over the units by the same
    /// partitioner) belongs to a unit another instance owns: the outbox record that carries
    /// `what` to it. `None`: owned here (or one process): deliver it here.
    pub(crate) fn to_owner(
        &self,
        key: &str,
        what: impl FnOnce() -> ToOwner,
    ) -> Option<crate::store::OutboxMessage> {
        if self.owns(key) {
            return None;
        }
        let routes = self.routes.get()?;
        let (topic, payload) = match what() {
            ToOwner::Meter(r) => (&routes.control, serde_json::to_vec(&r)),
            ToOwner::Campaign(r) => (&routes.campaign_control, serde_json::to_vec(&r)),
        };
        Some(crate::store::OutboxMessage {
            topic: topic.as_str().into(),
            key: key.into(),
            payload: payload.expect("serialize"),
        })
    }

    /// A graceful stop, once the meters stopped: every unit lease held is given up, so that
    /// their next owners take them at once.
    pub(crate) fn release_leases(&self) {
        if let Some(l) = self.leases.get() {
            l.release_all();
        }
    }

    /// The units assigned here, their count and partitioner; `None`: every meter is owned.
    pub(crate) fn owned_units(
        &self,
    ) -> Option<(
        std::collections::BTreeSet<u32>,
        u32,
        crate::domain::partition::Partitioner,
    )> {
        let o = self.ownership.get().filter(|o| o.unit_count() > 0)?;
        Some((o.owned_units(), o.unit_count(), o.partitioner()))
    }

    /// Is this meter this instance's (its unit assigned here)?
    pub(crate) fn owns(&self, meter_id: &str) -> bool {
        self.ownership.get().is_none_or(|o| o.owns(meter_id))
    }

    /// May this meter start a command here: owned, and its unit's facts applied since it was
    /// assigned (a payment sent before a hand-over is known before a held disconnect goes)?
    pub(crate) fn acting(&self, meter_id: &str) -> bool {
        self.ownership.get().is_none_or(|o| o.acting(meter_id))
    }

    /// Starts a store write of this meter if its unit is leased here (counted until the guard
    /// drops: a graceful revoke waits for it); `None`: not now. Always, without ownership.
    pub(crate) fn writing(&self, meter_id: &str) -> Option<Option<crate::ownership::Writing<'_>>> {
        match self.ownership.get() {
            None => Some(None),
            Some(o) => o.writing(meter_id).map(Some),
        }
    }

    /// Was this meter's actor told to stop (its unit revoked)?
    pub(crate) fn relinquished(&self, meter_id: &str) -> bool {
        self.live.get(meter_id).is_some_and(|e| e.relinquished)
    }

    /// The units in `units` were revoked: their live actors stop (a meter stores every step
    /// before it acts on it, so there is nothing to save; a command in flight stays in flight,
    /// the new owner's to resolve with a status check) and their wake-ups are dropped.
    /// Messages for them are dropped from now on ([`Directory::deliver`]).
    pub(crate) fn relinquish(&self, units: &std::collections::BTreeSet<u32>) -> usize {
        let Some(o) = self.ownership.get() else {
            return 0;
        };
        let mut n = 0;
        for mut e in self.live.iter_mut() {
            if units.contains(&o.unit_of(e.key())) && !e.relinquished {
                e.relinquished = true;
                e.addr.do_send(actor::Relinquish);
                n += 1;
            }
        }
        let mut w = self.wakes.due.lock().expect("lock");
        let gone: Vec<Arc<str>> = w
            .of_meter
            .keys()
            .filter(|m| units.contains(&o.unit_of(m)))
            .cloned()
            .collect();
        for m in gone {
            if let Some(at) = w.of_meter.remove(&m) {
                w.by_time.remove(&(at, m));
            }
        }
        n
    }

    pub(crate) fn is_live(&self, meter_id: &str) -> bool {
        self.live.contains_key(meter_id)
    }

    /// Sends a message to the meter's actor, activating it if needed. The pending counter is
    /// raised under the map's shard lock, so a concurrent passivation cannot drop the message.
    pub fn deliver(&self, meter_id: &str, msg: MeterMsg) {
        self.deliver_acked(meter_id, msg, None)
    }

    /// As [`deliver`](Self::deliver); `ack` fires once the meter has durably stored the
    /// outcome of the message (the source may then store its offset).
    pub(crate) fn deliver_acked(
        &self,
        meter_id: &str,
        msg: MeterMsg,
        ack: Option<tokio::sync::oneshot::Sender<()>>,
    ) {
        if !self.owns(meter_id) {
            // Revoked meanwhile (a wake-up, a late simulated answer, a zone fact): the new
            // owner resumes this meter from the store.
            tracing::debug!(
                meter = meter_id,
                "message for a meter owned by another instance dropped"
            );
            return;
        }
        if let Some(e) = self.live.get(meter_id) {
            if !e.relinquished {
                e.live.pending.fetch_add(1, Ordering::SeqCst);
                e.addr
                    .do_send(actor::Deliver(msg, ack, std::time::Instant::now()));
                return;
            }
        }
        // Its actor is stopping (relinquished): park the message until it has stopped (the
        // shard's write lock orders this against `forget`, which takes the parked ones).
        if let Some(mut e) = self.live.get_mut(meter_id) {
            if e.relinquished {
                e.parked.get_or_insert_with(Box::default).push((msg, ack));
                return;
            }
            e.live.pending.fetch_add(1, Ordering::SeqCst);
            e.addr
                .do_send(actor::Deliver(msg, ack, std::time::Instant::now()));
            return;
        }
        let key: Arc<str> = Arc::from(meter_id);
        let e = self
            .live
            .entry(key.clone())
            .or_insert_with(|| self.activate(key));
        e.live.pending.fetch_add(1, Ordering::SeqCst);
        e.addr
            .do_send(actor::Deliver(msg, ack, std::time::Instant::now()));
    }

    /// Wakes the meters holding deferred orders in `zone` (every zone with `None`) so they
    /// re-decide with the new facts. Returns how many were woken.
    pub(crate) fn wake_waiting(&self, zone: Option<&str>) -> usize {
        let meters = self.services.facts.waiting(zone);
        for m in &meters {
            self.deliver(m, MeterMsg::Wake);
        }
        meters.len()
    }

    fn activate(&self, meter_id: Arc<str>) -> Entry {
        let n = self.activations.fetch_add(1, Ordering::Relaxed);
        let live = Arc::new(Liveness {
            pending: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
        });
        let arbiter = &self.arbiters[(n % self.arbiters.len() as u64) as usize];
        let dir = self.me.upgrade().expect("directory alive");
        let l = live.clone();
        let addr =
            MeterActor::start_in_arbiter(arbiter, move |_| MeterActor::new(meter_id, dir, l));
        metrics().actor_activations.increment(1);
        Entry {
            addr,
            live,
            relinquished: false,
            parked: None,
        }
    }

    /// Called by an idle actor (`live` is its own): removes it from the map if nothing is
    /// queued for it.
    pub(crate) fn try_passivate(&self, meter_id: &str, live: &Arc<Liveness>) -> bool {
        self.live
            .remove_if(meter_id, |_, e| {
                Arc::ptr_eq(&e.live, live)
                    && !e.relinquished
                    && e.live.pending.load(Ordering::SeqCst) == 0
            })
            .is_some()
    }

    /// Called when an actor stops for any reason: forget it if it is still the registered one.
    pub(crate) fn forget(&self, meter_id: &str, live: &Arc<Liveness>) {
        let gone = self
            .live
            .remove_if(meter_id, |_, e| Arc::ptr_eq(&e.live, live));
        // Messages that waited for a relinquished actor to stop: to a new actor now (dropped
        // if the meter is not this instance's any more).
        if let Some((
            _,
            Entry {
                parked: Some(p), ..
            },
        )) = gone
        {
            for (msg, ack) in *p {
                self.deliver_acked(meter_id, msg, ack);
            }
        }
    }
}

impl ResultSink for Directory {
    fn deliver_result(&self, result: CommandResult) {
        let meter = result.meter_id.clone();
        self.deliver(&meter, MeterMsg::Result(result));
    }
}

/// Campaign releases and withdrawals go to the meters. Weak: the directory outlives no one's
/// shutdown because a campaign still holds it.
pub(crate) struct MeterSink(pub(crate) std::sync::Weak<Directory>);

impl crate::campaign::actor::ReleaseSink for MeterSink {
    fn release(
        &self,
        _campaign_id: &str,
        order_id: &str,
        meter_id: &str,
        _at: crate::domain::Timestamp,
    ) {
        if let Some(d) = self.0.upgrade() {
            d.deliver(
                meter_id,
                MeterMsg::Release {
                    order_id: order_id.to_string(),
                },
            );
        }
    }
    fn adopt(&self, campaign_id: &str, order_id: &str, meter_id: &str) {
        if let Some(d) = self.0.upgrade() {
            d.deliver(
                meter_id,
                MeterMsg::Adopt {
                    order_id: order_id.to_string(),
                    campaign_id: campaign_id.to_string(),
                },
            );
        }
    }
    fn zone_of(&self, meter_id: &str) -> Option<String> {
        let d = self.0.upgrade()?;
        d.services
            .registry
            .get(meter_id)
            .map(|m| m.zone.to_string())
    }
    fn to_owner(
        &self,
        key: &str,
        what: &dyn Fn() -> ToOwner,
    ) -> Option<crate::store::OutboxMessage> {
        self.0.upgrade()?.to_owner(key, what)
    }
    fn owned_here(&self, key: &str) -> bool {
        self.0.upgrade().is_some_and(|d| d.owns(key))
    }
    fn fenced(&self, campaign_id: &str, write: &mut dyn FnMut()) -> bool {
        let Some(d) = self.0.upgrade() else {
            return false;
        };
        let counted = d.writing(campaign_id);
        let leased = counted.is_some();
        if leased {
            write();
        }
        drop(counted);
        leased
    }
    fn withdraw(&self, _campaign_id: &str, order_id: &str, meter_id: &str, reason: &str) {
        if let Some(d) = self.0.upgrade() {
            d.deliver(
                meter_id,
                MeterMsg::Withdraw {
                    order_id: order_id.to_string(),
                    reason: reason.to_string(),
                },
            );
        }
    }
}

#[cfg(test)]
mod ownership_tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::domain::{Command, OrderStatus, Partitioner};
    use crate::ownership::Ownership;

    #[derive(Default)]
    struct RecordingHeadEnd(std::sync::Mutex<Vec<Command>>);

    impl HeadEnd for RecordingHeadEnd {
        fn dispatch(&self, command: std::sync::Arc<Command>) {
            self.0.lock().unwrap().push(Command::clone(&command));
        }
    }

    fn reconnect(id: &str, now: crate::domain::Timestamp) -> MeterMsg {
        let json = serde_json::json!({"schema_version": 1, "order_id": id, "meter_id": "M-1",
            "kind": "reconnect", "reason": "payment_received"});
        let order = crate::domain::validate_order(
            Some(b"M-1"),
            Some(&serde_json::to_vec(&json).unwrap()),
            |_| true,
            now,
        )
        .unwrap();
        MeterMsg::Order(order)
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not within 5 s: {what}");
    }

    /// A directory of one arbiter over `store`, with meter M-1 registered and a head-end that
    /// records what it is sent.
    fn directory_of_one_meter(
        store: &Arc<dyn crate::store::Store>,
    ) -> (
        Arc<Directory>,
        Arc<RecordingHeadEnd>,
        Arbiter,
        Arc<dyn Clock>,
    ) {
        // (The writer ignores a closed publisher: nothing is published here.)
        let (published, _) = mpsc::unbounded_channel();
        let handle = StoreHandle::start(store.clone(), 64, published);
        let registry = Registry::new();
        registry
            .upsert(
                &serde_json::from_value(serde_json::json!({
                "meter_id": "M-1", "zone": "z1", "head_end_id": "HE-1", "has_switch": true
                }))
                .unwrap(),
            )
            .unwrap();
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::SystemClock);
        let services = MeterServices {
            store: handle,
            registry,
            clock: clock.clone(),
            retry: RetryPolicy {
                max_attempts: 3,
                backoff_initial: Duration::from_millis(50),
                backoff_max: Duration::from_secs(1),
                command_deadline: Duration::from_secs(120),
            },
            idle: Duration::from_secs(600),
            events_topic: "events".into(),
            exceptions_topic: "exceptions".into(),
            control_topic: "control".into(),
            policy: Arc::new(Policy::baseline()),
            facts: FactBook::new(),
            campaign_outcomes: mpsc::unbounded_channel().0,
            watches: ReadWatches::new(),
            read_rules: Arc::default(),
            head_ends: Arc::default(),
        };
        let arbiter = Arbiter::new();
        let head_end = Arc::new(RecordingHeadEnd::default());
        let d = Directory::new(services, vec![arbiter.handle()], |_| head_end.clone());
        (d, head_end, arbiter, clock)
    }

    /// A meter gets no actor while its unit is another instance's; once assigned it takes its
    /// order in but sends nothing until its unit's facts are applied; then `Recover` sends the
    /// command; once the unit is revoked its actor stops and messages for it are dropped.
    #[test]
    fn a_meter_acts_only_while_its_unit_is_owned_and_caught_up() {
        let dir = tempfile::tempdir().unwrap();
        let sys = actix::System::new();
        sys.block_on(async {
            let store: Arc<dyn crate::store::Store> =
                Arc::new(crate::store::EmbeddedStore::open(dir.path()).unwrap());
            let (d, head_end, arbiter, clock) = directory_of_one_meter(&store);
            let o = Arc::new(Ownership::by_partition(Partitioner::Crc32, 1));
            d.set_ownership(o.clone());
            let unit = BTreeSet::from([0]);
            let sent = || head_end.0.lock().unwrap().len();

            d.deliver("M-1", reconnect("SO-0", clock.now()));
            assert!(!d.is_live("M-1"), "no actor for a meter owned elsewhere");

            o.gain(&unit);
            d.deliver("M-1", reconnect("SO-1", clock.now()));
            until("the order stored with the meter", || {
                store
                    .meter("M-1")
                    .unwrap()
                    .is_some_and(|m| m.open.iter().any(|x| x.order.order_id == "SO-1"))
            })
            .await;
            let m = store.meter("M-1").unwrap().unwrap();
            assert!(m.in_flight.is_none(), "nothing sent while catching up");
            assert_eq!(m.open.len(), 1, "SO-0 was never taken: {:?}", m.open);
            assert_eq!(sent(), 0);

            o.caught_up(&unit);
            d.deliver("M-1", MeterMsg::Recover);
            until("the connect sent", || sent() == 1).await;
            assert_eq!(head_end.0.lock().unwrap()[0].order_id, "SO-1");

            o.lose(&unit);
            assert_eq!(d.relinquish(&unit), 1);
            until("the actor stopped", || !d.is_live("M-1")).await;
            d.deliver("M-1", MeterMsg::Wake);
            assert!(!d.is_live("M-1"));
            let m = store.meter("M-1").unwrap().unwrap();
            assert_eq!(m.open[0].status, OrderStatus::Dispatched);
            arbiter.stop();
        });
    }

    /// The answer to the command in flight is stored as its whole record without reading the
    /// stored one (the store checks, in this crate's tests, that the record it replaces is the
    /// command as dispatched with no result yet); the same answer again is a late result,
    /// appended to the record, and commands nothing.
    #[test]
    fn a_result_is_stored_whole_and_its_repeat_appended() {
        let dir = tempfile::tempdir().unwrap();
        let sys = actix::System::new();
        sys.block_on(async {
            let store: Arc<dyn crate::store::Store> =
                Arc::new(crate::store::EmbeddedStore::open(dir.path()).unwrap());
            let (d, head_end, arbiter, clock) = directory_of_one_meter(&store);
            d.deliver("M-1", reconnect("SO-1", clock.now()));
            until("the connect sent", || head_end.0.lock().unwrap().len() == 1).await;
            let cmd = head_end.0.lock().unwrap()[0].clone();
            let result = crate::domain::CommandResult {
                schema_version: 1,
                command_id: cmd.command_id.clone(),
                meter_id: "M-1".into(),
                outcome: crate::domain::CommandOutcome::Confirmed {
                    load_side_voltage: None,
                    switch_state: crate::domain::SwitchState::Connected,
                    register_kwh: None,
                },
                at: clock.now(),
            };
            d.deliver("M-1", MeterMsg::Result(result.clone()));
            until("the order completed", || {
                store
                    .meter("M-1")
                    .unwrap()
                    .is_some_and(|m| m.open.is_empty() && m.in_flight.is_none())
            })
            .await;
            let rec = store.command(&cmd.command_id).unwrap().unwrap();
            assert_eq!(*rec.command, cmd);
            assert_eq!(rec.results, vec![result.clone()]);
            d.deliver("M-1", MeterMsg::Result(result.clone()));
            until("the repeat appended", || {
                store
                    .command(&cmd.command_id)
                    .unwrap()
                    .is_some_and(|r| r.results.len() == 2)
            })
            .await;
            let rec = store.command(&cmd.command_id).unwrap().unwrap();
            assert_eq!(rec.results, vec![result.clone(), result]);
            assert_eq!(
                head_end.0.lock().unwrap().len(),
                1,
                "a repeat commands nothing"
            );
            arbiter.stop();
        });
    }

    /// An order handed over with an acknowledgement (the intake's window) is acknowledged once
    /// its meter's step is durable, not before: while the step cannot be stored (its unit's
    /// lease not held yet) the acknowledgement waits; once it is, the store holds the order in
    /// the meter's snapshot when the acknowledgement arrives.
    #[test]
    fn an_orders_acknowledgement_comes_after_its_step_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let sys = actix::System::new();
        sys.block_on(async {
            let store: Arc<dyn crate::store::Store> =
                Arc::new(crate::store::EmbeddedStore::open(dir.path()).unwrap());
            let (d, _head_end, arbiter, clock) = directory_of_one_meter(&store);
            // Fenced by leases, and no lease yet: the meter's step cannot be stored.
            let o = Arc::new(Ownership::fenced_by_leases(Partitioner::Crc32, 1));
            d.set_ownership(o.clone());
            let unit = BTreeSet::from([0]);
            o.gain(&unit);
            o.caught_up(&unit);

            let (tx, mut rx) = tokio::sync::oneshot::channel();
            d.deliver_acked("M-1", reconnect("SO-1", clock.now()), Some(tx));
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(
                matches!(
                    rx.try_recv(),
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty)
                ),
                "acknowledged (or dropped) while its step could not be stored"
            );
            assert!(store.meter("M-1").unwrap().is_none(), "nothing stored yet");

            o.lease_held(0, tokio::time::Instant::now() + Duration::from_secs(60));
            tokio::time::timeout(Duration::from_secs(5), rx)
                .await
                .expect("acknowledged within 5 s")
                .expect("acknowledged, not dropped");
            let m = store
                .meter("M-1")
                .unwrap()
                .expect("the meter's snapshot is stored");
            assert!(
                m.open.iter().any(|x| x.order.order_id == "SO-1"),
                "the order is in the stored snapshot: {:?}",
                m.open
            );
            arbiter.stop();
        });
    }
}
