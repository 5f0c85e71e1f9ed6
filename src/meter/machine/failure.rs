//! Failed orders. A failed execution is retried with exponential backoff while the failure is
//! retryable and attempts are left; an order withdrawn meanwhile is cancelled instead; anything
//! else fails the order with an exception for a person (`raise`, also used where no command
//! can help: no remote switch, an outcome no status check could learn).

use crate::domain::event::EVENT_SCHEMA_VERSION;
use crate::domain::{
    AuditEvent, AuditKind, Command, ExceptionKind, ExceptionRecord, FailureCode, OpenOrder,
    OrderStatus,
};

/// The reason of the `retry_scheduled` event of an execution command that was never sent.
pub(crate) const NOT_SENT: &str = "not_sent";

use super::{add, Action, MeterMachine, Out, Purpose, RetryPolicy};

impl MeterMachine {
    /// The actor did not send `command_id`: its policy decision was older than the actor's
    /// limit when the durable write completed (a stalled store), or the meter's unit was not
    /// leased here any more then (fencing). The switch did not move, so
    /// no status check is needed and the attempt is not counted against `max_attempts`; the
    /// order is decided again after a backoff (the store is slow: deciding at once would only
    /// add to its queue). Its `dispatched` event was already stored, so a `retry_scheduled`
    /// event with reason `not_sent` tells consumers what became of that attempt.
    pub(super) fn on_not_sent(&mut self, command_id: &str, out: &mut Out, policy: &RetryPolicy) {
        let Some(f) = self.take_in_flight(command_id) else {
            return;
        };
        out.audit(
            AuditEvent::new(out.meter_id, out.now, AuditKind::CommandNotSent)
                .order(&f.command.order_id)
                .command(&f.command.command_id, f.command.kind)
                .reason("not_sent")
                .detail("stored but not sent: the policy decision was too old when the store confirmed the write, or this instance no longer held the meter's lease then; decided again after a backoff"),
        );
        let Some(idx) = self.open_index(&f.command.order_id) else {
            return;
        };
        if f.purpose == Purpose::StatusCheck {
            // (The actor holds back executions only; a check is simply asked again.)
            self.check_again_later(idx, out, policy);
            return;
        }
        if let Some(reason) = self.open[idx].withdrawn.clone() {
            let o = self.open.remove(idx);
            let detail = format!(
                "{} was not sent; withdrawn, so not retried",
                f.command.command_id
            );
            out.event_detail(&o.order, OrderStatus::Cancelled, &reason, detail);
            return;
        }
        let o = &mut self.open[idx];
        o.not_sent += 1;
        let at = add(out.now, policy.backoff(o.not_sent));
        o.not_before = Some(at);
        o.status = OrderStatus::RetryScheduled;
        let order = o.order.clone();
        out.event(&order, OrderStatus::RetryScheduled, Some(NOT_SENT), |e| {
            e.retry_at = Some(at);
            e.detail = Some("the command of this attempt was stored but not sent (its policy decision was too old when the store confirmed it, or this instance no longer held the meter's lease then); it does not count against max_attempts".into());
            e.command_id = Some(f.command.command_id.clone());
            e.attempt = Some(f.command.attempt);
        });
    }

    /// A failed execution: schedule a retry when allowed, else fail the order with an exception.
    pub(super) fn fail_or_retry(
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
            out.event_detail(&o.order, OrderStatus::Cancelled, &reason, detail);
            return;
        }
        let o = &mut self.open[idx];
        if code.retryable() && o.attempts.saturating_sub(o.not_sent) < policy.max_attempts {
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
            FailureCode::LoadSideVoltageAfterDisconnect | FailureCode::Tamper => {
                ExceptionKind::PossibleTamper
            }
            FailureCode::SwitchFault => ExceptionKind::FieldOrderNeeded,
            _ => ExceptionKind::CommandRejected,
        };
        let text = format!(
            "{} of meter {} failed after {} attempt(s): {}{}",
            o.order.kind.as_str(),
            out.meter_id,
            o.attempts.saturating_sub(o.not_sent),
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

    pub(super) fn raise(
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
        out.event_detail(&o.order, OrderStatus::Failed, reason, text);
    }
}
