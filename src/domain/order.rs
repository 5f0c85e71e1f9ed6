//! Service orders: the v1 wire format on the orders topic, validation into an [`Order`], and the
//! stored [`OrderRecord`] with its lifecycle status.

use serde::{Deserialize, Serialize};

use super::event::DeadLetterReason;
use super::Timestamp;

pub const ORDER_SCHEMA_VERSION: u32 = 1;
pub const MAX_NOTES_CHARS: usize = 250;
const MAX_ID_LEN: usize = 128;

/// What the CIS asks for. `move_out` / `move_in` are the two legs of a customer's move
/// (`domain::moves`): a disconnect and a connect on their date, optionally linked.
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
pub enum OrderKind {
    Disconnect,
    Reconnect,
    Read,
    Cancel,
    MoveOut,
    MoveIn,
}

impl OrderKind {
    pub(crate) const ALL: &'static [OrderKind] = <OrderKind as strum::VariantArray>::VARIANTS;
    pub fn as_str(self) -> &'static str {
        self.into()
    }
    pub(crate) fn index(self) -> usize {
        self as usize
    }
    /// A leg of a customer's move.
    pub(crate) fn is_move(self) -> bool {
        matches!(self, OrderKind::MoveOut | OrderKind::MoveIn)
    }
    /// Reconnects and move-ins restore power: they go first and supersede disconnects.
    pub(crate) fn restores_power(self) -> bool {
        matches!(self, OrderKind::Reconnect | OrderKind::MoveIn)
    }
}

/// Why the order exists (MultiSpeak CDReasonCode-like).
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
pub enum ReasonCode {
    NonPayment,
    PaymentReceived,
    CustomerRequest,
    Safety,
    Tampering,
    Move,
    Billing,
    Operator,
    /// A reconnect switchyard raised itself: a protection arrived after a non-payment cut.
    RestoreObligation,
    Other,
}

/// Lifecycle status of an order as the outside sees it on the order-events topic.
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
pub enum OrderStatus {
    Received,
    Rejected,
    Scheduled,
    /// Held by a rule (weather, calendar, window, notice, emergency); `retry_at` says until
    /// when, if the facts known now say so.
    Deferred,
    /// Held until an authorised person approves it (protected customer, VIP, dispute).
    AwaitingApproval,
    Dispatched,
    RetryScheduled,
    Confirmed,
    Completed,
    Failed,
    Cancelled,
}

impl OrderStatus {
    pub(crate) const ALL: &'static [OrderStatus] = <OrderStatus as strum::VariantArray>::VARIANTS;
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderStatus::Rejected
                | OrderStatus::Completed
                | OrderStatus::Failed
                | OrderStatus::Cancelled
        )
    }
    pub(crate) fn as_str(self) -> &'static str {
        self.into()
    }
    /// The request status a CSR knows (Pending, In Progress, On Hold, Completed, Closed).
    pub(crate) fn csr_status(self) -> &'static str {
        match self {
            OrderStatus::Received
            | OrderStatus::Scheduled
            | OrderStatus::Deferred
            | OrderStatus::AwaitingApproval => "Pending",
            OrderStatus::Dispatched | OrderStatus::Confirmed | OrderStatus::RetryScheduled => {
                "In Progress"
            }
            OrderStatus::Completed => "Completed",
            OrderStatus::Rejected | OrderStatus::Failed | OrderStatus::Cancelled => "Closed",
        }
    }
}

/// The v1 order as it arrives. Every field is optional here so that validation can say exactly
/// which one is missing; unknown fields are refused (typos must not pass silently).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireOrderV1 {
    schema_version: Option<u32>,
    order_id: Option<String>,
    kind: Option<String>,
    reason: Option<String>,
    meter_id: Option<String>,
    service_point_id: Option<String>,
    account_id: Option<String>,
    priority: Option<u8>,
    earliest_at: Option<String>,
    latest_at: Option<String>,
    notice_sent_at: Option<String>,
    campaign_id: Option<String>,
    target_order_id: Option<String>,
    linked_order_id: Option<String>,
    linked_meter_id: Option<String>,
    notes: Option<String>,
    created_at: Option<String>,
    amount_due: Option<f64>,
}

/// A validated service order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub kind: OrderKind,
    pub(crate) reason: ReasonCode,
    pub meter_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) service_point_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) account_id: Option<String>,
    /// 1 (most urgent) .. 9; default 5.
    pub priority: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) earliest_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) latest_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) notice_sent_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) campaign_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) target_order_id: Option<String>,
    /// A move leg's other leg (a move-out names its move-in and the other way round), and
    /// that leg's meter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) linked_order_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) linked_meter_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) notes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) created_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_due: Option<f64>,
}

/// Where a record came from on Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

/// An order as stored: the order, its status and when it changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub order: Order,
    pub status: OrderStatus,
    pub received_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourcePosition>,
}

/// Why a record was refused, for the dead-letter topic and the `rejected` order event.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reason: DeadLetterReason,
    pub detail: String,
    /// The order id, when the record had a readable one.
    pub(crate) order_id: Option<String>,
    pub(crate) meter_id: Option<String>,
}

fn reject(
    reason: DeadLetterReason,
    detail: impl Into<String>,
    order_id: &Option<String>,
    meter_id: &Option<String>,
) -> Rejection {
    Rejection {
        reason,
        detail: detail.into(),
        order_id: order_id.clone(),
        meter_id: meter_id.clone(),
    }
}

fn parse_enum<T: serde::de::DeserializeOwned>(s: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && s.chars().all(|c| c.is_ascii_graphic())
}

/// Parses an RFC 3339 timestamp with offset. Instants past the last one switchyard can
/// represent (9999-12-30T22:00:00Z) but still in year 9999, such as the common "no end"
/// sentinel `9999-12-31T23:59:59Z`, mean "never" and become [`Timestamp::MAX`].
pub(crate) fn parse_rfc3339(s: &str) -> Result<Timestamp, String> {
    match s.parse::<Timestamp>() {
        Ok(t) => Ok(t),
        Err(e) => {
            // Valid RFC 3339, only out of range? Check it as a civil date-time with an offset.
            let (civil, offset) = match s.rfind(['Z', 'z', '+']).or_else(|| {
                s.char_indices()
                    .filter(|(_, c)| *c == '-')
                    .map(|(i, _)| i)
                    .last()
                    .filter(|i| *i > 10)
            }) {
                Some(i) => (&s[..i], &s[i..]),
                None => return Err(e.to_string()),
            };
            let offset_ok = matches!(offset, "Z" | "z")
                || (offset.len() == 6
                    && offset[1..3].bytes().all(|b| b.is_ascii_digit())
                    && &offset[3..4] == ":"
                    && offset[4..].bytes().all(|b| b.is_ascii_digit()));
            match civil.parse::<jiff::civil::DateTime>() {
                Ok(dt) if offset_ok && dt.year() == 9999 => Ok(Timestamp::MAX),
                _ => Err(e.to_string()),
            }
        }
    }
}

/// Deserializes any JSON and fails on an object with a repeated key (serde_json's `Value`
/// keeps the last one silently; a repeated `meter_id` or `kind` is ambiguous, never intended).
struct NoDuplicateKeys;

impl<'de> serde::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = NoDuplicateKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(NoDuplicateKeys)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                while a.next_element::<NoDuplicateKeys>()?.is_some() {}
                Ok(NoDuplicateKeys)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                let mut seen = std::collections::HashSet::new();
                while let Some(k) = a.next_key::<String>()? {
                    if !seen.insert(k.clone()) {
                        return Err(serde::de::Error::custom(format!(
                            "field `{k}` appears more than once"
                        )));
                    }
                    a.next_value::<NoDuplicateKeys>()?;
                }
                Ok(NoDuplicateKeys)
            }
        }
        d.deserialize_any(V)
    }
}

/// The quick typed parse of a well-formed v1 order, or `None` for anything else (the long way
/// then says what is wrong). The object check matters: serde also reads a struct from a JSON
/// array, by position.
fn parse_quickly(payload: &[u8]) -> Option<WireOrderV1> {
    let first = payload.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    serde_json::from_slice::<WireOrderV1>(payload)
        .ok()
        .filter(|w| w.schema_version == Some(ORDER_SCHEMA_VERSION))
}

/// Parses an order that the quick typed parse refused (or to check that both agree): a loose
/// parse first so that a rejection can still name the order and meter, then the checks one by
/// one, each with its own reason.
fn parse_the_long_way(payload: &[u8]) -> Result<WireOrderV1, Rejection> {
    let none = None;
    let loose: serde_json::Value = serde_json::from_slice(payload).map_err(|e| {
        reject(
            DeadLetterReason::MalformedJson,
            format!("value is not valid JSON: {e}"),
            &none,
            &none,
        )
    })?;
    if let Err(e) = serde_json::from_slice::<NoDuplicateKeys>(payload) {
        let (order_id, meter_id) = (
            loose
                .get("order_id")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            loose
                .get("meter_id")
                .and_then(|v| v.as_str())
                .map(str::to_string),
        );
        return Err(reject(
            DeadLetterReason::MalformedJson,
            format!(
                "{e}; each field may appear once (a repeated field is ambiguous: send it once)"
            ),
            &order_id,
            &meter_id,
        ));
    }
    let order_id = loose
        .get("order_id")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let meter_id = loose
        .get("meter_id")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    if !loose.is_object() {
        return Err(reject(
            DeadLetterReason::MalformedJson,
            "value must be a JSON object",
            &order_id,
            &meter_id,
        ));
    }
    match loose.get("schema_version") {
        Some(v) if v.as_u64() == Some(ORDER_SCHEMA_VERSION as u64) => {}
        Some(v) => {
            return Err(reject(
                DeadLetterReason::UnsupportedSchemaVersion,
                format!("schema_version {v} is not supported; this service reads version {ORDER_SCHEMA_VERSION}"),
                &order_id,
                &meter_id,
            ))
        }
        None => {
            return Err(reject(DeadLetterReason::MissingField, "schema_version is required (use 1)", &order_id, &meter_id))
        }
    }
    let wire: WireOrderV1 = serde_path_to_error::deserialize(loose).map_err(|e| {
        // Name the field: `priority: invalid type: string "high", expected u8`.
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let msg = if path == "." || path.is_empty() {
            inner
        } else {
            format!("{path}: {inner}")
        };
        let reason = if msg.contains("unknown field") {
            DeadLetterReason::UnknownField
        } else {
            DeadLetterReason::InvalidField
        };
        reject(reason, msg, &order_id, &meter_id)
    })?;
    Ok(wire)
}

/// Validates one record from the orders topic. `meter_known` answers whether the meter is in the
/// registry. Pure: the time is an input.
pub fn validate_order(
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    meter_known: impl Fn(&str) -> bool,
    now: Timestamp,
) -> Result<Order, Rejection> {
    let none = None;
    let Some(payload) = payload else {
        return Err(reject(
            DeadLetterReason::MalformedJson,
            "record has no value (tombstone); an order must be a JSON object",
            &none,
            &none,
        ));
    };
    // The common case takes one typed parse. It succeeds only on a JSON object whose keys are
    // all known fields, each once (serde refuses a repeated field), with values of the right
    // types: what the long way below accepts too, to the same fields. Anything else, and a
    // schema version other than this one, takes the long way, which says what is wrong. (The
    // long way was about 60 % of the intake's allocations under month-end.)
    let wire = match parse_quickly(payload) {
        Some(w) => w,
        None => parse_the_long_way(payload)?,
    };
    // What a later rejection names (the same strings the long way's loose parse read).
    let (order_id, meter_id) = (&wire.order_id, &wire.meter_id);
    let _ = wire.schema_version;

    let need = |name: &str, v: &Option<String>| -> Result<String, Rejection> {
        match v {
            Some(s) if !s.trim().is_empty() => Ok(s.clone()),
            _ => Err(reject(
                DeadLetterReason::MissingField,
                format!("{name} is required"),
                &order_id,
                &meter_id,
            )),
        }
    };
    let oid = need("order_id", &wire.order_id)?;
    if !valid_id(&oid) {
        return Err(reject(
            DeadLetterReason::InvalidField,
            format!("order_id must be 1-{MAX_ID_LEN} printable ASCII characters without spaces"),
            &order_id,
            &meter_id,
        ));
    }
    let mid = need("meter_id", &wire.meter_id)?;
    if !valid_id(&mid) {
        return Err(reject(
            DeadLetterReason::InvalidField,
            format!("meter_id must be 1-{MAX_ID_LEN} printable ASCII characters without spaces"),
            &order_id,
            &meter_id,
        ));
    }
    let kind_s = need("kind", &wire.kind)?;
    let kind: OrderKind = parse_enum(&kind_s).ok_or_else(|| {
        reject(
            DeadLetterReason::UnknownKind,
            format!("kind `{kind_s}` is not one of disconnect, reconnect, read, cancel, move_out, move_in"),
            &order_id,
            &meter_id,
        )
    })?;
    let reason_s = need("reason", &wire.reason)?;
    let reason: ReasonCode = parse_enum(&reason_s).ok_or_else(|| {
        reject(
            DeadLetterReason::InvalidField,
            format!("reason `{reason_s}` is not a known reason code (see docs/topics.md)"),
            &order_id,
            &meter_id,
        )
    })?;
    let Some(k) = key else {
        return Err(reject(
            DeadLetterReason::KeyMismatch,
            format!("record has no key; key it by meter_id (`{mid}`) so that one meter's records stay in order"),
            &order_id,
            &meter_id,
        ));
    };
    {
        if k != mid.as_bytes() {
            return Err(reject(
                DeadLetterReason::KeyMismatch,
                format!("record key `{}` differs from meter_id `{mid}`; key orders by meter id so that one meter's records stay in order", String::from_utf8_lossy(k)),
                &order_id,
                &meter_id,
            ));
        }
    }
    let priority = wire.priority.unwrap_or(5);
    if !(1..=9).contains(&priority) {
        return Err(reject(
            DeadLetterReason::InvalidField,
            format!("priority {priority} must be between 1 (most urgent) and 9"),
            &order_id,
            &meter_id,
        ));
    }
    let time = |name: &str, v: &Option<String>| -> Result<Option<Timestamp>, Rejection> {
        match v {
            None => Ok(None),
            Some(s) => parse_rfc3339(s).map(Some).map_err(|e| {
                reject(
                    DeadLetterReason::InvalidField,
                    format!("{name} `{s}` is not an RFC 3339 timestamp with offset: {e}"),
                    &order_id,
                    &meter_id,
                )
            }),
        }
    };
    let earliest_at = time("earliest_at", &wire.earliest_at)?;
    let latest_at = time("latest_at", &wire.latest_at)?;
    let notice_sent_at = time("notice_sent_at", &wire.notice_sent_at)?;
    let created_at = time("created_at", &wire.created_at)?;
    if let (Some(e), Some(l)) = (earliest_at, latest_at) {
        if e > l {
            return Err(reject(
                DeadLetterReason::InvalidWindow,
                format!("earliest_at {e} is after latest_at {l}"),
                &order_id,
                &meter_id,
            ));
        }
    }
    if let Some(l) = latest_at {
        if l < now {
            return Err(reject(
                DeadLetterReason::Expired,
                format!("latest_at {l} has already passed (now {now})"),
                &order_id,
                &meter_id,
            ));
        }
    }
    if let Some(n) = notice_sent_at {
        if n > now {
            return Err(reject(
                DeadLetterReason::InvalidField,
                format!("notice_sent_at {n} is in the future"),
                &order_id,
                &meter_id,
            ));
        }
    }
    if let Some(notes) = &wire.notes {
        let chars = notes.chars().count();
        if chars > MAX_NOTES_CHARS {
            return Err(reject(
                DeadLetterReason::NotesTooLong,
                format!("notes has {chars} characters; at most {MAX_NOTES_CHARS} are allowed"),
                &order_id,
                &meter_id,
            ));
        }
    }
    if let Some(a) = wire.amount_due {
        if !a.is_finite() || a < 0.0 {
            return Err(reject(
                DeadLetterReason::InvalidField,
                format!("amount_due {a} must be a finite number, zero or more (the amount the customer owes)"),
                &order_id,
                &meter_id,
            ));
        }
    }
    let target_order_id = match (kind, &wire.target_order_id) {
        (OrderKind::Cancel, Some(t)) if valid_id(t) => Some(t.clone()),
        (OrderKind::Cancel, Some(_)) => {
            return Err(reject(
                DeadLetterReason::InvalidField,
                format!(
                "target_order_id must be 1-{MAX_ID_LEN} printable ASCII characters without spaces"
            ),
                &order_id,
                &meter_id,
            ))
        }
        (OrderKind::Cancel, None) => {
            return Err(reject(
                DeadLetterReason::MissingField,
                "a cancel needs target_order_id: the order it withdraws",
                &order_id,
                &meter_id,
            ))
        }
        (_, Some(_)) => {
            return Err(reject(
                DeadLetterReason::InvalidField,
                "target_order_id is only allowed on cancel orders",
                &order_id,
                &meter_id,
            ))
        }
        (_, None) => None,
    };
    if !meter_known(&mid) {
        return Err(reject(DeadLetterReason::UnknownMeter, format!("meter `{mid}` is not in the meter registry; publish it on the registry topic first"), &order_id, &meter_id));
    }
    let (linked_order_id, linked_meter_id) = move_link(
        kind,
        reason,
        &mid,
        earliest_at,
        (&wire.linked_order_id, &wire.linked_meter_id),
        &meter_known,
    )
    .map_err(|(r, d)| reject(r, d, &order_id, &meter_id))?;
    Ok(Order {
        order_id: oid,
        kind,
        reason,
        meter_id: mid,
        service_point_id: wire.service_point_id,
        account_id: wire.account_id,
        priority,
        earliest_at,
        latest_at,
        notice_sent_at,
        campaign_id: wire.campaign_id,
        target_order_id,
        linked_order_id,
        linked_meter_id,
        notes: wire.notes,
        created_at,
        amount_due: wire.amount_due,
    })
}

/// The move rules of one order: a move leg has reason `move` and a date (`earliest_at`: power
/// stays as it is until then); a link names both the other leg and its meter, which is another
/// meter in the registry; other kinds carry no link.
#[allow(clippy::type_complexity)]
fn move_link(
    kind: OrderKind,
    reason: ReasonCode,
    meter_id: &str,
    earliest_at: Option<Timestamp>,
    (order, meter): (&Option<String>, &Option<String>),
    meter_known: impl Fn(&str) -> bool,
) -> Result<(Option<String>, Option<String>), (DeadLetterReason, String)> {
    let k = kind.as_str();
    if !kind.is_move() {
        if order.is_some() || meter.is_some() {
            return Err((
                DeadLetterReason::InvalidField,
                "linked_order_id / linked_meter_id are only allowed on move_out and move_in orders"
                    .into(),
            ));
        }
        return Ok((None, None));
    }
    if reason != ReasonCode::Move {
        return Err((
            DeadLetterReason::InvalidField,
            format!("a {k} has reason `move`: a customer's move is not a non-payment or other disconnect (use a disconnect / reconnect order for those)"),
        ));
    }
    if earliest_at.is_none() {
        return Err((
            DeadLetterReason::MissingField,
            format!(
                "a {k} needs earliest_at: the move date (the switch is not operated before it)"
            ),
        ));
    }
    match (order, meter) {
        (None, None) => Ok((None, None)),
        (Some(o), Some(m)) => {
            if !valid_id(o) || !valid_id(m) {
                return Err((
                    DeadLetterReason::InvalidField,
                    format!("linked_order_id and linked_meter_id must be 1-{MAX_ID_LEN} printable ASCII characters without spaces"),
                ));
            }
            if m == meter_id {
                return Err((
                    DeadLetterReason::InvalidField,
                    format!("linked_meter_id is this order's own meter `{m}`: the legs of a move are two service points (a change of customer at one meter needs no switching)"),
                ));
            }
            if !meter_known(m) {
                return Err((
                    DeadLetterReason::UnknownMeter,
                    format!("linked meter `{m}` is not in the meter registry; publish it on the registry topic first"),
                ));
            }
            Ok((Some(o.clone()), Some(m.clone())))
        }
        _ => Err((
            DeadLetterReason::MissingField,
            "a linked move leg names both linked_order_id and linked_meter_id (the other leg and its meter)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now() -> Timestamp {
        "2026-11-25T12:00:00Z".parse().unwrap()
    }
    fn known(m: &str) -> bool {
        m.starts_with("M")
    }
    fn ok_json() -> serde_json::Value {
        serde_json::json!({"schema_version":1,"order_id":"SO-1","kind":"disconnect","reason":"non_payment","meter_id":"M1"})
    }
    fn check(v: serde_json::Value) -> Result<Order, Rejection> {
        let bytes = serde_json::to_vec(&v).unwrap();
        validate_order(Some(b"M1"), Some(&bytes), known, now())
    }

    fn check_raw(raw: &str) -> Result<Order, Rejection> {
        validate_order(Some(b"M1"), Some(raw.as_bytes()), known, now())
    }

    #[test]
    fn the_year_9999_no_end_sentinel_means_never() {
        let mut v = ok_json();
        v["latest_at"] = "9999-12-31T23:59:59Z".into();
        assert_eq!(check(v).unwrap().latest_at, Some(Timestamp::MAX));
        let mut v = ok_json();
        v["latest_at"] = "9999-12-31T23:59:59+05:00".into();
        assert_eq!(check(v).unwrap().latest_at, Some(Timestamp::MAX));
        // Still refused: no offset, a date that does not exist, any other year out of range.
        for bad in [
            "9999-12-31T23:59:59",
            "9999-12-32T00:00:00Z",
            "10000-01-01T00:00:00Z",
            "9999-13-01T00:00:00Z",
        ] {
            let mut v = ok_json();
            v["latest_at"] = bad.into();
            let e = check(v).unwrap_err();
            assert_eq!(e.reason, DeadLetterReason::InvalidField, "{bad}");
            assert!(e.detail.contains("RFC 3339"), "{bad}: {}", e.detail);
        }
    }

    #[test]
    fn a_repeated_field_is_refused_not_resolved_last_wins() {
        let e = check_raw(r#"{"schema_version":1,"order_id":"SO-1","kind":"reconnect","kind":"disconnect","reason":"non_payment","meter_id":"M1"}"#).unwrap_err();
        assert_eq!(e.reason, DeadLetterReason::MalformedJson);
        assert!(
            e.detail.contains("`kind` appears more than once"),
            "{}",
            e.detail
        );
        assert_eq!(
            e.order_id.as_deref(),
            Some("SO-1"),
            "the rejection still names the order"
        );
        // Nested objects too; the same key in two different objects is fine.
        let e = check_raw(r#"{"schema_version":1,"order_id":"SO-1","kind":"disconnect","reason":"non_payment","meter_id":"M1","notes":"a","x":{"a":1,"a":2}}"#).unwrap_err();
        assert_eq!(e.reason, DeadLetterReason::MalformedJson);
        assert!(check_raw(r#"{"schema_version":1,"order_id":"SO-1","kind":"disconnect","reason":"non_payment","meter_id":"M1"}"#).is_ok());
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named_in_the_rejection() {
        let mut v = ok_json();
        v["account_id"] = 12345.into();
        let e = check(v).unwrap_err();
        assert_eq!(e.reason, DeadLetterReason::InvalidField);
        assert!(
            e.detail
                .starts_with("account_id: invalid type: integer `12345`"),
            "{}",
            e.detail
        );
    }

    #[test]
    fn a_negative_amount_due_is_refused() {
        let mut v = ok_json();
        v["amount_due"] = (-12.5).into();
        let e = check(v).unwrap_err();
        assert_eq!(e.reason, DeadLetterReason::InvalidField);
        assert!(e.detail.contains("amount_due"), "{}", e.detail);
        let mut v = ok_json();
        v["amount_due"] = 0.0.into();
        assert!(check(v).is_ok());
    }

    #[test]
    fn an_order_without_a_key_is_refused_as_key_mismatch() {
        let bytes = serde_json::to_vec(&ok_json()).unwrap();
        let e = validate_order(None, Some(&bytes), known, now()).unwrap_err();
        assert_eq!(e.reason, DeadLetterReason::KeyMismatch);
    }

    #[test]
    fn move_legs_are_dated_moves_linked_to_another_meter() {
        let leg = || {
            serde_json::json!({"schema_version":1,"order_id":"OUT-1","kind":"move_out","reason":"move",
                "meter_id":"M1","earliest_at":"2026-12-01T08:00:00Z","linked_order_id":"IN-1","linked_meter_id":"M2"})
        };
        let o = check(leg()).unwrap();
        assert_eq!(o.kind, OrderKind::MoveOut);
        assert_eq!(o.linked_order_id.as_deref(), Some("IN-1"));
        assert_eq!(o.linked_meter_id.as_deref(), Some("M2"));
        let mut v = leg();
        v.as_object_mut().unwrap().remove("linked_order_id");
        v.as_object_mut().unwrap().remove("linked_meter_id");
        assert!(
            check(v).unwrap().linked_order_id.is_none(),
            "an unlinked move is allowed"
        );
        let cases: Vec<(&str, serde_json::Value, DeadLetterReason, &str)> = vec![
            (
                "reason",
                "non_payment".into(),
                DeadLetterReason::InvalidField,
                "reason `move`",
            ),
            (
                "earliest_at",
                serde_json::Value::Null,
                DeadLetterReason::MissingField,
                "move date",
            ),
            (
                "linked_meter_id",
                "M1".into(),
                DeadLetterReason::InvalidField,
                "own meter",
            ),
            (
                "linked_meter_id",
                "X7".into(),
                DeadLetterReason::UnknownMeter,
                "linked meter",
            ),
            (
                "linked_order_id",
                serde_json::Value::Null,
                DeadLetterReason::MissingField,
                "both",
            ),
            (
                "kind",
                "disconnect".into(),
                DeadLetterReason::InvalidField,
                "only allowed on move",
            ),
        ];
        for (field, value, reason, says) in cases {
            let mut v = leg();
            if value.is_null() {
                v.as_object_mut().unwrap().remove(field);
            } else {
                v[field] = value;
            }
            if field == "kind" {
                v["reason"] = "non_payment".into();
            }
            let e = check(v).unwrap_err();
            assert_eq!(e.reason, reason, "{field}: {}", e.detail);
            assert!(e.detail.contains(says), "{field}: {}", e.detail);
        }
    }

    #[test]
    fn minimal_order_is_valid_with_defaults() {
        let o = check(ok_json()).unwrap();
        assert_eq!(o.kind, OrderKind::Disconnect);
        assert_eq!(o.priority, 5);
    }

    #[test]
    fn each_defect_has_its_reason() {
        let cases: Vec<(serde_json::Value, DeadLetterReason)> = vec![
            (
                {
                    let mut v = ok_json();
                    v["schema_version"] = 2.into();
                    v
                },
                DeadLetterReason::UnsupportedSchemaVersion,
            ),
            (
                {
                    let mut v = ok_json();
                    v.as_object_mut().unwrap().remove("schema_version");
                    v
                },
                DeadLetterReason::MissingField,
            ),
            (
                {
                    let mut v = ok_json();
                    v["kind"] = "explode".into();
                    v
                },
                DeadLetterReason::UnknownKind,
            ),
            (
                {
                    let mut v = ok_json();
                    v["kind"] = "move_in".into();
                    v
                },
                DeadLetterReason::InvalidField,
            ),
            (
                {
                    let mut v = ok_json();
                    v["meter_id"] = "X9".into();
                    v
                },
                DeadLetterReason::KeyMismatch,
            ),
            (
                {
                    let mut v = ok_json();
                    v["notes"] = "x".repeat(251).into();
                    v
                },
                DeadLetterReason::NotesTooLong,
            ),
            (
                {
                    let mut v = ok_json();
                    v["latest_at"] = "2026-11-24T00:00:00Z".into();
                    v
                },
                DeadLetterReason::Expired,
            ),
            (
                {
                    let mut v = ok_json();
                    v["earliest_at"] = "2026-12-02T00:00:00Z".into();
                    v["latest_at"] = "2026-12-01T00:00:00Z".into();
                    v
                },
                DeadLetterReason::InvalidWindow,
            ),
            (
                {
                    let mut v = ok_json();
                    v["notse"] = "typo".into();
                    v
                },
                DeadLetterReason::UnknownField,
            ),
            (
                {
                    let mut v = ok_json();
                    v["priority"] = 0.into();
                    v
                },
                DeadLetterReason::InvalidField,
            ),
            (
                {
                    let mut v = ok_json();
                    v["kind"] = "cancel".into();
                    v
                },
                DeadLetterReason::MissingField,
            ),
            (
                {
                    let mut v = ok_json();
                    v["earliest_at"] = "tomorrow".into();
                    v
                },
                DeadLetterReason::InvalidField,
            ),
        ];
        for (v, want) in cases {
            let got = check(v.clone()).unwrap_err();
            assert_eq!(got.reason, want, "{v}: {}", got.detail);
            assert_eq!(got.order_id.as_deref(), Some("SO-1"));
        }
    }

    #[test]
    fn unknown_meter_is_rejected() {
        let v = serde_json::json!({"schema_version":1,"order_id":"SO-1","kind":"read","reason":"billing","meter_id":"Z1"});
        let r = validate_order(
            Some(b"Z1"),
            Some(&serde_json::to_vec(&v).unwrap()),
            known,
            now(),
        )
        .unwrap_err();
        assert_eq!(r.reason, DeadLetterReason::UnknownMeter);
    }

    #[test]
    fn notes_limit_counts_characters_not_bytes() {
        let mut v = ok_json();
        v["notes"] = "é".repeat(250).into();
        assert!(check(v).is_ok());
    }

    #[test]
    fn a_well_formed_order_takes_the_quick_parse_and_an_order_by_position_is_refused() {
        let ok = serde_json::to_vec(&ok_json()).unwrap();
        assert!(parse_quickly(&ok).is_some());
        let by_position = br#"[1,"SO-1","disconnect","non_payment","M1",null,null,null,null,null,null,null,null,null,null,null,null,null]"#;
        assert!(parse_quickly(by_position).is_none());
        let r = validate_order(None, Some(by_position), known, now()).unwrap_err();
        assert_eq!(r.reason, DeadLetterReason::MalformedJson);
    }

    proptest! {
        /// Whatever bytes arrive, validation returns (never panics), and an accepted order
        /// always satisfies the contract.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = validate_order(None, Some(&bytes), known, now());
        }

        /// The quick parse takes only what the long way accepts, and reads it the same: any
        /// object of known, unknown, repeated or mistyped fields, an array, any schema version.
        #[test]
        fn the_quick_parse_accepts_only_what_the_long_way_accepts_and_reads_it_alike(
            fields in proptest::collection::vec((
                prop::sample::select(vec!["schema_version","order_id","kind","reason","meter_id","priority","amount_due","notes","earliest_at","bogus","order\\u005fid"]),
                prop::sample::select(vec!["1","2","1.0","null","\"SO-1\"","\"disconnect\"","\"M1\"","5","300","-1","2.5","[1]","{\"a\":1}","true","\"2026-12-01T08:00:00Z\""]),
            ), 0..8),
            as_array in any::<bool>(),
            base in any::<bool>(),
            lead in prop::sample::select(vec!["", " ", "\n"]),
        ) {
            // `base`: a valid core first, so that the quick parse is taken often; the other
            // fields then repeat, mistype or add to it.
            let text = if as_array {
                // A whole order by position, which serde would read into the struct.
                let nulls = if base { ",null".repeat(13) } else { String::new() };
                format!("{lead}[1,\"SO-1\",\"disconnect\",\"non_payment\",\"M1\"{nulls}]")
            } else {
                let core = if base { vec![
                    "\"schema_version\":1".to_string(), "\"order_id\":\"SO-1\"".to_string(),
                    "\"kind\":\"disconnect\"".to_string(), "\"meter_id\":\"M1\"".to_string(),
                ] } else { Vec::new() };
                let body = core.into_iter().chain(fields.iter().map(|(k, v)| format!("\"{k}\":{v}"))).collect::<Vec<_>>().join(",");
                format!("{lead}{{{body}}}")
            };
            if let Some(quick) = parse_quickly(text.as_bytes()) {
                let long = parse_the_long_way(text.as_bytes());
                prop_assert!(long.is_ok(), "the quick parse took {} and the long way refused it: {:?}", text, long.err());
                prop_assert_eq!(format!("{quick:?}"), format!("{:?}", long.unwrap()));
            }
        }

        #[test]
        fn accepted_orders_respect_the_contract(
            kind in prop::sample::select(vec!["disconnect","reconnect","read","cancel","move_out","move_in","bogus"]),
            reason in prop::sample::select(vec!["non_payment","move"]),
            notes_len in 0usize..300,
            prio in 0u8..12,
            meter in "[MZ][0-9]{1,4}",
            with_target in any::<bool>(),
            with_date in any::<bool>(),
            linked in prop::option::of(("[A-Z]{1,3}-[0-9]", "[MZ][0-9]{1,4}")),
        ) {
            let mut v = serde_json::json!({"schema_version":1,"order_id":"SO-9","kind":kind,"reason":reason,"meter_id":meter,"priority":prio,"notes":"n".repeat(notes_len)});
            if with_target { v["target_order_id"] = "SO-1".into(); }
            if with_date { v["earliest_at"] = "2026-12-01T08:00:00Z".into(); }
            if let Some((o, m)) = &linked {
                v["linked_order_id"] = o.clone().into();
                v["linked_meter_id"] = m.clone().into();
            }
            let bytes = serde_json::to_vec(&v).unwrap();
            if let Ok(o) = validate_order(Some(meter.as_bytes()), Some(&bytes), known, now()) {
                prop_assert!(o.notes.as_ref().map_or(0, |n| n.chars().count()) <= MAX_NOTES_CHARS);
                prop_assert!((1..=9).contains(&o.priority));
                prop_assert!(known(&o.meter_id));
                prop_assert_eq!(o.kind == OrderKind::Cancel, o.target_order_id.is_some());
                // A move leg is a move (reason, date); a link only on a move leg, to another
                // registered meter.
                if o.kind.is_move() {
                    prop_assert_eq!(o.reason, ReasonCode::Move);
                    prop_assert!(o.earliest_at.is_some());
                }
                prop_assert_eq!(o.linked_order_id.is_some(), o.linked_meter_id.is_some());
                if let Some(m) = &o.linked_meter_id {
                    prop_assert!(o.kind.is_move());
                    prop_assert!(known(m) && m != &o.meter_id);
                }
            }
        }
    }
}
