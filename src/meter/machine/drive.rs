//! Driving the open orders: while nothing is in flight, pick the next due order (power
//! restorations first, then priority, then arrival), settle what needs no command (withdrawn,
//! expired, unsupported, no remote switch, switch already there), resolve an unknown outcome by
//! a status check, let the policy hold or reject a disconnect (`hold`), and otherwise dispatch
//! the command. With nothing due, arm a wake-up for the earliest time something will be.

use crate::domain::{
    AuditEvent, AuditKind, Command, CommandKind, ExceptionKind, Hold, InFlight, OpenOrder,
    OrderStatus, Purpose, SwitchState, Timestamp,
};
use crate::policy;

use super::{
    add, command_for, Action, MeterFacts, MeterMachine, Out, RetryPolicy, UNREGISTERED,
    UNREGISTERED_RECHECK,
};

/// A command for the open order `o` to the meter's head-end, due back within the deadline.
fn command(
    o: &OpenOrder,
    command_id: String,
    kind: CommandKind,
    facts: &MeterFacts,
    policy: &RetryPolicy,
    out: &Out,
) -> Command {
    Command {
        schema_version: crate::domain::command::COMMAND_SCHEMA_VERSION,
        command_id,
        order_id: o.order.order_id.clone(),
        meter_id: out.meter_id.to_string(),
        head_end_id: facts.head_end_id.to_string(),
        kind,
        attempt: o.attempts,
        issued_at: out.now,
        deadline: add(out.now, policy.command_deadline),
        check_load_side_voltage: facts.head_end.check_load_side_voltage
            && matches!(
                kind,
                CommandKind::Connect | CommandKind::ArmConnect | CommandKind::Disconnect
            ),
        demand_limit_kw: None,
    }
}

/// The open order is held because its meter is not in the registry (yet).
fn unregistered(o: &OpenOrder) -> bool {
    o.hold
        .as_ref()
        .is_some_and(|h| h.rules.first().map(String::as_str) == Some(UNREGISTERED))
}

impl MeterMachine {
    /// Start the next due work when nothing is in flight.
    pub(super) fn drive(&mut self, out: &mut Out, facts: &MeterFacts, policy: &RetryPolicy) {
        if facts.draining {
            return;
        }
        // The head-end takes commands again: no order is held for it any longer (one that is
        // not due yet waits for its own time, not for the field-order deadline). Not on a
        // probe: if it fails, the held orders keep their field-order deadline.
        if facts.head_end.down_until.is_none() && !facts.head_end.probing {
            for o in &mut self.open {
                o.head_end_hold_ends = None;
                o.head_end_retry_at = None;
            }
        }
        // Orders policy holds in this pass (re-decided on the next step).
        let mut held: Vec<u64> = Vec::new();
        while self.in_flight.is_none() {
            let Some(idx) = self.next_due(out.now, &held) else {
                if let Some(t) = self.next_wake(out.now) {
                    out.actions.push(Action::WakeAt(t));
                }
                return;
            };
            if self.close_if_withdrawn(idx, out) {
                continue;
            }
            let kind = self.open[idx].order.kind;
            let unregistered_hold = unregistered(&self.open[idx]);
            if !facts.known && command_for(kind).is_some() {
                if let Some(seq) = self.await_registry(idx, unregistered_hold, out) {
                    held.push(seq);
                }
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
            // A down head-end holds what would go to it (not a switch order that needs no
            // command: no remote switch, or the switch already there).
            let settles_without_command = cmd_kind.target_state().is_some_and(|t| {
                !facts.has_switch || (!self.open[idx].unknown_outcome && self.switch == t)
            });
            if let (Some(until), false) = (facts.head_end.down_until, settles_without_command) {
                if let Some(seq) = self.hold_for_head_end(idx, until, facts, out) {
                    held.push(seq);
                }
                continue;
            }
            if facts.head_end.segment_full && !settles_without_command {
                // No room in the segment: waits, unchanged (no event, nothing stored).
                held.push(self.open[idx].seq);
                let restoring = kind.restores_power();
                match out.actions.iter_mut().find_map(|a| match a {
                    Action::AwaitSegment { restoring } => Some(restoring),
                    _ => None,
                }) {
                    Some(r) => *r |= restoring,
                    None => out.actions.push(Action::AwaitSegment { restoring }),
                }
                continue;
            }
            // A disconnect last sent as a demand limit aims for `load_limited` (a switch found
            // open does not settle it: the pack allowed a limit, not a cut).
            if let Some(target) = cmd_kind.target_state().and(self.target(idx)) {
                if self.switch_precheck(idx, target, facts, policy, out) {
                    continue;
                }
            }
            if self.close_if_expired(
                idx,
                "latest_at passed before the command could be sent",
                out,
            ) {
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
            // The pack limits demand instead of cutting off: a meter already limited is done.
            let cmd_kind = match decision.as_ref().and_then(|d| d.load_limit_kw) {
                Some(_) if self.switch == SwitchState::LoadLimited => {
                    let o = self.open.remove(idx);
                    out.audit(
                        AuditEvent::new(out.meter_id, out.now, AuditKind::Decision)
                            .order(&o.order.order_id)
                            .reason("already_load_limited")
                            .detail("the meter is already under a demand limit: no command sent"),
                    );
                    out.event(
                        &o.order,
                        OrderStatus::Completed,
                        Some("already_load_limited"),
                        |e| e.switch_state = Some(SwitchState::LoadLimited),
                    );
                    continue;
                }
                Some(_) => CommandKind::LoadLimit,
                None => cmd_kind,
            };
            self.execute(idx, cmd_kind, facts, policy, out, decision);
        }
    }

    /// The open order to work on next: not held by its campaign, an operator or (in this pass)
    /// by policy,
    /// and due; power restorations first, then priority, then arrival.
    fn next_due(&self, now: Timestamp, held: &[u64]) -> Option<usize> {
        // An armed switch waits for the customer: no other switch command meanwhile.
        let armed = self.armed();
        self.open
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                !o.campaign_hold
                    && o.operator_hold.is_none()
                    && o.awaiting_link.is_none()
                    && o.armed_until.is_none()
                    && !(armed
                        && command_for(o.order.kind).is_some_and(|k| k.target_state().is_some()))
                    && o.not_before.is_none_or(|t| t <= now)
                    && !held.contains(&o.seq)
            })
            .min_by_key(|(_, o)| (!o.order.kind.restores_power(), o.order.priority, o.seq))
            .map(|(i, _)| i)
    }

    /// With nothing due now: the earliest time something will be (a retry or schedule, the end
    /// of a hold, a registry recheck, the end of a move-in's wait for its move-out, or a
    /// certificate that expires while an order is held).
    pub(super) fn next_wake(&self, now: Timestamp) -> Option<Timestamp> {
        let mut next = self
            .open
            .iter()
            .filter(|o| !o.campaign_hold && o.operator_hold.is_none())
            .filter_map(|o| match &o.hold {
                _ if o.awaiting_link.is_some() => o.awaiting_link,
                _ if o.armed_until.is_some() => o.armed_until,
                _ if o.head_end_hold_ends.is_some() => o
                    .head_end_retry_at
                    .filter(|t| *t > now)
                    .into_iter()
                    .chain(o.head_end_hold_ends)
                    .min(),
                Some(_) if unregistered(o) => Some(add(now, UNREGISTERED_RECHECK)),
                Some(h) => h.until,
                None => o.not_before,
            })
            // (A time already passed belongs to an order held in this pass, e.g. waiting for
            // room in its network segment, which wakes it: no wake-up loop.)
            .filter(|t| *t > now)
            .min();
        if self.open.iter().any(|o| o.hold.is_some()) {
            // A certificate that expires may release an order awaiting approval.
            let expiry = self
                .memory
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
        next
    }

    /// Withdrawn while its command was in progress, which ended without effect: cancelled.
    fn close_if_withdrawn(&mut self, idx: usize, out: &mut Out) -> bool {
        if self.open[idx].unknown_outcome {
            return false;
        }
        let Some(reason) = self.open[idx].withdrawn.clone() else {
            return false;
        };
        let o = self.open.remove(idx);
        out.event_detail(
            &o.order,
            OrderStatus::Cancelled,
            &reason,
            "withdrawn; the command in progress did not complete it",
        );
        true
    }

    /// Past its `latest_at`: failed as expired.
    pub(super) fn close_if_expired(&mut self, idx: usize, detail: &str, out: &mut Out) -> bool {
        if !self.open[idx].order.latest_at.is_some_and(|l| l < out.now) {
            return false;
        }
        let o = self.open.remove(idx);
        out.event_detail(&o.order, OrderStatus::Failed, "expired", detail);
        true
    }

    /// The meter is not in the registry (yet): not "no switch" but unknown. The order waits
    /// for its registry record and is never failed for it (unless it expires meanwhile).
    /// `Some(seq)` = held in this pass.
    fn await_registry(
        &mut self,
        idx: usize,
        unregistered_hold: bool,
        out: &mut Out,
    ) -> Option<u64> {
        let now = out.now;
        if self.close_if_expired(
            idx,
            "latest_at passed while the meter was not in the registry",
            out,
        ) {
            return None;
        }
        // (No `until` in the hold: the recheck time is not state, so a recheck that finds
        // nothing new writes nothing.)
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
        Some(seq)
    }

    /// What a switch order needs before it is executed: a remote switch (else an exception for
    /// a field order), a known outcome of its earlier attempt (else a status check goes out),
    /// and a switch not already in the `target` state (else it completes without a command).
    /// True when one of these dealt with the order in this pass.
    fn switch_precheck(
        &mut self,
        idx: usize,
        target: SwitchState,
        facts: &MeterFacts,
        policy: &RetryPolicy,
        out: &mut Out,
    ) -> bool {
        let kind = self.open[idx].order.kind;
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
            return true;
        }
        if self.open[idx].unknown_outcome {
            self.status_check(idx, facts, policy, out);
            return true;
        }
        if self.switch == target {
            let o = self.open.remove(idx);
            let reason = match target {
                SwitchState::Disconnected => "already_disconnected",
                SwitchState::LoadLimited => "already_load_limited",
                _ => "already_connected",
            };
            let s = self.switch;
            out.audit(
                AuditEvent::new(out.meter_id, out.now, AuditKind::Decision)
                    .order(&o.order.order_id)
                    .reason(reason)
                    .detail("switch already in the requested state: no command sent"),
            );
            out.event(&o.order, OrderStatus::Completed, Some(reason), |e| {
                e.switch_state = Some(s)
            });
            return true;
        }
        false
    }

    /// Sends `cmd`: arms its deadline, dispatches it, and keeps it in flight.
    fn send(&mut self, cmd: Command, purpose: Purpose, out: &mut Out) {
        out.actions.push(Action::ArmDeadline {
            command_id: cmd.command_id.clone(),
            at: cmd.deadline,
        });
        let cmd = std::sync::Arc::new(cmd);
        out.actions.push(Action::Dispatch(cmd.clone()));
        self.in_flight = Some(Box::new(InFlight {
            command: cmd,
            purpose,
        }));
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
        // Lifting a demand limit closes nothing: a plain connect, even where reconnects arm
        // (arming would take the supply off until the customer presses the button).
        let kind = if kind == CommandKind::Connect
            && facts.head_end.arm_reconnect
            && self.switch != SwitchState::LoadLimited
        {
            CommandKind::ArmConnect
        } else {
            kind
        };
        let o = &mut self.open[idx];
        o.attempts += 1;
        o.not_before = None;
        o.head_end_hold_ends = None;
        o.head_end_retry_at = None;
        o.status = OrderStatus::Dispatched;
        o.load_limit = kind == CommandKind::LoadLimit;
        let command_id = format!("{}/{}", o.order.order_id, o.attempts);
        let mut cmd = command(o, command_id, kind, facts, policy, out);
        if kind == CommandKind::LoadLimit {
            cmd.demand_limit_kw = decision.as_ref().and_then(|d| d.load_limit_kw);
        }
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
        self.send(cmd, Purpose::Execute, out);
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
        o.head_end_hold_ends = None;
        o.head_end_retry_at = None;
        let command_id = format!(
            "{}/{}/status-{}",
            o.order.order_id, o.attempts, o.status_checks
        );
        let cmd = command(o, command_id, CommandKind::SwitchStatus, facts, policy, out);
        out.audit(
            AuditEvent::new(out.meter_id, out.now, AuditKind::CommandDispatched)
                .order(&cmd.order_id)
                .command(&cmd.command_id, cmd.kind)
                .reason("resolve_unknown_outcome"),
        );
        self.send(cmd, Purpose::StatusCheck, out);
    }
}
