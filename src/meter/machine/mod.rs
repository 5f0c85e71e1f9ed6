//! The meter state machine: pure, no I/O, no clock. Given an input and the time it returns the
//! actions the meter actor must perform (persist, dispatch, publish, arm timers), in the style of
//! restate's state machines. Invariants it owns:
//! - at most one command in flight per meter (`in_flight` is an `Option`);
//! - a reconnect or a cancel supersedes a pending (not yet dispatched) disconnect;
//! - a disconnect of a meter known to be disconnected completes without a command (and the
//!   same for a reconnect of a connected meter);
//! - a command whose outcome is unknown (deadline passed, or a crash while it was in flight) is
//!   resolved by a switch-status check before any retry;
//! - retryable failures back off exponentially up to `max_attempts`; then an exception; a
//!   command the actor never sent (its decision went stale in a slow write) is decided again
//!   after a backoff and does not count as an attempt;
//! - policy before power: every disconnect execution (first try and retries) is decided by the
//!   pure [`Policy`](crate::policy::Policy) at the moment it would be sent; a held order
//!   (deferred, awaiting approval) is re-decided on every step, so a fact that changes (weather,
//!   emergency, approval, certificate, payment) takes effect at once; a payment withdraws a
//!   pending non-payment disconnect before any command can be sent;
//! - restore obligation: a protection that arrives after a non-payment cut raises a reconnect.
//!
//! One file per concern: [`step`](MeterMachine::step) (here) hands each input to `intake`
//! (orders and cancels), `campaign` (adopt, release, withdraw), `fact` (payments,
//! certificates, approvals), `result` (head-end answers and confirmation), `unknown`
//! (deadlines and restarts with a command in flight) or `failure` (retry or exception); then
//! `restore` (the restore obligation) and `drive` (the next command), which asks `hold` (the
//! policy decision and the holds it leaves).

mod campaign;
mod drive;
mod exchange;
mod fact;
mod failure;
mod head_end;
mod hold;
mod intake;
mod moves;
mod read;
mod restore;
mod result;
mod unknown;

pub(crate) use failure::NOT_SENT;

use std::sync::Arc;
use std::time::Duration;

use crate::facts::MeterFact;
use crate::policy::{Emergency, Forecast, Policy};

use crate::domain::{
    AuditEvent, AuditKind, Command, CommandKind, CommandResult, ExceptionRecord, MeterFlags, Order,
    OrderEvent, OrderKind, OrderRecord, OrderStatus, SwitchState, Timestamp,
};
pub use crate::domain::{Cut, Hold, InFlight, OpenOrder, Purpose};

/// Retry and deadline rules (from `[head_end]` in the config).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub command_deadline: Duration,
}

impl RetryPolicy {
    /// The wait before retry `attempt`: the service's one back-off schedule.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        crate::retry::nth_delay(self.backoff_initial, self.backoff_max, attempt)
    }
}

/// What the registry and the zone fact book say about the meter, as the machine needs it.
#[derive(Debug, Clone)]
pub struct MeterFacts {
    /// The registry knows the meter (now, or earlier in this actor's life). A meter not in the
    /// registry (yet: the registry may still be loading after a restart) gets no command and
    /// no verdict about its switch: its orders wait ([`UNREGISTERED`]).
    pub(crate) known: bool,
    /// switchyard is stopping (SIGTERM drain): answers are taken in, but no new command is
    /// started; open work stays open (stored) and resumes at the next start.
    pub(crate) draining: bool,
    pub(crate) has_switch: bool,
    pub(crate) head_end_id: Arc<str>,
    pub zone: Arc<str>,
    /// Registry flags (protections among them); valid certificates are added by the machine.
    pub(crate) flags: MeterFlags,
    pub policy: Arc<Policy>,
    pub forecasts: Arc<Vec<Forecast>>,
    pub(crate) emergencies: Arc<Vec<Emergency>>,
    /// The post-disconnect watchdog's settings.
    pub(crate) reads: Arc<crate::reads::ReadRules>,
    /// How the meter's head-end works, and whether it takes commands now.
    pub(crate) head_end: HeadEndFacts,
}

pub(crate) use crate::head_end::health::HeadEndFacts;

impl MeterFacts {
    /// A meter with no zone facts under the built-in baseline policy.
    pub fn baseline(has_switch: bool, head_end_id: &str) -> MeterFacts {
        MeterFacts {
            known: true,
            draining: false,
            has_switch,
            head_end_id: head_end_id.into(),
            zone: "".into(),
            flags: MeterFlags::empty(),
            policy: Arc::new(Policy::baseline()),
            forecasts: Arc::default(),
            emergencies: Arc::default(),
            reads: Arc::default(),
            head_end: HeadEndFacts::default(),
        }
    }
}

/// The hold rule of an order whose meter is not in the registry (yet).
pub(crate) const UNREGISTERED: &str = "meter_not_in_registry";
/// How often such an order looks at the registry again.
pub(crate) const UNREGISTERED_RECHECK: Duration = Duration::from_secs(5);

/// The machine is implemented on the stored state (see `domain::meter_state`).
pub type MeterMachine = crate::domain::MeterState;

pub(crate) const PAYMENT_MEMORY_DAYS: i64 = 60;

#[derive(Debug, Clone)]
pub enum Input {
    Order(Order),
    Result(CommandResult),
    Deadline(String),
    /// The actor did not send this execution command (its policy decision was too old when
    /// the store confirmed it, or the meter's unit was not leased here then): the switch did
    /// not move.
    NotSent(String),
    Wake,
    /// Startup recovery: resume the meter's open work. A persisted in-flight command's outcome
    /// is unknown. (Sent to the actor, which first reads the meter's open orders itself.)
    Recover,
    /// A payment, certificate or approval for this meter.
    Fact(MeterFact),
    /// A meter read that matters to this meter (its cut is watched), in engineering units.
    Read(crate::domain::MeterRead),
    /// How a linked move leg of another meter ended (control topic `move_link`; idempotent).
    Link(crate::domain::MoveLink),
    /// The work of a meter this one replaced in the field (control topic `meter_handover`;
    /// taken once per exchange).
    Handover(crate::domain::MeterHandover),
    /// The order's campaign released it (idempotent).
    Release {
        order_id: String,
    },
    /// The order's campaign withdrew it before release (cancelled, expired).
    Withdraw {
        order_id: String,
        reason: String,
    },
    /// A campaign takes in this open order, if it has not been sent yet.
    Adopt {
        order_id: String,
        campaign_id: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Dispatch(std::sync::Arc<Command>),
    Event(OrderEvent),
    Audit(AuditEvent),
    Exception(ExceptionRecord),
    ArmDeadline {
        command_id: String,
        at: Timestamp,
    },
    WakeAt(Timestamp),
    /// An order switchyard raised itself (restore obligation): store it like an intake order.
    NewOrder(OrderRecord),
    /// Policy decided on a disconnect and the decision was audited (counted in
    /// `switchyard_policy_decisions_total`): `execute`, `deferred`, `awaiting_approval` or
    /// `rejected`, from the decision itself (not read back from the audit text).
    Decided(crate::domain::VerdictKind),
    /// The meter's read watch changed (stored with the step; the reads handler's index follows
    /// once it is durable).
    Watch(crate::domain::WatchChange),
    /// Tell another meter how a linked move leg of this one ended (control topic, key = that
    /// meter; stored in the outbox with the step).
    Link(crate::domain::MoveLink),
    /// This meter was removed by an exchange: hand its work to the new meter (control topic,
    /// key = the new meter; stored in the outbox with the step); its carried orders leave this
    /// meter's open index.
    Handover(crate::domain::MeterHandover),
    /// An order carried here by an exchange: its stored record names this meter now.
    TakeOver(OrderRecord),
    /// Due work waits for room in the meter's network segment (`restoring`: a power
    /// restoration among it); the actor queues the meter there. Nothing is stored.
    AwaitSegment {
        restoring: bool,
    },
}

fn add(now: Timestamp, d: Duration) -> Timestamp {
    now.checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

struct Out<'a> {
    meter_id: &'a str,
    now: Timestamp,
    actions: Vec<Action>,
    /// Linked move legs that reached a terminal status in this step (`moves` settles them).
    closed_moves: Vec<Order>,
}

impl Out<'_> {
    fn event(
        &mut self,
        o: &Order,
        status: OrderStatus,
        reason: Option<&str>,
        f: impl FnOnce(&mut OrderEvent),
    ) {
        if status.is_terminal() && o.kind.is_move() && o.linked_order_id.is_some() {
            self.closed_moves.push(o.clone());
        }
        let mut e = OrderEvent::new(&o.order_id, self.meter_id, Some(o.kind), status, self.now);
        e.reason = reason.map(str::to_string);
        e.campaign_id = o.campaign_id.clone();
        f(&mut e);
        let mut a = AuditEvent::new(self.meter_id, self.now, AuditKind::StatusChange)
            .order(&o.order_id)
            .status(status);
        a.reason = e.reason.clone();
        a.detail = e.detail.clone();
        a.command_id = e.command_id.clone();
        self.actions.push(Action::Audit(a));
        self.actions.push(Action::Event(e));
    }
    /// An order event (and its audit row) whose only addition is a detail text.
    fn event_detail(
        &mut self,
        o: &Order,
        status: OrderStatus,
        reason: &str,
        detail: impl Into<String>,
    ) {
        let detail = detail.into();
        self.event(o, status, Some(reason), |e| e.detail = Some(detail));
    }
    fn audit(&mut self, a: AuditEvent) {
        self.actions.push(Action::Audit(a));
    }
    /// An exception for a person to review that does not end its order (`<order>/<suffix>`),
    /// with its audit row.
    fn review(
        &mut self,
        order_id: &str,
        suffix: &str,
        kind: crate::domain::ExceptionKind,
        priority: u8,
        text: String,
    ) {
        self.audit(
            AuditEvent::new(self.meter_id, self.now, AuditKind::ExceptionRaised)
                .order(order_id)
                .reason(kind.as_str())
                .detail(text.clone()),
        );
        self.actions.push(Action::Exception(ExceptionRecord {
            schema_version: crate::domain::event::EVENT_SCHEMA_VERSION,
            exception_id: format!("{order_id}/{suffix}"),
            meter_id: self.meter_id.to_string(),
            order_id: order_id.to_string(),
            command_id: None,
            kind,
            priority,
            detail: text,
            raised_at: self.now,
            status: "open".into(),
        }));
    }
}

impl MeterMachine {
    pub fn new(meter_id: impl Into<Arc<str>>) -> Self {
        MeterMachine {
            meter_id: meter_id.into(),
            switch: SwitchState::Unknown,
            open: thin_vec::ThinVec::new(),
            in_flight: None,
            next_seq: 0,
            memory: Default::default(),
        }
    }

    /// Registry flags plus the protections of certificates valid at `now`.
    pub(crate) fn effective_flags(&self, facts: &MeterFacts, now: Timestamp) -> MeterFlags {
        let mut f = facts.flags;
        for c in &self.memory.certificates {
            if c.valid_at(now) {
                f.set(c.protection.flag(), true);
            }
        }
        f
    }

    /// The protections the meter has now (registry flags and valid certificates).
    fn protections(&self, facts: &MeterFacts, now: Timestamp) -> Vec<crate::domain::Protection> {
        let flags = self.effective_flags(facts, now);
        crate::domain::Protection::ALL
            .iter()
            .copied()
            .filter(|p| flags.contains(p.flag()))
            .collect()
    }

    /// An order is deferred (not awaiting a person): zone facts may release it early.
    pub fn holds_on_zone_facts(&self) -> bool {
        self.open.iter().any(|o| {
            o.hold
                .as_ref()
                .is_some_and(|h| h.status == OrderStatus::Deferred)
        })
    }

    pub(crate) fn has_order(&self, order_id: &str) -> bool {
        self.open_index(order_id).is_some()
    }

    /// Startup recovery: the orders the store lists as open for this meter that this snapshot
    /// does not hold (accepted by the intake, then the process stopped before delivery).
    ///
    /// `stored_open` must be read *after* this machine's last step was stored (the actor reads
    /// it when it handles the recovery message, behind its own writes). A list read earlier
    /// may still hold an order this machine has since closed (in its `Recover` step, say), and
    /// feeding that order again would run a terminal order a second time under the command id
    /// of its first attempt (issue 10).
    pub(crate) fn undelivered(&self, stored_open: Vec<Order>) -> Vec<Input> {
        stored_open
            .into_iter()
            .filter(|o| !self.has_order(&o.order_id))
            .map(Input::Order)
            .collect()
    }

    /// True when nothing is open and nothing is in flight: the actor may passivate.
    pub fn is_idle(&self) -> bool {
        self.open.is_empty() && self.in_flight.is_none()
    }

    /// Where the open order `order_id` stands in `open`.
    fn open_index(&self, order_id: &str) -> Option<usize> {
        self.open.iter().position(|o| o.order.order_id == order_id)
    }

    /// Takes the command in flight out of flight, if it is `command_id`.
    fn take_in_flight(&mut self, command_id: &str) -> Option<InFlight> {
        if self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.command.command_id == command_id)
        {
            self.in_flight.take().map(|f| *f)
        } else {
            None
        }
    }

    /// The command of the open order at `idx` is out (in flight, or its outcome unknown), or it
    /// took effect (a move-in waiting for its move-out): the order can no longer be recalled,
    /// only marked withdrawn.
    fn command_out(&self, idx: usize) -> bool {
        let o = &self.open[idx];
        o.unknown_outcome
            || o.awaiting_link.is_some()
            || o.armed_until.is_some()
            || self
                .in_flight
                .as_ref()
                .is_some_and(|f| f.command.order_id == o.order.order_id)
    }

    /// One input at `now`: the input's own handler, then the restore obligation, then the next
    /// due work (`drive`); returns what the actor must do, in order.
    pub fn step(
        &mut self,
        input: Input,
        now: Timestamp,
        facts: &MeterFacts,
        policy: &RetryPolicy,
    ) -> Vec<Action> {
        let meter_id = self.meter_id.clone();
        let watched = self.read_watch();
        let mut out = Out {
            meter_id: &meter_id,
            now,
            // (A step that does anything takes 4-8 actions: an audit row and an event per
            // status, a decision, a dispatch. Growing the vector from empty was 6 % of the
            // meter arbiters' time under month-end.)
            actions: Vec::with_capacity(8),
            closed_moves: Vec::new(),
        };
        match input {
            Input::Order(order) => self.on_order(order, &mut out),
            Input::Result(r) => self.on_result(r, facts, &mut out, policy),
            Input::Deadline(id) => self.on_deadline(&id, &mut out, policy),
            Input::NotSent(id) => self.on_not_sent(&id, &mut out, policy),
            Input::Wake => {}
            Input::Recover => self.on_recover(&mut out, policy),
            Input::Fact(f) => self.on_fact(f, facts, &mut out),
            Input::Read(r) => self.on_read(r, facts, &mut out),
            Input::Link(l) => self.on_link(l, &mut out),
            Input::Handover(h) => self.on_handover(h, &mut out),
            Input::Release { order_id } => self.on_release(&order_id, &mut out),
            Input::Adopt {
                order_id,
                campaign_id,
            } => self.on_adopt(&order_id, &campaign_id, &mut out),
            Input::Withdraw { order_id, reason } => self.on_withdraw(&order_id, &reason, &mut out),
        }
        self.settle_armed(&mut out);
        self.restore_if_obliged(facts, &mut out);
        self.drive(&mut out, facts, policy);
        self.settle_moves(&mut out);
        // (A step that only looked at the memory, or emptied it, holds no box; a meter whose
        // last order closed keeps no room for orders.)
        self.memory.tidy();
        if self.open.is_empty() && self.open.capacity() > 0 {
            self.open = thin_vec::ThinVec::new();
        }
        let watch = self.read_watch();
        if watch != watched {
            out.actions.push(Action::Watch(match watch {
                Some(w) => crate::domain::WatchChange::Set(w),
                None => crate::domain::WatchChange::Clear(meter_id.to_string()),
            }));
        }
        out.actions
    }
}

impl MeterMachine {
    /// The switch state the open order at `idx` aims for: its command's, or `load_limited`
    /// for a disconnect last executed as a demand limit.
    pub(super) fn target(&self, idx: usize) -> Option<SwitchState> {
        let o = &self.open[idx];
        if o.load_limit {
            return Some(SwitchState::LoadLimited);
        }
        command_for(o.order.kind).and_then(CommandKind::target_state)
    }
}

/// The head-end command that executes an order kind.
pub(crate) fn command_for(kind: OrderKind) -> Option<CommandKind> {
    match kind {
        OrderKind::Disconnect | OrderKind::MoveOut => Some(CommandKind::Disconnect),
        OrderKind::Reconnect | OrderKind::MoveIn => Some(CommandKind::Connect),
        OrderKind::Read => Some(CommandKind::Read),
        OrderKind::Cancel => None,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod policy_tests;

#[cfg(test)]
mod moves_tests;

#[cfg(test)]
mod exchange_tests;

#[cfg(test)]
mod head_end_tests;
