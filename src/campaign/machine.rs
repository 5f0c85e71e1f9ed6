//! The campaign state machine: pure, no I/O, no clock. Given an input, the time, and what policy
//! bars per zone at a time, it changes the campaign's state and returns the actions the campaign
//! actor performs: what to store (the record, a release, an event: one write per step) and,
//! once that write is durable, the releases and withdrawals to send and the next wake to arm.
//! Invariants it owns:
//! - nothing is released unless the campaign is active and `now` is inside one of its windows,
//!   at or after `start_at` and before `end_by` ([`Campaign::next_open`]`(now) == now`);
//! - the rate: releases follow a grid of one per period (`3600 / rate` seconds) at the rate in
//!   force (governor's GCRA with a burst of one, and the stored last release across a restart
//!   or a rate change). A wake that fires late (a slow store write, a busy thread) is charged
//!   to its planned instant when it is at most one period late, so lateness is made up by the
//!   next releases instead of lost for good; a later one starts the grid again (no catch-up
//!   burst after a pause or a closed window). Two releases are never less than half a period
//!   apart, and no sliding hour holds more than the rate (the hour log: the `rate`-th release
//!   before is at least an hour old). With `zone_rate_per_hour`, the zones keep strict
//!   spacing (after a restart every zone waits a zone period after the stored last release);
//! - never into a zone that policy bars at `now`; that zone keeps its place in the queue;
//! - each order is released at most once, and its release is stored in the step that sends it
//!   (the actor sends nothing before the step's write); after a restart the releases still
//!   open are sent again (idempotent at the meter) without being counted again;
//! - nothing is released after a cancel or an expiry: the orders waiting then are withdrawn
//!   (and counted cancelled), and an order that arrives later is withdrawn at once;
//! - an order whose meter is outside the campaign's zones is never released: it is withdrawn
//!   as it arrives (`outside_campaign_zones`), and again at a restart while it is still open,
//!   so its meter never holds it for a release that cannot come;
//! - counts add up: every order of the campaign is waiting, released and open, closed
//!   (completed, failed or cancelled: counted once) or withdrawn; the releases stored are the
//!   released orders, open or closed;
//! - an active campaign with orders waiting always has a wake armed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock as GovClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::plan::ZoneBar;
use super::{Campaign, CampaignEvent, CampaignOrder, CampaignRecord, CampaignStatus, Queue};
use crate::domain::{OrderStatus, Timestamp};

/// An operator's command (campaign-control topic).
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Pause { by: String },
    Resume { by: String },
    Cancel { by: String },
    SetRate { rate_per_hour: u32, by: String },
}

#[derive(Debug, Clone)]
pub(crate) enum Input {
    /// The actor started: the first start, or a restart from the store.
    Start,
    /// A new order of this campaign (stored already).
    Enqueue(CampaignOrder),
    Control(Command),
    /// An order of the campaign reached a new status at its meter.
    Outcome {
        order_id: String,
        status: OrderStatus,
    },
    /// The wake armed last is due.
    Wake,
    /// Send the releases still open again: a meter changed hands (a rebalance), and a
    /// release delivered to its old owner's actor just before may have been dropped there.
    ResendOpen,
}

/// What the actor does. `Save`, `SaveRelease` and `Publish` go into the step's one store write;
/// the others are performed, in their order, once that write is durable.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// The campaign record as the step leaves it (at most one per step, the last action).
    Save(CampaignRecord),
    /// The order's campaign row is marked released at `at`.
    SaveRelease { order_id: Box<str>, at: Timestamp },
    /// A campaign event (outbox: published once stored).
    Publish(CampaignEvent),
    /// Release an order to its meter (a new release: counted in the metrics).
    Release {
        order_id: Box<str>,
        meter_id: Box<str>,
        at: Timestamp,
    },
    /// Send a release stored before a restart again (the meter ignores a repeat).
    Resend {
        order_id: Box<str>,
        meter_id: Box<str>,
        at: Timestamp,
    },
    /// Withdraw an order that was never released from its meter.
    Withdraw {
        order_id: Box<str>,
        meter_id: Box<str>,
        reason: &'static str,
    },
    /// Step again (`Input::Wake`) at `at`, instead of the wake armed before.
    WakeAt(Timestamp),
    /// No wake any more (paused).
    Disarm,
    /// A command for a campaign that has ended: nothing changed.
    Ignored(Command),
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Counts {
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) cancelled: u64,
    /// Released orders policy deferred at least once (since this machine started).
    pub(crate) deferred: u64,
}

/// Publish a progress event every this many releases (and on every state change).
pub(crate) const PROGRESS_EVERY: u64 = 100;
/// When every waiting zone is barred until facts change, look again this often.
pub(crate) const FACT_RECHECK: Duration = Duration::from_secs(15 * 60);

/// governor's clock, reading the time the machine was given (never a real clock).
#[derive(Debug, Default)]
struct StepClock(AtomicU64);

impl GovClock for StepClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

/// The release budget: governor's GCRA limiter with a burst of one (one release per period,
/// never two at once), on the time the release is charged at.
struct Budget(RateLimiter<NotKeyed, InMemoryState, StepClock, NoOpMiddleware<Duration>>);

impl Budget {
    fn new(rate_per_hour: u32) -> Budget {
        let quota = Quota::with_period(Campaign::period(rate_per_hour))
            .expect("rate validated: period > 0")
            .allow_burst(std::num::NonZeroU32::MIN);
        Budget(RateLimiter::direct_with_clock(quota, StepClock::default()))
    }

    /// Takes one release at `now`, or says how long until one is allowed.
    fn take(&self, now: Timestamp) -> Result<(), Duration> {
        let t = Duration::from_nanos(now.as_nanosecond().max(0) as u64);
        self.0
            .clock()
            .0
            .store(t.as_nanos() as u64, Ordering::Relaxed);
        self.0.check().map_err(|n| n.wait_time_from(t))
    }
}

const HOUR: Duration = Duration::from_secs(3600);

/// The pace of releases: the [`Budget`] (the grid of one release per period), the instant the
/// last release was charged to, the minimum spacing, and the hour log that keeps every sliding
/// hour within the rate when a late release is made up.
#[derive(Debug)]
struct Pace {
    rate: u32,
    budget: Budget,
    /// The grid instant the last release was charged to (after a restart or a rate change: the
    /// stored last release; `None`: none yet).
    charged: Option<Timestamp>,
    /// When the last release actually went.
    last: Option<Timestamp>,
    /// The instants of the last `rate` releases at this rate, oldest first.
    hour: std::collections::VecDeque<Timestamp>,
}

impl Pace {
    /// At `rate`, the last release at `last`, after the releases `recent` (any order; the last
    /// `rate` of them are kept).
    fn new(rate: u32, last: Option<Timestamp>, mut recent: Vec<Timestamp>) -> Pace {
        recent.sort_unstable();
        let keep = recent.len().saturating_sub(rate as usize);
        Pace {
            rate,
            budget: Budget::new(rate),
            charged: last,
            last,
            hour: recent.drain(keep..).collect(),
        }
    }

    fn period(&self) -> Duration {
        Campaign::period(self.rate)
    }

    /// The grid's next instant.
    fn planned(&self) -> Option<Timestamp> {
        self.charged.map(|c| add(c, self.period()))
    }

    /// The earliest instant at or after `now` the grid, the spacing and the hour log allow a
    /// release.
    fn floor(&self, now: Timestamp) -> Timestamp {
        let spacing = self.last.map(|l| add(l, self.period() / 2));
        let hour = (self.hour.len() >= self.rate as usize).then(|| add(self.hour[0], HOUR));
        [self.planned(), spacing, hour]
            .into_iter()
            .flatten()
            .fold(now, Timestamp::max)
    }

    /// Takes one release at `now` (at or after [`floor`](Self::floor)), or says how long until
    /// one is allowed. In a step that answers a wake (`woken`), a release at most one period
    /// behind the grid's next instant is charged to that instant, so the grid holds; otherwise
    /// the grid starts again from `now`.
    fn take(&mut self, now: Timestamp, woken: bool) -> Result<(), Duration> {
        let floor = self.floor(now);
        if floor > now {
            return Err(dur(now, floor));
        }
        let at = match self.planned() {
            Some(p) if woken && now <= add(p, self.period()) => p,
            _ => now,
        };
        self.budget.take(at)?;
        self.charged = Some(at);
        self.last = Some(now);
        if self.hour.len() >= self.rate as usize {
            self.hour.pop_front();
        }
        self.hour.push_back(now);
        Ok(())
    }
}

/// `to - from`, zero when `to` is not later.
fn dur(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or(Duration::ZERO)
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Budget")
    }
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

/// One campaign: its record, the queue of orders waiting, and the bookkeeping of its orders.
#[derive(Debug)]
pub(crate) struct CampaignMachine {
    campaign: Campaign,
    record: CampaignRecord,
    queue: Queue,
    /// Every order the campaign knows, with its zone and meter.
    orders: HashMap<Box<str>, (Box<str>, Box<str>)>,
    /// Released and not closed (outcomes are counted once).
    released_open: HashSet<Box<str>>,
    deferred_seen: HashSet<Box<str>>,
    /// Orders whose final status was counted: a repeated outcome (at least once from another
    /// instance's outbox) is not counted again.
    closed: HashSet<Box<str>>,
    /// Withdrawn by a cancel or an expiry and counted cancelled then (their meters' outcomes
    /// are not counted again).
    withdrawn: HashSet<Box<str>>,
    counts: Counts,
    pace: Pace,
    zone_next: HashMap<String, Timestamp>,
    /// After a restart with a zone rate: no zone releases before this (the store keeps the
    /// campaign's last release, not each zone's).
    zone_floor: Option<Timestamp>,
    /// The wake armed (the actor holds its timer).
    wake: Option<Timestamp>,
    since_progress: u64,
    /// Open orders found at a restart whose meters are outside the campaign's zones: withdrawn
    /// again at `Start` (the meter ignores a repeat).
    outside_open: Vec<Box<str>>,
}

#[derive(Default)]
struct Out {
    actions: Vec<Action>,
    /// The record changed: the step ends with a `Save`.
    save: bool,
}

impl CampaignMachine {
    /// A campaign from its stored record and orders (`released` flags from the store), with
    /// the status each order has in the store.
    pub(crate) fn new(
        campaign: Campaign,
        record: CampaignRecord,
        orders: Vec<CampaignOrder>,
        statuses: &dyn Fn(&str) -> Option<OrderStatus>,
    ) -> CampaignMachine {
        let mut queue = Queue::new(campaign.def.ordering);
        let mut known = HashMap::with_capacity(orders.len());
        let mut released_open = HashSet::new();
        let mut closed = HashSet::new();
        let mut counts = Counts::default();
        let mut waiting = Vec::new();
        let mut outside_open = Vec::new();
        let mut recent = Vec::new();
        for o in &orders {
            recent.extend(o.released_at);
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
            if terminal {
                closed.insert(o.order_id.as_str().into());
            }
            if o.released {
                queue.count_released(&o.zone);
                if !terminal {
                    released_open.insert(o.order_id.as_str().into());
                }
            } else if !terminal && campaign.in_zone_scope(&o.zone) {
                waiting.push(o);
            } else if !terminal {
                outside_open.push(o.order_id.as_str().into());
            }
        }
        queue.extend(waiting);
        let zone_floor = campaign
            .def
            .zone_rate_per_hour
            .zip(record.last_release_at)
            .map(|(zr, last)| add(last, Campaign::period(zr)));
        CampaignMachine {
            pace: Pace::new(record.rate_per_hour, record.last_release_at, recent),
            campaign,
            record,
            queue,
            orders: known,
            released_open,
            deferred_seen: HashSet::new(),
            closed,
            withdrawn: HashSet::new(),
            counts,
            zone_next: HashMap::new(),
            zone_floor,
            wake: None,
            since_progress: 0,
            outside_open,
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.record.def.campaign_id
    }

    /// Takes one input at `now`; `bar` says whether policy bars a zone at a time (and until
    /// when, if the facts known say so).
    pub(crate) fn step(&mut self, input: Input, now: Timestamp, bar: &ZoneBar) -> Vec<Action> {
        let mut out = Out::default();
        match input {
            Input::Start => {
                self.resend_open(now, &mut out);
                self.outside_open.sort();
                for id in std::mem::take(&mut self.outside_open) {
                    if let Some((_, meter)) = self.orders.get(&id) {
                        out.actions.push(Action::Withdraw {
                            order_id: id.clone(),
                            meter_id: meter.clone(),
                            reason: OUTSIDE_ZONES,
                        });
                    }
                }
                self.publish("started", None, now, &mut out);
                self.tick(now, false, bar, &mut out);
            }
            Input::Enqueue(o) => self.enqueue(o, now, bar, &mut out),
            Input::Control(cmd) => self.control(cmd, now, bar, &mut out),
            Input::Outcome { order_id, status } => self.outcome(&order_id, status),
            Input::Wake => {
                self.wake = None;
                self.tick(now, true, bar, &mut out);
            }
            Input::ResendOpen => self.resend_open(now, &mut out),
        }
        if out.save {
            self.record.updated_at = now;
            out.actions.push(Action::Save(self.record.clone()));
        }
        out.actions
    }

    fn ended(&self) -> bool {
        matches!(
            self.record.status,
            CampaignStatus::Cancelled | CampaignStatus::Finished | CampaignStatus::Expired
        )
    }

    fn enqueue(&mut self, o: CampaignOrder, now: Timestamp, bar: &ZoneBar, out: &mut Out) {
        if self.orders.contains_key(o.order_id.as_str()) {
            return;
        }
        self.orders.insert(
            o.order_id.as_str().into(),
            (o.zone.as_str().into(), o.meter_id.as_str().into()),
        );
        if self.closed.contains(o.order_id.as_str()) {
            // Its final outcome came first (from another instance, on another partition than
            // the record that it joined): nothing to release.
            return;
        }
        if let Some(reason) = withdraw_reason(self.record.status) {
            out.actions.push(Action::Withdraw {
                order_id: o.order_id.into(),
                meter_id: o.meter_id.into(),
                reason,
            });
            return;
        }
        if !self.campaign.in_zone_scope(&o.zone) {
            // Its meter holds it for a release that would never come: give it back now, with
            // the reason, rather than let it wait forever.
            out.actions.push(Action::Withdraw {
                order_id: o.order_id.into(),
                meter_id: o.meter_id.into(),
                reason: OUTSIDE_ZONES,
            });
            return;
        }
        self.queue.push(&o);
        if self.record.status == CampaignStatus::Finished {
            // Active again, and stored so: a restart must not take it for finished.
            self.record.status = CampaignStatus::Active;
            out.save = true;
        }
        self.tick(now, false, bar, out);
    }

    fn control(&mut self, cmd: Command, now: Timestamp, bar: &ZoneBar, out: &mut Out) {
        if self.ended() {
            out.actions.push(Action::Ignored(cmd));
            return;
        }
        let (kind, by) = match cmd {
            Command::Pause { by } => {
                self.record.status = CampaignStatus::Paused;
                if self.wake.take().is_some() {
                    out.actions.push(Action::Disarm);
                }
                ("paused", by)
            }
            Command::Resume { by } => {
                self.record.status = CampaignStatus::Active;
                ("resumed", by)
            }
            Command::SetRate { rate_per_hour, by } => {
                self.record.rate_per_hour = rate_per_hour;
                // A new grid and hour log at the new rate, from the last release.
                self.pace = Pace::new(rate_per_hour, self.record.last_release_at, Vec::new());
                ("rate_changed", by)
            }
            Command::Cancel { by } => {
                self.end(CampaignStatus::Cancelled, "cancelled", Some(by), now, out);
                return;
            }
        };
        self.publish(kind, Some(by), now, out);
        self.tick(now, false, bar, out);
    }

    /// The releases still open, again (idempotent at the meter), in order id order.
    fn resend_open(&self, now: Timestamp, out: &mut Out) {
        let mut open: Vec<&Box<str>> = self.released_open.iter().collect();
        open.sort();
        for id in open {
            if let Some((_, meter)) = self.orders.get(id) {
                out.actions.push(Action::Resend {
                    order_id: id.clone(),
                    meter_id: meter.clone(),
                    at: now,
                });
            }
        }
    }

    fn outcome(&mut self, key: &str, status: OrderStatus) {
        if status.is_terminal() && !self.closed.insert(key.into()) {
            return; // counted already (an outcome repeated)
        }
        match status {
            OrderStatus::Deferred => {
                if self.released_open.contains(key) && self.deferred_seen.insert(key.into()) {
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

    /// Releases the next order if everything allows it now; otherwise arms the wake for the
    /// earliest time something may change. `woken`: the step answers a wake (its lateness may
    /// be made up).
    fn tick(&mut self, now: Timestamp, woken: bool, bar: &ZoneBar, out: &mut Out) {
        if self.record.status != CampaignStatus::Active {
            return;
        }
        if self.queue.is_empty() {
            if !self.orders.is_empty() {
                self.end(CampaignStatus::Finished, "finished", None, now, out);
            }
            return;
        }
        let Some(open) = self.campaign.next_open(now) else {
            self.end(CampaignStatus::Expired, "expired", None, now, out);
            return;
        };
        let floor = self.next_release_floor(open);
        if floor > now {
            self.arm(floor, out);
            return;
        }
        // The zones that may release now: not barred by policy, under their own rate. The
        // queue's ordering then decides among them.
        let mut wait_until: Option<Timestamp> = None;
        let mut free_zones: HashSet<String> = HashSet::new();
        for (zone, _) in self.queue.waiting_by_zone() {
            let zone_free = (self.zone_next.get(zone).copied())
                .or(self.zone_floor)
                .unwrap_or(now);
            let free = match bar(zone, now) {
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
                out,
            );
            return;
        }
        if let Err(wait) = self.pace.take(now, woken) {
            self.arm(add(now, wait.max(Duration::from_millis(1))), out);
            return;
        }
        let Some((zone, o)) = self.queue.pop(|z| free_zones.contains(z)) else {
            return;
        };
        if let Some(zr) = self.campaign.def.zone_rate_per_hour {
            self.zone_next.insert(zone, add(now, Campaign::period(zr)));
        }
        self.record.released += 1;
        self.record.last_release_at = Some(now);
        self.released_open.insert(o.order_id.clone());
        out.save = true;
        out.actions.push(Action::SaveRelease {
            order_id: o.order_id.clone(),
            at: now,
        });
        self.since_progress += 1;
        if self.since_progress >= PROGRESS_EVERY {
            self.since_progress = 0;
            self.publish("progress", None, now, out);
        }
        out.actions.push(Action::Release {
            order_id: o.order_id,
            meter_id: o.meter_id,
            at: now,
        });
        // The next release is decided in a fresh turn of the actor's mailbox (controls and
        // outcomes queued meanwhile are handled first).
        self.arm(now, out);
    }

    /// Cancelled, expired or finished: what still waits is withdrawn and counted cancelled.
    fn end(
        &mut self,
        status: CampaignStatus,
        kind: &'static str,
        by: Option<String>,
        now: Timestamp,
        out: &mut Out,
    ) {
        let left = self.queue.drain();
        for o in &left {
            if self.withdrawn.insert(o.order_id.clone()) {
                self.counts.cancelled += 1;
            }
        }
        self.record.status = status;
        let reason = withdraw_reason(status).unwrap_or("campaign_expired");
        for o in left {
            out.actions.push(Action::Withdraw {
                order_id: o.order_id,
                meter_id: o.meter_id,
                reason,
            });
        }
        self.publish(kind, by, now, out);
    }

    fn arm(&mut self, at: Timestamp, out: &mut Out) {
        if self.wake != Some(at) {
            self.wake = Some(at);
            out.actions.push(Action::WakeAt(at));
        }
    }

    /// The earliest time the rate allows the next release: the grid's next instant (the last
    /// release's charged instant + period; after a restart or a rate change the stored last
    /// release + period) and the hour log.
    fn next_release_floor(&self, now: Timestamp) -> Timestamp {
        self.pace.floor(now)
    }

    fn publish(&self, kind: &str, by: Option<String>, now: Timestamp, out: &mut Out) {
        out.save = true;
        out.actions.push(Action::Publish(self.event(kind, by, now)));
    }

    fn event(&self, kind: &str, by: Option<String>, now: Timestamp) -> CampaignEvent {
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
}

/// Why an order is withdrawn from a campaign in this status, if it is.
/// The reason an order whose meter is outside the campaign's zones is withdrawn with.
pub(crate) const OUTSIDE_ZONES: &str = "outside_campaign_zones";

fn withdraw_reason(status: CampaignStatus) -> Option<&'static str> {
    match status {
        CampaignStatus::Cancelled => Some("campaign_cancelled"),
        CampaignStatus::Expired => Some("campaign_expired"),
        _ => None,
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
