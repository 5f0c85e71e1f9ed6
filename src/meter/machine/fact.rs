//! Facts about one meter: a payment withdraws the non-payment disconnects it pays off (or
//! marks them withdrawn when their command is already out) and is remembered for orders that
//! arrive after it; a medical certificate adds a protection while it is valid; an approval
//! records who approved (and for which protections) or rejects the order.

use crate::domain::{AuditEvent, AuditKind, Order, OrderKind, OrderStatus, ReasonCode};
use crate::domain::{HoldAction, OrderHold};
use crate::facts::{Approval, ApprovalDecision, Certificate, MeterFact, Payment};

use super::{MeterFacts, MeterMachine, Out, PAYMENT_MEMORY_DAYS};

/// Whether payment `p` pays off the non-payment disconnect `o`: named by order id, or for the
/// account (or meter) and made after the order was created.
pub(super) fn pays_off(p: &Payment, o: &Order) -> bool {
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

/// Who decided and when, with the note if any: "by … at …[: note]".
fn signed(by: &str, at: crate::domain::Timestamp, note: Option<&str>) -> String {
    format!(
        "by {by} at {at}{}",
        note.map(|n| format!(": {n}")).unwrap_or_default()
    )
}

impl MeterMachine {
    pub(super) fn on_fact(&mut self, fact: MeterFact, facts: &MeterFacts, out: &mut Out) {
        out.audit(
            AuditEvent::new(out.meter_id, out.now, AuditKind::FactReceived)
                .reason(fact.type_label())
                .detail(serde_json::to_string(&fact).unwrap_or_default()),
        );
        match fact {
            MeterFact::Payment(p) => self.on_payment(p, out),
            MeterFact::MedicalCertificate(c) => self.on_certificate(c, out),
            MeterFact::Approval(a) => self.on_approval(a, facts, out),
            MeterFact::OrderHold(h) => self.on_operator_hold(h, out),
            MeterFact::MeterExchange(x) => self.on_exchange(x, facts, out),
        }
    }

    fn on_payment(&mut self, p: Payment, out: &mut Out) {
        let now = out.now;
        let keep = jiff::SignedDuration::from_hours(24 * PAYMENT_MEMORY_DAYS);
        self.memory.payments.retain(|x| {
            x.fact_id != p.fact_id && x.paid_at.checked_add(keep).is_ok_and(|t| t > now)
        });
        self.memory.payments.push(p.clone());
        let mut i = 0;
        while i < self.open.len() {
            let o = &self.open[i];
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
            if self.command_out(i) {
                self.open[i].withdrawn = Some("payment_received".into());
                i += 1;
            } else {
                let o = self.open.remove(i);
                let detail = format!(
                    "payment {} of {:.2} made {} withdrew it before any command was sent",
                    p.fact_id, p.amount, p.paid_at
                );
                out.event_detail(&o.order, OrderStatus::Cancelled, "payment_received", detail);
            }
        }
    }

    fn on_certificate(&mut self, c: Certificate, out: &mut Out) {
        let now = out.now;
        self.memory
            .certificates
            .retain(|x| x.fact_id != c.fact_id && x.expires_at > now);
        if c.valid_at(now) || c.valid_from.is_some_and(|f| f > now) {
            if let Some(cut) = &mut self.memory.last_cut {
                cut.protection_after_cut = true;
            }
            self.memory.certificates.push(c);
        }
    }

    fn on_approval(&mut self, a: Approval, facts: &MeterFacts, out: &mut Out) {
        let Some(idx) = self.open_index(&a.order_id) else {
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
                            "approved {}",
                            signed(&a.by, a.at, a.note.as_deref())
                        )),
                );
            }
            ApprovalDecision::Reject => {
                if self.command_out(idx) {
                    self.open[idx].withdrawn = Some("approval_denied".into());
                } else {
                    let o = self.open.remove(idx);
                    out.event_detail(
                        &o.order,
                        OrderStatus::Rejected,
                        "approval_denied",
                        format!("rejected {}", signed(&a.by, a.at, a.note.as_deref())),
                    );
                }
            }
        }
    }
}

impl MeterMachine {
    /// An operator holds an open order (it is not started until released) or releases it.
    /// A command already out is not recalled: the hold is refused (audited).
    fn on_operator_hold(&mut self, h: OrderHold, out: &mut Out) {
        let signed = signed(&h.by, h.at, h.note.as_deref());
        let audit = |reason: &str, detail: String| {
            AuditEvent::new(out.meter_id, out.now, AuditKind::Decision)
                .order(&h.order_id)
                .reason(reason)
                .detail(detail)
        };
        let Some(idx) = self.open_index(&h.order_id) else {
            let a = audit(
                "operator_hold_for_order_not_open",
                format!(
                    "{:?} {signed} ignored: the order is not open here",
                    h.action
                ),
            );
            out.audit(a);
            return;
        };
        match h.action {
            HoldAction::Hold if self.open[idx].campaign_hold => {
                let a = audit(
                    "operator_hold_refused",
                    format!("hold {signed} refused: it waits for its campaign's release (pause the campaign, or cancel the order)"),
                );
                out.audit(a);
            }
            HoldAction::Hold if self.command_out(idx) => {
                let a = audit(
                    "operator_hold_refused",
                    format!("hold {signed} refused: its command is already out"),
                );
                out.audit(a);
            }
            HoldAction::Hold => {
                let o = &mut self.open[idx];
                o.operator_hold = Some(h.by.clone());
                o.status = OrderStatus::Deferred;
                // The policy decides afresh after the release (and says so in an event).
                o.hold = None;
                let order = o.order.clone();
                out.event_detail(
                    &order,
                    OrderStatus::Deferred,
                    "operator_hold",
                    format!("held {signed}"),
                );
            }
            HoldAction::Release => {
                let o = &mut self.open[idx];
                if o.operator_hold.take().is_none() {
                    let a = audit(
                        "operator_release_not_held",
                        format!("release {signed} ignored: the order is not held by an operator"),
                    );
                    out.audit(a);
                    return;
                }
                o.status = OrderStatus::Scheduled;
                let order = o.order.clone();
                out.event_detail(
                    &order,
                    OrderStatus::Scheduled,
                    "operator_released",
                    format!("released {signed}"),
                );
            }
        }
    }
}
