//! What the meter's head-end does beyond open and close (issue 16, item 6):
//! - **down head-end** (its circuit breaker is open): an order that needs a command is held
//!   (`deferred`, reason `head_end_unavailable`, once), not sent and not counted as an
//!   attempt; at the breaker's `field_order_after` from the first hold it fails with
//!   `field_order_needed` (a crew does it); the held order goes as soon as the head-end
//!   admits commands again;
//! - **arm for reconnect**: where the head-end (or the meter's registry record) arms instead of
//!   closing, a reconnect sends `arm_connect`; an `armed` answer makes the order `confirmed`
//!   (switch `armed`) and it waits for the customer to press the button: any answer that
//!   shows the switch connected (the head-end's later answer to the same command, a status
//!   check, a read) completes it (`customer_closed`); at `arm_timeout` it fails with
//!   `armed_not_closed` and an exception for a person to call the customer. While a switch is
//!   armed no other switch command is started for the meter (a disconnect waits);
//! - **load-side voltage** reported with a confirmation: voltage after a disconnect completes
//!   the order (the switch is open) and raises `possible_tamper` for review; no voltage after a
//!   connect is the retryable failure `no_voltage_after_connect`.

use crate::domain::{AuditEvent, AuditKind, ExceptionKind, OrderStatus, SwitchState, Timestamp};

use super::{add, MeterFacts, MeterMachine, Out};

/// The reason of the `deferred` event of an order held by a down head-end.
pub(crate) const HEAD_END_UNAVAILABLE: &str = "head_end_unavailable";
/// The reason of an armed reconnect's `confirmed` event.
pub(crate) const ARMED: &str = "armed";
/// The reason an armed reconnect completes with.
pub(crate) const CUSTOMER_CLOSED: &str = "customer_closed";
/// The reason (and exception suffix) of an armed reconnect the customer did not close.
pub(crate) const ARMED_NOT_CLOSED: &str = "armed_not_closed";

impl MeterMachine {
    /// `Some(restoring)` when an order is held by a down head-end (`restoring`: one of them
    /// restores power): the actor registers the meter to be woken when the head-end is tried
    /// again.
    pub(crate) fn held_for_head_end(&self) -> Option<bool> {
        let mut held = self.open.iter().filter(|o| o.head_end_hold_ends.is_some());
        let first = held.next()?;
        Some(first.order.kind.restores_power() || held.any(|o| o.order.kind.restores_power()))
    }

    /// The open order at `idx` needs a command and its head-end is down: hold it (the first
    /// time with an event), or fail it with `field_order_needed` once it has been held for
    /// the breaker's `field_order_after`. `Some(seq)` = held in this pass.
    pub(super) fn hold_for_head_end(
        &mut self,
        idx: usize,
        until: Timestamp,
        facts: &MeterFacts,
        out: &mut Out,
    ) -> Option<u64> {
        if self.close_if_expired(
            idx,
            "latest_at passed while its head-end was not answering",
            out,
        ) {
            return None;
        }
        let now = out.now;
        let o = &mut self.open[idx];
        match o.head_end_hold_ends {
            Some(end) if end <= now => {
                let o = self.open.remove(idx);
                let text = format!(
                    "head-end {} has not taken commands for {} (its circuit breaker is open): a field order is needed to {} meter {}",
                    facts.head_end_id,
                    jiff::SignedDuration::try_from(facts.head_end.field_order_after)
                        .unwrap_or_default(),
                    o.order.kind.as_str(),
                    out.meter_id
                );
                self.raise(
                    &o,
                    ExceptionKind::FieldOrderNeeded,
                    None,
                    text,
                    "field_order_needed",
                    out,
                );
                None
            }
            Some(_) => {
                o.head_end_retry_at = Some(until);
                Some(o.seq)
            }
            None => {
                let end = add(now, facts.head_end.field_order_after);
                o.head_end_hold_ends = Some(end);
                o.head_end_retry_at = Some(until);
                o.status = OrderStatus::Deferred;
                let (seq, order) = (o.seq, o.order.clone());
                let detail = format!(
                    "head-end {} is not answering (its circuit breaker is open): the order is held, not sent and not counted as an attempt, until the head-end answers again; at {end} it fails as needing a field order",
                    facts.head_end_id
                );
                out.event(
                    &order,
                    OrderStatus::Deferred,
                    Some(HEAD_END_UNAVAILABLE),
                    |e| {
                        e.detail = Some(detail);
                        e.retry_at = Some(until);
                    },
                );
                Some(seq)
            }
        }
    }

    /// An open order's switch is armed for the customer.
    pub(super) fn armed(&self) -> bool {
        self.open.iter().any(|o| o.armed_until.is_some())
    }

    /// The head-end armed the switch for the reconnect at `idx`: `confirmed` (switch `armed`),
    /// waiting for the customer until the arm timeout.
    pub(super) fn arm(&mut self, idx: usize, command_id: &str, facts: &MeterFacts, out: &mut Out) {
        let until = add(out.now, facts.head_end.arm_timeout);
        let o = &mut self.open[idx];
        o.armed_until = Some(until);
        o.status = OrderStatus::Confirmed;
        let order = o.order.clone();
        let (cid, att) = (command_id.to_string(), o.attempts);
        out.event(&order, OrderStatus::Confirmed, Some(ARMED), |e| {
            e.switch_state = Some(SwitchState::Armed);
            e.command_id = Some(cid);
            e.attempt = Some(att);
            e.detail = Some(format!(
                "the switch is armed: power is restored when the customer presses the meter's button (until {until})"
            ));
        });
    }

    /// Armed reconnects: completed once the switch is known connected, failed at their
    /// timeout (cancelled instead if withdrawn meanwhile).
    pub(super) fn settle_armed(&mut self, out: &mut Out) {
        let mut i = 0;
        while i < self.open.len() {
            let Some(until) = self.open[i].armed_until else {
                i += 1;
                continue;
            };
            if self.switch == SwitchState::Connected {
                let o = self.open.remove(i);
                out.audit(
                    AuditEvent::new(out.meter_id, out.now, AuditKind::Decision)
                        .order(&o.order.order_id)
                        .reason(CUSTOMER_CLOSED)
                        .detail("the armed switch was closed at the meter"),
                );
                out.event(
                    &o.order,
                    OrderStatus::Completed,
                    Some(CUSTOMER_CLOSED),
                    |e| e.switch_state = Some(SwitchState::Connected),
                );
                continue;
            }
            if until <= out.now {
                let o = self.open.remove(i);
                if let Some(reason) = o.withdrawn.clone() {
                    out.event_detail(
                        &o.order,
                        OrderStatus::Cancelled,
                        &reason,
                        "withdrawn while the switch was armed; the customer did not close it",
                    );
                    continue;
                }
                let text = format!(
                    "the switch of meter {} was armed for {} {} and the customer did not press the button by {until}: call the customer, or send a crew",
                    out.meter_id,
                    o.order.kind.as_str(),
                    o.order.order_id
                );
                out.review(
                    &o.order.order_id,
                    ARMED_NOT_CLOSED,
                    ExceptionKind::ArmedNotClosed,
                    // Power is available at the meter (not a failed restoration: 1), but
                    // the customer is still without it.
                    2,
                    text.clone(),
                );
                out.event_detail(&o.order, OrderStatus::Failed, ARMED_NOT_CLOSED, text);
                continue;
            }
            i += 1;
        }
    }
}
