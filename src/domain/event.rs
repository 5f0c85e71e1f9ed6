//! What switchyard says about its work: order events (order-events topic), audit events (the
//! store's append-only trail), exceptions (exceptions topic) and dead-letter reasons.

use serde::{Deserialize, Serialize};

use super::command::{CommandKind, SwitchState};
use super::order::{OrderKind, OrderStatus};
use super::Timestamp;

pub(crate) const EVENT_SCHEMA_VERSION: u32 = 1;

/// Why a record went to the dead-letter topic.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum DeadLetterReason {
    MalformedJson,
    UnsupportedSchemaVersion,
    MissingField,
    InvalidField,
    UnknownField,
    UnknownKind,
    /// Kept in the contract; no longer produced since move orders were enabled (2026-12-06).
    KindNotSupported,
    KeyMismatch,
    UnknownMeter,
    NotesTooLong,
    Expired,
    InvalidWindow,
    InvalidRegistryRecord,
    InvalidHeadEndResult,
    InvalidFact,
    InvalidCampaign,
    /// A record of the reads topic that is not a valid v1 meter read.
    InvalidRead,
    /// A meter-keyed record read by an instance that does not own its meter (its key hashes
    /// to another partition than the one it came from).
    Misrouted,
}

impl DeadLetterReason {
    pub const ALL: &'static [DeadLetterReason] =
        <DeadLetterReason as strum::VariantArray>::VARIANTS;
    pub fn as_str(self) -> &'static str {
        self.into()
    }
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// An order status change, published on the order-events topic keyed by meter id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderEvent {
    pub(crate) schema_version: u32,
    pub order_id: String,
    pub(crate) meter_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<OrderKind>,
    pub status: OrderStatus,
    /// Pending / In Progress / Completed / Closed, as a CSR knows them.
    pub(crate) csr_status: std::borrow::Cow<'static, str>,
    pub at: Timestamp,
    /// Machine-readable reason code (e.g. `already_disconnected`, `superseded_by_reconnect`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_state: Option<SwitchState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register_kwh: Option<f64>,
    /// A disconnect's completion: its final read and the high / low check of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_read: Option<super::FinalRead>,
    /// A linked move-in's completion (the move's one confirmation): how its move-out ended,
    /// with the old service point's final read.
    #[serde(default, rename = "move", skip_serializing_if = "Option::is_none")]
    pub moved: Option<super::MoveSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    /// The policy decision behind this status (deferred, awaiting approval, rejected by a rule,
    /// or dispatched): rule names, rule-pack version and inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<super::Decision>,
}

impl OrderEvent {
    pub fn new(
        order_id: &str,
        meter_id: &str,
        kind: Option<OrderKind>,
        status: OrderStatus,
        at: Timestamp,
    ) -> Self {
        OrderEvent {
            schema_version: EVENT_SCHEMA_VERSION,
            order_id: order_id.to_string(),
            meter_id: meter_id.to_string(),
            kind,
            status,
            csr_status: status.csr_status().into(),
            at,
            reason: None,
            detail: None,
            command_id: None,
            attempt: None,
            switch_state: None,
            register_kwh: None,
            final_read: None,
            moved: None,
            retry_at: None,
            campaign_id: None,
            policy: None,
        }
    }
    pub(crate) fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
    pub(crate) fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    OrderReceived,
    OrderRejected,
    DuplicateIgnored,
    Decision,
    CommandDispatched,
    CommandResult,
    CommandTimedOut,
    /// An execution command was stored but not sent: its policy decision was too old when
    /// the store confirmed the write, or the meter's unit was not leased here then (it is
    /// decided again).
    CommandNotSent,
    LateResult,
    StatusChange,
    ExceptionRaised,
    /// A payment, certificate or approval reached the meter.
    FactReceived,
    Recovered,
    /// A person worked on an exception of the meter (assigned, annotated, changed its state)
    /// through the operator API; `detail` says who and what.
    ExceptionTask,
    /// A meter read that mattered to the meter (it is watched after a cut).
    ReadReceived,
    /// A disconnect's final read and its high / low class.
    FinalRead,
    /// The outcome of a move's other leg reached this meter (control topic `move_link`), or
    /// this leg's outcome was sent to the other leg's meter.
    MoveLink,
    /// The meter was exchanged in the field (removed, or installed in another's place), or an
    /// order was carried from the removed meter to the new one.
    MeterExchange,
}

/// One line of the append-only audit trail, keyed by meter and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub(crate) meter_id: String,
    pub at: Timestamp,
    pub kind: AuditKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) command_kind: Option<CommandKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<OrderStatus>,
    /// Machine-readable rule or reason (e.g. `already_disconnected`, `retryable_failure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) detail: Option<String>,
}

impl AuditEvent {
    pub fn new(meter_id: &str, at: Timestamp, kind: AuditKind) -> Self {
        AuditEvent {
            meter_id: meter_id.to_string(),
            at,
            kind,
            order_id: None,
            command_id: None,
            command_kind: None,
            status: None,
            reason: None,
            detail: None,
        }
    }
    pub fn order(mut self, id: &str) -> Self {
        self.order_id = Some(id.to_string());
        self
    }
    pub(crate) fn command(mut self, id: &str, kind: CommandKind) -> Self {
        self.command_id = Some(id.to_string());
        self.command_kind = Some(kind);
        self
    }
    pub fn status(mut self, s: OrderStatus) -> Self {
        self.status = Some(s);
        self
    }
    pub fn reason(mut self, r: impl Into<String>) -> Self {
        self.reason = Some(r.into());
        self
    }
    pub(crate) fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ExceptionKind {
    /// Retries exhausted on retryable failures.
    RetriesExhausted,
    /// The meter has no remote switch: a field crew must do it.
    FieldOrderNeeded,
    /// Load-side voltage refused a connect: possible backfeed / generator / bypass.
    LoadSideVoltage,
    /// The meter refused the command or the head-end does not support it.
    CommandRejected,
    /// The switch state could not be established after a lost answer.
    OutcomeUnknown,
    /// The store refuses writes (or the reads the intake needs): a service-level exception of
    /// one instance, not of an order; raised `open` when it starts, raised again `resolved`
    /// when the store accepts writes again ([`ExceptionRecord::store_unavailable`]).
    StoreUnavailable,
    /// A meter confirmed disconnected reports consumption beyond the tolerance: the switch
    /// did not open or was closed again, or the meter is bypassed or tampered with.
    ConsumptionAfterDisconnect,
    /// A disconnect's final read failed the high / low check against the meter's history (very
    /// low, low, high or very high): review it before it is billed.
    SuspiciousFinalRead,
    /// One leg of a linked move was cancelled (or its other leg cancelled) after the other
    /// leg's switch had already operated: a person decides whether to undo it.
    MovePartlyCancelled,
    /// A linked move-in switched on, but no word of its move-out came within the wait: the
    /// move-out may never have been sent, or names another move-in.
    MoveLinkMissing,
    /// Voltage on the load side after a disconnect, or a tamper alarm: the premise may be
    /// bypassed or tampered with; a field investigation.
    PossibleTamper,
    /// A head-end's circuit breaker opened: its commands fail for communication reasons (or
    /// get no answer) in a burst, so orders for its meters are held. Service-level, keyed by
    /// the head-end id; raised `open` and again `resolved` when it closes
    /// ([`ExceptionRecord::head_end_unavailable`]).
    HeadEndUnavailable,
    /// The switch was armed for a reconnect and the customer did not press the button within
    /// the arm timeout: call the customer, or send a crew.
    ArmedNotClosed,
}

impl ExceptionKind {
    pub(crate) fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What a person must look at (exceptions topic, keyed by meter id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExceptionRecord {
    pub(crate) schema_version: u32,
    /// `<order_id>/exception`: one exception per order.
    pub(crate) exception_id: String,
    pub(crate) meter_id: String,
    pub order_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) command_id: Option<String>,
    pub kind: ExceptionKind,
    /// 1 (most urgent) .. 9.
    pub(crate) priority: u8,
    pub(crate) detail: String,
    pub(crate) raised_at: Timestamp,
    pub(crate) status: String,
}

impl ExceptionRecord {
    /// Head-end `head_end` takes no commands since `since` (its breaker opened; tried again at
    /// `retry_at`), or (`resolved_at`) takes them again. One id per outage
    /// (`head_end_unavailable/<head_end>/<since>`); `meter_id` and `order_id` are empty.
    pub(crate) fn head_end_unavailable(
        head_end: &str,
        since: Timestamp,
        retry_at: Option<Timestamp>,
        resolved_at: Option<Timestamp>,
    ) -> ExceptionRecord {
        let detail = match (resolved_at, retry_at) {
            (Some(at), _) => format!(
                "head-end {head_end} answers again at {at} (down since {since}); held orders resume, power restorations first"
            ),
            (None, retry) => format!(
                "head-end {head_end} is not answering since {since}: a burst of communication failures or missed deadlines opened its circuit breaker. Orders for its meters are held (deferred, reason head_end_unavailable), not sent and not retried; it is probed again{}; orders held longer than head_end.breaker.field_order_after_secs fail as field_order_needed",
                retry.map(|t| format!(" at {t}")).unwrap_or_default()
            ),
        };
        ExceptionRecord::service(
            ExceptionKind::HeadEndUnavailable,
            format!("head_end_unavailable/{head_end}/{since}"),
            detail,
            since,
            resolved_at,
        )
    }

    /// The store of the instance consuming as `group` refuses writes since `since` (`reason`
    /// says why), or (`resolved_at`) accepts them again. One id per outage
    /// (`store_unavailable/<group>/<since>`), so the `resolved` record closes the `open` one.
    /// Service-level: `meter_id` and `order_id` are empty; the record's key is `group`.
    pub(crate) fn store_unavailable(
        group: &str,
        since: Timestamp,
        reason: &str,
        resolved_at: Option<Timestamp>,
    ) -> ExceptionRecord {
        let detail = match resolved_at {
            None => format!(
                "the store refuses writes since {since}: {reason}. Intake is paused (no offsets stored), meters hold their steps and no command whose write failed is sent; it resumes by itself when the store is back"
            ),
            Some(at) => format!(
                "the store accepts writes again at {at} (refusing since {since}: {reason}); intake resumed"
            ),
        };
        ExceptionRecord::service(
            ExceptionKind::StoreUnavailable,
            format!("store_unavailable/{group}/{since}"),
            detail,
            since,
            resolved_at,
        )
    }

    /// A service-level exception (no meter, no order), priority 1: `open` at `since`, or
    /// `resolved` at `resolved_at` under the same id.
    fn service(
        kind: ExceptionKind,
        exception_id: String,
        detail: String,
        since: Timestamp,
        resolved_at: Option<Timestamp>,
    ) -> ExceptionRecord {
        ExceptionRecord {
            schema_version: EVENT_SCHEMA_VERSION,
            exception_id,
            meter_id: String::new(),
            order_id: String::new(),
            command_id: None,
            kind,
            priority: 1,
            detail,
            raised_at: resolved_at.unwrap_or(since),
            status: if resolved_at.is_some() {
                "resolved"
            } else {
                "open"
            }
            .into(),
        }
    }
}
