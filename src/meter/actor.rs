//! The meter actor: loads its snapshot on activation, feeds each message to the pure
//! [`MeterMachine`](super::machine::MeterMachine), persists the resulting state, audit rows,
//! commands and outbox events in one store write, and only after that write is durable performs
//! the side effects (dispatch to the head-end, arm deadline and wake timers). The mailbox is
//! held (`ctx.wait`) while a write is in progress, so steps of one meter never interleave.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::machine::{Action, Input, MeterFacts, MeterMachine};
use super::{Directory, Liveness, MeterMsg};
use crate::domain::{CommandOutcome, MeterFlags, OrderStatus, Timestamp};
use crate::head_end::health::Admission;
use crate::observability::{self, metrics};
use crate::registry::CompactMeter;
use crate::retry::Backoff;
use crate::store::{CommandRecord, OrderUpdate, OutboxMessage, WriteBatch};

#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Deliver(
    pub MeterMsg,
    pub Option<tokio::sync::oneshot::Sender<()>>,
    /// When the message was handed to the directory (for the internal latency probes).
    pub std::time::Instant,
);

/// What the message being handled was, and when it was handed over: an order (its first
/// dispatch is timed) or a head-end answer (the order's completion is timed).
enum Arrival {
    Order(String, std::time::Instant),
    Result(std::time::Instant),
}

/// Kept small (issue 12: a live meter costs its actix context plus this): the meter id lives
/// once, in the machine, shared with the directory's key; registry facts are kept as the
/// registry's 12-byte record and expanded per step; wake-ups go to the directory's one timer.
pub(crate) struct MeterActor {
    dir: Arc<Directory>,
    /// Shared with the directory's entry: queued messages, idleness, and the actor's identity
    /// (a passivation removes the entry only if it is still this actor's).
    live: Arc<Liveness>,
    machine: MeterMachine,
    /// The meter's registry record as last seen (kept if the meter leaves the registry);
    /// `None` until it has been seen.
    known: Option<CompactMeter>,
    /// The deadline timer of the command in flight.
    deadline: Option<SpawnHandle>,
    /// The head-end breaker's verdict taken for the step under way.
    admission: Admission,
    /// Registered with the breaker as holding orders for a down head-end.
    held_for_head_end: bool,
    /// Its places with network segments, if throttled (boxed: most meters have none, and an
    /// idle actor stays under 1 KiB; dropped once empty).
    segment: Option<Box<SegmentSlots>>,
}

/// A meter's places with network segments (`head_end.segments`).
#[derive(Default)]
struct SegmentSlots {
    /// The segment whose ticket this meter holds (its command in flight, or the step under
    /// way).
    ticket: Option<Arc<str>>,
    /// The segment that refused this step a ticket.
    refused: Option<Arc<str>>,
    /// The segment whose queue this meter waits in.
    queued: Option<Arc<str>>,
}

impl MeterActor {
    /// Drops the segment box once it holds nothing.
    fn tidy_segment(&mut self) {
        if self
            .segment
            .as_ref()
            .is_some_and(|s| s.ticket.is_none() && s.refused.is_none() && s.queued.is_none())
        {
            self.segment = None;
        }
    }
}

/// Moves what a step's `actions` must store into `batch` (audit rows; events, exceptions and
/// move links as JSON in the outbox; commands, stored before they are sent; final order statuses; orders
/// the machine raised) and returns what is done once it is durable (dispatches, timers).
///
/// `topics` are the events, exceptions and control topics; `meter` is the stepping meter's id,
/// shared as the key of its own events.
pub fn record_actions(
    actions: Vec<Action>,
    batch: &mut WriteBatch,
    topics: [&std::sync::Arc<str>; 3],
    meter: &std::sync::Arc<str>,
) -> Vec<Action> {
    let [events_topic, exceptions_topic, control_topic] = topics;
    let key = |id: &str| -> std::sync::Arc<str> {
        if id == &**meter {
            meter.clone()
        } else {
            id.into()
        }
    };
    let mut effects = Vec::new();
    for a in actions {
        match a {
            Action::Audit(e) => batch.audit.push(e),
            Action::Decided(_) => {}
            Action::Event(e) => {
                if e.status.is_terminal() {
                    batch.order_updates.push(OrderUpdate {
                        order_id: e.order_id.clone(),
                        meter_id: e.meter_id.clone(),
                        status: e.status,
                        reason: e.reason.clone(),
                        at: e.at,
                    });
                }
                batch.outbox.push(OutboxMessage {
                    topic: events_topic.clone(),
                    key: key(&e.meter_id),
                    payload: serde_json::to_vec(&e).expect("serialize"),
                });
            }
            Action::Exception(x) => {
                batch.outbox.push(OutboxMessage {
                    topic: exceptions_topic.clone(),
                    key: key(&x.meter_id),
                    payload: serde_json::to_vec(&x).expect("serialize"),
                });
                batch.exceptions.push(x);
            }
            Action::Dispatch(c) => {
                batch.commands.push(c.clone());
                effects.push(Action::Dispatch(c));
            }
            Action::NewOrder(r) => batch.new_orders.push(r),
            Action::Link(l) => batch.outbox.push(OutboxMessage {
                topic: control_topic.clone(),
                key: key(&l.meter_id),
                payload: serde_json::to_vec(&l).expect("serialize"),
            }),
            Action::Handover(h) => {
                for o in &h.orders {
                    batch
                        .carried_away
                        .push((h.from_meter_id.clone(), o.order_id.clone()));
                }
                batch.outbox.push(OutboxMessage {
                    topic: control_topic.clone(),
                    key: key(&h.meter_id),
                    payload: serde_json::to_vec(&h).expect("serialize"),
                });
            }
            Action::TakeOver(r) => batch.carried_in.push(r),
            // (Handled by the actor at once: nothing to store or do after the write.)
            Action::AwaitSegment { .. } => {}
            Action::Watch(c) => {
                batch.watches.push(c.clone());
                effects.push(Action::Watch(c));
            }
            other => effects.push(other),
        }
    }
    effects
}

/// A disconnect whose decision is older than this when its write completes is not sent.
const STALE_DISCONNECT: Duration = Duration::from_secs(10);

static NOT_SENT_LOG: crate::observability::LogLimiter = crate::observability::LogLimiter::new();

fn until(now: Timestamp, at: Timestamp) -> Duration {
    let d = at.duration_since(now);
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

impl MeterActor {
    pub(crate) fn new(id: Arc<str>, dir: Arc<Directory>, live: Arc<Liveness>) -> MeterActor {
        MeterActor {
            admission: Admission::Go,
            held_for_head_end: false,
            segment: None,
            machine: MeterMachine::new(id),
            dir,
            live,
            known: None,
            deadline: None,
        }
    }

    fn id(&self) -> &Arc<str> {
        &self.machine.meter_id
    }

    /// A wake-up (a retry or hold coming due) while the store's writers are behind: asked
    /// again a little later, spread over a second, instead of deciding now. A decision made
    /// now would wait in the store's queue, and a disconnect decided more than 10 s before
    /// its write is durable is not sent; after a restart with 900,000 open orders, meters
    /// retrying that way kept the queue over 10 s for good (recovery-1m: 1.7M disconnects
    /// held back, none sent for minutes). Decisions wait for room instead; nothing is written.
    fn defer_wake(&mut self) {
        let spread = self
            .id()
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
            % 750;
        let delay = Duration::from_millis(250 + spread);
        let at = self.dir.services().clock.now()
            + jiff::SignedDuration::try_from(delay).unwrap_or_default();
        metrics().wakes_deferred.increment(1);
        self.dir.wake_at(self.id().clone(), at);
        self.live.set_idle(self.dormant(), &self.dir);
    }

    /// Nothing in progress: no command in flight (a command held back as stale is still in
    /// flight until the machine has heard so), no deadline. Its open orders, if any, are held
    /// (until a time, zone facts, an approval or a release) and stored with its snapshot, so
    /// the actor may passivate.
    fn dormant(&self) -> bool {
        self.machine.in_flight.is_none() && self.deadline.is_none()
    }

    /// Tells the head-end's breaker how the command in flight ended, before the breaker's
    /// verdict for this step is taken (so the failure that opens it already holds this
    /// meter): a communication failure or a missed deadline counts against the head-end,
    /// any other answer for it.
    fn record_outcomes(&self, inputs: &[Input]) {
        let Some(f) = &self.machine.in_flight else {
            return;
        };
        let failed = inputs.iter().find_map(|i| match i {
            Input::Result(r) if r.command_id == f.command.command_id => Some(match &r.outcome {
                CommandOutcome::Confirmed { .. } => false,
                CommandOutcome::Failed { code, .. } => {
                    code.class() == crate::domain::FailureClass::Communication
                }
            }),
            Input::Deadline(id) if *id == f.command.command_id => {
                // A deadline noticed long after it passed (this process was frozen, or its
                // meters were backed up) says nothing about the head-end: not counted.
                let now = self.dir.services().clock.now();
                let window = f.command.deadline.duration_since(f.command.issued_at);
                let late = now.duration_since(f.command.deadline);
                let slack = (window / 2).max(jiff::SignedDuration::from_secs(1));
                (late <= slack).then_some(true)
            }
            _ => None,
        });
        if let Some(failed) = failed {
            let svc = self.dir.services();
            let head_end: Arc<str> = f.command.head_end_id.as_str().into();
            svc.head_ends
                .record(&head_end, svc.clock.now(), f.command.issued_at, failed);
        }
    }

    /// Registry facts are re-read before every step (they may change at any time). A meter that
    /// is not (or no longer) in the registry keeps its last known facts; one never seen is
    /// unknown, and its orders wait for its registry record (never "has no switch").
    fn load_facts(&mut self) -> MeterFacts {
        let svc = self.dir.services();
        let id = &self.machine.meter_id;
        if let Some(now) = svc.registry.compact(id) {
            if let Some(old) = self.known.filter(|old| !old.same_zone(&now)) {
                svc.facts.release(&svc.registry.zone_of(&old), id);
            }
            self.known = Some(now);
        }
        let (has_switch, head_end_id, zone, flags) = match &self.known {
            Some(c) => (
                c.flags.contains(MeterFlags::HAS_SWITCH),
                svc.registry.head_end_of(c),
                svc.registry.zone_of(c),
                c.flags,
            ),
            None => (false, "unknown".into(), "".into(), MeterFlags::empty()),
        };
        let (mut head_end, admission) = svc.head_ends.facts(&head_end_id, flags, svc.clock.now());
        self.admission = admission;
        // Throttling per segment: a ticket before a step that could send.
        if let Some(s) = &mut self.segment {
            s.refused = None;
        }
        if self.segment.as_ref().is_none_or(|s| s.ticket.is_none())
            && head_end.down_until.is_none()
            && svc.head_ends.segments.enabled()
        {
            let by = svc.head_ends.segment_by;
            let segment = self.known.and_then(|c| svc.registry.segment_of(&c, by));
            match svc.head_ends.segments.take(segment.as_ref(), id) {
                crate::head_end::segments::Ticket::Taken => {
                    let s = self.segment.get_or_insert_with(Box::default);
                    s.ticket = segment;
                    s.queued = None;
                }
                crate::head_end::segments::Ticket::Refused => {
                    head_end.segment_full = true;
                    self.segment.get_or_insert_with(Box::default).refused = segment;
                }
                crate::head_end::segments::Ticket::Free => {}
            }
        }
        MeterFacts {
            head_end,
            known: self.known.is_some(),
            // A meter revoked from this instance (its actor is stopping), or whose unit was
            // just assigned and its facts are not applied yet, starts no command.
            draining: self.dir.draining() || !self.dir.acting(id),
            has_switch,
            head_end_id,
            forecasts: svc.facts.forecasts(&zone),
            zone,
            flags,
            policy: svc.policy.clone(),
            emergencies: svc.facts.emergencies(),
            reads: svc.read_rules.clone(),
        }
    }

    fn handle(&mut self, input: Input, extra: WriteBatch, ctx: &mut Context<Self>) {
        self.handle_all(vec![input], extra, None, None, ctx)
    }

    /// Steps the machine through `inputs`, then persists everything in ONE write and performs
    /// the side effects after it. One handler must queue at most one `ctx.wait`: actix runs
    /// queued waits newest first.
    fn handle_all(
        &mut self,
        inputs: Vec<Input>,
        extra: WriteBatch,
        ack: Option<tokio::sync::oneshot::Sender<()>>,
        arrival: Option<Arrival>,
        ctx: &mut Context<Self>,
    ) {
        self.record_outcomes(&inputs);
        let facts = self.load_facts();
        let dir = self.dir.clone();
        let svc = dir.services();
        let now = svc.clock.now();
        let m = metrics();
        let before = self.machine.clone();
        let mut batch = extra;
        let mut effects = Vec::new();
        let mut campaign_outcomes = Vec::new();
        let outcomes_tx = svc.campaign_outcomes.clone();
        let mut completes = false;
        for input in inputs {
            let had_in_flight = self.machine.in_flight.is_some();
            if let Input::Result(r) = &input {
                if let Some(f) = &self.machine.in_flight {
                    if f.command.command_id == r.command_id {
                        let secs = until(f.command.issued_at, now).as_secs_f64();
                        m.command_latency.record(secs);
                        match r.outcome {
                            CommandOutcome::Confirmed { .. } => m.results_confirmed.increment(1),
                            CommandOutcome::Failed { code, .. } => {
                                m.results_failed.increment(1);
                                observability::command_failed(code);
                            }
                        }
                        if let Some(h) = self.deadline.take() {
                            ctx.cancel_future(h);
                        }
                    } else {
                        m.results_late.increment(1);
                    }
                }
            }
            if let Input::Deadline(id) = &input {
                // (The timer that fired was the in-flight command's: a deadline armed for
                // another command would have been cancelled.)
                if self
                    .machine
                    .in_flight
                    .as_ref()
                    .is_some_and(|f| &f.command.command_id == id)
                {
                    self.deadline = None;
                    m.results_timed_out.increment(1);
                }
            }
            let mut actions = self.machine.step(input, now, &facts, &svc.retry);
            for a in &mut actions {
                if let Action::Handover(h) = a {
                    // When each carried order was received, from its stored record (read
                    // behind this meter's own writes), so that it keeps it at the new meter.
                    if let Ok(records) = svc.store.store().open_orders(&h.from_meter_id) {
                        for r in records {
                            h.received_at.insert(r.order.order_id, r.received_at);
                        }
                    }
                    h.received_at
                        .retain(|id, _| h.orders.iter().any(|o| &o.order_id == id));
                }
            }
            if had_in_flight && self.machine.in_flight.is_none() {
                dir.in_flight_changed(-1);
            } else if !had_in_flight && self.machine.in_flight.is_some() {
                dir.in_flight_changed(1);
            }
            for a in &actions {
                match a {
                    Action::AwaitSegment { restoring } => {
                        // The segment that refused this step's ticket: the meter queues there.
                        let refused = self.segment.as_mut().and_then(|s| {
                            let seg = s.refused.clone()?;
                            s.queued = Some(seg.clone());
                            Some(seg)
                        });
                        if let Some(seg) = refused {
                            let woken = svc.head_ends.segments.wait(&seg, self.id(), *restoring);
                            for m in woken {
                                dir.deliver(&m, super::MeterMsg::Wake);
                            }
                        }
                    }
                    Action::Decided(verdict) => observability::policy_decision(*verdict),
                    Action::Event(e) => {
                        m.order_status[e.status as usize].increment(1);
                        completes |= e.status.is_terminal();
                        if let Some(c) = &e.campaign_id {
                            // A campaign another instance owns hears it from this step's
                            // outbox (stored with the status); one here, once it is stored.
                            let remote = dir.to_owner(c, || {
                                super::ToOwner::Campaign(
                                    crate::domain::ControlRecord::OrderOutcome {
                                        schema_version: 1,
                                        campaign_id: c.clone(),
                                        order_id: e.order_id.clone(),
                                        status: e.status,
                                    },
                                )
                            });
                            match remote {
                                Some(m) => batch.outbox.push(m),
                                None => campaign_outcomes.push(crate::domain::CampaignOutcome {
                                    campaign_id: c.clone(),
                                    order_id: e.order_id.clone(),
                                    status: e.status,
                                }),
                            }
                        }
                        if e.status == OrderStatus::RetryScheduled
                            && e.reason.as_deref() != Some(super::machine::NOT_SENT)
                        {
                            m.retries.increment(1);
                        }
                    }
                    Action::Exception(x) => observability::exception(x.kind),
                    _ => {}
                }
            }
            effects.extend(record_actions(
                actions,
                &mut batch,
                [&svc.events_topic, &svc.exceptions_topic, &svc.control_topic],
                &self.machine.meter_id,
            ));
        }
        if self.machine != before {
            batch.meter = Some(self.machine.clone());
        }
        // The head-end's breaker: a probe this step did not use goes back; a meter holding
        // orders for a down head-end is woken when it is tried again.
        if self.admission == Admission::Probe
            && !effects.iter().any(|a| matches!(a, Action::Dispatch(_)))
        {
            svc.head_ends.give_back(&facts.head_end_id);
        }
        // A segment ticket goes back once nothing is in flight (answered, timed out, or the
        // step sent nothing); the next waiting meter of the segment gets it.
        if self.machine.in_flight.is_none() {
            if let Some(seg) = self.segment.as_mut().and_then(|s| s.ticket.take()) {
                for m in svc.head_ends.segments.give_back(&seg) {
                    dir.deliver(&m, super::MeterMsg::Wake);
                }
            }
        }
        self.tidy_segment();
        let held = self.machine.held_for_head_end();
        if held.is_some() || self.held_for_head_end {
            let closed_meanwhile = svc.head_ends.hold(
                &facts.head_end_id,
                self.id(),
                held.is_some(),
                held == Some(true),
            );
            self.held_for_head_end = held.is_some() && !closed_meanwhile;
            // Only the race needs a wake-up: this step was told the head-end is down and it
            // closed before the meter registered. From a timer, never a message to itself from
            // its own handler: actix drains a mailbox without yielding, so a meter that woke
            // itself at every step spun its arbiter thread forever (the SIGSTOP fault test with
            // the breaker on). Not the wake index either: this step's own wake-up (at the
            // breaker's retry time) would replace it.
            if closed_meanwhile && self.admission == Admission::Down {
                ctx.run_later(Duration::from_millis(1), |act, _| {
                    let id = act.id().clone();
                    act.dir.deliver(&id, super::MeterMsg::Wake);
                });
            }
        }
        // A watch this step sets is held before its write: a read handled while the write is in
        // progress is delivered (the machine decides on it), never ignored. Clears wait for
        // the write (`perform`).
        for w in &batch.watches {
            if matches!(w, crate::domain::WatchChange::Set(_)) {
                svc.watches.apply(w);
            }
        }
        if self.machine.holds_on_zone_facts() {
            svc.facts.hold(&facts.zone, self.id());
        } else {
            svc.facts.release(&facts.zone, self.id());
        }
        self.live.set_idle(self.dormant(), &dir);
        if batch.is_empty() && effects.is_empty() {
            if let Some(a) = ack {
                let _ = a.send(());
            }
            return;
        }
        let store = svc.store.clone();
        let meter = self.id().clone();
        let fence = dir.clone();
        let fut = async move {
            // Fencing (crate::lease): stored only while this meter's unit is leased here. An
            // instance that wakes from a freeze finds its leases lapsed and holds the step
            // until it hears its units were taken (relinquished: the step is dropped, never
            // stored nor acted on; the new owner works from the store) or renews them.
            // The lease is checked again before every attempt (a retry may come after the
            // lease lapsed), and the attempt is counted while it runs (a graceful revoke waits
            // for it before it releases the lease).
            let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
            let mut parts = store.split(batch);
            loop {
                if fence.relinquished(&meter) {
                    return false;
                }
                let Some(_writing) = fence.writing(&meter) else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                match store.try_write(parts).await {
                    Ok(()) => return true,
                    Err((crate::store::StoreError::Closed, _)) => {
                        std::future::pending::<()>().await;
                        unreachable!()
                    }
                    Err((e, rest)) => {
                        // The store writer logs the failure (rate-limited); thousands of
                        // meters may be holding here at once.
                        tracing::debug!(error = %e, meter = %meter, "meter state not stored; holding this meter until the store accepts it");
                        parts = rest;
                    }
                }
                backoff.wait().await;
            }
        };
        let write_started = std::time::Instant::now();
        ctx.wait(fut.into_actor(self).map(move |written, act, ctx| {
            if matches!(arrival, Some(Arrival::Order(..))) {
                observability::latency()
                    .order_write
                    .record(write_started.elapsed());
            }
            if !written {
                tracing::info!(meter = %act.id(), "a step of a meter whose unit was taken by another instance was dropped unstored");
                ctx.stop();
                return;
            }
            if let Some(a) = ack {
                let _ = a.send(());
            }
            for o in campaign_outcomes {
                let _ = outcomes_tx.send(o);
            }
            let order_arrival = match arrival {
                Some(Arrival::Result(at)) if completes => {
                    observability::latency().completion.record(at.elapsed());
                    None
                }
                Some(Arrival::Order(id, at)) => Some((id, at)),
                _ => None,
            };
            act.perform(effects, order_arrival, ctx)
        }));
    }

    fn perform(
        &mut self,
        effects: Vec<Action>,
        order_arrival: Option<(String, std::time::Instant)>,
        ctx: &mut Context<Self>,
    ) {
        let mut not_sent = None;
        for a in effects {
            match a {
                Action::Dispatch(c) => {
                    // A disconnect is sent only close to the moment the policy allowed it. If the
                    // durable write took longer (a stalled store), the window, the weather or a
                    // payment may have changed: it is not sent; its deadline passes, a status
                    // check finds the switch unmoved, and the retry is decided again.
                    let age = self.dir.services().clock.now().duration_since(c.issued_at);
                    if matches!(
                        c.kind,
                        crate::domain::CommandKind::Disconnect
                            | crate::domain::CommandKind::LoadLimit
                    ) && age
                        > jiff::SignedDuration::try_from(STALE_DISCONNECT).unwrap_or_default()
                    {
                        metrics().commands_not_sent.increment(1);
                        // Thousands at once under a recovery burst: one line per 10 s.
                        if let Some(suppressed) = NOT_SENT_LOG.allow(Duration::from_secs(10)) {
                            tracing::warn!(command = %c.command_id, age = %age, not_sent_since_last_line = suppressed, "disconnect not sent: its policy decision is too old (the store was slow); it will be decided again after a backoff, and is not counted as an attempt");
                        }
                        not_sent = Some(c.command_id.clone());
                        continue;
                    }
                    // Fencing: the write that stored this command returned; the unit may have
                    // been revoked, or its lease lapsed (this process was frozen, or a renewal
                    // was slow), meanwhile. Not sent. The machine hears so (not an attempt,
                    // decided again after a backoff): a step stored only under the lease, so
                    // only if this instance still acts for the meter then. If it does not,
                    // the step is dropped and the command stays stored as sent: whoever acts
                    // for the meter next status-checks it before anything else is sent.
                    if !self.dir.acting(self.id()) {
                        metrics().commands_fenced.increment(1);
                        tracing::warn!(command = %c.command_id, meter = %self.id(), "command not sent: this instance no longer acts for the meter's unit (revoked, or its lease lapsed)");
                        not_sent = Some(c.command_id.clone());
                        continue;
                    }
                    metrics().commands_sent[c.kind.index()].increment(1);
                    let timed = order_arrival
                        .as_ref()
                        .filter(|(id, _)| *id == c.order_id && c.attempt <= 1)
                        .map(|(_, at)| *at);
                    self.dir.head_end().dispatch(c);
                    if let Some(at) = timed {
                        observability::latency().dispatch.record(at.elapsed());
                    }
                }
                Action::ArmDeadline { command_id, at } => {
                    if let Some(h) = self.deadline.take() {
                        ctx.cancel_future(h);
                    }
                    let sleep = self.dir.services().clock.sleep_until(at);
                    let h = ctx.spawn(sleep.into_actor(self).map(move |(), act, ctx| {
                        act.handle(Input::Deadline(command_id), WriteBatch::default(), ctx);
                    }));
                    self.deadline = Some(h);
                }
                Action::WakeAt(at) => self.dir.wake_at(self.id().clone(), at),
                Action::Watch(c) => self.dir.services().watches.apply(&c),
                _ => {}
            }
        }
        // A command not sent is known not to have moved the switch: its deadline is cancelled
        // (under a recovery burst of 150,000 meters the slow-head-end load test once saw
        // 50,000 disconnects wait a full 120 s deadline), and the machine hears at once that
        // it was not sent: no status check, not an attempt (a recovery burst of 1M meters once
        // failed 290,000 orders by counting them), decided again after a backoff.
        if let Some(id) = not_sent {
            // The armed deadline is the in-flight command's, and that is still this one (the
            // machine has not heard yet).
            if self
                .machine
                .in_flight
                .as_ref()
                .is_some_and(|f| f.command.command_id == id)
            {
                if let Some(h) = self.deadline.take() {
                    ctx.cancel_future(h);
                }
            }
            ctx.spawn(
                actix::fut::ready(()).map(move |(), act: &mut MeterActor, ctx| {
                    act.handle(Input::NotSent(id), WriteBatch::default(), ctx);
                }),
            );
        }
    }

    /// Startup recovery: orders stored for this meter that its snapshot does not hold yet (the
    /// process stopped between intake and delivery) are fed in. The open orders are read here,
    /// behind this meter's own writes (the mailbox is held while a write is in progress), never
    /// from a list taken before activation: the `Recover` step in `started` may have closed an
    /// order that such a list still calls open. Idempotent. (A command that was in flight is
    /// handled on activation, in `started`.)
    fn recover(&mut self, ctx: &mut Context<Self>) {
        let store = self.dir.services().store.store().clone();
        let orders = match store.open_orders(self.id()) {
            Ok(records) => records,
            Err(e) => {
                // Hold the mailbox until the store answers; then recover.
                tracing::warn!(meter = %self.id(), error = %e, "cannot read this meter's open orders for recovery yet; retrying");
                let id = self.id().clone();
                let retry = async move {
                    let mut backoff =
                        Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
                    loop {
                        backoff.wait().await;
                        if let Ok(r) = store.open_orders(&id) {
                            return r;
                        }
                    }
                };
                ctx.wait(
                    retry
                        .into_actor(self)
                        .map(|records, act, ctx| act.recover_with(records, ctx)),
                );
                return;
            }
        };
        self.recover_with(orders, ctx);
    }

    fn recover_with(
        &mut self,
        mut records: Vec<crate::domain::OrderRecord>,
        ctx: &mut Context<Self>,
    ) {
        // In the order they arrived (the store lists them by id): a reconnect received after a
        // disconnect must reach the meter after it, to supersede it.
        records.sort_by_key(|r| {
            (
                r.received_at,
                r.source.as_ref().map(|s| (s.partition, s.offset)),
            )
        });
        let orders = records.into_iter().map(|r| r.order).collect();
        let mut inputs = self.machine.undelivered(orders);
        inputs.push(Input::Wake);
        self.handle_all(inputs, WriteBatch::default(), None, None, ctx);
    }
}

impl MeterActor {
    /// The stored snapshot (if any) becomes the machine; a command it had in flight when the
    /// process stopped has an unknown outcome.
    fn loaded(&mut self, m: Option<MeterMachine>, ctx: &mut Context<Self>) {
        if let Some(mut m) = m {
            let in_flight = m.in_flight.is_some();
            m.meter_id = self.id().clone(); // one allocation, shared with the directory
            self.machine = m;
            if in_flight {
                // A meter is never passivated with a command in flight, so this one was in
                // flight when the process stopped: its outcome is unknown.
                self.dir.in_flight_changed(1);
                self.handle(Input::Recover, WriteBatch::default(), ctx);
            }
        }
    }
}

impl Actor for MeterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        metrics().live_actors.increment(1.0);
        match self.dir.services().store.store().meter(self.id()) {
            Ok(m) => self.loaded(m, ctx),
            Err(e) => {
                // Never start from an empty snapshot: its first write would overwrite the stored
                // state (the command in flight, the attempts) and run orders again. Hold the
                // mailbox and retry until the store answers (a full disk, a reopen).
                tracing::warn!(meter = %self.id(), error = %e, "cannot load meter state yet; holding this meter until the store answers");
                let store = self.dir.services().store.store().clone();
                let id = self.id().clone();
                let retry = async move {
                    let mut backoff = Duration::from_millis(50);
                    loop {
                        tokio::time::sleep(backoff).await;
                        match store.meter(&id) {
                            Ok(m) => return m,
                            Err(e) => {
                                tracing::debug!(meter = %id, error = %e, "meter state still unreadable");
                                backoff = (backoff * 2).min(Duration::from_secs(5));
                            }
                        }
                    }
                };
                ctx.wait(retry.into_actor(self).map(|m, act, ctx| act.loaded(m, ctx)));
            }
        }
        // Idle from the start (a wake with nothing to do): the directory's sweep may passivate
        // it. (A meter loaded with work says otherwise after its first step.)
        self.live.set_idle(self.dormant(), &self.dir);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        metrics().live_actors.decrement(1.0);
        if let Some(seg) = self.segment.as_mut().and_then(|s| s.ticket.take()) {
            for m in self.dir.services().head_ends.segments.give_back(&seg) {
                self.dir.deliver(&m, MeterMsg::Wake);
            }
        }
        if self.machine.in_flight.is_some() {
            self.dir.in_flight_changed(-1);
        }
        self.dir.forget(self.id(), &self.live);
    }
}

/// The directory's sweep: this meter has been idle for the passivation time.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Passivate;

impl Handler<Passivate> for MeterActor {
    type Result = ();

    fn handle(&mut self, _: Passivate, ctx: &mut Context<Self>) {
        if self.dormant()
            && self.live.idle_for(&self.dir) >= self.dir.services().idle
            && self.dir.try_passivate(self.id(), &self.live)
        {
            // Its open orders (if any) are held and stored with its snapshot; what wakes it
            // is the directory's timer (it is in its index already), the zone facts' waiting
            // index, or the fact it waits for.
            metrics().actor_passivations.increment(1);
            ctx.stop();
        }
    }
}

/// The meter's unit was revoked from this instance: stop now (after the write in progress,
/// if any; everything is stored), whatever is held.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Relinquish;

impl Handler<Relinquish> for MeterActor {
    type Result = ();

    fn handle(&mut self, _: Relinquish, ctx: &mut Context<Self>) {
        // Its unit moved away: a place in a segment's queue goes to the next meter (a
        // passivating meter keeps its place: the wake-up brings it back).
        if let Some(seg) = self.segment.as_mut().and_then(|s| s.queued.take()) {
            for m in self
                .dir
                .services()
                .head_ends
                .segments
                .forget(&seg, self.id())
            {
                self.dir.deliver(&m, MeterMsg::Wake);
            }
        }
        ctx.stop();
    }
}

impl Handler<Deliver> for MeterActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        self.live.pending.fetch_sub(1, Ordering::SeqCst);
        let ack = msg.1;
        match msg.0 {
            Input::Recover => self.recover(ctx),
            input @ (Input::Fact(_) | Input::Read(_) | Input::Link(_) | Input::Handover(_)) => {
                self.handle_all(vec![input], WriteBatch::default(), ack, None, ctx);
                return;
            }
            Input::Result(r) => {
                // The answer to the command in flight: the record is the command as the meter
                // holds it and this result, stored blind. Any other answer is appended to the
                // stored record.
                let mut extra = WriteBatch::default();
                match &self.machine.in_flight {
                    Some(f) if f.command.command_id == r.command_id => {
                        extra.answered.push(CommandRecord {
                            command: f.command.clone(),
                            results: vec![r.clone()],
                        })
                    }
                    _ => extra.results.push(r.clone()),
                }
                let arrival = Some(Arrival::Result(msg.2));
                self.handle_all(vec![Input::Result(r)], extra, None, arrival, ctx)
            }
            // An order's acknowledgement (the intake's window) fires once its step is stored.
            Input::Order(o) => {
                observability::latency().order_queue.record(msg.2.elapsed());
                let arrival = Some(Arrival::Order(o.order_id.clone(), msg.2));
                self.handle_all(
                    vec![Input::Order(o)],
                    WriteBatch::default(),
                    ack,
                    arrival,
                    ctx,
                );
                return;
            }
            Input::Wake if self.dir.services().store.congested() => self.defer_wake(),
            input => self.handle(input, WriteBatch::default(), ctx),
        }
        if let Some(a) = ack {
            let _ = a.send(()); // facts, reads and orders are acknowledged after their write
        }
    }
}

#[cfg(test)]
mod tests {
    /// The actor inline (in its actix task) is part of every live meter's memory (issue 12,
    /// item 2: at most 1 KiB of heap per idle live actor, `cargo bench --bench actor_memory`;
    /// 998 B with these sizes). What most meters do not need is boxed (the segment slots, the
    /// state's [`MeterMemory`](crate::domain::meter_state::MeterMemory)).
    #[test]
    fn the_meter_actor_stays_small() {
        let size = std::mem::size_of::<super::MeterActor>();
        assert!(size <= 112, "MeterActor is {size} bytes inline");
    }
}
