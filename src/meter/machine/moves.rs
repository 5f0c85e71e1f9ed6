//! Moves: the two legs of a customer's move are orders of two meters, linked by name
//! (`linked_order_id` / `linked_meter_id`). Each leg runs like any order of its kind (a
//! move-out is a disconnect under the policy, a move-in restores power and goes first); what
//! this file adds is how the legs hear of each other:
//! - a leg that ends tells the other leg's meter how (a [`MoveLink`] on the control topic, from
//!   the outbox, stored with the step), unless it ended knowing how the other one ended;
//! - a linked move-in whose switch is on stays open, `confirmed`, until its move-out's outcome
//!   arrives; then it completes with the move's summary and the transferred final read (the
//!   move's one confirmation), or after [`MOVE_LINK_WAIT_DAYS`] without it (an exception);
//! - a cancelled leg cancels the other one if that one has not operated its switch yet; if it
//!   has (or its command is out), the move is partly done and a person is asked
//!   (`move_partly_cancelled`);
//! - a link for a leg that is not open here is remembered for [`MOVE_LINK_MEMORY_DAYS`] (the
//!   legs travel on different partitions: the other leg's end may come first).
//!
//! Links are delivered at least once; each is idempotent here (remembered once per pair of legs,
//! applied to an open leg once).

use crate::domain::{
    AuditEvent, AuditKind, ExceptionKind, MoveLink, MoveLinkType, MoveSummary, Order, OrderKind,
    OrderStatus, MOVE_LINK_SCHEMA_VERSION,
};

use super::{Action, MeterMachine, Out};

/// How long a linked move-in that is on waits for word of its move-out.
pub(crate) const MOVE_LINK_WAIT_DAYS: i64 = 30;
/// How long a link for a leg that is not open here is kept.
pub(crate) const MOVE_LINK_MEMORY_DAYS: i64 = 60;
/// At most this many remembered links per meter (the oldest goes first).
const MOVE_LINK_MEMORY: usize = 8;

/// The reason of a leg cancelled because its linked leg was.
pub(crate) const LINKED_CANCELLED: &str = "linked_order_cancelled";

fn days(n: i64) -> jiff::SignedDuration {
    jiff::SignedDuration::from_hours(24 * n)
}

/// Is `l` the other leg of `o`?
fn links(o: &Order, l: &MoveLink) -> bool {
    let opposite = match o.kind {
        OrderKind::MoveOut => OrderKind::MoveIn,
        _ => OrderKind::MoveOut,
    };
    l.from_kind == opposite
        && l.order_id == o.order_id
        && o.linked_order_id.as_deref() == Some(l.from_order_id.as_str())
        && o.linked_meter_id.as_deref() == Some(l.from_meter_id.as_str())
}

fn summary(o: &Order, l: Option<&MoveLink>) -> MoveSummary {
    MoveSummary {
        linked_order_id: o.linked_order_id.clone().unwrap_or_default(),
        linked_meter_id: o.linked_meter_id.clone().unwrap_or_default(),
        linked_status: l.map(|l| l.status),
        linked_reason: l.and_then(|l| l.reason.clone()),
        final_read: l.and_then(|l| l.final_read.clone()),
        linked_at: l.map(|l| l.at),
    }
}

impl MeterMachine {
    /// The outcome of another meter's move leg, for a leg of this meter.
    pub(super) fn on_link(&mut self, l: MoveLink, out: &mut Out) {
        out.audit(
            AuditEvent::new(out.meter_id, out.now, AuditKind::MoveLink)
                .order(&l.order_id)
                .reason(format!("received_{}", l.status.as_str()))
                .detail(format!(
                    "{} {} of meter {} ended {}{}",
                    l.from_kind.as_str(),
                    l.from_order_id,
                    l.from_meter_id,
                    l.status.as_str(),
                    l.reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                )),
        );
        let Some(i) = self.open_index(&l.order_id) else {
            // Its leg has not arrived yet, or is done: kept for a while either way.
            self.remember_link(l, out);
            return;
        };
        if !links(&self.open[i].order, &l) {
            out.audit(
                AuditEvent::new(out.meter_id, out.now, AuditKind::MoveLink)
                    .order(&l.order_id)
                    .reason("move_link_ignored")
                    .detail(format!(
                        "order {} is not linked to {} of meter {}: ignored",
                        l.order_id, l.from_order_id, l.from_meter_id
                    )),
            );
            return;
        }
        let awaiting = self.open[i].awaiting_link.is_some();
        if l.status == OrderStatus::Cancelled {
            if awaiting {
                let o = self.open.remove(i);
                let text = format!(
                    "move-in {} of meter {} switched on, and its move-out {} of meter {} was cancelled since: the customer may not be moving; check whether the new service point should stay on",
                    o.order.order_id, out.meter_id, l.from_order_id, l.from_meter_id
                );
                self.complete_move_in(&o.order, Some(&l), out);
                move_exception(&o.order, ExceptionKind::MovePartlyCancelled, text, out);
            } else if self.command_out(i) {
                if self.memory.links.iter().any(|x| x == &l) {
                    return; // heard already
                }
                // Never sent again: if its command turns out not to have taken effect, it
                // closes as cancelled (and tells nobody: the other leg is cancelled).
                self.open[i].withdrawn = Some(LINKED_CANCELLED.into());
                let o = &self.open[i].order;
                let text = format!(
                    "{} {} of meter {} has its command out, and its linked {} {} of meter {} was cancelled: it cannot be recalled; check whether it should be undone",
                    o.kind.as_str(), o.order_id, out.meter_id, l.from_kind.as_str(), l.from_order_id, l.from_meter_id
                );
                let order = o.clone();
                move_exception(&order, ExceptionKind::MovePartlyCancelled, text, out);
                self.remember_link(l, out);
            } else {
                let o = self.open.remove(i);
                out.event_detail(
                    &o.order,
                    OrderStatus::Cancelled,
                    LINKED_CANCELLED,
                    format!(
                        "its linked {} {} of meter {} was cancelled",
                        l.from_kind.as_str(),
                        l.from_order_id,
                        l.from_meter_id
                    ),
                );
            }
            return;
        }
        if awaiting {
            let o = self.open.remove(i);
            self.complete_move_in(&o.order, Some(&l), out);
        } else {
            // Used when this leg ends (a move-in's summary), or to know the other leg is done.
            self.remember_link(l, out);
        }
    }

    fn remember_link(&mut self, l: MoveLink, out: &Out) {
        let now = out.now;
        let keep = days(MOVE_LINK_MEMORY_DAYS);
        self.memory.links.retain(|x| {
            !(x.order_id == l.order_id && x.from_order_id == l.from_order_id)
                && x.at.checked_add(keep).is_ok_and(|t| t > now)
        });
        self.memory.links.push(l);
        while self.memory.links.len() > MOVE_LINK_MEMORY {
            self.memory.links.remove(0);
        }
    }

    /// A move leg arriving whose other leg was cancelled before: cancelled at once. True when
    /// it was.
    pub(super) fn cancelled_before_arrival(&mut self, order: &Order, out: &mut Out) -> bool {
        let Some(pos) = self
            .memory
            .links
            .iter()
            .position(|l| links(order, l) && l.status == OrderStatus::Cancelled)
        else {
            return false;
        };
        let l = self.memory.links.remove(pos);
        out.event_detail(
            order,
            OrderStatus::Cancelled,
            LINKED_CANCELLED,
            format!(
                "its linked {} {} of meter {} was cancelled before this order arrived",
                l.from_kind.as_str(),
                l.from_order_id,
                l.from_meter_id
            ),
        );
        true
    }

    /// Completes the linked move-in `o` (its switch is on) with its move-out's outcome `l`, or
    /// without one.
    pub(super) fn complete_move_in(&mut self, o: &Order, l: Option<&MoveLink>, out: &mut Out) {
        self.complete_move_in_with(o, l, None, out)
    }

    /// As [`complete_move_in`](Self::complete_move_in), with `note` as the event's detail.
    pub(super) fn complete_move_in_with(
        &mut self,
        o: &Order,
        l: Option<&MoveLink>,
        note: Option<String>,
        out: &mut Out,
    ) {
        let s = summary(o, l);
        let detail = match l {
            _ if note.is_some() => note.unwrap_or_default(),
            Some(l) => format!(
                "move complete: move-out {} of meter {} {}",
                l.from_order_id,
                l.from_meter_id,
                l.status.as_str()
            ),
            None => format!(
                "switched on; no word of move-out {} of meter {} within {MOVE_LINK_WAIT_DAYS} days",
                s.linked_order_id, s.linked_meter_id
            ),
        };
        let switch = self.switch;
        out.event(o, OrderStatus::Completed, Some("done"), |e| {
            e.switch_state = Some(switch);
            e.detail = Some(detail);
            e.moved = Some(s);
        });
    }

    /// After a step: move-ins that waited too long complete without their move-out's word;
    /// legs that ended in the step tell their other leg, a linked move-in that completed
    /// without its move-out's outcome waits for it (`confirmed`), and one that has it carries
    /// the summary. Re-arms the wake-up when it changed what is open.
    pub(super) fn settle_moves(&mut self, out: &mut Out) {
        let now = out.now;
        let mut changed = false;
        let mut i = 0;
        while i < self.open.len() {
            if self.open[i].awaiting_link.is_some_and(|t| t <= now) {
                let o = self.open.remove(i);
                let text = format!(
                    "move-in {} of meter {} switched on {MOVE_LINK_WAIT_DAYS} days ago and no word came of its move-out {} of meter {}: check that the move-out was sent and names this move-in",
                    o.order.order_id,
                    out.meter_id,
                    o.order.linked_order_id.as_deref().unwrap_or(""),
                    o.order.linked_meter_id.as_deref().unwrap_or("")
                );
                self.complete_move_in(&o.order, None, out);
                move_exception(&o.order, ExceptionKind::MoveLinkMissing, text, out);
                changed = true;
            } else {
                i += 1;
            }
        }
        for order in std::mem::take(&mut out.closed_moves) {
            let Some(e) = out.actions.iter().rev().find_map(|a| match a {
                Action::Event(e) if e.order_id == order.order_id && e.status.is_terminal() => {
                    Some(e)
                }
                _ => None,
            }) else {
                continue;
            };
            let (status, reason, summarised) = (e.status, e.reason.clone(), e.moved.is_some());
            let final_read = e.final_read.clone();
            let known = self.memory.links.iter().position(|l| links(&order, l));
            let knew = summarised || known.is_some() || reason.as_deref() == Some(LINKED_CANCELLED);
            if order.kind == OrderKind::MoveIn && status == OrderStatus::Completed && !summarised {
                match known {
                    Some(p) => {
                        let l = self.memory.links.remove(p);
                        let s = summary(&order, Some(&l));
                        if let Some(e) = completed_event(out, &order.order_id) {
                            e.moved = Some(s);
                        }
                    }
                    None => {
                        self.await_move_out(order, out);
                        changed = true;
                    }
                }
                continue;
            }
            if status == OrderStatus::Cancelled && reason.as_deref() != Some(LINKED_CANCELLED) {
                if let Some(p) = known {
                    let l = self.memory.links.remove(p);
                    if l.status == OrderStatus::Completed {
                        let text = format!(
                            "{} {} of meter {} was cancelled after its linked {} {} of meter {} had operated its switch: check whether that should be undone",
                            order.kind.as_str(), order.order_id, out.meter_id, l.from_kind.as_str(), l.from_order_id, l.from_meter_id
                        );
                        move_exception(&order, ExceptionKind::MovePartlyCancelled, text, out);
                    }
                }
            } else if let Some(p) = known {
                self.memory.links.remove(p);
            }
            if !knew {
                self.send_link(&order, status, reason, final_read, out);
            }
        }
        out.closed_moves.clear();
        if changed {
            out.actions.retain(|a| !matches!(a, Action::WakeAt(_)));
            if self.in_flight.is_none() {
                if let Some(t) = self.next_wake(now) {
                    out.actions.push(Action::WakeAt(t));
                }
            }
        }
    }

    /// The linked move-in `order` completed (its switch is on) before its move-out's outcome
    /// came: its completion becomes `confirmed` (when the step has no confirmation of it), and
    /// it stays open until the outcome comes.
    fn await_move_out(&mut self, order: Order, out: &mut Out) {
        let id = order.order_id.clone();
        // (An armed move-in was confirmed when the head-end armed it: its completion by the
        // customer's button is not confirmed a second time.)
        let confirmed = out.actions.iter().any(|a| {
            matches!(a, Action::Event(e) if e.order_id == id
                && (e.status == OrderStatus::Confirmed
                    || e.reason.as_deref() == Some(super::head_end::CUSTOMER_CLOSED)))
        });
        let detail = format!(
            "switched on; the move completes when move-out {} of meter {} ends",
            order.linked_order_id.as_deref().unwrap_or(""),
            order.linked_meter_id.as_deref().unwrap_or("")
        );
        let mut k = out.actions.len();
        while k > 0 {
            k -= 1;
            let drop = match &mut out.actions[k] {
                Action::Event(e) if e.order_id == id && e.status == OrderStatus::Completed => {
                    if !confirmed {
                        e.status = OrderStatus::Confirmed;
                        e.csr_status = OrderStatus::Confirmed.csr_status().into();
                        e.detail = Some(detail.clone());
                    }
                    confirmed
                }
                Action::Audit(a)
                    if a.kind == AuditKind::StatusChange
                        && a.order_id.as_deref() == Some(&id)
                        && a.status == Some(OrderStatus::Completed) =>
                {
                    if !confirmed {
                        a.status = Some(OrderStatus::Confirmed);
                        a.detail = Some(detail.clone());
                    }
                    confirmed
                }
                _ => false,
            };
            if drop {
                out.actions.remove(k);
            }
        }
        let until = out
            .now
            .checked_add(days(MOVE_LINK_WAIT_DAYS))
            .unwrap_or(out.now);
        self.push_open(order, OrderStatus::Confirmed, None, false);
        if let Some(o) = self.open.last_mut() {
            o.awaiting_link = Some(until);
        }
    }

    /// Tells the other leg's meter how `order` ended (control topic, from the outbox).
    fn send_link(
        &self,
        order: &Order,
        status: OrderStatus,
        reason: Option<String>,
        final_read: Option<crate::domain::FinalRead>,
        out: &mut Out,
    ) {
        let (Some(to_order), Some(to_meter)) = (&order.linked_order_id, &order.linked_meter_id)
        else {
            return;
        };
        out.audit(
            AuditEvent::new(out.meter_id, out.now, AuditKind::MoveLink)
                .order(&order.order_id)
                .reason(format!("sent_{}", status.as_str()))
                .detail(format!("told {to_order} of meter {to_meter}")),
        );
        out.actions.push(Action::Link(MoveLink {
            record_type: MoveLinkType::MoveLink,
            schema_version: MOVE_LINK_SCHEMA_VERSION,
            meter_id: to_meter.clone(),
            order_id: to_order.clone(),
            from_meter_id: out.meter_id.to_string(),
            from_order_id: order.order_id.clone(),
            from_kind: order.kind,
            status,
            reason,
            final_read,
            at: out.now,
        }));
    }
}

fn completed_event<'a>(
    out: &'a mut Out,
    order_id: &str,
) -> Option<&'a mut crate::domain::OrderEvent> {
    out.actions.iter_mut().rev().find_map(|a| match a {
        Action::Event(e) if e.order_id == order_id && e.status == OrderStatus::Completed => Some(e),
        _ => None,
    })
}

/// An exception about a move leg that does not end the leg (`<order>/move`, priority 3).
fn move_exception(o: &Order, kind: ExceptionKind, text: String, out: &mut Out) {
    out.review(&o.order_id, "move", kind, 3, text);
}
