//! Meter exchange: a field crew removes one meter and installs another at the same service
//! point ([`MeterExchange`](super::MeterExchange), a fact on the control topic keyed by the
//! removed meter). The removed meter's actor records its final read and hands what belongs to
//! the service point to the new meter's actor in one [`MeterHandover`] (control topic, key =
//! the new meter, from the outbox): the open orders it can carry, the customer's certificates
//! and payments, the protections it had, its last cut, and its read history rebased onto the
//! new meter's register.

use serde::{Deserialize, Serialize};

use super::{Certificate, Cut, Order, Payment, RegisterPoint, Timestamp};

pub const HANDOVER_SCHEMA_VERSION: u32 = 1;

/// The `type` tag of a [`MeterHandover`] on the control topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoverType {
    MeterHandover,
}

/// Written by switchyard on the control topic (key = `meter_id`, the new meter): the removed
/// meter `from_meter_id`'s work, carried by exchange `exchange_id`. From the removed meter's
/// outbox, stored with its exchange step, at least once: the new meter takes one exchange once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterHandover {
    #[serde(rename = "type")]
    pub(crate) record_type: HandoverType,
    pub(crate) schema_version: u32,
    /// The new meter.
    pub(crate) meter_id: String,
    pub(crate) from_meter_id: String,
    pub(crate) exchange_id: String,
    pub(crate) exchanged_at: Timestamp,
    /// The new meter's register when it was installed (kWh).
    pub(crate) initial_read_kwh: f64,
    /// Open orders carried over, `meter_id` already the new meter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) orders: Vec<Order>,
    /// The customer's certificates, and the removed meter's registry protections as
    /// certificates (`<exchange>/inherited/<protection>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) certificates: Vec<Certificate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) payments: Vec<Payment>,
    /// The removed meter's register reads, moved onto the new meter's register (shifted by
    /// `initial_read_kwh` − the final read), so the use between them is kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) register_history: Vec<RegisterPoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_cut: Option<Cut>,
    /// When each carried order was first received (its stored record), by order id: it keeps
    /// that at the new meter.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub(crate) received_at: std::collections::BTreeMap<String, Timestamp>,
    /// Execution commands each carried order already had (by order id): the new meter's
    /// command ids go on from there (`<order>/<n+1>`), never reusing one the head-end has
    /// answered; they do not count against the new meter's attempts.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub(crate) attempts: std::collections::BTreeMap<String, u32>,
    /// Operator holds of carried orders (by order id: who).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub(crate) operator_holds: std::collections::BTreeMap<String, String>,
}

impl MeterHandover {
    /// Is this control-topic payload meant to be one (its `type` is `meter_handover`)?
    pub(crate) fn is_one(payload: &[u8]) -> bool {
        super::record_type(payload).is_some_and(|t| t == "meter_handover")
    }

    pub(crate) fn parse(key: Option<&[u8]>, payload: &[u8]) -> Result<MeterHandover, String> {
        let h: MeterHandover = super::parse_addressed(
            payload,
            key,
            "meter_handover",
            HANDOVER_SCHEMA_VERSION,
            "the new meter",
            |h: &MeterHandover| (h.schema_version, &h.meter_id),
        )?;
        if let Some(o) = h.orders.iter().find(|o| o.meter_id != h.meter_id) {
            return Err(format!(
                "carried order {} names meter {}, not the new meter {}",
                o.order_id, o.meter_id, h.meter_id
            ));
        }
        Ok(h)
    }
}
