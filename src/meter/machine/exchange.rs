//! Meter exchange. On the removed meter: its final read is recorded and checked high / low
//! against its history; its open orders are carried to the new meter, except those that name
//! the removed meter elsewhere (a linked move leg, whose other leg would tell the removed
//! meter; a campaign order, which its campaign releases by meter), which are cancelled with
//! reason `meter_exchanged` for the CIS to send again. What belongs to the service point goes
//! along in one handover (certificates, payments, protections, last cut, rebased history).
//! On the new meter: the handover's orders arrive as if sent for it (`received`, reason
//! `meter_exchanged`, then the usual intake: a move-in still supersedes, a paid-off disconnect
//! is still cancelled), its state merges in, and its initial read joins the history.
//!
//! Each exchange is taken once per meter (`exchanges`): a redelivered exchange fact or
//! handover changes nothing, so an order carried once is never admitted twice.

use crate::domain::{
    AuditEvent, AuditKind, Certificate, HandoverType, MeterExchange, MeterHandover, OrderKind,
    OrderRecord, OrderStatus, RegisterPoint, HANDOVER_SCHEMA_VERSION,
};

use super::{Action, MeterFacts, MeterMachine, Out};

/// Exchanges remembered per meter.
const EXCHANGES_KEPT: usize = 4;

/// The reason on the events of orders an exchange carried or cancelled.
pub(crate) const METER_EXCHANGED: &str = "meter_exchanged";

impl MeterMachine {
    /// Is `id` an exchange this meter has taken already? If not, it is now.
    fn first_time(&mut self, id: &str) -> bool {
        if self.memory.exchanges.iter().any(|x| x == id) {
            return false;
        }
        self.memory.exchanges.push(id.to_string());
        while self.memory.exchanges.len() > EXCHANGES_KEPT {
            self.memory.exchanges.remove(0);
        }
        true
    }

    /// This meter was removed in the field and `x.new_meter_id` installed instead.
    pub(super) fn on_exchange(&mut self, x: MeterExchange, facts: &MeterFacts, out: &mut Out) {
        if !self.first_time(&x.fact_id) {
            out.audit(
                AuditEvent::new(out.meter_id, out.now, AuditKind::MeterExchange)
                    .reason("exchange_already_taken")
                    .detail(format!("exchange {} was handled before", x.fact_id)),
            );
            return;
        }
        out.audit(
            AuditEvent::new(out.meter_id, out.now, AuditKind::MeterExchange)
                .reason("removed")
                .detail(format!(
                    "exchange {} by {}: meter {} removed at {} with register {:.3} kWh, meter {} installed with {:.3} kWh",
                    x.fact_id, x.by, out.meter_id, x.exchanged_at, x.final_read_kwh, x.new_meter_id, x.initial_read_kwh
                )),
        );
        let final_point = RegisterPoint {
            at: x.exchanged_at,
            kwh: x.final_read_kwh,
        };
        self.check_final_read(&x.fact_id, final_point, facts, out);
        self.remember_register(final_point);
        let shift = x.initial_read_kwh - x.final_read_kwh;
        let mut orders = Vec::new();
        let (mut attempts, mut holds) = (
            std::collections::BTreeMap::new(),
            std::collections::BTreeMap::new(),
        );
        for o in std::mem::take(&mut self.open) {
            if o.awaiting_link.is_some() {
                // A move-in that is on: done, whatever its move-out does now.
                let note = format!(
                    "switched on; meter {} was replaced by {} (exchange {}) before word of move-out {} came",
                    out.meter_id,
                    x.new_meter_id,
                    x.fact_id,
                    o.order.linked_order_id.as_deref().unwrap_or("")
                );
                self.complete_move_in_with(&o.order, None, Some(note), out);
                continue;
            }
            if let Some(reason) = &o.withdrawn {
                // Withdrawn while its command was out; the meter is gone, so is the command.
                out.event_detail(
                    &o.order,
                    OrderStatus::Cancelled,
                    reason,
                    format!(
                        "withdrawn; meter {} was replaced by {} (exchange {}) before its command was answered",
                        out.meter_id, x.new_meter_id, x.fact_id
                    ),
                );
                continue;
            }
            let why = if o.order.kind.is_move() && o.order.linked_order_id.is_some() {
                Some("a linked move leg: its other leg names this meter; send the move again for the new meter")
            } else if o.order.campaign_id.is_some() && o.order.kind == OrderKind::Disconnect {
                Some("a campaign's order: the campaign releases it by meter; add an order for the new meter to the campaign")
            } else {
                None
            };
            match why {
                Some(why) => out.event_detail(
                    &o.order,
                    OrderStatus::Cancelled,
                    METER_EXCHANGED,
                    format!(
                        "meter {} was replaced by {} (exchange {}); not carried over: {why}",
                        out.meter_id, x.new_meter_id, x.fact_id
                    ),
                ),
                None => {
                    if o.attempts > 0 {
                        attempts.insert(o.order.order_id.clone(), o.attempts);
                    }
                    if let Some(by) = &o.operator_hold {
                        holds.insert(o.order.order_id.clone(), by.clone());
                    }
                    let mut order = std::sync::Arc::unwrap_or_clone(o.order);
                    order.meter_id = x.new_meter_id.clone();
                    out.audit(
                        AuditEvent::new(out.meter_id, out.now, AuditKind::MeterExchange)
                            .order(&order.order_id)
                            .reason("carried")
                            .detail(format!("carried to meter {}", x.new_meter_id)),
                    );
                    orders.push(order);
                }
            }
        }
        // The answer to a command in flight on the removed meter, if any comes, is late.
        let protections = self.protections(facts, out.now);
        let mut certificates: Vec<Certificate> = self.memory.certificates.drain(..).collect();
        for p in protections {
            certificates.push(Certificate {
                schema_version: 1,
                fact_id: format!("{}/inherited/{}", x.fact_id, <&str>::from(p)),
                meter_id: x.new_meter_id.clone(),
                protection: p,
                valid_from: None,
                expires_at: crate::domain::Timestamp::MAX,
            });
        }
        for c in &mut certificates {
            c.meter_id = x.new_meter_id.clone();
        }
        let history = self
            .memory
            .register_history
            .drain(..)
            .map(|p| RegisterPoint {
                at: p.at,
                kwh: p.kwh + shift,
            })
            .collect();
        let payments = self
            .memory
            .payments
            .drain(..)
            .map(|mut p| {
                p.meter_id = x.new_meter_id.clone();
                p
            })
            .collect();
        out.actions.push(Action::Handover(MeterHandover {
            record_type: HandoverType::MeterHandover,
            schema_version: HANDOVER_SCHEMA_VERSION,
            meter_id: x.new_meter_id.clone(),
            from_meter_id: out.meter_id.to_string(),
            exchange_id: x.fact_id.clone(),
            exchanged_at: x.exchanged_at,
            initial_read_kwh: x.initial_read_kwh,
            orders,
            certificates,
            payments,
            register_history: history,
            last_cut: self.memory.last_cut.take().map(|c| *c),
            received_at: Default::default(),
            attempts,
            operator_holds: holds,
        }));
        self.memory.last_register_kwh = Some(x.final_read_kwh);
    }

    /// The work of a removed meter, handed to this one (installed in its place).
    pub(super) fn on_handover(&mut self, h: MeterHandover, out: &mut Out) {
        if !self.first_time(&h.exchange_id) {
            out.audit(
                AuditEvent::new(out.meter_id, out.now, AuditKind::MeterExchange)
                    .reason("handover_already_taken")
                    .detail(format!(
                        "handover of exchange {} was taken before",
                        h.exchange_id
                    )),
            );
            return;
        }
        out.audit(
            AuditEvent::new(out.meter_id, out.now, AuditKind::MeterExchange)
                .reason("installed")
                .detail(format!(
                    "exchange {}: installed in place of meter {} at {} with register {:.3} kWh; {} order(s) carried",
                    h.exchange_id, h.from_meter_id, h.exchanged_at, h.initial_read_kwh, h.orders.len()
                )),
        );
        for c in h.certificates {
            if !self
                .memory
                .certificates
                .iter()
                .any(|x| x.fact_id == c.fact_id)
            {
                self.memory.certificates.push(c);
            }
        }
        for p in h.payments {
            if !self.memory.payments.iter().any(|x| x.fact_id == p.fact_id) {
                self.memory.payments.push(p);
            }
        }
        for p in h.register_history {
            self.remember_register(p);
        }
        let initial = RegisterPoint {
            at: h.exchanged_at,
            kwh: h.initial_read_kwh,
        };
        self.remember_register(initial);
        if self.memory.last_cut.is_none() {
            self.memory.last_cut = h.last_cut.map(Box::new);
        }
        for order in h.orders {
            if self.has_order(&order.order_id) {
                continue;
            }
            out.actions.push(Action::TakeOver(OrderRecord {
                order: order.clone(),
                status: OrderStatus::Received,
                received_at: h
                    .received_at
                    .get(&order.order_id)
                    .copied()
                    .unwrap_or(out.now),
                updated_at: out.now,
                reason: Some(METER_EXCHANGED.into()),
                source: None,
            }));
            out.event_detail(
                &order,
                OrderStatus::Received,
                METER_EXCHANGED,
                format!(
                    "carried from removed meter {} by exchange {}",
                    h.from_meter_id, h.exchange_id
                ),
            );
            let id = order.order_id.clone();
            self.on_order(order, out);
            if let Some(i) = self.open_index(&id) {
                let o = &mut self.open[i];
                if let Some(n) = h.attempts.get(&id) {
                    o.attempts = *n;
                    o.not_sent = *n;
                }
                o.operator_hold = h.operator_holds.get(&id).cloned();
            }
        }
    }
}
