//! Failed orders. A failed execution is retried with exponential backoff while the failure is
//! retryable and attempts are left; an order withdrawn meanwhile is cancelled instead; anything
//! else fails the order with an exception for a person (`raise`, also used where no command
//! can help: no remote switch, an outcome no status check could learn).

use crate::domain::event::EVENT_SCHEMA_VERSION;
use crate::domain::{
    AuditEvent, AuditKind, Command, ExceptionKind, ExceptionRecord, FailureCode, OpenOrder,
    OrderStatus,
};

use super::{add, Action, MeterMachine, Out, RetryPolicy};

impl MeterMachine {
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
