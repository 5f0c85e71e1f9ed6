//! Moves: a customer's move-out at one service point linked to their move-in at another. The
//! two legs are ordinary orders of two meters (each serialised by its own actor, possibly on
//! two instances); what links them is the pair `linked_order_id` / `linked_meter_id` on each
//! leg, and the [`MoveLink`] record a leg's meter writes on the control topic (key: the other
//! leg's meter) when its leg ends. The move-in's `completed` event is the move's one
//! confirmation: it carries the [`MoveSummary`] with the move-out's outcome and its final read.

use serde::{Deserialize, Serialize};

use super::{FinalRead, OrderKind, OrderStatus, Timestamp};

pub const MOVE_LINK_SCHEMA_VERSION: u32 = 1;

/// The `type` tag of a [`MoveLink`] on the control topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveLinkType {
    MoveLink,
}

/// Written by switchyard on the control topic (key = `meter_id`, the receiving leg's meter):
/// the leg `from_order_id` of meter `from_meter_id` ended with `status`. From the sending
/// meter's outbox, stored with the leg's terminal status, at least once: idempotent at the
/// receiving meter. Integrators do not produce it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveLink {
    #[serde(rename = "type")]
    pub(crate) record_type: MoveLinkType,
    pub(crate) schema_version: u32,
    /// The receiving leg's meter.
    pub(crate) meter_id: String,
    /// The receiving leg.
    pub(crate) order_id: String,
    pub(crate) from_meter_id: String,
    pub(crate) from_order_id: String,
    pub(crate) from_kind: OrderKind,
    /// The sending leg's terminal status: completed, failed, cancelled or rejected.
    pub(crate) status: OrderStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// A move-out's final read (the register when the switch opened, checked high / low).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) final_read: Option<FinalRead>,
    pub(crate) at: Timestamp,
}

impl MoveLink {
    /// Is this control-topic payload meant to be one (its `type` is `move_link`)?
    pub(crate) fn is_one(payload: &[u8]) -> bool {
        super::record_type(payload).is_some_and(|t| t == "move_link")
    }

    /// Parses and checks one: the version, the key, and that it names two different legs of a
    /// move (`from_kind` a move kind, `status` terminal).
    pub(crate) fn parse(key: Option<&[u8]>, payload: &[u8]) -> Result<MoveLink, String> {
        let l: MoveLink = super::parse_addressed(
            payload,
            key,
            "move_link",
            MOVE_LINK_SCHEMA_VERSION,
            "the receiving meter",
            |l: &MoveLink| (l.schema_version, &l.meter_id),
        )?;
        if !matches!(l.from_kind, OrderKind::MoveOut | OrderKind::MoveIn) {
            return Err(format!(
                "from_kind `{}` is not a move leg (move_out or move_in)",
                l.from_kind.as_str()
            ));
        }
        if !l.status.is_terminal() {
            return Err(format!(
                "status `{}` is not terminal: a link says how a leg ended",
                l.status.as_str()
            ));
        }
        if l.meter_id == l.from_meter_id {
            return Err("meter_id equals from_meter_id: the legs of a move are two meters".into());
        }
        Ok(l)
    }
}

/// On a linked move-in's `completed` event (`move`): how its move-out ended, and the final read
/// of the old service point, transferred. `linked_status` is absent when no word of the
/// move-out came within the wait ([`crate::meter`]'s `MOVE_LINK_WAIT_DAYS`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveSummary {
    pub(crate) linked_order_id: String,
    pub(crate) linked_meter_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) linked_status: Option<OrderStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) linked_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) final_read: Option<FinalRead>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) linked_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> serde_json::Value {
        serde_json::json!({"type":"move_link","schema_version":1,"meter_id":"M2","order_id":"IN-1",
            "from_meter_id":"M1","from_order_id":"OUT-1","from_kind":"move_out","status":"completed",
            "reason":"done","at":"2026-12-06T10:00:00Z"})
    }

    #[test]
    fn a_link_is_recognised_and_checked() {
        let v = link();
        let bytes = serde_json::to_vec(&v).unwrap();
        assert!(MoveLink::is_one(&bytes));
        assert!(!MoveLink::is_one(br#"{"type":"approval"}"#));
        let l = MoveLink::parse(Some(b"M2"), &bytes).unwrap();
        assert_eq!(l.from_order_id, "OUT-1");
        assert!(MoveLink::parse(Some(b"M1"), &bytes)
            .unwrap_err()
            .contains("key"));
        for (field, value, says) in [
            ("status", "dispatched", "not terminal"),
            ("from_kind", "disconnect", "not a move leg"),
            ("from_meter_id", "M2", "two meters"),
        ] {
            let mut v = link();
            v[field] = value.into();
            let e = MoveLink::parse(Some(b"M2"), &serde_json::to_vec(&v).unwrap()).unwrap_err();
            assert!(e.contains(says), "{field}: {e}");
        }
        let mut v = link();
        v["extra"] = 1.into();
        assert!(MoveLink::parse(Some(b"M2"), &serde_json::to_vec(&v).unwrap()).is_err());
    }
}
