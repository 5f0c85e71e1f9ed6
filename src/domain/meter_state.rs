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
    /// Shared with the dispatch and the write that stores it (no copy per step).
    pub command: std::sync::Arc<Command>,
    pub purpose: Purpose,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenOrder {
    /// Shared with the step's events and the state's copies (an order does not change while
    /// open, except its campaign: `Arc::make_mut`).
    pub order: std::sync::Arc<Order>,
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
///
/// Inline it holds only what every live meter uses (its id, switch, open orders, command in
/// flight, sequence); what few meters have (a read history, certificates, the last cut,
/// payments, move links, exchanges) is in [`MeterMemory`], boxed and absent while empty, so
/// that an idle live actor stays under 1 KiB (issue 12, item 2: `cargo bench --bench
/// actor_memory`). The stored JSON is the same flat object as before the box: serialized
/// through [`StateView`], read through [`StateRepr`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "StateRepr")]
pub struct MeterState {
    /// Shared with the meter's directory entry (one allocation per live meter).
    pub(crate) meter_id: std::sync::Arc<str>,
    pub(crate) switch: SwitchState,
    pub open: ThinVec<OpenOrder>,
    /// Boxed: most live meters have none, and it is the largest field.
    pub in_flight: Option<Box<InFlight>>,
    pub next_seq: u64,
    /// What few meters have; reads see an empty one while it is absent.
    pub(crate) memory: Memory,
}

/// The part of a meter's state that few meters have (see [`MeterState`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct MeterMemory {
    pub(crate) switch_known_at: Option<Timestamp>,
    pub(crate) last_register_kwh: Option<f64>,
    /// The last few register reads (head-end answers and delivered meter reads), oldest first:
    /// the history a final read is checked against.
    pub(crate) register_history: ThinVec<super::RegisterPoint>,
    /// Medical / life-support / critical-care certificates received for this meter.
    pub(crate) certificates: ThinVec<Certificate>,
    pub(crate) last_cut: Option<Box<Cut>>,
    /// Payments of the last [`PAYMENT_MEMORY_DAYS`]: an order and its payment travel on
    /// different topics, so a payment may arrive before the disconnect it pays off.
    pub(crate) payments: ThinVec<Payment>,
    /// Outcomes of other meters' move legs linked to a leg of this meter that is not done yet
    /// (or not arrived yet: the legs travel on different partitions), for
    /// `MOVE_LINK_MEMORY_DAYS`.
    pub(crate) links: ThinVec<super::MoveLink>,
    /// Meter exchanges this meter took part in (removed or installed), by fact id, the last
    /// few: a redelivered exchange or handover is recognised and changes nothing.
    pub(crate) exchanges: ThinVec<String>,
}

impl MeterMemory {
    fn is_empty(&self) -> bool {
        self == &MeterMemory::default()
    }
}

/// [`MeterMemory`], boxed only while it holds something. Reading it never allocates (an
/// absent one reads as empty); a write boxes it; [`Memory::tidy`] (after every step) drops an
/// emptied box. Equal when the contents are: an absent memory equals an empty one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Memory(Option<Box<MeterMemory>>);

static NO_MEMORY: std::sync::LazyLock<MeterMemory> = std::sync::LazyLock::new(MeterMemory::default);

impl Memory {
    /// Drops the box if it holds nothing.
    pub(crate) fn tidy(&mut self) {
        if self.0.as_ref().is_some_and(|m| m.is_empty()) {
            self.0 = None;
        }
    }

    /// Whether the box is allocated (for the memory tests).
    #[cfg(test)]
    pub(crate) fn is_boxed(&self) -> bool {
        self.0.is_some()
    }
}

impl std::ops::Deref for Memory {
    type Target = MeterMemory;
    fn deref(&self) -> &MeterMemory {
        self.0.as_deref().unwrap_or(&NO_MEMORY)
    }
}

impl std::ops::DerefMut for Memory {
    fn deref_mut(&mut self) -> &mut MeterMemory {
        self.0.get_or_insert_with(Box::default)
    }
}

impl PartialEq for Memory {
    fn eq(&self, other: &Memory) -> bool {
        **self == **other
    }
}

fn no<T>(v: &&Option<T>) -> bool {
    v.is_none()
}

fn none_of<T>(v: &&ThinVec<T>) -> bool {
    v.is_empty()
}

/// A [`MeterState`] as stored: one flat JSON object (the layout before [`MeterMemory`] was
/// boxed; the field order is the stored order).
#[derive(Serialize)]
struct StateView<'a> {
    meter_id: &'a str,
    switch: SwitchState,
    #[serde(skip_serializing_if = "no")]
    switch_known_at: &'a Option<Timestamp>,
    #[serde(skip_serializing_if = "no")]
    last_register_kwh: &'a Option<f64>,
    #[serde(skip_serializing_if = "none_of")]
    register_history: &'a ThinVec<super::RegisterPoint>,
    open: &'a ThinVec<OpenOrder>,
    #[serde(skip_serializing_if = "no")]
    in_flight: &'a Option<Box<InFlight>>,
    next_seq: u64,
    #[serde(skip_serializing_if = "none_of")]
    certificates: &'a ThinVec<Certificate>,
    #[serde(skip_serializing_if = "no")]
    last_cut: &'a Option<Box<Cut>>,
    #[serde(skip_serializing_if = "none_of")]
    payments: &'a ThinVec<Payment>,
    #[serde(skip_serializing_if = "none_of")]
    links: &'a ThinVec<super::MoveLink>,
    #[serde(skip_serializing_if = "none_of")]
    exchanges: &'a ThinVec<String>,
}

impl Serialize for MeterState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = &*self.memory;
        StateView {
            meter_id: &self.meter_id,
            switch: self.switch,
            switch_known_at: &m.switch_known_at,
            last_register_kwh: &m.last_register_kwh,
            register_history: &m.register_history,
            open: &self.open,
            in_flight: &self.in_flight,
            next_seq: self.next_seq,
            certificates: &m.certificates,
            last_cut: &m.last_cut,
            payments: &m.payments,
            links: &m.links,
            exchanges: &m.exchanges,
        }
        .serialize(s)
    }
}

/// A stored [`MeterState`] as read (see [`StateView`]).
#[derive(Deserialize)]
struct StateRepr {
    meter_id: std::sync::Arc<str>,
    switch: SwitchState,
    #[serde(default)]
    switch_known_at: Option<Timestamp>,
    #[serde(default)]
    last_register_kwh: Option<f64>,
    #[serde(default)]
    register_history: ThinVec<super::RegisterPoint>,
    open: ThinVec<OpenOrder>,
    #[serde(default)]
    in_flight: Option<Box<InFlight>>,
    next_seq: u64,
    #[serde(default)]
    certificates: ThinVec<Certificate>,
    #[serde(default)]
    last_cut: Option<Box<Cut>>,
    #[serde(default)]
    payments: ThinVec<Payment>,
    #[serde(default)]
    links: ThinVec<super::MoveLink>,
    #[serde(default)]
    exchanges: ThinVec<String>,
}

impl From<StateRepr> for MeterState {
    fn from(r: StateRepr) -> MeterState {
        let mut memory = Memory(Some(Box::new(MeterMemory {
            switch_known_at: r.switch_known_at,
            last_register_kwh: r.last_register_kwh,
            register_history: r.register_history,
            certificates: r.certificates,
            last_cut: r.last_cut,
            payments: r.payments,
            links: r.links,
            exchanges: r.exchanges,
        })));
        memory.tidy();
        MeterState {
            meter_id: r.meter_id,
            switch: r.switch,
            open: r.open,
            in_flight: r.in_flight,
            next_seq: r.next_seq,
            memory,
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot stored before [`MeterMemory`] was boxed, with every field set: it reads back,
    /// and is written again as the same flat object (old and new binaries read each other's
    /// snapshots; the store's light read looks for `open` and `in_flight` at the top level).
    #[test]
    fn a_snapshot_keeps_its_flat_stored_form_with_the_memory_boxed() {
        let stored = serde_json::json!({
            "meter_id": "M-1",
            "switch": "disconnected",
            "switch_known_at": "2026-12-01T10:00:00Z",
            "last_register_kwh": 1040.5,
            "register_history": [{"at": "2026-12-01T10:00:00Z", "kwh": 1040.5}],
            "open": [],
            "next_seq": 7,
            "payments": [{
                "schema_version": 1, "fact_id": "PAY-1", "meter_id": "M-1",
                "amount": 12.5, "paid_at": "2026-12-01T09:00:00Z"
            }],
            "exchanges": ["X-1"]
        });
        let state: MeterState = serde_json::from_value(stored.clone()).unwrap();
        assert!(state.memory.is_boxed());
        assert_eq!(state.memory.last_register_kwh, Some(1040.5));
        assert_eq!(state.memory.payments.len(), 1);
        assert_eq!(&*state.memory.exchanges, &["X-1".to_string()][..]);
        assert_eq!(serde_json::to_value(&state).unwrap(), stored);

        // Nothing in the memory: no box when read, none of its keys when written.
        let bare =
            serde_json::json!({"meter_id": "M-2", "switch": "unknown", "open": [], "next_seq": 0});
        let state: MeterState = serde_json::from_value(bare.clone()).unwrap();
        assert!(!state.memory.is_boxed());
        assert_eq!(state, MeterState::new("M-2"));
        assert_eq!(serde_json::to_value(&state).unwrap(), bare);
    }

    /// An absent memory equals an empty one (a step that only looked at it changed nothing),
    /// and tidying drops an emptied box.
    #[test]
    fn an_emptied_memory_equals_none_and_is_dropped_by_tidy() {
        let fresh = MeterState::new("M-3");
        let mut touched = fresh.clone();
        touched.memory.exchanges.push("X-9".into());
        assert_ne!(touched, fresh);
        touched.memory.exchanges.clear();
        assert!(touched.memory.is_boxed());
        assert_eq!(touched, fresh, "an empty box is no change");
        touched.memory.tidy();
        assert!(!touched.memory.is_boxed());
    }

    /// The inline size of a meter's state, which every live actor holds (issue 12, item 2:
    /// at most 1 KiB of heap per idle live actor, measured by `cargo bench --bench
    /// actor_memory`; 998 B with this layout, 1,126 B when the read history, segments and
    /// payments were inline). A field added here costs every live meter: box it with
    /// [`MeterMemory`] unless most meters need it.
    #[test]
    fn the_state_every_live_meter_holds_stays_small() {
        assert!(
            std::mem::size_of::<MeterState>() <= 56,
            "MeterState is {} bytes inline",
            std::mem::size_of::<MeterState>()
        );
    }
}
