//! The domain vocabulary shared by every part of switchyard: service orders and their
//! validation, meters and their registry records, head-end commands and results, order events,
//! audit events and exceptions. Plain data plus pure functions; no I/O.

pub(crate) mod campaign;
pub(crate) mod command;
pub(crate) mod decision;
pub(crate) mod event;
pub(crate) mod exchange;
pub(crate) mod fact;
pub(crate) mod meter;
pub(crate) mod meter_state;
pub(crate) mod moves;
pub(crate) mod order;
pub(crate) mod partition;
pub(crate) mod read;
pub(crate) mod task;

pub use campaign::{
    AdoptFilter, CampaignDef, CampaignEvent, CampaignOrder, CampaignOutcome, CampaignRecord,
    CampaignStatus, CampaignToMeter, ControlRecord, Ordering, ToOwner, CAMPAIGN_SCHEMA_VERSION,
};
pub use command::{
    Command, CommandKind, CommandOutcome, CommandResult, FailureClass, FailureCode, SwitchState,
};
pub use decision::{Day, Decision, DecisionInputs, Protection, RuleHit, Verdict, VerdictKind};
pub use event::{
    AuditEvent, AuditKind, DeadLetterReason, ExceptionKind, ExceptionRecord, OrderEvent,
};
pub use exchange::{HandoverType, MeterHandover, HANDOVER_SCHEMA_VERSION};
pub use fact::{
    Approval, ApprovalDecision, Certificate, FactType, HoldAction, MeterExchange, MeterFact,
    OrderHold, Payment,
};
pub use meter::{MeterFlags, MeterRecord, ReconnectMode};
pub use meter_state::{Cut, Hold, InFlight, MeterState, OpenOrder, Purpose};
pub use moves::{MoveLink, MoveLinkType, MoveSummary, MOVE_LINK_SCHEMA_VERSION};
pub use order::{
    validate_order, Order, OrderKind, OrderRecord, OrderStatus, ReasonCode, Rejection,
    SourcePosition, MAX_NOTES_CHARS, ORDER_SCHEMA_VERSION,
};
pub use partition::Partitioner;
pub use read::{
    validate_read, FinalRead, MeterRead, Multipliers, ReadClass, ReadKind, ReadRef, ReadRejection,
    ReadSource, ReadValue, ReadWatch, RegisterPoint, UsageType, WatchChange, READ_SCHEMA_VERSION,
};
pub use task::{ExceptionTask, TaskNote, TaskState};

/// Timestamps are UTC instants (RFC 3339 on the wire).
pub type Timestamp = jiff::Timestamp;

/// A record switchyard writes to another meter on the control topic (a move link, a meter
/// handover), parsed and checked the same way: its `type`, its schema version, and that its
/// key is the receiving meter (`whom` says which that is, for the message).
pub(crate) fn parse_addressed<T: serde::de::DeserializeOwned>(
    payload: &[u8],
    key: Option<&[u8]>,
    type_name: &str,
    version: u32,
    whom: &str,
    fields: impl Fn(&T) -> (u32, &str),
) -> Result<T, String> {
    let r: T =
        serde_json::from_slice(payload).map_err(|e| format!("not a valid {type_name}: {e}"))?;
    let (v, meter_id) = fields(&r);
    if v != version {
        return Err(format!(
            "{type_name} schema_version {v} is not supported (this service reads {version})"
        ));
    }
    if key != Some(meter_id.as_bytes()) {
        return Err(format!(
            "record key differs from meter_id `{meter_id}`: key it by {whom}"
        ));
    }
    Ok(r)
}

/// The `type` tag of a JSON record, read without parsing the rest: which of the record kinds
/// that share a topic (the control topic's facts, campaign messages and move links) this is.
pub(crate) fn record_type(payload: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    #[derive(serde::Deserialize)]
    struct Type<'a> {
        #[serde(borrow, rename = "type")]
        t: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<Type<'_>>(payload)
        .ok()
        .and_then(|t| t.t)
}

#[cfg(test)]
mod tests {
    use strum::VariantArray;

    use super::*;

    /// The names strum derives (metrics labels, logs, the command line) are the names serde
    /// puts on the wire, for every variant of every enum that has both.
    fn same_names<T: VariantArray + serde::Serialize + Copy + Into<&'static str>>() -> usize {
        for v in T::VARIANTS {
            let wire = serde_json::to_value(v).expect("serialise");
            let name: &'static str = (*v).into();
            assert_eq!(wire, serde_json::Value::from(name), "{name}");
        }
        T::VARIANTS.len()
    }

    #[test]
    fn enum_names_are_the_wire_names() {
        assert_eq!(same_names::<OrderKind>(), 6);
        assert_eq!(same_names::<OrderStatus>(), 11);
        assert_eq!(same_names::<CommandKind>(), 6);
        assert_eq!(same_names::<FailureCode>(), 12);
        assert_eq!(same_names::<DeadLetterReason>(), 18);
        assert_eq!(same_names::<ExceptionKind>(), 13);
        assert_eq!(same_names::<UsageType>(), 3);
        assert_eq!(same_names::<ReadKind>(), 2);
        assert_eq!(same_names::<ReadSource>(), 3);
        assert_eq!(same_names::<Day>(), 7);
        assert_eq!(same_names::<Protection>(), 5);
        assert_eq!("medical".parse::<Protection>(), Ok(Protection::Medical));
        assert!("Medical!".parse::<Protection>().is_err());
    }

    #[test]
    fn meter_flags_keep_their_stored_byte() {
        let f = MeterFlags::HAS_SWITCH | MeterFlags::MEDICAL;
        assert_eq!(serde_json::to_string(&f).unwrap(), "5");
        assert_eq!(serde_json::from_str::<MeterFlags>("5").unwrap(), f);
        assert_eq!(f.bits(), 5);
    }
}
