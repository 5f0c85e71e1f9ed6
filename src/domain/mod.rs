//! The domain vocabulary shared by every part of switchyard: service orders and their
//! validation, meters and their registry records, head-end commands and results, order events,
//! audit events and exceptions. Plain data plus pure functions; no I/O.

pub(crate) mod campaign;
pub(crate) mod command;
pub(crate) mod decision;
pub(crate) mod event;
pub(crate) mod fact;
pub(crate) mod meter;
pub(crate) mod meter_state;
pub(crate) mod order;

pub use campaign::{
    AdoptFilter, CampaignDef, CampaignEvent, CampaignOrder, CampaignOutcome, CampaignRecord,
    CampaignStatus, ControlRecord, Ordering, CAMPAIGN_SCHEMA_VERSION,
};
pub use command::{Command, CommandKind, CommandOutcome, CommandResult, FailureCode, SwitchState};
pub use decision::{Day, Decision, DecisionInputs, Protection, RuleHit, Verdict};
pub use event::{
    AuditEvent, AuditKind, DeadLetterReason, ExceptionKind, ExceptionRecord, OrderEvent,
};
pub use fact::{Approval, ApprovalDecision, Certificate, MeterFact, Payment};
pub use meter::{MeterFlags, MeterRecord};
pub use meter_state::{Cut, Hold, InFlight, MeterState, OpenOrder, Purpose};
pub use order::{
    validate_order, Order, OrderKind, OrderRecord, OrderStatus, ReasonCode, Rejection,
    SourcePosition, MAX_NOTES_CHARS, ORDER_SCHEMA_VERSION,
};

/// Timestamps are UTC instants (RFC 3339 on the wire).
pub type Timestamp = jiff::Timestamp;
