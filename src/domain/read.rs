//! Meter reads (topic `reads`, key meter id): register and interval reads from the MDM or the
//! head-end, their wire format and validation; the multipliers that turn a register's dial
//! value into engineering units; and the read watch, the stored note that a meter wants its
//! reads (it was cut, so any consumption on it is suspicious). Plain data and pure functions.
//!
//! Validation parses the record once, borrowing its strings (a read that matters to no meter
//! costs no allocation beyond its values), because reads arrive by the hundred thousand a
//! second and most of them are of no interest to switchyard.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::{DeadLetterReason, Timestamp};

pub const READ_SCHEMA_VERSION: u32 = 1;

/// The largest dial value taken (a register of 12 digits): anything above is a corrupt read,
/// and with a multiplier (at most `MAX_MULTIPLIER`) it stays a finite number.
pub const MAX_DIAL_VALUE: f64 = 1e12;

/// The longest interval a read may cover.
const MAX_INTERVAL_HOURS: i64 = 24;
/// How far ahead of switchyard's clock a read may be stamped (clock skew between systems).
const MAX_FUTURE_MINUTES: i64 = 15;

/// Which quantity a register measures (the meter-management seed's "usage types"): active
/// energy (kWh), reactive energy (kvarh) or demand (kW). Each has its own multiplier.
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
pub enum UsageType {
    Active,
    Reactive,
    Demand,
}

impl UsageType {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A register read (the dial's cumulative value at `read_at`) or an interval read (what was
/// used between `interval_start` and `read_at`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ReadKind {
    Register,
    Interval,
}

/// Who took the read.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ReadSource {
    /// The meter data management system (validated, estimated and edited reads).
    #[default]
    Mdm,
    /// The AMI head-end, as read from the meter.
    HeadEnd,
    /// A meter reader on site.
    Field,
}

/// One register's value as read from the dial (before the multiplier).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadValue {
    pub usage: UsageType,
    pub value: f64,
}

/// A validated read, in engineering units (the registry's multiplier of each usage type
/// applied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterRead {
    pub read_id: String,
    pub meter_id: String,
    pub kind: ReadKind,
    pub source: ReadSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_start: Option<Timestamp>,
    pub read_at: Timestamp,
    pub values: Vec<ReadValue>,
}

impl MeterRead {
    /// The value of one usage type, if the read has it.
    pub fn value(&self, usage: UsageType) -> Option<f64> {
        self.values
            .iter()
            .find(|v| v.usage == usage)
            .map(|v| v.value)
    }

    /// One line for audit rows and exception texts: `register read RD-1 at …: active 12 kWh`.
    pub(crate) fn describe(&self) -> String {
        let values: Vec<String> = self
            .values
            .iter()
            .map(|v| format!("{} {} {}", v.usage.as_str(), v.value, unit(v.usage)))
            .collect();
        let kind: &'static str = self.kind.into();
        match self.interval_start {
            Some(s) => format!(
                "{kind} read {} for {s} .. {}: {}",
                self.read_id,
                self.read_at,
                values.join(", ")
            ),
            None => format!(
                "{kind} read {} at {}: {}",
                self.read_id,
                self.read_at,
                values.join(", ")
            ),
        }
    }
}

/// The unit of a usage type's engineering value.
pub fn unit(u: UsageType) -> &'static str {
    match u {
        UsageType::Active => "kWh",
        UsageType::Reactive => "kvarh",
        UsageType::Demand => "kW",
    }
}

/// The registry's multiplier of each usage type (current and potential transformers, dial
/// constants): engineering value = dial value × multiplier.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Multipliers {
    pub active: f64,
    pub reactive: f64,
    pub demand: f64,
}

impl Default for Multipliers {
    fn default() -> Self {
        Multipliers {
            active: 1.0,
            reactive: 1.0,
            demand: 1.0,
        }
    }
}

impl Multipliers {
    pub fn of(&self, u: UsageType) -> f64 {
        match u {
            UsageType::Active => self.active,
            UsageType::Reactive => self.reactive,
            UsageType::Demand => self.demand,
        }
    }
}

/// The wire form, borrowed from the record where it can be.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    schema_version: u32,
    #[serde(borrow)]
    read_id: Cow<'a, str>,
    #[serde(borrow)]
    meter_id: Cow<'a, str>,
    kind: ReadKind,
    #[serde(default)]
    source: ReadSource,
    #[serde(default)]
    interval_start: Option<Timestamp>,
    read_at: Timestamp,
    values: Vec<ReadValue>,
}

/// A read that passed validation, still borrowing its record: what the reads handler needs to
/// decide whether any meter cares, before anything is copied.
#[derive(Debug)]
pub struct ReadRef<'a> {
    pub read_id: Cow<'a, str>,
    pub meter_id: Cow<'a, str>,
    pub kind: ReadKind,
    pub source: ReadSource,
    pub interval_start: Option<Timestamp>,
    pub read_at: Timestamp,
    /// Dial values (no multiplier yet).
    pub values: Vec<ReadValue>,
}

impl ReadRef<'_> {
    /// The read in engineering units, owned.
    pub fn to_read(&self, m: &Multipliers) -> MeterRead {
        MeterRead {
            read_id: self.read_id.to_string(),
            meter_id: self.meter_id.to_string(),
            kind: self.kind,
            source: self.source,
            interval_start: self.interval_start,
            read_at: self.read_at,
            values: self
                .values
                .iter()
                .map(|v| ReadValue {
                    usage: v.usage,
                    value: v.value * m.of(v.usage),
                })
                .collect(),
        }
    }

    /// The active-energy value in kWh (multiplied), if the read has one.
    pub fn active_kwh(&self, m: &Multipliers) -> Option<f64> {
        self.values
            .iter()
            .find(|v| v.usage == UsageType::Active)
            .map(|v| v.value * m.active)
    }
}

/// Why a read record was refused: the dead-letter reason and a text that says what to fix.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadRejection {
    pub reason: DeadLetterReason,
    pub detail: String,
}

fn bad(detail: impl Into<String>) -> ReadRejection {
    ReadRejection {
        reason: DeadLetterReason::InvalidRead,
        detail: detail.into(),
    }
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_graphic())
}

/// Parses and validates one record of the reads topic (key, value) at `now`. The registry
/// check (is the meter known?) is the caller's.
pub fn validate_read<'a>(
    key: Option<&[u8]>,
    payload: Option<&'a [u8]>,
    now: Timestamp,
) -> Result<ReadRef<'a>, ReadRejection> {
    let payload = payload.ok_or_else(|| bad("record has no value: a read is a JSON object"))?;
    let w: Wire<'a> = serde_json::from_slice(payload).map_err(|e| {
        bad(format!(
            "not a v{READ_SCHEMA_VERSION} meter read: {e} (see docs/schemas/read.v1.schema.json)"
        ))
    })?;
    if w.schema_version != READ_SCHEMA_VERSION {
        return Err(ReadRejection {
            reason: DeadLetterReason::UnsupportedSchemaVersion,
            detail: format!(
                "schema_version {} is not supported (use {READ_SCHEMA_VERSION})",
                w.schema_version
            ),
        });
    }
    if !valid_id(&w.read_id) {
        return Err(bad("read_id must be 1-128 printable ASCII characters"));
    }
    if !valid_id(&w.meter_id) {
        return Err(bad("meter_id must be 1-128 printable ASCII characters"));
    }
    if key != Some(w.meter_id.as_bytes()) {
        return Err(ReadRejection {
            reason: DeadLetterReason::KeyMismatch,
            detail: format!(
                "record key {:?} differs from meter_id `{}`: key reads by meter_id",
                key.map(String::from_utf8_lossy),
                w.meter_id
            ),
        });
    }
    if w.values.is_empty() {
        return Err(bad(
            "values is empty: a read carries at least one register value",
        ));
    }
    for (i, v) in w.values.iter().enumerate() {
        if !v.value.is_finite() || v.value < 0.0 || v.value > MAX_DIAL_VALUE {
            return Err(bad(format!(
                "values[{i}] ({}) is {}: a value must be a finite number from 0 to {MAX_DIAL_VALUE:e}",
                v.usage.as_str(),
                v.value
            )));
        }
        if w.values[..i].iter().any(|x| x.usage == v.usage) {
            return Err(bad(format!(
                "values has {} twice: one value per usage type",
                v.usage.as_str()
            )));
        }
    }
    let future = jiff::SignedDuration::from_mins(MAX_FUTURE_MINUTES);
    if w.read_at > now + future {
        return Err(bad(format!(
            "read_at {} is more than {MAX_FUTURE_MINUTES} minutes after now ({now}): check the sender's clock",
            w.read_at
        )));
    }
    match (w.kind, w.interval_start) {
        (ReadKind::Register, Some(_)) => {
            return Err(bad(
                "interval_start is for interval reads: a register read has only read_at",
            ))
        }
        (ReadKind::Interval, None) => {
            return Err(bad(
                "an interval read needs interval_start (the interval ends at read_at)",
            ))
        }
        (ReadKind::Interval, Some(s)) => {
            if s >= w.read_at {
                return Err(bad(format!(
                    "interval_start {s} is not before read_at {}",
                    w.read_at
                )));
            }
            if w.read_at.duration_since(s) > jiff::SignedDuration::from_hours(MAX_INTERVAL_HOURS) {
                return Err(bad(format!(
                    "the interval {s} .. {} is longer than {MAX_INTERVAL_HOURS} hours",
                    w.read_at
                )));
            }
        }
        (ReadKind::Register, None) => {}
    }
    Ok(ReadRef {
        read_id: w.read_id,
        meter_id: w.meter_id,
        kind: w.kind,
        source: w.source,
        interval_start: w.interval_start,
        read_at: w.read_at,
        values: w.values,
    })
}

/// A meter that wants its reads. Either it was cut (a disconnect confirmed), so consumption on
/// it means the switch did not open, or someone closed it, or the meter was tampered with; or
/// (`history`) it has an open disconnect or move-out, whose final read will be checked against
/// the register reads it collects meanwhile. Stored per meter (kept across restarts and
/// hand-overs), held in memory by the instance that owns the meter; removed when the meter is
/// connected again, when the watchdog has raised its exception, or when the watch period ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadWatch {
    pub meter_id: String,
    /// The disconnect order whose cut is watched.
    pub order_id: String,
    /// When the cut was confirmed.
    pub since: Timestamp,
    /// The active register at the cut (kWh, multiplied), when the head-end or a read gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_kwh: Option<f64>,
    /// Not a cut: the meter collects its register reads for an open disconnect's final-read
    /// check (`order_id` is that order; `since` is not used).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub history: bool,
}

/// One register value of a meter's history (active energy, kWh, multiplied) and when it was
/// read: the meter keeps its last few (`reads::HISTORY`) for the high / low check.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegisterPoint {
    pub at: Timestamp,
    pub kwh: f64,
}

/// The class of a final read.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ReadClass {
    VeryLow,
    Low,
    Normal,
    High,
    VeryHigh,
    /// Not enough history to predict a use (fewer than two reads a day apart before it): passed
    /// on, marked unvalidated.
    NoHistory,
}

impl ReadClass {
    /// A person must review it.
    pub fn suspicious(self) -> bool {
        !matches!(self, ReadClass::Normal | ReadClass::NoHistory)
    }
}

/// A disconnect's final read as its completion event carries it: the register, when it was
/// read, and the high / low check against the meter's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalRead {
    pub kwh: f64,
    pub at: Timestamp,
    pub class: ReadClass,
    /// Use since the meter's last earlier read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_kwh: Option<f64>,
    /// What the meter's history predicts for that gap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_kwh: Option<f64>,
}

/// A change of a meter's read watch, stored with the meter's step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WatchChange {
    Set(ReadWatch),
    Clear(String),
}

impl WatchChange {
    pub(crate) fn meter_id(&self) -> &str {
        match self {
            WatchChange::Set(w) => &w.meter_id,
            WatchChange::Clear(m) => m,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-12-05T12:00:00Z".parse().unwrap()
    }

    fn ok(json: &str) -> ReadRef<'_> {
        validate_read(Some(b"M-1"), Some(json.as_bytes()), now()).unwrap()
    }

    fn refused(key: &[u8], json: &str) -> ReadRejection {
        validate_read(Some(key), Some(json.as_bytes()), now()).unwrap_err()
    }

    #[test]
    fn a_register_read_is_accepted_and_multiplied_per_usage_type() {
        let r = ok(
            r#"{"schema_version":1,"read_id":"RD-1","meter_id":"M-1","kind":"register","read_at":"2026-12-05T11:00:00Z","source":"head_end","values":[{"usage":"active","value":1234.5},{"usage":"demand","value":2.5}]}"#,
        );
        assert!(matches!(r.meter_id, Cow::Borrowed(_)), "ids are borrowed");
        let m = Multipliers {
            active: 40.0,
            reactive: 1.0,
            demand: 20.0,
        };
        let read = r.to_read(&m);
        assert_eq!(read.value(UsageType::Active), Some(49_380.0));
        assert_eq!(read.value(UsageType::Demand), Some(50.0));
        assert_eq!(read.value(UsageType::Reactive), None);
        assert_eq!(r.active_kwh(&m), Some(49_380.0));
        assert_eq!(read.source, ReadSource::HeadEnd);
    }

    #[test]
    fn an_interval_read_needs_a_sane_interval() {
        let r = ok(
            r#"{"schema_version":1,"read_id":"RD-2","meter_id":"M-1","kind":"interval","interval_start":"2026-12-05T10:45:00Z","read_at":"2026-12-05T11:00:00Z","values":[{"usage":"active","value":0.25}]}"#,
        );
        assert_eq!(r.source, ReadSource::Mdm, "mdm by default");
        let e = refused(
            b"M-1",
            r#"{"schema_version":1,"read_id":"RD-2","meter_id":"M-1","kind":"interval","read_at":"2026-12-05T11:00:00Z","values":[{"usage":"active","value":0.25}]}"#,
        );
        assert!(e.detail.contains("interval_start"), "{}", e.detail);
        let e = refused(
            b"M-1",
            r#"{"schema_version":1,"read_id":"RD-2","meter_id":"M-1","kind":"interval","interval_start":"2026-12-03T10:45:00Z","read_at":"2026-12-05T11:00:00Z","values":[{"usage":"active","value":0.25}]}"#,
        );
        assert!(e.detail.contains("longer than 24 hours"), "{}", e.detail);
    }

    #[test]
    fn bad_reads_are_refused_with_a_reason_that_says_what_to_fix() {
        let base = r#"{"schema_version":1,"read_id":"RD-1","meter_id":"M-1","kind":"register","read_at":"2026-12-05T11:00:00Z","values":[{"usage":"active","value":1.0}]}"#;
        let cases: Vec<(&[u8], String, DeadLetterReason, &str)> = vec![
            (
                b"M-1",
                "not json".into(),
                DeadLetterReason::InvalidRead,
                "not a v1 meter read",
            ),
            (
                b"M-2",
                base.into(),
                DeadLetterReason::KeyMismatch,
                "key reads by meter_id",
            ),
            (
                b"M-1",
                base.replace("\"schema_version\":1", "\"schema_version\":2"),
                DeadLetterReason::UnsupportedSchemaVersion,
                "use 1",
            ),
            (
                b"M-1",
                base.replace("1.0}", "-1.0}"),
                DeadLetterReason::InvalidRead,
                "finite number",
            ),
            (
                b"M-1",
                base.replace("[{\"usage\":\"active\",\"value\":1.0}]", "[]"),
                DeadLetterReason::InvalidRead,
                "values is empty",
            ),
            (
                b"M-1",
                base.replace(
                    "[{\"usage\":\"active\",\"value\":1.0}]",
                    "[{\"usage\":\"active\",\"value\":1.0},{\"usage\":\"active\",\"value\":2.0}]",
                ),
                DeadLetterReason::InvalidRead,
                "active twice",
            ),
            (
                b"M-1",
                base.replace("2026-12-05T11:00:00Z", "2026-12-06T11:00:00Z"),
                DeadLetterReason::InvalidRead,
                "check the sender's clock",
            ),
            (
                b"M-1",
                base.replace("\"kind\"", "\"colour\":1,\"kind\""),
                DeadLetterReason::InvalidRead,
                "unknown field",
            ),
            (
                b"M-1",
                base.replace("\"register\"", "\"hourly\""),
                DeadLetterReason::InvalidRead,
                "unknown variant",
            ),
            (
                b"M-1",
                base.replace(
                    "\"kind\":\"register\"",
                    "\"kind\":\"register\",\"interval_start\":\"2026-12-05T10:00:00Z\"",
                ),
                DeadLetterReason::InvalidRead,
                "interval_start is for interval reads",
            ),
        ];
        for (key, json, reason, says) in cases {
            let e = refused(key, &json);
            assert_eq!(e.reason, reason, "{json}: {}", e.detail);
            assert!(e.detail.contains(says), "{json}: {}", e.detail);
        }
        assert!(validate_read(Some(b"M-1"), None, now()).is_err());
    }
}
