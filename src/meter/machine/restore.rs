//! The restore obligation: a protected customer cut for non-payment (without an approval that
//! covered the protection, or protected only after the cut) gets a reconnect order raised by
//! the machine itself, once.

use crate::domain::{
    AuditEvent, AuditKind, Order, OrderKind, OrderRecord, OrderStatus, ReasonCode, SwitchState,
};
use crate::policy::BASELINE_PROTECTIONS;

use super::{Action, MeterFacts, MeterMachine, Out};

impl MeterMachine {
    /// A protected customer cut for non-payment (without an approval that covered the
    /// protection) gets a reconnect order raised here, once.
    pub(super) fn restore_if_obliged(&mut self, facts: &MeterFacts, out: &mut Out) {
        let Some(cut) = &self.memory.last_cut else {
            return;
        };
        if cut.restore_ordered
            || cut.reason != ReasonCode::NonPayment
            || (cut.approved && !cut.protection_after_cut)
            || !matches!(
                self.switch,
                SwitchState::Disconnected | SwitchState::LoadLimited
            )
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
        if let Some(c) = &mut self.memory.last_cut {
            c.restore_ordered = true;
        }
        if self
            .open
            .iter()
            .any(|o| o.order.kind.restores_power() && o.awaiting_link.is_none())
        {
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
            linked_order_id: None,
            linked_meter_id: None,
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
        out.event_detail(&order, OrderStatus::Received, "restore_obligation", detail);
        self.push_open(order, OrderStatus::Received, None, false);
    }
}
