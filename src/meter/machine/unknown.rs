//! Unknown outcomes: a command whose deadline passed without an answer, or one that was in
//! flight when switchyard stopped. A switch command's order is marked `unknown_outcome` (the
//! switch state is forgotten) so that `drive` asks for the switch status before any retry; a
//! lost read counts as a failed attempt; a lost status check is asked again.

use crate::domain::{AuditEvent, AuditKind, Command, CommandKind, FailureCode, SwitchState};

use super::{add, MeterMachine, Out, Purpose, RetryPolicy};

impl MeterMachine {
    pub(super) fn on_recover(&mut self, out: &mut Out, policy: &RetryPolicy) {
        if let Some(f) = self.in_flight.take() {
            out.audit(
                AuditEvent::new(out.meter_id, out.now, AuditKind::Recovered)
                    .order(&f.command.order_id)
                    .command(&f.command.command_id, f.command.kind)
                    .reason("in_flight_at_restart")
                    .detail("outcome unknown after restart: switch status will be asked before any retry"),
            );
            if let Some(idx) = self.open_index(&f.command.order_id) {
                match (f.purpose, f.command.kind) {
                    // A restart is not an unanswered status check: the check lost in it is not
                    // counted against `max_attempts` (only checks that got no answer are).
                    (Purpose::StatusCheck, _) => {
                        self.open[idx].status_checks_lost += 1;
                        self.mark_unknown(idx);
                    }
                    // A lost read counts as a failed attempt; reads are harmless to repeat.
                    (Purpose::Execute, CommandKind::Read) => {
                        self.read_lost(idx, "answer lost in a restart", &f.command, out, policy)
                    }
                    _ => self.mark_unknown(idx),
                }
            }
            if f.command.kind.target_state().is_some() {
                self.switch = SwitchState::Unknown;
            }
        }
    }

    pub(super) fn on_deadline(&mut self, command_id: &str, out: &mut Out, policy: &RetryPolicy) {
        let Some(f) = self.take_in_flight(command_id) else {
            return;
        };
        out.audit(
            AuditEvent::new(out.meter_id, out.now, AuditKind::CommandTimedOut)
                .order(&f.command.order_id)
                .command(&f.command.command_id, f.command.kind)
                .reason("no_answer_before_deadline"),
        );
        let Some(idx) = self.open_index(&f.command.order_id) else {
            return;
        };
        match (f.purpose, f.command.kind) {
            (Purpose::Execute, CommandKind::Read) => self.read_lost(
                idx,
                "no answer before the deadline",
                &f.command,
                out,
                policy,
            ),
            (Purpose::Execute, _) => {
                self.mark_unknown(idx);
                self.switch = SwitchState::Unknown;
            }
            (Purpose::StatusCheck, _) => self.check_again_later(idx, out, policy),
        }
    }

    /// The outcome of the order's last command is unknown: resolve it (status check) now.
    fn mark_unknown(&mut self, idx: usize) {
        let o = &mut self.open[idx];
        o.unknown_outcome = true;
        o.not_before = None;
    }

    /// The answer to a read was lost (`why`): a failed attempt.
    fn read_lost(
        &mut self,
        idx: usize,
        why: &str,
        cmd: &Command,
        out: &mut Out,
        policy: &RetryPolicy,
    ) {
        self.fail_or_retry(
            idx,
            FailureCode::NetworkTimeout,
            Some(why.into()),
            cmd,
            out,
            policy,
        );
    }

    /// A status check got no usable answer: ask again after the backoff.
    pub(super) fn check_again_later(&mut self, idx: usize, out: &Out, policy: &RetryPolicy) {
        let o = &mut self.open[idx];
        o.not_before = Some(add(out.now, policy.backoff(o.status_checks)));
    }
}
