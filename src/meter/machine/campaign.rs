//! Campaign control of open orders: a campaign takes in (adopts) an open disconnect that has
//! not been sent, releases a held order when its turn comes (idempotent), or withdraws it
//! before release (cancelled, expired campaign).

use crate::domain::{AuditEvent, AuditKind, OrderKind, OrderStatus};

use super::{MeterMachine, Out};

impl MeterMachine {
    pub(super) fn on_release(&mut self, order_id: &str, out: &mut Out) {
        if let Some(o) = self
            .open
            .iter_mut()
            .find(|o| o.order.order_id == order_id && o.campaign_hold)
        {
            o.campaign_hold = false;
            o.status = OrderStatus::Received;
            let mut a = AuditEvent::new(out.meter_id, out.now, AuditKind::Decision)
                .order(order_id)
                .reason("campaign_released");
            a.detail = o.order.campaign_id.clone();
            out.audit(a);
        }
    }

    pub(super) fn on_adopt(&mut self, order_id: &str, campaign_id: &str, out: &mut Out) {
        let in_flight = self.in_flight.as_ref().map(|f| f.command.order_id.clone());
        if let Some(o) = self.open.iter_mut().find(|o| {
            o.order.order_id == order_id
                && o.order.kind == OrderKind::Disconnect
                && o.order.campaign_id.is_none()
                && o.attempts == 0
                && !o.unknown_outcome
                && in_flight.as_deref() != Some(order_id)
        }) {
            std::sync::Arc::make_mut(&mut o.order).campaign_id = Some(campaign_id.to_string());
            o.campaign_hold = true;
            o.status = OrderStatus::Scheduled;
            let order = o.order.clone();
            out.event_detail(
                &order,
                OrderStatus::Scheduled,
                "campaign",
                format!("taken into campaign {campaign_id}"),
            );
        } else {
            out.audit(
                AuditEvent::new(out.meter_id, out.now, AuditKind::Decision)
                    .order(order_id)
                    .reason("campaign_adopt_refused")
                    .detail(format!(
                        "not taken into campaign {campaign_id}: not open, already sent, or in another campaign"
                    )),
            );
        }
    }

    pub(super) fn on_withdraw(&mut self, order_id: &str, reason: &str, out: &mut Out) {
        if let Some(i) = self
            .open
            .iter()
            .position(|o| o.order.order_id == order_id && o.campaign_hold)
        {
            let o = self.open.remove(i);
            out.event_detail(
                &o.order,
                OrderStatus::Cancelled,
                reason,
                "withdrawn by its campaign before release",
            );
        }
    }
}
