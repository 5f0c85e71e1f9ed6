//! Policy holds: every disconnect execution is decided by the pure
//! [`Policy`](crate::policy::Policy) at the moment it would be sent. An allowed one goes out
//! (the decision is audited with it); a rejected one is closed; a deferred one, or one awaiting
//! approval, is held with the rules that hold it and is re-decided on every step. The decision
//! counts an approval only when it covers every protection the meter has now.

use crate::domain::{AuditEvent, AuditKind, Hold, OpenOrder, OrderStatus, Timestamp};
use crate::policy::{self, Verdict};

use super::{Action, MeterFacts, MeterMachine, Out};

impl MeterMachine {
    /// Approved, and the approval covers every protection the meter has now.
    fn approval_covers(&self, o: &OpenOrder, facts: &MeterFacts, now: Timestamp) -> bool {
        o.approved_by.is_some()
            && self
                .protections(facts, now)
                .iter()
                .all(|p| o.approved_for.contains(p))
    }

    /// Asks the policy whether the disconnect at `idx` may be sent now. `Ok` = send it (with
    /// the decision); `Err(Some(seq))` = held (deferred / awaiting approval); `Err(None)` =
    /// rejected and closed.
    pub(super) fn decide(
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
                can_limit_load: facts.head_end.can_limit_load,
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
                out.actions.push(Action::Decided(d.verdict_kind()));
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
                out.actions.push(Action::Decided(d.verdict_kind()));
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
            out.actions.push(Action::Decided(d.verdict_kind()));
            out.event(&order, status, Some(&rule), |e| {
                e.detail = Some(text);
                e.retry_at = until;
                e.policy = Some(d);
            });
        }
        Err(Some(seq))
    }
}
