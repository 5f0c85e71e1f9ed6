//! Head-end answers. An answer to the command in flight updates what the machine knows of the
//! switch (and the register), records a non-payment cut for the restore obligation, and then
//! completes the order when the switch is where the order wants it, resolves an unknown
//! outcome by a status check's answer (confirmed, or safe to send again), or hands a failure to
//! `failure` (retry or exception). A late answer changes nothing but newer switch knowledge.

use crate::domain::{
    AuditEvent, AuditKind, Command, CommandKind, CommandOutcome, CommandResult, Cut, FailureCode,
    OrderEvent, OrderStatus, SwitchState,
};

use super::{MeterMachine, Out, Purpose, RetryPolicy};

impl MeterMachine {
    pub(super) fn on_result(
        &mut self,
        r: CommandResult,
        facts: &super::MeterFacts,
        out: &mut Out,
        policy: &RetryPolicy,
    ) {
        let Some(f) = self.take_in_flight(&r.command_id) else {
            self.late_result(&r, out);
            return;
        };
        out.audit(
            AuditEvent::new(out.meter_id, out.now, AuditKind::CommandResult)
                .order(&f.command.order_id)
                .command(&f.command.command_id, f.command.kind)
                .reason(r.outcome_label())
                .detail(serde_json::to_string(&r.outcome).unwrap_or_default()),
        );
        // A disconnect that took effect: its final read is the register in the answer,
        // checked against the history before it (so before the answer's register joins it).
        let idx = self.open_index(&f.command.order_id);
        let target = idx.and_then(|i| self.target(i));
        let final_read = match (&r.outcome, idx) {
            (
                CommandOutcome::Confirmed {
                    switch_state: SwitchState::Disconnected,
                    register_kwh: Some(kwh),
                    ..
                },
                Some(i),
            ) if target == Some(SwitchState::Disconnected) => {
                let p = crate::domain::RegisterPoint {
                    at: r.at,
                    kwh: *kwh,
                };
                let id = self.open[i].order.order_id.clone();
                Some((id.clone(), self.check_final_read(&id, p, facts, out)))
            }
            _ => None,
        };
        self.learn_switch(&f.command, &r);
        let Some(idx) = idx else {
            return;
        };
        self.record_cut(idx, target, &r);
        match (f.purpose, &r.outcome) {
            (
                Purpose::Execute,
                CommandOutcome::Confirmed {
                    switch_state: SwitchState::Armed,
                    ..
                },
            ) if f.command.kind == CommandKind::ArmConnect => {
                self.arm(idx, &f.command.command_id, facts, out)
            }
            (
                Purpose::Execute,
                CommandOutcome::Confirmed {
                    switch_state,
                    register_kwh,
                    load_side_voltage,
                },
            ) => self.confirm_execution(
                idx,
                &f.command,
                (*switch_state, *register_kwh, *load_side_voltage),
                target,
                out,
                policy,
            ),
            (Purpose::Execute, CommandOutcome::Failed { code, detail }) => {
                self.fail_or_retry(idx, *code, detail.clone(), &f.command, out, policy)
            }
            (Purpose::StatusCheck, CommandOutcome::Confirmed { switch_state, .. })
                if *switch_state == SwitchState::Unknown =>
            {
                // The head-end could not read the switch either: ask again later.
                self.check_again_later(idx, out, policy);
            }
            (
                Purpose::StatusCheck,
                CommandOutcome::Confirmed {
                    switch_state: SwitchState::Armed,
                    ..
                },
            ) if target == Some(SwitchState::Connected) && facts.head_end.arm_reconnect => {
                // The lost arming took effect: wait for the customer (not sent again).
                let o = &mut self.open[idx];
                o.unknown_outcome = false;
                o.status_checks = 0;
                o.status_checks_lost = 0;
                self.arm(idx, &f.command.command_id, facts, out)
            }
            (Purpose::StatusCheck, CommandOutcome::Confirmed { switch_state, .. }) => {
                self.resolve_by_status(idx, &f.command, *switch_state, target, out, policy)
            }
            (Purpose::StatusCheck, CommandOutcome::Failed { .. }) => {
                self.check_again_later(idx, out, policy);
            }
        }
        // The completion event carries the final read.
        if let Some((id, fr)) = final_read {
            let done = out.actions.iter_mut().rev().find_map(|a| match a {
                crate::meter::machine::Action::Event(e)
                    if e.order_id == id && e.status == OrderStatus::Completed =>
                {
                    Some(e)
                }
                _ => None,
            });
            if let Some(e) = done {
                e.final_read = Some(fr);
            }
        }
    }

    /// A late answer (after its deadline) or one for a command we never sent: keep the switch
    /// knowledge if it is newer, change nothing else.
    fn late_result(&mut self, r: &CommandResult, out: &mut Out) {
        let mut a = AuditEvent::new(out.meter_id, out.now, AuditKind::LateResult)
            .reason(r.outcome_label())
            .detail(format!(
                "result for {} which is not in flight",
                r.command_id
            ));
        a.command_id = Some(r.command_id.clone());
        out.audit(a);
        if let CommandOutcome::Confirmed { switch_state, .. } = &r.outcome {
            if self.memory.switch_known_at.is_none_or(|t| r.at > t) {
                self.switch = *switch_state;
                self.memory.switch_known_at = Some(r.at);
            }
        }
    }

    /// What a confirmed answer to `cmd` says about the switch and the register.
    fn learn_switch(&mut self, cmd: &Command, r: &CommandResult) {
        if let CommandOutcome::Confirmed {
            switch_state,
            register_kwh,
            load_side_voltage,
        } = &r.outcome
        {
            // "Closed" with no voltage on the load side did not restore power: not trusted
            // (the retry is sent; a non-payment cut keeps its restore obligation).
            let switch_state =
                &if *switch_state == SwitchState::Connected && *load_side_voltage == Some(false) {
                    SwitchState::Unknown
                } else {
                    *switch_state
                };
            if cmd.kind != CommandKind::Read || *switch_state != SwitchState::Unknown {
                self.switch = *switch_state;
                self.memory.switch_known_at = Some(r.at);
            }
            if let Some(kwh) = *register_kwh {
                self.memory.last_register_kwh = Some(kwh);
                self.remember_register(crate::domain::RegisterPoint { at: r.at, kwh });
            }
            if self.switch == SwitchState::Connected {
                self.memory.last_cut = None;
            }
        }
    }

    /// A disconnect order confirmed disconnected is the meter's last cut (the restore
    /// obligation looks at it).
    fn record_cut(&mut self, idx: usize, target: Option<SwitchState>, r: &CommandResult) {
        if let CommandOutcome::Confirmed {
            switch_state,
            register_kwh,
            ..
        } = &r.outcome
        {
            // A demand limit is a cut too: a reconnect lifts it, and the restore obligation
            // applies to it; a limit answered "disconnected" (the adapter cut the supply) is a
            // full cut, whatever the order asked for.
            let cut = match (switch_state, target) {
                (SwitchState::Disconnected, Some(SwitchState::Disconnected))
                | (SwitchState::Disconnected, Some(SwitchState::LoadLimited))
                | (SwitchState::LoadLimited, Some(SwitchState::LoadLimited)) => true,
                _ => false,
            };
            if cut {
                let o = &self.open[idx];
                self.memory.last_cut = Some(Box::new(Cut {
                    order_id: o.order.order_id.clone(),
                    reason: o.order.reason,
                    at: r.at,
                    approved: o.approved_by.is_some(),
                    protection_after_cut: false,
                    restore_ordered: false,
                    register_kwh: *register_kwh,
                    watch_ended: false,
                }));
            }
        }
    }

    /// The head-end confirmed the execution `cmd`: complete the order when the switch is where
    /// it should be (or the order has no target state), else it failed with a state mismatch.
    fn confirm_execution(
        &mut self,
        idx: usize,
        cmd: &Command,
        (switch_state, register_kwh, load_side_voltage): (SwitchState, Option<f64>, Option<bool>),
        target: Option<SwitchState>,
        out: &mut Out,
        policy: &RetryPolicy,
    ) {
        if target == Some(SwitchState::Connected)
            && switch_state == SwitchState::Connected
            && load_side_voltage == Some(false)
        {
            // Closed, and still no power at the premise: the switch's word alone is not
            // trusted (else the retry would find it "already connected" and send nothing).
            self.switch = SwitchState::Unknown;
            self.fail_or_retry(
                idx,
                FailureCode::NoVoltageAfterConnect,
                Some(
                    "the switch reports closed but the meter measures no load-side voltage".into(),
                ),
                cmd,
                out,
                policy,
            );
            return;
        }
        if target == Some(SwitchState::Disconnected)
            && switch_state == SwitchState::Disconnected
            && load_side_voltage == Some(true)
        {
            // The switch is open, so the order is done; the premise still has power.
            let o = &self.open[idx];
            let text = format!(
                "meter {} confirmed its switch open for {} {} but measures voltage on the load side: the premise may be bypassed, fed by a generator or tampered with; investigate in the field",
                out.meter_id,
                o.order.kind.as_str(),
                o.order.order_id
            );
            let id = o.order.order_id.clone();
            out.review(
                &id,
                "load_side_voltage",
                crate::domain::ExceptionKind::PossibleTamper,
                2,
                text,
            );
        }
        if target.is_none() || target == Some(switch_state) {
            let o = self.open.remove(idx);
            let (s, kwh, cid, att) = (
                switch_state,
                register_kwh,
                cmd.command_id.clone(),
                cmd.attempt,
            );
            let answer = |e: &mut OrderEvent| {
                e.switch_state = Some(s);
                e.register_kwh = kwh;
                e.command_id = Some(cid.clone());
                e.attempt = Some(att);
            };
            if target.is_some() {
                out.event(
                    &o.order,
                    OrderStatus::Confirmed,
                    Some("head_end_confirmed"),
                    &answer,
                );
            }
            out.event(
                &o.order,
                OrderStatus::Completed,
                Some(completion_reason(switch_state)),
                &answer,
            );
        } else {
            self.fail_or_retry(
                idx,
                FailureCode::StateMismatch,
                Some(format!(
                    "head-end reports {switch_state:?} after {}",
                    cmd.kind.as_str()
                )),
                cmd,
                out,
                policy,
            );
        }
    }

    /// A status check read the switch: the outcome is known again. The earlier command took
    /// effect (the order is confirmed without sending it again), or it did not (send again).
    fn resolve_by_status(
        &mut self,
        idx: usize,
        cmd: &Command,
        switch_state: SwitchState,
        target: Option<SwitchState>,
        out: &mut Out,
        policy: &RetryPolicy,
    ) {
        let o = &mut self.open[idx];
        o.unknown_outcome = false;
        o.status_checks = 0;
        o.status_checks_lost = 0;
        if target == Some(switch_state) {
            let o = self.open.remove(idx);
            let (s, cid) = (switch_state, cmd.command_id.clone());
            let answer = |e: &mut OrderEvent| {
                e.switch_state = Some(s);
                e.command_id = Some(cid.clone());
            };
            out.event(
                &o.order,
                OrderStatus::Confirmed,
                Some("confirmed_by_status_check"),
                |e| {
                    answer(e);
                    e.detail = Some("the earlier command took effect; not sent again".into());
                },
            );
            out.event(
                &o.order,
                OrderStatus::Completed,
                Some(completion_reason(switch_state)),
                &answer,
            );
        } else {
            // The earlier attempt did not take effect: it is now safe to send again.
            self.fail_or_retry(
                idx,
                FailureCode::NetworkTimeout,
                Some(format!(
                    "no answer to the previous attempt; switch is {switch_state:?}"
                )),
                cmd,
                out,
                policy,
            );
        }
    }
}

/// The reason a completed order gives: `load_limited` when the meter took a demand limit
/// instead of the full cut, `done` otherwise.
fn completion_reason(reached: SwitchState) -> &'static str {
    if reached == SwitchState::LoadLimited {
        "load_limited"
    } else {
        "done"
    }
}
