//! A meter's state as it is stored after every step: its switch as last known, its open orders
//! with their attempts and holds, the command in flight, certificates, payments and the last
//! cut. Plain data: the store reads and writes it; the behaviour (the pure `step`) is
//! implemented on it in `meter::machine`.

use serde::{Deserialize, Serialize};
use thin_vec::ThinVec;

use super::{
    Certificate, Command, Order, OrderStatus, Payment, Protection, ReasonCode, SwitchState,
    Timestamp,
};

/// Why an order is held by policy (compared to decide whether a new event is due).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub(crate) status: OrderStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) until: Option<Timestamp>,
    pub(crate) rules: Vec<String>,
}

/// The last disconnect that took effect, for the restore obligation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cut {
    pub(crate) order_id: String,
    pub(crate) reason: ReasonCode,
    pub(crate) at: Timestamp,
    /// It was explicitly approved (a protected customer, knowingly).
    pub(crate) approved: bool,
    /// A certificate arrived after the cut (an approval does not cover it).
    #[serde(default)]
    pub(crate) protection_after_cut: bool,
    #[serde(default)]
    pub(crate) restore_ordered: bool,
    /// The active register at the cut (kWh, multiplied): from the head-end's answer, else the
    /// first register read after it. The watchdog measures consumption from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) register_kwh: Option<f64>,
    /// The meter's reads are no longer watched for this cut: the watchdog raised its exception,
    /// or the watch period ended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) watch_ended: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Execute,
    StatusCheck,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    pub command: Command,
    pub purpose: Purpose,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenOrder {
    pub order: Order,
    pub status: OrderStatus,
    /// Execution commands sent so far.
    pub attempts: u32,
    /// Status checks sent for the current unknown outcome (numbers their command ids).
    pub status_checks: u32,
    /// Of those, checks lost in a restart while in flight: a restart is not an unanswered
    /// check, so these do not count against `max_attempts`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub status_checks_lost: u32,
    /// Of `attempts`, execution commands stored but never sent (their policy decision was too
    /// old when the store confirmed them): the switch did not move, so they do not count
    /// against `max_attempts`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub not_sent: u32,
    /// The last execution's outcome is unknown: ask the switch state before anything else.
    pub unknown_outcome: bool,
    /// A cancel or a reconnect withdrew this order while its command was in flight or its
    /// outcome unknown: it is never executed again; it closes as `cancelled` with this reason
    /// unless the command in progress turns out to have taken effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    pub seq: u64,
    /// Held by policy: re-decided on every step of the meter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
    /// Who approved it (control topic), when it needed an approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// The protections the meter had when it was approved: an approval covers those only (a
    /// certificate that arrives later needs a new approval).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved_for: Vec<Protection>,
    /// Part of a campaign and not released yet: waits for the campaign's release.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub campaign_hold: bool,
    /// Held by an operator (who, control topic `order_hold`): not started until released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_hold: Option<String>,
    /// A linked move-in whose switch is on (status `confirmed`): it completes, as the move's one
    /// confirmation, when its move-out's outcome arrives, or at this time without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_link: Option<Timestamp>,
    /// A reconnect whose switch the head-end armed (status `confirmed`, switch `armed`): it
    /// completes when the customer presses the button (the head-end's later answer with the
    /// same command id, or any answer that shows the switch connected), or fails at this time
    /// with `armed_not_closed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub armed_until: Option<Timestamp>,
    /// Held because its head-end's circuit breaker is open (status `deferred`, reason
    /// `head_end_unavailable`): not sent, no attempt used; at this time (the breaker's
    /// `field_order_after` from the first hold) it fails with `field_order_needed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_end_hold_ends: Option<Timestamp>,
    /// When the held order's head-end is tried again (the breaker's verdict at the last hold):
    /// the meter wakes itself then, even if no breaker watcher wakes it sooner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_end_retry_at: Option<Timestamp>,
    /// The disconnect's last execution was a demand limit (its policy decision's
    /// `load_limit_kw`): it aims for switch state `load_limited`, not `disconnected`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub load_limit: bool,
}

/// Everything the meter actor knows, persisted as one snapshot after every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterState {
    /// Shared with the meter's directory entry (one allocation per live meter).
    pub(crate) meter_id: std::sync::Arc<str>,
    pub(crate) switch: SwitchState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) switch_known_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_register_kwh: Option<f64>,
    /// The last few register reads (head-end answers and delivered meter reads), oldest first:
    /// the history a final read is checked against.
    #[serde(default, skip_serializing_if = "ThinVec::is_empty")]
    pub(crate) register_history: ThinVec<super::RegisterPoint>,
    pub open: ThinVec<OpenOrder>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Boxed: most live meters have none, and it is the largest field.
    pub in_flight: Option<Box<InFlight>>,
    pub next_seq: u64,
    /// Medical / life-support / critical-care certificates received for this meter.
    #[serde(default, skip_serializing_if = "ThinVec::is_empty")]
    pub(crate) certificates: ThinVec<Certificate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_cut: Option<Box<Cut>>,
    /// Payments of the last [`PAYMENT_MEMORY_DAYS`]: an order and its payment travel on
    /// different topics, so a payment may arrive before the disconnect it pays off.
    #[serde(default, skip_serializing_if = "ThinVec::is_empty")]
    pub(crate) payments: ThinVec<Payment>,
    /// Outcomes of other meters' move legs linked to a leg of this meter that is not done yet
    /// (or not arrived yet: the legs travel on different partitions), for
    /// `MOVE_LINK_MEMORY_DAYS`.
    #[serde(default, skip_serializing_if = "ThinVec::is_empty")]
    pub(crate) links: ThinVec<super::MoveLink>,
    /// Meter exchanges this meter took part in (removed or installed), by fact id, the last
    /// few: a redelivered exchange or handover is recognised and changes nothing.
    #[serde(default, skip_serializing_if = "ThinVec::is_empty")]
    pub(crate) exchanges: ThinVec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
