//! The campaign actor: one per campaign. It releases the campaign's orders to their meters
//! under a governor rate limiter (one release per `3600 / rate` seconds, no bursts, so no hour
//! ever holds more than the rate), only inside the campaign's windows and never into a zone the
//! policy bars right now (that zone keeps its place). Each release is persisted before it is
//! sent; after a restart the campaign resumes from the store: no order released twice (the
//! meter ignores a repeated release), none skipped, and the first release waits a full period
//! after the last one stored. Progress goes out as campaign events (outbox) and metrics.
//!
//! Its timers wait on the injected clock, so a week-long campaign runs in milliseconds under
//! tokio's paused time.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use governor::clock::Clock as GovClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::{Campaign, CampaignEvent, CampaignOrder, CampaignRecord, CampaignStatus, Queue};
use crate::clock::Clock;
use crate::commit::StoreHandle;
use crate::domain::{OrderStatus, Timestamp};
use crate::facts::FactBook;
use crate::policy::Policy;
use crate::store::{OutboxMessage, WriteBatch};

/// Where releases and withdrawals go: the meter directory in production, a recorder in tests.
pub trait ReleaseSink: Send + Sync + 'static {
    fn release(&self, campaign_id: &str, order_id: &str, meter_id: &str, at: Timestamp);
    fn withdraw(&self, campaign_id: &str, order_id: &str, meter_id: &str, reason: &str);
    /// Asks the meter to hold an order it already has for the campaign (adoption by filter).
    fn adopt(&self, _campaign_id: &str, _order_id: &str, _meter_id: &str) {}
    /// The meter's zone (for adoption), when known.
    fn zone_of(&self, _meter_id: &str) -> Option<String> {
        None
    }
}

/// What every campaign actor shares.
#[derive(Clone)]
pub struct CampaignServices {
    pub store: StoreHandle,
    pub clock: Arc<dyn Clock>,
    pub policy: Arc<Policy>,
    pub facts: Arc<FactBook>,
    pub sink: Arc<dyn ReleaseSink>,
    pub events_topic: String,
}

/// governor's view of switchyard's clock (time since the epoch), so the limiter follows the
/// injected clock (paused time in tests).
#[derive(Clone)]
struct LimiterClock(Arc<dyn Clock>);

impl GovClock for LimiterClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        let n = self.0.now().as_nanosecond().max(0) as u128;
        Duration::from_nanos(n as u64)
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, LimiterClock, NoOpMiddleware<Duration>>;

fn limiter(rate_per_hour: u32, clock: &Arc<dyn Clock>) -> Limiter {
    let quota = Quota::with_period(Campaign::period(rate_per_hour))
        .expect("rate validated: period > 0")
        .allow_burst(std::num::NonZeroU32::MIN);
    RateLimiter::direct_with_clock(quota, LimiterClock(clock.clone()))
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

/// An operator's command (campaign-control topic).
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Pause { by: String },
    Resume { by: String },
    Cancel { by: String },
    SetRate { rate_per_hour: u32, by: String },
}

#[derive(Message)]
#[rtype(result = "()")]
pub enum CampaignMsg {
    /// A new order of this campaign (stored already).
    Enqueue(CampaignOrder),
    /// An operator command; `ack` fires once it is stored.
    Control(Command, Option<tokio::sync::oneshot::Sender<()>>),
    /// An order of the campaign changed status (from its meter).
    Outcome {
        order_id: String,
        status: OrderStatus,
    },
    /// Stop the actor (shutdown); the campaign resumes from the store on the next start.
    Stop,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    completed: u64,
    failed: u64,
    cancelled: u64,
    deferred: u64,
}

pub struct CampaignActor {
    svc: CampaignServices,
    campaign: Campaign,
    record: CampaignRecord,
    queue: Queue,
    /// Every order the campaign knows, with its zone and meter (dedupe and bookkeeping).
    orders: HashMap<Box<str>, (Box<str>, Box<str>)>,
    /// Orders released and not finished (to count outcomes once).
    released_open: HashSet<Box<str>>,
    deferred_seen: HashSet<Box<str>>,
    /// Withdrawn by a cancel or an expiry, and counted as cancelled then (their meters'
    /// outcomes are not counted again).
    withdrawn: HashSet<Box<str>>,
    counts: Counts,
    limiter: Limiter,
    zone_next: HashMap<String, Timestamp>,
    wake: Option<(Timestamp, SpawnHandle)>,
    since_progress: u64,
}

/// Publish a progress event every this many releases (and on every state change).
const PROGRESS_EVERY: u64 = 100;
/// When every waiting zone is barred until facts change, look again this often.
const FACT_RECHECK: Duration = Duration::from_secs(15 * 60);

impl CampaignActor {
    /// A campaign from its stored record and orders (`released` flags from the store).
    pub fn new(
        svc: CampaignServices,
        campaign: Campaign,
        record: CampaignRecord,
        orders: Vec<CampaignOrder>,
        statuses: &dyn Fn(&str) -> Option<OrderStatus>,
    ) -> CampaignActor {
        let mut queue = Queue::new(campaign.def.ordering);
        let mut known = HashMap::with_capacity(orders.len());
        let mut released_open = HashSet::new();
        let mut counts = Counts::default();
        let mut waiting = Vec::new();
        for o in &orders {
            known.insert(
                o.order_id.as_str().into(),
                (o.zone.as_str().into(), o.meter_id.as_str().into()),
            );
            let status = statuses(&o.order_id);
            match status {
                Some(OrderStatus::Completed) => counts.completed += 1,
                Some(OrderStatus::Failed) | Some(OrderStatus::Rejected) => counts.failed += 1,
                Some(OrderStatus::Cancelled) => counts.cancelled += 1,
                _ => {}
            }
            let terminal = status.is_some_and(|s| s.is_terminal());
            if o.released {
                queue.count_released(&o.zone);
                if !terminal {
                    released_open.insert(o.order_id.as_str().into());
                }
            } else if !terminal && campaign.in_zone_scope(&o.zone) {
                waiting.push(o);
            }
        }
        queue.extend(waiting);
        let limiter = limiter(record.rate_per_hour, &svc.clock);
        CampaignActor {
            limiter,
            svc,
            campaign,
            record,
            queue,
            orders: known,
            released_open,
            deferred_seen: HashSet::new(),
            withdrawn: HashSet::new(),
            counts,
            zone_next: HashMap::new(),
            wake: None,
            since_progress: 0,
        }
    }

    pub fn id(&self) -> &str {
        &self.record.def.campaign_id
    }

    fn event(&self, kind: &str, by: Option<String>) -> CampaignEvent {
        let now = self.svc.clock.now();
        let remaining = self.queue.len() as u64;
        CampaignEvent {
            schema_version: super::CAMPAIGN_SCHEMA_VERSION,
            campaign_id: self.id().to_string(),
            event: kind.into(),
            status: self.record.status,
            at: now,
            rate_per_hour: self.record.rate_per_hour,
            total: self.orders.len() as u64,
            released: self.record.released,
            remaining,
            completed: self.counts.completed,
            failed: self.counts.failed,
            cancelled: self.counts.cancelled,
            deferred: self.counts.deferred,
            expected_finish: if remaining > 0 && self.record.status == CampaignStatus::Active {
                self.campaign.finish_estimate(
                    self.next_release_floor(now),
                    remaining,
                    self.record.rate_per_hour,
                )
            } else {
                None
            },
            by,
        }
    }

    fn outbox(&self, e: &CampaignEvent) -> OutboxMessage {
        crate::observability::campaign_progress(e);
        OutboxMessage {
            topic: self.svc.events_topic.clone(),
            key: e.campaign_id.clone(),
            payload: serde_json::to_vec(e).expect("serialize"),
        }
    }

    /// Stores the record (and what else is in `batch`) with an event, durably, on this thread
    /// (the campaign arbiter), then runs `then`.
    fn persist(
        &mut self,
        mut batch: WriteBatch,
        event: Option<CampaignEvent>,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self, &mut Context<Self>) + 'static,
    ) {
        self.record.updated_at = self.svc.clock.now();
        batch.campaigns.push(self.record.clone());
        if let Some(e) = event {
            batch.outbox.push(self.outbox(&e));
        }
        let mut backoff = Duration::from_millis(50);
        while let Err(e) = self.svc.store.write_now(batch.clone()) {
            tracing::error!(error = %e, campaign = %self.id(), "campaign state not stored; holding the campaign until the store accepts it");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        then(self, ctx);
    }

    fn arm(&mut self, at: Timestamp, ctx: &mut Context<Self>) {
        if self.wake.as_ref().is_some_and(|(t, _)| *t == at) {
            return;
        }
        if let Some((_, h)) = self.wake.take() {
            ctx.cancel_future(h);
        }
        let sleep = self.svc.clock.sleep_until(at);
        let h = ctx.spawn(sleep.into_actor(self).map(|(), act, ctx| {
            act.wake = None;
            act.step(ctx);
        }));
        self.wake = Some((at, h));
    }

    /// The earliest time the rate allows the next release (persisted last release + period).
    fn next_release_floor(&self, now: Timestamp) -> Timestamp {
        match self.record.last_release_at {
            Some(l) => now.max(add(l, Campaign::period(self.record.rate_per_hour))),
            None => now,
        }
    }

    fn zone_bar(&self, zone: &str, t: Timestamp) -> Option<(String, Option<Timestamp>)> {
        let f = self.svc.facts.forecasts(zone);
        let e = self.svc.facts.emergencies();
        self.svc
            .policy
            .zone_bar(t, zone, &f, &e)
            .map(|(hit, until)| (hit.rule, until))
    }

    /// Releases the next order if everything allows it now; otherwise arms the timer for the
    /// earliest time something may change.
    fn step(&mut self, ctx: &mut Context<Self>) {
        if self.record.status != CampaignStatus::Active {
            return;
        }
        let now = self.svc.clock.now();
        if self.queue.is_empty() {
            if !self.orders.is_empty() {
                self.finish(CampaignStatus::Finished, "finished", ctx);
            }
            return;
        }
        let Some(open) = self.campaign.next_open(now) else {
            self.finish(CampaignStatus::Expired, "expired", ctx);
            return;
        };
        let floor = self.next_release_floor(open);
        if floor > now {
            self.arm(floor, ctx);
            return;
        }
        // The zones that may release now: not barred by policy, under their own rate. The
        // queue's ordering then decides among them.
        let mut wait_until: Option<Timestamp> = None;
        let mut free_zones: HashSet<String> = HashSet::new();
        for (zone, _) in self.queue.waiting_by_zone() {
            let zone_free = self.zone_next.get(zone).copied().unwrap_or(now);
            let free = match self.zone_bar(zone, now) {
                Some((_, until)) => until.map(|u| u.max(zone_free)),
                None => Some(zone_free),
            };
            match free {
                Some(f) if f <= now => {
                    free_zones.insert(zone.to_string());
                }
                Some(f) => wait_until = Some(wait_until.map_or(f, |w| w.min(f))),
                None => {}
            }
        }
        if free_zones.is_empty() {
            let at = wait_until.unwrap_or(add(now, FACT_RECHECK));
            self.arm(
                at.min(add(now, FACT_RECHECK))
                    .max(add(now, Duration::from_millis(1))),
                ctx,
            );
            return;
        }
        if let Err(not_until) = self.limiter.check() {
            let wait = not_until.wait_time_from(LimiterClock(self.svc.clock.clone()).now());
            self.arm(add(now, wait.max(Duration::from_millis(1))), ctx);
            return;
        }
        let Some((zone, o)) = self.queue.pop(|z| free_zones.contains(z)) else {
            return;
        };
        if let Some(zr) = self.campaign.def.zone_rate_per_hour {
            self.zone_next
                .insert(zone.clone(), add(now, Campaign::period(zr)));
        }
        self.record.released += 1;
        self.record.last_release_at = Some(now);
        self.released_open.insert(o.order_id.clone());
        self.since_progress += 1;
        let event = (self.since_progress >= PROGRESS_EVERY).then(|| {
            self.since_progress = 0;
            self.event("progress", None)
        });
        let batch = WriteBatch {
            campaign_releases: vec![(self.id().to_string(), o.order_id.to_string(), now)],
            ..WriteBatch::default()
        };
        self.persist(batch, event, ctx, move |act, ctx| {
            act.svc
                .sink
                .release(act.id(), &o.order_id, &o.meter_id, now);
            crate::observability::campaign_released();
            // The next release is decided in a fresh turn of the mailbox (no deep recursion;
            // controls and outcomes queued meanwhile are handled first).
            let now = act.svc.clock.now();
            act.arm(now, ctx);
        });
    }

    /// Takes every unreleased order out of the queue; they count as cancelled from now on.
    fn withdraw_all(&mut self) -> Vec<super::QueuedOrder> {
        let left = self.queue.drain();
        for o in &left {
            if self.withdrawn.insert(o.order_id.clone()) {
                self.counts.cancelled += 1;
            }
        }
        left
    }

    fn finish(&mut self, status: CampaignStatus, kind: &str, ctx: &mut Context<Self>) {
        let left = self.withdraw_all();
        self.record.status = status;
        let reason = if status == CampaignStatus::Cancelled {
            "campaign_cancelled"
        } else {
            "campaign_expired"
        };
        let ev = self.event(kind, None);
        let id = self.id().to_string();
        self.persist(WriteBatch::default(), Some(ev), ctx, move |act, _| {
            for o in left {
                act.svc.sink.withdraw(&id, &o.order_id, &o.meter_id, reason);
            }
        });
    }

    fn control(&mut self, cmd: Command, ctx: &mut Context<Self>) -> Option<CampaignEvent> {
        let terminal = matches!(
            self.record.status,
            CampaignStatus::Cancelled | CampaignStatus::Finished | CampaignStatus::Expired
        );
        if terminal {
            tracing::warn!(campaign = %self.id(), ?cmd, "command for a campaign that has ended; ignored");
            return None;
        }
        match cmd {
            Command::Pause { by } => {
                self.record.status = CampaignStatus::Paused;
                if let Some((_, h)) = self.wake.take() {
                    ctx.cancel_future(h);
                }
                Some(self.event("paused", Some(by)))
            }
            Command::Resume { by } => {
                self.record.status = CampaignStatus::Active;
                Some(self.event("resumed", Some(by)))
            }
            Command::SetRate { rate_per_hour, by } => {
                self.record.rate_per_hour = rate_per_hour;
                self.limiter = limiter(rate_per_hour, &self.svc.clock);
                Some(self.event("rate_changed", Some(by)))
            }
            Command::Cancel { by } => {
                let left = self.withdraw_all();
                self.record.status = CampaignStatus::Cancelled;
                let id = self.id().to_string();
                let ev = self.event("cancelled", Some(by));
                self.persist(WriteBatch::default(), Some(ev), ctx, move |act, _| {
                    for o in left {
                        act.svc
                            .sink
                            .withdraw(&id, &o.order_id, &o.meter_id, "campaign_cancelled");
                    }
                });
                None
            }
        }
    }
}

impl Actor for CampaignActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Orders released before a restart that are still open: release again (idempotent at
        // the meter), in case the process stopped between storing the release and sending it.
        let now = self.svc.clock.now();
        for id in &self.released_open {
            if let Some((_, meter)) = self.orders.get(id) {
                self.svc.sink.release(self.id(), id, meter, now);
            }
        }
        let ev = self.event("started", None);
        self.persist(WriteBatch::default(), Some(ev), ctx, |act, ctx| {
            act.step(ctx)
        });
    }
}

impl Handler<CampaignMsg> for CampaignActor {
    type Result = ();

    fn handle(&mut self, msg: CampaignMsg, ctx: &mut Context<Self>) {
        match msg {
            CampaignMsg::Enqueue(o) => {
                if self.orders.contains_key(o.order_id.as_str()) {
                    return;
                }
                self.orders.insert(
                    o.order_id.as_str().into(),
                    (o.zone.as_str().into(), o.meter_id.as_str().into()),
                );
                let ended = matches!(
                    self.record.status,
                    CampaignStatus::Cancelled | CampaignStatus::Expired
                );
                if ended {
                    let reason = if self.record.status == CampaignStatus::Cancelled {
                        "campaign_cancelled"
                    } else {
                        "campaign_expired"
                    };
                    self.svc
                        .sink
                        .withdraw(self.id(), &o.order_id, &o.meter_id, reason);
                    return;
                }
                if self.campaign.in_zone_scope(&o.zone) {
                    self.queue.push(&o);
                    if self.record.status == CampaignStatus::Finished {
                        self.record.status = CampaignStatus::Active;
                    }
                    self.step(ctx);
                }
            }
            CampaignMsg::Control(cmd, ack) => {
                let ev = self.control(cmd, ctx);
                match ev {
                    Some(ev) => {
                        self.persist(WriteBatch::default(), Some(ev), ctx, move |act, ctx| {
                            if let Some(a) = ack {
                                let _ = a.send(());
                            }
                            act.step(ctx);
                        })
                    }
                    None => {
                        // Cancel queued its own write; an ignored command has nothing to store.
                        if let Some(a) = ack {
                            let _ = a.send(());
                        }
                    }
                }
            }
            CampaignMsg::Stop => ctx.stop(),
            CampaignMsg::Outcome { order_id, status } => {
                let key: &str = &order_id;
                match status {
                    OrderStatus::Deferred => {
                        if self.released_open.contains(key) && self.deferred_seen.insert(key.into())
                        {
                            self.counts.deferred += 1;
                        }
                    }
                    s if s.is_terminal() && self.withdrawn.remove(key) => {
                        // Counted as cancelled when it was withdrawn.
                    }
                    s if s.is_terminal() => {
                        let was_released = self.released_open.remove(key);
                        match s {
                            OrderStatus::Completed => self.counts.completed += 1,
                            OrderStatus::Cancelled => self.counts.cancelled += 1,
                            _ => self.counts.failed += 1,
                        }
                        if !was_released {
                            // Withdrawn while waiting (payment, cancel, reconnect): drop it.
                            if let Some((zone, _)) = self.orders.get(key) {
                                let zone = zone.to_string();
                                self.queue.remove(&zone, key);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The campaigns of this instance: one actor each, found by campaign id.
pub struct Campaigns {
    actors: dashmap::DashMap<String, Addr<CampaignActor>>,
    /// `start` (load the stored orders, register the actor) excludes `enqueue` (look up, send):
    /// an order stored before a campaign starts is either in the load or in the mailbox.
    gate: std::sync::RwLock<()>,
    svc: CampaignServices,
    arbiter: ArbiterHandle,
}

impl Campaigns {
    pub fn new(svc: CampaignServices, arbiter: ArbiterHandle) -> Arc<Campaigns> {
        Arc::new(Campaigns {
            actors: dashmap::DashMap::new(),
            gate: std::sync::RwLock::new(()),
            svc,
            arbiter,
        })
    }

    /// Starts the actor of a stored campaign that has not ended.
    pub fn start(&self, record: CampaignRecord) -> Result<(), super::CampaignError> {
        let campaign = record.def.clone().validate(|_| true)?;
        let _g = self.gate.write().expect("lock");
        let orders = self
            .svc
            .store
            .store()
            .campaign_orders(&record.def.campaign_id)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read campaign orders");
                Vec::new()
            });
        let store = self.svc.store.store().clone();
        let statuses = move |id: &str| store.order(id).ok().flatten().map(|r| r.status);
        let id = record.def.campaign_id.clone();
        let actor = CampaignActor::new(self.svc.clone(), campaign, record, orders, &statuses);
        let addr = CampaignActor::start_in_arbiter(&self.arbiter, move |_| actor);
        self.actors.insert(id, addr);
        Ok(())
    }

    /// Resumes every stored campaign that has not ended (startup).
    pub fn resume_all(&self) -> usize {
        let all = self.svc.store.store().campaigns().unwrap_or_default();
        let mut n = 0;
        for r in all {
            let ended = matches!(
                r.status,
                CampaignStatus::Cancelled | CampaignStatus::Expired | CampaignStatus::Finished
            );
            if !ended {
                if let Err(e) = self.start(r) {
                    tracing::error!(error = %e, "stored campaign not resumed");
                } else {
                    n += 1;
                }
            }
        }
        n
    }

    /// The stored definition of a campaign, if it was ever defined.
    pub fn definition(&self, campaign_id: &str) -> Option<super::CampaignDef> {
        self.svc
            .store
            .store()
            .campaigns()
            .ok()?
            .into_iter()
            .find(|c| c.def.campaign_id == campaign_id)
            .map(|c| c.def)
    }

    pub fn exists(&self, campaign_id: &str) -> bool {
        self.actors.contains_key(campaign_id) || self.definition(campaign_id).is_some()
    }

    /// Takes in the open disconnects that match the campaign's `adopt` filter: each is listed
    /// with the campaign (stored), held by its meter, and queued. Scans the open orders in the
    /// store once. Returns how many were taken in.
    async fn adopt(&self, campaign: &super::Campaign) -> usize {
        let Some(filter) = &campaign.def.adopt else {
            return 0;
        };
        let id = campaign.id().to_string();
        let store = self.svc.store.store().clone();
        let meters = store.meters_with_open_work().unwrap_or_default();
        let mut rows = Vec::new();
        for m in meters {
            let Some(zone) = self.svc.sink.zone_of(&m) else {
                continue;
            };
            if !campaign.in_zone_scope(&zone) {
                continue;
            }
            for r in store.open_orders(&m).unwrap_or_default() {
                if filter.matches(&r.order) {
                    rows.push(CampaignOrder {
                        order_id: r.order.order_id.clone(),
                        meter_id: r.order.meter_id.clone(),
                        zone: zone.clone(),
                        priority: r.order.priority,
                        amount_cents: r
                            .order
                            .amount_due
                            .map(|a| (a * 100.0).round() as i64)
                            .unwrap_or(0),
                        seq: r.received_at.as_nanosecond() as u64,
                        released: false,
                    });
                }
            }
        }
        let batch = WriteBatch {
            campaign_orders: rows.iter().map(|o| (id.clone(), o.clone())).collect(),
            ..WriteBatch::default()
        };
        while let Err(e) = self.svc.store.write(batch.clone()).await {
            tracing::error!(error = %e, "adopted campaign orders not stored; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for o in &rows {
            self.svc.sink.adopt(&id, &o.order_id, &o.meter_id);
            self.enqueue(&id, o.clone());
        }
        tracing::info!(campaign = %id, adopted = rows.len(), "open orders taken into the campaign");
        rows.len()
    }

    /// Stores a new campaign and starts it. A campaign id already defined is refused.
    pub async fn define(&self, campaign: Campaign) -> Result<(), super::CampaignError> {
        if self.exists(campaign.id()) {
            return Err(super::CampaignError {
                campaign_id: campaign.id().to_string(),
                key: "campaign_id".into(),
                message: "is already defined; campaigns are immutable (use set_rate, pause, resume, cancel)".into(),
            });
        }
        let record = CampaignRecord {
            rate_per_hour: campaign.def.rate_per_hour,
            def: campaign.def.clone(),
            status: CampaignStatus::Active,
            last_release_at: None,
            released: 0,
            updated_at: self.svc.clock.now(),
        };
        let batch = WriteBatch {
            campaigns: vec![record.clone()],
            ..WriteBatch::default()
        };
        while let Err(e) = self.svc.store.write(batch.clone()).await {
            tracing::error!(error = %e, "campaign not stored; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.start(record)?;
        self.adopt(&campaign).await;
        Ok(())
    }

    pub fn enqueue(&self, campaign_id: &str, o: CampaignOrder) {
        let _g = self.gate.read().expect("lock");
        if let Some(a) = self.actors.get(campaign_id) {
            a.do_send(CampaignMsg::Enqueue(o));
        }
    }

    pub fn control(
        &self,
        campaign_id: &str,
        cmd: Command,
        ack: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> bool {
        match self.actors.get(campaign_id) {
            Some(a) => {
                a.do_send(CampaignMsg::Control(cmd, ack));
                true
            }
            None => false,
        }
    }

    /// Stops every campaign actor (shutdown).
    pub fn stop_all(&self) {
        for a in self.actors.iter() {
            a.do_send(CampaignMsg::Stop);
        }
        self.actors.clear();
    }

    /// Hands the meters' campaign outcomes to the campaign actors until shutdown (then what is
    /// already queued).
    pub async fn take_outcomes(
        self: Arc<Self>,
        mut outcomes: tokio::sync::mpsc::UnboundedReceiver<crate::domain::CampaignOutcome>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                o = outcomes.recv() => match o {
                    Some(o) => self.outcome(&o.campaign_id, &o.order_id, o.status),
                    None => return,
                },
                _ = shutdown.changed() => {
                    while let Ok(o) = outcomes.try_recv() {
                        self.outcome(&o.campaign_id, &o.order_id, o.status);
                    }
                    return;
                }
            }
        }
    }

    pub fn outcome(&self, campaign_id: &str, order_id: &str, status: OrderStatus) {
        if let Some(a) = self.actors.get(campaign_id) {
            a.do_send(CampaignMsg::Outcome {
                order_id: order_id.to_string(),
                status,
            });
        }
    }
}
