//! The meter state machine: pure, no I/O, no clock. Given an input and the time it returns the
//! actions the meter actor must perform (persist, dispatch, publish, arm timers), in the style of
//! restate's state machines. Invariants it owns:
//! - at most one command in flight per meter (`in_flight` is an `Option`);
//! - a reconnect or a cancel supersedes a pending (not yet dispatched) disconnect;
//! - a disconnect of a meter known to be disconnected completes without a command (and the
//!   same for a reconnect of a connected meter);
//! - a command whose outcome is unknown (deadline passed, or a crash while it was in flight) is
//!   resolved by a switch-status check before any retry;
//! - retryable failures back off exponentially up to `max_attempts`; then an exception;
//! - policy before power: every disconnect execution (first try and retries) is decided by the
//!   pure [`Policy`](crate::policy::Policy) at the moment it would be sent; a held order
//!   (deferred, awaiting approval) is re-decided on every step, so a fact that changes (weather,
//!   emergency, approval, certificate, payment) takes effect at once; a payment withdraws a
//!   pending non-payment disconnect before any command can be sent;
//! - restore obligation: a protection that arrives after a non-payment cut raises a reconnect.

use std::sync::Arc;
use std::time::Duration;

use crate::facts::{ApprovalDecision, MeterFact, Payment};
use crate::policy::{self, Emergency, Forecast, Policy, Verdict, BASELINE_PROTECTIONS};

use crate::domain::event::EVENT_SCHEMA_VERSION;
use crate::domain::{
    AuditEvent, AuditKind, Command, CommandKind, CommandOutcome, CommandResult, ExceptionKind,
    ExceptionRecord, FailureCode, MeterFlags, Order, OrderEvent, OrderKind, OrderRecord,
    OrderStatus, ReasonCode, SwitchState, Timestamp,
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
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// What the registry and the zone fact book say about the meter, as the machine needs it.
#[derive(Debug, Clone)]
pub struct MeterFacts {
    /// The registry knows the meter (now, or earlier in this actor's life). A meter not in the
    /// registry (yet: the registry may still be loading after a restart) gets no command and
    /// no verdict about its switch: its orders wait ([`UNREGISTERED`]).
    pub known: bool,
    /// switchyard is stopping (SIGTERM drain): answers are taken in, but no new command is
    /// started; open work stays open (stored) and resumes at the next start.
    pub draining: bool,
    pub has_switch: bool,
    pub head_end_id: String,
    pub zone: String,
    /// Registry flags (protections among them); valid certificates are added by the machine.
    pub flags: MeterFlags,
    pub policy: Arc<Policy>,
    pub forecasts: Arc<Vec<Forecast>>,
    pub emergencies: Arc<Vec<Emergency>>,
}

impl MeterFacts {
    /// A meter with no zone facts under the built-in baseline policy.
    pub fn baseline(has_switch: bool, head_end_id: &str) -> MeterFacts {
        MeterFacts {
            known: true,
            draining: false,
            has_switch,
            head_end_id: head_end_id.to_string(),
            zone: String::new(),
            flags: MeterFlags::empty(),
            policy: Arc::new(Policy::baseline()),
            forecasts: Arc::default(),
            emergencies: Arc::default(),
        }
    }
}

/// The hold rule of an order whose meter is not in the registry (yet).
pub const UNREGISTERED: &str = "meter_not_in_registry";
/// How often such an order looks at the registry again.
pub const UNREGISTERED_RECHECK: Duration = Duration::from_secs(5);

/// The machine is implemented on the stored state (see `domain::meter_state`).
pub type MeterMachine = crate::domain::MeterState;

pub const PAYMENT_MEMORY_DAYS: i64 = 60;

/// Whether payment `p` pays off the non-payment disconnect `o`: named by order id, or for the
/// account (or meter) and made after the order was created.
fn pays_off(p: &Payment, o: &Order) -> bool {
    if o.kind != OrderKind::Disconnect || o.reason != ReasonCode::NonPayment {
        return false;
    }
    let account_ok = match (&p.account_id, &o.account_id) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    match &p.order_id {
        Some(id) => *id == o.order_id && account_ok,
        None => account_ok && o.created_at.is_some_and(|c| c <= p.paid_at),
    }
}

#[derive(Debug, Clone)]
pub enum Input {
    Order(Order),
    Result(CommandResult),
    Deadline(String),
    Wake,
    /// The actor was activated with a persisted in-flight command (restart): its outcome is
    /// unknown.
    Recover,
    /// A payment, certificate or approval for this meter.
    Fact(MeterFact),
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
    Dispatch(Command),
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
    Decided(&'static str),
}

fn add(now: Timestamp, d: Duration) -> Timestamp {
    now.checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

struct Out<'a> {
    meter_id: &'a str,
    now: Timestamp,
    actions: Vec<Action>,
}

impl Out<'_> {
    fn event(
        &mut self,
        o: &Order,
        status: OrderStatus,
        reason: Option<&str>,
        f: impl FnOnce(&mut OrderEvent),
    ) {
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
    fn audit(&mut self, a: AuditEvent) {
        self.actions.push(Action::Audit(a));
    }
}

impl MeterMachine {
    pub fn new(meter_id: &str) -> Self {
        MeterMachine {
            meter_id: meter_id.to_string(),
            switch: SwitchState::Unknown,
            switch_known_at: None,
            last_register_kwh: None,
            open: Vec::new(),
            in_flight: None,
            next_seq: 0,
            certificates: Vec::new(),
            last_cut: None,
            payments: Vec::new(),
        }
    }

    /// Registry flags plus the protections of certificates valid at `now`.
    pub fn effective_flags(&self, facts: &MeterFacts, now: Timestamp) -> MeterFlags {
        let mut f = facts.flags;
        for c in &self.certificates {
            if c.valid_at(now) {
                f.set(c.protection.flag(), true);
            }
        }
        f
    }

    /// An order is deferred (not awaiting a person): zone facts may release it early.
    pub fn holds_on_zone_facts(&self) -> bool {
        self.open.iter().any(|o| {
            o.hold
                .as_ref()
                .is_some_and(|h| h.status == OrderStatus::Deferred)
        })
    }

    pub fn has_order(&self, order_id: &str) -> bool {
        self.open.iter().any(|o| o.order.order_id == order_id)
    }

    /// Startup recovery: the orders the store lists as open for this meter that this snapshot
    /// does not hold (accepted by the intake, then the process stopped before delivery).
    ///
    /// `stored_open` must be read *after* this machine's last step was stored (the actor reads
    /// it when it handles the recovery message, behind its own writes). A list read earlier
    /// may still hold an order this machine has since closed (in its `Recover` step, say), and
    /// feeding that order again would run a terminal order a second time under the command id
    /// of its first attempt (issue 10).
    pub fn undelivered(&self, stored_open: Vec<Order>) -> Vec<Input> {
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

    pub fn step(
        &mut self,
        input: Input,
        now: Timestamp,
        facts: &MeterFacts,
        policy: &RetryPolicy,
    ) -> Vec<Action> {
        let meter_id = self.meter_id.clone();
        let mut out = Out {
            meter_id: &meter_id,
            now,
            actions: Vec::new(),
        };
        match input {
            Input::Order(order) => self.on_order(order, &mut out),
            Input::Result(r) => self.on_result(r, &mut out, policy),
            Input::Deadline(id) => self.on_deadline(&id, &mut out, policy),
            Input::Wake => {}
            Input::Recover => self.on_recover(&mut out, policy),
            Input::Fact(f) => self.on_fact(f, facts, &mut out),
            Input::Release { order_id } => {
                if let Some(o) = self
                    .open
                    .iter_mut()
                    .find(|o| o.order.order_id == order_id && o.campaign_hold)
                {
                    o.campaign_hold = false;
                    o.status = OrderStatus::Received;
                    let mut a = AuditEvent::new(&meter_id, now, AuditKind::Decision)
                        .order(&order_id)
                        .reason("campaign_released");
                    a.detail = o.order.campaign_id.clone();
                    out.audit(a);
                }
            }
            Input::Adopt {
                order_id,
                campaign_id,
            } => {
                let in_flight = self.in_flight.as_ref().map(|f| f.command.order_id.clone());
                if let Some(o) = self.open.iter_mut().find(|o| {
                    o.order.order_id == order_id
                        && o.order.kind == OrderKind::Disconnect
                        && o.order.campaign_id.is_none()
                        && o.attempts == 0
                        && !o.unknown_outcome
                        && in_flight.as_deref() != Some(order_id.as_str())
                }) {
                    o.order.campaign_id = Some(campaign_id.clone());
                    o.campaign_hold = true;
                    o.status = OrderStatus::Scheduled;
                    let order = o.order.clone();
                    out.event(&order, OrderStatus::Scheduled, Some("campaign"), |e| {
                        e.detail = Some(format!("taken into campaign {campaign_id}"))
                    });
                } else {
                    out.audit(
                        AuditEvent::new(&meter_id, now, AuditKind::Decision)
                            .order(&order_id)
                            .reason("campaign_adopt_refused")
                            .detail(format!(
                                "not taken into campaign {campaign_id}: not open, already sent, or in another campaign"
                            )),
                    );
                }
            }
            Input::Withdraw { order_id, reason } => {
                if let Some(i) = self
                    .open
                    .iter()
                    .position(|o| o.order.order_id == order_id && o.campaign_hold)
                {
                    let o = self.open.remove(i);
                    out.event(&o.order, OrderStatus::Cancelled, Some(&reason), |e| {
                        e.detail = Some("withdrawn by its campaign before release".into())
                    });
                }
            }
        }
        self.restore_if_obliged(facts, &mut out);
        self.drive(&mut out, facts, policy);
        out.actions
    }

    fn on_order(&mut self, order: Order, out: &mut Out) {
        if self.has_order(&order.order_id) {
            out.audit(
                AuditEvent::new(out.meter_id, out.now, AuditKind::DuplicateIgnored)
                    .order(&order.order_id)
                    .reason("order_already_open"),
            );
            return;
        }
        let in_flight_order = self.in_flight.as_ref().map(|f| f.command.order_id.clone());
        match order.kind {
            OrderKind::Cancel => {
                let target = order.target_order_id.clone().unwrap_or_default();
                let pos = self.open.iter().position(|o| o.order.order_id == target);
                let ambiguous = pos.is_some_and(|p| {
                    self.open[p].unknown_outcome
                        || in_flight_order.as_deref() == Some(target.as_str())
                });
                let reason = if ambiguous {
                    let p = pos.expect("checked");
                    self.open[p].withdrawn = Some("cancelled_by_order".into());
                    "target_already_dispatched"
                } else if let Some(pos) = pos {
                    let t = self.open.remove(pos);
                    out.event(
                        &t.order,
                        OrderStatus::Cancelled,
                        Some("cancelled_by_order"),
                        |e| {
                            e.detail = Some(format!("withdrawn by cancel order {}", order.order_id))
                        },
                    );
                    "target_cancelled"
                } else {
                    "target_not_open"
                };
                out.event(&order, OrderStatus::Completed, Some(reason), |e| {
                    e.detail = Some(format!("cancel of {target}"))
                });
                return;
            }
            k if k.restores_power() => {
                let mut i = 0;
                while i < self.open.len() {
                    let o = &mut self.open[i];
                    let dispatched = o.unknown_outcome
                        || in_flight_order.as_deref() == Some(o.order.order_id.as_str());
                    if o.order.kind == OrderKind::Disconnect && dispatched {
                        // Cannot be recalled: it will not be retried, and the reconnect
                        // follows it.
                        o.withdrawn = Some("superseded_by_reconnect".into());
                        i += 1;
                    } else if o.order.kind == OrderKind::Disconnect {
                        let t = self.open.remove(i);
                        out.event(
                            &t.order,
                            OrderStatus::Cancelled,
                            Some("superseded_by_reconnect"),
                            |e| e.detail = Some(format!("superseded by order {}", order.order_id)),
                        );
                    } else {
                        i += 1;
                    }
                }
            }
            _ => {}
        }
        if let Some(p) = self.payments.iter().find(|p| pays_off(p, &order)) {
            let detail = format!(
                "payment {} of {:.2} made {} arrived before this order: not executed",
                p.fact_id, p.amount, p.paid_at
            );
            out.event(
                &order,
                OrderStatus::Cancelled,
                Some("payment_received"),
                |e| e.detail = Some(detail),
            );
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let campaign_hold = order.campaign_id.is_some() && order.kind == OrderKind::Disconnect;
        if campaign_hold {
            out.event(&order, OrderStatus::Scheduled, Some("campaign"), |e| {
                e.detail = Some("waits for its campaign to release it".into())
            });
        }
        let not_before = order.earliest_at.filter(|t| *t > out.now);
        if let Some(t) = not_before {
            out.event(&order, OrderStatus::Scheduled, Some("earliest_at"), |e| {
                e.retry_at = Some(t)
            });
        }
        self.open.push(OpenOrder {
            order,
            status: if not_before.is_some() {
                OrderStatus::Scheduled
            } else {
                OrderStatus::Received
            },
            attempts: 0,
            status_checks: 0,
            status_checks_lost: 0,
            unknown_outcome: false,
            withdrawn: None,
            not_before,
            seq,
            hold: None,
            approved_by: None,
            approved_for: Vec::new(),
            campaign_hold,
        });
    }

    /// The protections the meter has now (registry flags and valid certificates).
    fn protections(&self, facts: &MeterFacts, now: Timestamp) -> Vec<crate::domain::Protection> {
        let flags = self.effective_flags(facts, now);
        crate::domain::Protection::ALL
            .into_iter()
            .filter(|p| flags.contains(p.flag()))
            .collect()
    }

    /// Approved, and the approval covers every protection the meter has now.
    fn approval_covers(&self, o: &OpenOrder, facts: &MeterFacts, now: Timestamp) -> bool {
        o.approved_by.is_some()
            && self
                .protections(facts, now)
                .iter()
                .all(|p| o.approved_for.contains(p))
    }

    fn on_fact(&mut self, fact: MeterFact, facts: &MeterFacts, out: &mut Out) {
        out.audit(
            AuditEvent::new(out.meter_id, out.now, AuditKind::FactReceived)
                .reason(fact.type_label())
                .detail(serde_json::to_string(&fact).unwrap_or_default()),
        );
        let in_flight_order = self.in_flight.as_ref().map(|f| f.command.order_id.clone());
        match fact {
            MeterFact::Payment(p) => {
                let now = out.now;
                let keep = jiff::SignedDuration::from_hours(24 * PAYMENT_MEMORY_DAYS);
                self.payments.retain(|x| {
                    x.fact_id != p.fact_id && x.paid_at.checked_add(keep).is_ok_and(|t| t > now)
                });
                self.payments.push(p.clone());
                let mut i = 0;
                while i < self.open.len() {
                    let o = &mut self.open[i];
                    let applies = pays_off(&p, &o.order)
                        || (p.order_id.is_none()
                            && o.order.created_at.is_none()
                            && pays_off(
                                &Payment {
                                    order_id: Some(o.order.order_id.clone()),
                                    ..p.clone()
                                },
                                &o.order,
                            ));
                    if !applies {
                        i += 1;
                        continue;
                    }
                    let dispatched = o.unknown_outcome
                        || in_flight_order.as_deref() == Some(o.order.order_id.as_str());
                    if dispatched {
                        o.withdrawn = Some("payment_received".into());
                        i += 1;
                    } else {
                        let o = self.open.remove(i);
                        let detail = format!(
                            "payment {} of {:.2} made {} withdrew it before any command was sent",
                            p.fact_id, p.amount, p.paid_at
                        );
                        out.event(
                            &o.order,
                            OrderStatus::Cancelled,
                            Some("payment_received"),
                            |e| e.detail = Some(detail),
                        );
                    }
                }
            }
            MeterFact::MedicalCertificate(c) => {
                let now = out.now;
                self.certificates
                    .retain(|x| x.fact_id != c.fact_id && x.expires_at > now);
                if c.valid_at(now) || c.valid_from.is_some_and(|f| f > now) {
                    if let Some(cut) = &mut self.last_cut {
                        cut.protection_after_cut = true;
                    }
                    self.certificates.push(c);
                }
            }
            MeterFact::Approval(a) => {
                let Some(idx) = self
                    .open
                    .iter()
                    .position(|o| o.order.order_id == a.order_id)
                else {
                    out.audit(
                        AuditEvent::new(out.meter_id, out.now, AuditKind::Decision)
                            .order(&a.order_id)
                            .reason("approval_for_order_not_open")
                            .detail(format!(
                                "{:?} by {} ignored: the order is not open here",
                                a.decision, a.by
                            )),
                    );
                    return;
                };
                match a.decision {
                    ApprovalDecision::Approve => {
                        let covered = self.protections(facts, out.now);
                        self.open[idx].approved_by = Some(a.by.clone());
                        self.open[idx].approved_for = covered;
                        out.audit(
                            AuditEvent::new(out.meter_id, out.now, AuditKind::Decision)
                                .order(&a.order_id)
                                .reason("approved")
                                .detail(format!(
                                    "approved by {} at {}{}",
                                    a.by,
                                    a.at,
                                    a.note
                                        .as_deref()
                                        .map(|n| format!(": {n}"))
                                        .unwrap_or_default()
                                )),
                        );
                    }
                    ApprovalDecision::Reject => {
                        let o = &mut self.open[idx];
                        let dispatched = o.unknown_outcome
                            || in_flight_order.as_deref() == Some(o.order.order_id.as_str());
                        if dispatched {
                            o.withdrawn = Some("approval_denied".into());
                        } else {
                            let o = self.open.remove(idx);
                            out.event(
                                &o.order,
                                OrderStatus::Rejected,
                                Some("approval_denied"),
                                |e| {
                                    e.detail = Some(format!(
                                        "rejected by {} at {}{}",
                                        a.by,
                                        a.at,
                                        a.note
                                            .as_deref()
                                            .map(|n| format!(": {n}"))
                                            .unwrap_or_default()
                                    ))
                                },
                            );
                        }
                    }
                }
            }
        }
    }

    /// A protected customer cut for non-payment (without an approval that covered the
    /// protection) gets a reconnect order raised here, once.
    fn restore_if_obliged(&mut self, facts: &MeterFacts, out: &mut Out) {
        let Some(cut) = &self.last_cut else { return };
        if cut.restore_ordered
            || cut.reason != ReasonCode::NonPayment
            || (cut.approved && !cut.protection_after_cut)
            || self.switch != SwitchState::Disconnected
        {
            return;
        }
        let flags = self.effective_flags(facts, out.now);
        let protections: Vec<_> = BASELINE_PROTECTIONS
            .into_iter()
            .filter(|p| flags.contains(p.flag()))
            .collect();
        if protections.is_empty() {
            return;
        }
        let cut_order = cut.order_id.clone();
        if let Some(c) = &mut self.last_cut {
            c.restore_ordered = true;
        }
        if self.open.iter().any(|o| o.order.kind.restores_power()) {
            return; // a reconnect is already on its way
        }
        let order = Order {
            order_id: format!("{cut_order}/restore"),
            kind: OrderKind::Reconnect,
            reason: ReasonCode::RestoreObligation,
            meter_id: out.meter_id.to_string(),
            service_point_id: None,
            account_id: None,
            priority: 1,
            earliest_at: None,
            latest_at: None,
            notice_sent_at: None,
            campaign_id: None,
            target_order_id: Some(cut_order.clone()),
            notes: None,
            created_at: Some(out.now),
            amount_due: None,
        };
        let detail = format!(
            "meter is protected ({protections:?}) and was disconnected for non-payment by {cut_order}: restore obligation"
        );
        out.actions.push(Action::NewOrder(OrderRecord {
            order: order.clone(),
            status: OrderStatus::Received,
            received_at: out.now,
            updated_at: out.now,
            reason: Some("restore_obligation".into()),
            source: None,
        }));
        out.audit(
            AuditEvent::new(out.meter_id, out.now, AuditKind::Decision)
                .order(&order.order_id)
                .reason("restore_obligation")
                .detail(detail.clone()),
        );
        out.event(
            &order,
            OrderStatus::Received,
            Some("restore_obligation"),
            |e| e.detail = Some(detail),
        );
        let seq = self.next_seq;
        self.next_seq += 1;
        self.open.push(OpenOrder {
            order,
            status: OrderStatus::Received,
            attempts: 0,
            status_checks: 0,
            status_checks_lost: 0,
            unknown_outcome: false,
            withdrawn: None,
            not_before: None,
            seq,
            hold: None,
            approved_by: None,
            approved_for: Vec::new(),
            campaign_hold: false,
        });
    }

    fn on_recover(&mut self, out: &mut Out, policy: &RetryPolicy) {
        if let Some(f) = self.in_flight.take() {
            out.audit(
                AuditEvent::new(out.meter_id, out.now, AuditKind::Recovered)
                    .order(&f.command.order_id)
                    .command(&f.command.command_id, f.command.kind)
                    .reason("in_flight_at_restart")
                    .detail("outcome unknown after restart: switch status will be asked before any retry"),
            );
            if let Some(idx) = self
                .open
                .iter()
                .position(|o| o.order.order_id == f.command.order_id)
            {
                match (f.purpose, f.command.kind) {
                    // A restart is not an unanswered status check: the check lost in it is not
                    // counted against `max_attempts` (only checks that got no answer are).
                    (Purpose::StatusCheck, _) => {
                        let o = &mut self.open[idx];
                        o.status_checks_lost += 1;
                        o.unknown_outcome = true;
                        o.not_before = None;
                    }
                    // A lost read counts as a failed attempt; reads are harmless to repeat.
                    (Purpose::Execute, CommandKind::Read) => self.fail_or_retry(
                        idx,
                        FailureCode::NetworkTimeout,
                        Some("answer lost in a restart".into()),
                        &f.command,
                        out,
                        policy,
                    ),
                    _ => {
                        let o = &mut self.open[idx];
                        o.unknown_outcome = true;
                        o.not_before = None;
                    }
                }
            }
            if f.command.kind.target_state().is_some() {
                self.switch = SwitchState::Unknown;
            }
        }
    }

    fn on_deadline(&mut self, command_id: &str, out: &mut Out, policy: &RetryPolicy) {
        let matches = self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.command.command_id == command_id);
        if !matches {
            return;
        }
        let f = self.in_flight.take().expect("checked");
        out.audit(
            AuditEvent::new(out.meter_id, out.now, AuditKind::CommandTimedOut)
                .order(&f.command.order_id)
                .command(&f.command.command_id, f.command.kind)
                .reason("no_answer_before_deadline"),
        );
        let Some(idx) = self
            .open
            .iter()
            .position(|o| o.order.order_id == f.command.order_id)
        else {
            return;
        };
        match (f.purpose, f.command.kind) {
            (Purpose::Execute, CommandKind::Read) => self.fail_or_retry(
                idx,
                FailureCode::NetworkTimeout,
                Some("no answer before the deadline".into()),
                &f.command,
                out,
                policy,
            ),
            (Purpose::Execute, _) => {
                let o = &mut self.open[idx];
                o.unknown_outcome = true;
                o.not_before = None;
                self.switch = SwitchState::Unknown;
            }
            (Purpose::StatusCheck, _) => {
                let o = &mut self.open[idx];
                o.not_before = Some(add(out.now, policy.backoff(o.status_checks)));
            }
        }
    }

    fn on_result(&mut self, r: CommandResult, out: &mut Out, policy: &RetryPolicy) {
        let matches = self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.command.command_id == r.command_id);
        if !matches {
            // A late answer (after its deadline) or one for a command we never sent: keep the
            // switch knowledge if it is newer, change nothing else.
            let mut a = AuditEvent::new(out.meter_id, out.now, AuditKind::LateResult)
                .reason(r.outcome_label())
                .detail(format!(
                    "result for {} which is not in flight",
                    r.command_id
                ));
            a.command_id = Some(r.command_id.clone());
            out.audit(a);
            if let CommandOutcome::Confirmed { switch_state, .. } = &r.outcome {
                if self.switch_known_at.is_none_or(|t| r.at > t) {
                    self.switch = *switch_state;
                    self.switch_known_at = Some(r.at);
                }
            }
            return;
        }
        let f = self.in_flight.take().expect("checked");
        out.audit(
            AuditEvent::new(out.meter_id, out.now, AuditKind::CommandResult)
                .order(&f.command.order_id)
                .command(&f.command.command_id, f.command.kind)
                .reason(r.outcome_label())
                .detail(serde_json::to_string(&r.outcome).unwrap_or_default()),
        );
        if let CommandOutcome::Confirmed {
            switch_state,
            register_kwh,
        } = &r.outcome
        {
            if f.command.kind != CommandKind::Read || *switch_state != SwitchState::Unknown {
                self.switch = *switch_state;
                self.switch_known_at = Some(r.at);
            }
            if register_kwh.is_some() {
                self.last_register_kwh = *register_kwh;
            }
            if self.switch == SwitchState::Connected {
                self.last_cut = None;
            }
        }
        let Some(idx) = self
            .open
            .iter()
            .position(|o| o.order.order_id == f.command.order_id)
        else {
            return;
        };
        let target = command_for(self.open[idx].order.kind).and_then(CommandKind::target_state);
        if let CommandOutcome::Confirmed { switch_state, .. } = &r.outcome {
            if *switch_state == SwitchState::Disconnected
                && target == Some(SwitchState::Disconnected)
            {
                let o = &self.open[idx];
                self.last_cut = Some(Cut {
                    order_id: o.order.order_id.clone(),
                    reason: o.order.reason,
                    at: r.at,
                    approved: o.approved_by.is_some(),
                    protection_after_cut: false,
                    restore_ordered: false,
                });
            }
        }
        match (f.purpose, &r.outcome) {
            (
                Purpose::Execute,
                CommandOutcome::Confirmed {
                    switch_state,
                    register_kwh,
                },
            ) => {
                if target.is_none() || target == Some(*switch_state) {
                    let o = self.open.remove(idx);
                    let (s, kwh, cid, att) = (
                        *switch_state,
                        *register_kwh,
                        f.command.command_id.clone(),
                        f.command.attempt,
                    );
                    if target.is_some() {
                        out.event(
                            &o.order,
                            OrderStatus::Confirmed,
                            Some("head_end_confirmed"),
                            |e| {
                                e.switch_state = Some(s);
                                e.register_kwh = kwh;
                                e.command_id = Some(cid.clone());
                                e.attempt = Some(att);
                            },
                        );
                    }
                    out.event(&o.order, OrderStatus::Completed, Some("done"), |e| {
                        e.switch_state = Some(s);
                        e.register_kwh = kwh;
                        e.command_id = Some(cid);
                        e.attempt = Some(att);
                    });
                } else {
                    self.fail_or_retry(
                        idx,
                        FailureCode::StateMismatch,
                        Some(format!(
                            "head-end reports {switch_state:?} after {}",
                            f.command.kind.as_str()
                        )),
                        &f.command,
                        out,
                        policy,
                    );
                }
            }
            (Purpose::Execute, CommandOutcome::Failed { code, detail }) => {
                self.fail_or_retry(idx, *code, detail.clone(), &f.command, out, policy)
            }
            (Purpose::StatusCheck, CommandOutcome::Confirmed { switch_state, .. })
                if *switch_state == SwitchState::Unknown =>
            {
                // The head-end could not read the switch either: ask again later.
                let o = &mut self.open[idx];
                o.not_before = Some(add(out.now, policy.backoff(o.status_checks)));
            }
            (Purpose::StatusCheck, CommandOutcome::Confirmed { switch_state, .. }) => {
                let o = &mut self.open[idx];
                o.unknown_outcome = false;
                o.status_checks = 0;
                o.status_checks_lost = 0;
                if target == Some(*switch_state) {
                    let o = self.open.remove(idx);
                    let s = *switch_state;
                    let cid = f.command.command_id.clone();
                    out.event(
                        &o.order,
                        OrderStatus::Confirmed,
                        Some("confirmed_by_status_check"),
                        |e| {
                            e.switch_state = Some(s);
                            e.command_id = Some(cid.clone());
                            e.detail =
                                Some("the earlier command took effect; not sent again".into());
                        },
                    );
                    out.event(&o.order, OrderStatus::Completed, Some("done"), |e| {
                        e.switch_state = Some(s);
                        e.command_id = Some(cid);
                    });
                } else {
                    // The earlier attempt did not take effect: it is now safe to send again.
                    let cmd = f.command.clone();
                    self.fail_or_retry(
                        idx,
                        FailureCode::NetworkTimeout,
                        Some(format!(
                            "no answer to the previous attempt; switch is {switch_state:?}"
                        )),
                        &cmd,
                        out,
                        policy,
                    );
                }
            }
            (Purpose::StatusCheck, CommandOutcome::Failed { .. }) => {
                let o = &mut self.open[idx];
                o.not_before = Some(add(out.now, policy.backoff(o.status_checks)));
            }
        }
    }

    /// A failed execution: schedule a retry when allowed, else fail the order with an exception.
    fn fail_or_retry(
        &mut self,
        idx: usize,
        code: FailureCode,
        detail: Option<String>,
        cmd: &Command,
        out: &mut Out,
        policy: &RetryPolicy,
    ) {
        if let Some(reason) = self.open[idx].withdrawn.clone() {
            let o = self.open.remove(idx);
            let detail = format!(
                "{} did not take effect ({}); withdrawn, so not retried",
                cmd.command_id,
                code.as_str()
            );
            out.event(&o.order, OrderStatus::Cancelled, Some(&reason), |e| {
                e.detail = Some(detail)
            });
            return;
        }
        let o = &mut self.open[idx];
        if code.retryable() && o.attempts < policy.max_attempts {
            let at = add(out.now, policy.backoff(o.attempts));
            o.not_before = Some(at);
            o.status = OrderStatus::RetryScheduled;
            let (cid, att) = (cmd.command_id.clone(), cmd.attempt);
            let order = o.order.clone();
            out.event(
                &order,
                OrderStatus::RetryScheduled,
                Some(code.as_str()),
                |e| {
                    e.retry_at = Some(at);
                    e.detail = detail;
                    e.command_id = Some(cid);
                    e.attempt = Some(att);
                },
            );
            return;
        }
        let o = self.open.remove(idx);
        let kind = match code {
            c if c.retryable() => ExceptionKind::RetriesExhausted,
            FailureCode::LoadSideVoltage => ExceptionKind::LoadSideVoltage,
            _ => ExceptionKind::CommandRejected,
        };
        let text = format!(
            "{} of meter {} failed after {} attempt(s): {}{}",
            o.order.kind.as_str(),
            out.meter_id,
            o.attempts,
            code.as_str(),
            detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
        self.raise(
            &o,
            kind,
            Some(cmd.command_id.clone()),
            text,
            code.as_str(),
            out,
        );
    }

    fn raise(
        &mut self,
        o: &OpenOrder,
        kind: ExceptionKind,
        command_id: Option<String>,
        text: String,
        reason: &str,
        out: &mut Out,
    ) {
        let ex = ExceptionRecord {
            schema_version: EVENT_SCHEMA_VERSION,
            exception_id: format!("{}/exception", o.order.order_id),
            meter_id: out.meter_id.to_string(),
            order_id: o.order.order_id.clone(),
            command_id,
            kind,
            priority: if o.order.kind.restores_power() {
                1
            } else {
                o.order.priority
            },
            detail: text.clone(),
            raised_at: out.now,
            status: "open".into(),
        };
        out.audit(
            AuditEvent::new(out.meter_id, out.now, AuditKind::ExceptionRaised)
                .order(&o.order.order_id)
                .reason(kind.as_str())
                .detail(text.clone()),
        );
        out.actions.push(Action::Exception(ex));
        out.event(&o.order, OrderStatus::Failed, Some(reason), |e| {
            e.detail = Some(text)
        });
    }

    /// Start the next due work when nothing is in flight.
    fn drive(&mut self, out: &mut Out, facts: &MeterFacts, policy: &RetryPolicy) {
        if facts.draining {
            return;
        }
        // Orders policy holds in this pass (re-decided on the next step).
        let mut held: Vec<u64> = Vec::new();
        while self.in_flight.is_none() {
            let now = out.now;
            let Some(idx) = self
                .open
                .iter()
                .enumerate()
                .filter(|(_, o)| {
                    !o.campaign_hold
                        && o.not_before.is_none_or(|t| t <= now)
                        && !held.contains(&o.seq)
                })
                .min_by_key(|(_, o)| (!o.order.kind.restores_power(), o.order.priority, o.seq))
                .map(|(i, _)| i)
            else {
                let mut next = self
                    .open
                    .iter()
                    .filter(|o| !o.campaign_hold)
                    .filter_map(|o| match &o.hold {
                        Some(h) if h.rules.first().map(String::as_str) == Some(UNREGISTERED) => {
                            Some(add(now, UNREGISTERED_RECHECK))
                        }
                        Some(h) => h.until,
                        None => o.not_before,
                    })
                    .min();
                if self.open.iter().any(|o| o.hold.is_some()) {
                    // A certificate that expires may release an order awaiting approval.
                    let expiry = self
                        .certificates
                        .iter()
                        .map(|c| c.expires_at)
                        .filter(|t| *t > now)
                        .min();
                    next = match (next, expiry) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                if let Some(t) = next {
                    out.actions.push(Action::WakeAt(t));
                }
                return;
            };
            if !self.open[idx].unknown_outcome {
                if let Some(reason) = self.open[idx].withdrawn.clone() {
                    // Withdrawn while its command was in progress, which ended without effect.
                    let o = self.open.remove(idx);
                    out.event(&o.order, OrderStatus::Cancelled, Some(&reason), |e| {
                        e.detail =
                            Some("withdrawn; the command in progress did not complete it".into())
                    });
                    continue;
                }
            }
            let kind = self.open[idx].order.kind;
            let unregistered_hold = self.open[idx]
                .hold
                .as_ref()
                .is_some_and(|h| h.rules.first().map(String::as_str) == Some(UNREGISTERED));
            if !facts.known && command_for(kind).is_some() {
                if self.open[idx].order.latest_at.is_some_and(|l| l < now) {
                    let o = self.open.remove(idx);
                    out.event(&o.order, OrderStatus::Failed, Some("expired"), |e| {
                        e.detail =
                            Some("latest_at passed while the meter was not in the registry".into())
                    });
                    continue;
                }
                // Not "no switch": unknown. Wait for the registry record, never fail for it.
                // (No `until` in the hold: the recheck time is not state, so a recheck that
                // finds nothing new writes nothing.)
                let o = &mut self.open[idx];
                let seq = o.seq;
                o.hold = Some(Hold {
                    status: OrderStatus::Deferred,
                    until: None,
                    rules: vec![UNREGISTERED.to_string()],
                });
                if !unregistered_hold {
                    o.status = OrderStatus::Deferred;
                    let order = o.order.clone();
                    let detail = format!(
                        "meter {} is not in the meter registry (yet): the order waits for its registry record and is not sent or failed meanwhile",
                        out.meter_id
                    );
                    out.audit(
                        AuditEvent::new(out.meter_id, now, AuditKind::Decision)
                            .order(&order.order_id)
                            .reason(UNREGISTERED)
                            .detail(detail.clone()),
                    );
                    out.event(&order, OrderStatus::Deferred, Some(UNREGISTERED), |e| {
                        e.detail = Some(detail);
                        e.retry_at = Some(add(now, UNREGISTERED_RECHECK));
                    });
                }
                held.push(seq);
                continue;
            }
            if unregistered_hold {
                self.open[idx].hold = None;
            }
            let Some(cmd_kind) = command_for(kind) else {
                // Not executable here (cancel is handled on arrival; move orders are refused at
                // intake); close it rather than leave it open forever.
                let o = self.open.remove(idx);
                out.event(
                    &o.order,
                    OrderStatus::Failed,
                    Some("kind_not_supported"),
                    |_| {},
                );
                continue;
            };
            if let Some(target) = cmd_kind.target_state() {
                if !facts.has_switch {
                    let o = self.open.remove(idx);
                    let text = format!(
                        "meter {} has no remote service switch: a field order is needed to {}",
                        out.meter_id,
                        kind.as_str()
                    );
                    self.raise(
                        &o,
                        ExceptionKind::FieldOrderNeeded,
                        None,
                        text,
                        "field_order_needed",
                        out,
                    );
                    continue;
                }
                if self.open[idx].unknown_outcome {
                    self.status_check(idx, facts, policy, out);
                    continue;
                }
                if self.switch == target {
                    let o = self.open.remove(idx);
                    let reason = if target == SwitchState::Disconnected {
                        "already_disconnected"
                    } else {
                        "already_connected"
                    };
                    let s = self.switch;
                    out.audit(
                        AuditEvent::new(out.meter_id, now, AuditKind::Decision)
                            .order(&o.order.order_id)
                            .reason(reason)
                            .detail("switch already in the requested state: no command sent"),
                    );
                    out.event(&o.order, OrderStatus::Completed, Some(reason), |e| {
                        e.switch_state = Some(s)
                    });
                    continue;
                }
            }
            if self.open[idx].order.latest_at.is_some_and(|l| l < now) {
                let o = self.open.remove(idx);
                out.event(&o.order, OrderStatus::Failed, Some("expired"), |e| {
                    e.detail = Some("latest_at passed before the command could be sent".into())
                });
                continue;
            }
            let mut decision = None;
            if cmd_kind == CommandKind::Disconnect {
                match self.decide(idx, facts, out) {
                    Ok(d) => decision = Some(d),
                    Err(seq) => {
                        if let Some(seq) = seq {
                            held.push(seq);
                        }
                        continue;
                    }
                }
            }
            self.execute(idx, cmd_kind, facts, policy, out, decision);
        }
    }

    /// Asks the policy whether the disconnect at `idx` may be sent now. `Ok` = send it (with
    /// the decision); `Err(Some(seq))` = held (deferred / awaiting approval); `Err(None)` =
    /// rejected and closed.
    fn decide(
        &mut self,
        idx: usize,
        facts: &MeterFacts,
        out: &mut Out,
    ) -> Result<policy::Decision, Option<u64>> {
        let now = out.now;
        let flags = self.effective_flags(facts, now);
        let o = &self.open[idx];
        let d = facts.policy.decide(
            &o.order,
            flags,
            now,
            &policy::Facts {
                zone: &facts.zone,
                forecasts: &facts.forecasts,
                emergencies: &facts.emergencies,
                approved: self.approval_covers(o, facts, now),
            },
        );
        let detail = || serde_json::to_string(&d).unwrap_or_default();
        let (status, until) = match &d.verdict {
            Verdict::Execute => {
                let o = &mut self.open[idx];
                let was_held = o.hold.take().is_some();
                let mut a = AuditEvent::new(out.meter_id, now, AuditKind::Decision)
                    .order(&o.order.order_id)
                    .reason(if was_held {
                        "policy_released"
                    } else {
                        "policy_allows"
                    })
                    .detail(detail());
                a.status = Some(OrderStatus::Dispatched);
                out.audit(a);
                out.actions.push(Action::Decided(d.verdict_label()));
                return Ok(d);
            }
            Verdict::Reject => {
                let o = self.open.remove(idx);
                let rule = d.first_rule().to_string();
                let text = d.details();
                out.audit(
                    AuditEvent::new(out.meter_id, now, AuditKind::Decision)
                        .order(&o.order.order_id)
                        .reason(format!("policy_rejects:{rule}"))
                        .detail(detail()),
                );
                out.actions.push(Action::Decided(d.verdict_label()));
                out.event(&o.order, OrderStatus::Rejected, Some(&rule), |e| {
                    e.detail = Some(text);
                    e.policy = Some(d);
                });
                return Err(None);
            }
            Verdict::Defer { until } => (OrderStatus::Deferred, *until),
            Verdict::AwaitApproval => (OrderStatus::AwaitingApproval, None),
        };
        let hold = Hold {
            status,
            until,
            rules: d.rules.iter().map(|r| r.rule.clone()).collect(),
        };
        let o = &mut self.open[idx];
        let seq = o.seq;
        if o.hold.as_ref() != Some(&hold) {
            o.hold = Some(hold);
            o.status = status;
            let order = o.order.clone();
            let rule = d.first_rule().to_string();
            let text = d.details();
            out.audit(
                AuditEvent::new(out.meter_id, now, AuditKind::Decision)
                    .order(&order.order_id)
                    .reason(format!("policy_{}:{rule}", d.verdict_label()))
                    .detail(detail()),
            );
            out.actions.push(Action::Decided(d.verdict_label()));
            out.event(&order, status, Some(&rule), |e| {
                e.detail = Some(text);
                e.retry_at = until;
                e.policy = Some(d);
            });
        }
        Err(Some(seq))
    }

    fn execute(
        &mut self,
        idx: usize,
        kind: CommandKind,
        facts: &MeterFacts,
        policy: &RetryPolicy,
        out: &mut Out,
        decision: Option<policy::Decision>,
    ) {
        let o = &mut self.open[idx];
        o.attempts += 1;
        o.not_before = None;
        o.status = OrderStatus::Dispatched;
        let cmd = Command {
            schema_version: crate::domain::command::COMMAND_SCHEMA_VERSION,
            command_id: format!("{}/{}", o.order.order_id, o.attempts),
            order_id: o.order.order_id.clone(),
            meter_id: out.meter_id.to_string(),
            head_end_id: facts.head_end_id.clone(),
            kind,
            attempt: o.attempts,
            issued_at: out.now,
            deadline: add(out.now, policy.command_deadline),
        };
        let order = o.order.clone();
        out.audit(
            AuditEvent::new(out.meter_id, out.now, AuditKind::CommandDispatched)
                .order(&order.order_id)
                .command(&cmd.command_id, kind),
        );
        let (cid, att) = (cmd.command_id.clone(), cmd.attempt);
        out.event(&order, OrderStatus::Dispatched, None, |e| {
            e.command_id = Some(cid);
            e.attempt = Some(att);
            e.policy = decision;
        });
        out.actions.push(Action::ArmDeadline {
            command_id: cmd.command_id.clone(),
            at: cmd.deadline,
        });
        out.actions.push(Action::Dispatch(cmd.clone()));
        self.in_flight = Some(InFlight {
            command: cmd,
            purpose: Purpose::Execute,
        });
    }

    fn status_check(
        &mut self,
        idx: usize,
        facts: &MeterFacts,
        policy: &RetryPolicy,
        out: &mut Out,
    ) {
        let unanswered = {
            let o = &self.open[idx];
            o.status_checks.saturating_sub(o.status_checks_lost)
        };
        if unanswered >= policy.max_attempts {
            let o = self.open.remove(idx);
            let text = format!(
                "the outcome of {} attempt {} on meter {} is unknown and {} status checks got no answer: check the meter before acting",
                o.order.kind.as_str(), o.attempts, out.meter_id, unanswered
            );
            self.raise(
                &o,
                ExceptionKind::OutcomeUnknown,
                None,
                text,
                "outcome_unknown",
                out,
            );
            return;
        }
        let o = &mut self.open[idx];
        o.status_checks += 1;
        o.not_before = None;
        let cmd = Command {
            schema_version: crate::domain::command::COMMAND_SCHEMA_VERSION,
            command_id: format!(
                "{}/{}/status-{}",
                o.order.order_id, o.attempts, o.status_checks
            ),
            order_id: o.order.order_id.clone(),
            meter_id: out.meter_id.to_string(),
            head_end_id: facts.head_end_id.clone(),
            kind: CommandKind::SwitchStatus,
            attempt: o.attempts,
            issued_at: out.now,
            deadline: add(out.now, policy.command_deadline),
        };
        out.audit(
            AuditEvent::new(out.meter_id, out.now, AuditKind::CommandDispatched)
                .order(&cmd.order_id)
                .command(&cmd.command_id, cmd.kind)
                .reason("resolve_unknown_outcome"),
        );
        out.actions.push(Action::ArmDeadline {
            command_id: cmd.command_id.clone(),
            at: cmd.deadline,
        });
        out.actions.push(Action::Dispatch(cmd.clone()));
        self.in_flight = Some(InFlight {
            command: cmd,
            purpose: Purpose::StatusCheck,
        });
    }
}

/// The head-end command that executes an order kind.
pub fn command_for(kind: OrderKind) -> Option<CommandKind> {
    match kind {
        OrderKind::Disconnect | OrderKind::MoveOut => Some(CommandKind::Disconnect),
        OrderKind::Reconnect | OrderKind::MoveIn => Some(CommandKind::Connect),
        OrderKind::Read => Some(CommandKind::Read),
        OrderKind::Cancel => None,
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "policy_tests.rs"]
mod policy_tests;
