//! Facts that policy decisions depend on, as they arrive on Kafka, and where they are kept.
//!
//! - Zone facts (weather forecasts, declared emergencies) are small tables replayed from the
//!   beginning of their compacted topics on every start and held in the [`FactBook`]. When one
//!   changes, only the meters that hold a deferred order in an affected zone are woken (the
//!   book's waiting index): no scan of every meter.
//! - Meter facts (payments, medical certificates, approvals and rejections) are keyed by meter id
//!   and delivered to that meter's actor, where they meet its orders; the actor persists them in
//!   its snapshot before the source offset is stored.
//!
//! Parsing and validation here are pure: a bad record gets a [`FactError`] with the reason, which
//! the source turns into a dead letter.

use std::sync::{Arc, RwLock};

use dashmap::{DashMap, DashSet};
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::domain::Timestamp;
pub use crate::domain::{Approval, ApprovalDecision, Certificate, MeterFact, Payment};
use crate::policy::{Emergency, Forecast};

pub(crate) const FACT_SCHEMA_VERSION: u32 = 1;
const MAX_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct FactError(pub(crate) String);

fn bad(s: impl Into<String>) -> FactError {
    FactError(s.into())
}

fn check_id(what: &str, s: &str) -> Result<(), FactError> {
    if s.is_empty() || s.len() > MAX_ID_LEN || !s.chars().all(|c| c.is_ascii_graphic()) {
        return Err(bad(format!(
            "{what} `{s}` must be 1-{MAX_ID_LEN} printable ASCII characters"
        )));
    }
    Ok(())
}

fn check_version(v: u32) -> Result<(), FactError> {
    if v != FACT_SCHEMA_VERSION {
        return Err(bad(format!(
            "schema_version {v} is not supported (this build reads {FACT_SCHEMA_VERSION})"
        )));
    }
    Ok(())
}

fn check_key(key: Option<&str>, field: &str, value: &str) -> Result<(), FactError> {
    match key {
        Some(k) if k == value => Ok(()),
        Some(k) => Err(bad(format!(
            "record key `{k}` differs from {field} `{value}`: key it by {field}"
        ))),
        None => Err(bad(format!("record has no key: key it by {field}"))),
    }
}

/// A daily forecast (or observation) for one weather zone. Topic `weather`, key =
/// `<zone>/<date>` (compaction keeps the latest record per zone and day). A newer record for the
/// same zone and date replaces the older one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeatherRecord {
    pub schema_version: u32,
    pub zone: String,
    pub date: Date,
    pub low_f: f64,
    pub high_f: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Timestamp>,
}

impl WeatherRecord {
    pub fn parse(key: Option<&str>, bytes: &[u8]) -> Result<WeatherRecord, FactError> {
        let r: WeatherRecord = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("not a v1 weather record: {e}")))?;
        check_version(r.schema_version)?;
        check_id("zone", &r.zone)?;
        // Keyed by zone and date, so that compaction keeps one record per forecast day.
        check_key(key, "zone/date", &format!("{}/{}", r.zone, r.date))?;
        for (name, t) in [("low_f", r.low_f), ("high_f", r.high_f)] {
            if !(t.is_finite() && (-80.0..=140.0).contains(&t)) {
                return Err(bad(format!(
                    "{name} {t} is not a plausible temperature in F"
                )));
            }
        }
        if r.low_f > r.high_f {
            return Err(bad(format!(
                "low_f {} is above high_f {}",
                r.low_f, r.high_f
            )));
        }
        Ok(r)
    }
}

/// A declared emergency. Topic `emergencies`, key = emergency id; a later record with the same
/// id (e.g. with `ended_at`) replaces the earlier one. No zones = every zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyRecord {
    pub(crate) schema_version: u32,
    pub(crate) emergency_id: String,
    pub(crate) declared_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ended_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) zones: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) description: Option<String>,
}

impl EmergencyRecord {
    pub fn parse(key: Option<&str>, bytes: &[u8]) -> Result<EmergencyRecord, FactError> {
        let r: EmergencyRecord = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("not a v1 emergency record: {e}")))?;
        check_version(r.schema_version)?;
        check_id("emergency_id", &r.emergency_id)?;
        check_key(key, "emergency_id", &r.emergency_id)?;
        for z in &r.zones {
            check_id("zone", z)?;
        }
        if r.ended_at.is_some_and(|e| e < r.declared_at) {
            return Err(bad("ended_at is before declared_at"));
        }
        Ok(r)
    }
}

/// The longest note an operator's hold may carry (as an approval's through the API).
pub(crate) const NOTE_MAX_CHARS: usize = 250;

impl MeterFact {
    /// Parses a record of the customer-facts topic (`payment`, `medical_certificate`) or, with
    /// `control`, of the control topic (`approval`, `order_hold`, `meter_exchange`).
    pub fn parse(key: Option<&str>, bytes: &[u8], control: bool) -> Result<MeterFact, FactError> {
        let f: MeterFact =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not a v1 meter fact: {e}")))?;
        let (version, ids) = match &f {
            MeterFact::Payment(p) => {
                if !(p.amount.is_finite() && p.amount >= 0.0) {
                    return Err(bad(format!(
                        "amount {} must be a non-negative number",
                        p.amount
                    )));
                }
                let mut ids = vec![("fact_id", &p.fact_id), ("meter_id", &p.meter_id)];
                ids.extend(p.order_id.as_ref().map(|o| ("order_id", o)));
                ids.extend(p.account_id.as_ref().map(|o| ("account_id", o)));
                (p.schema_version, ids)
            }
            MeterFact::MedicalCertificate(c) => {
                if c.valid_from.is_some_and(|f| f >= c.expires_at) {
                    return Err(bad("valid_from must be before expires_at"));
                }
                (
                    c.schema_version,
                    vec![("fact_id", &c.fact_id), ("meter_id", &c.meter_id)],
                )
            }
            MeterFact::Approval(a) => {
                check_id("by", &a.by)?;
                (
                    a.schema_version,
                    vec![
                        ("fact_id", &a.fact_id),
                        ("meter_id", &a.meter_id),
                        ("order_id", &a.order_id),
                    ],
                )
            }
            MeterFact::OrderHold(h) => {
                check_id("by", &h.by)?;
                if h.note
                    .as_ref()
                    .is_some_and(|n| n.chars().count() > NOTE_MAX_CHARS)
                {
                    return Err(bad(format!(
                        "note must be at most {NOTE_MAX_CHARS} characters"
                    )));
                }
                (
                    h.schema_version,
                    vec![
                        ("fact_id", &h.fact_id),
                        ("meter_id", &h.meter_id),
                        ("order_id", &h.order_id),
                    ],
                )
            }
            MeterFact::MeterExchange(x) => {
                check_id("by", &x.by)?;
                if x.new_meter_id == x.meter_id {
                    return Err(bad(
                        "new_meter_id equals meter_id: an exchange installs another meter",
                    ));
                }
                for (name, v) in [
                    ("final_read_kwh", x.final_read_kwh),
                    ("initial_read_kwh", x.initial_read_kwh),
                ] {
                    if !(v.is_finite() && (0.0..=crate::domain::read::MAX_DIAL_VALUE).contains(&v))
                    {
                        return Err(bad(format!(
                            "{name} {v} must be a register in kWh, 0 to {:e}",
                            crate::domain::read::MAX_DIAL_VALUE
                        )));
                    }
                }
                if x.note
                    .as_ref()
                    .is_some_and(|n| n.chars().count() > NOTE_MAX_CHARS)
                {
                    return Err(bad(format!(
                        "note must be at most {NOTE_MAX_CHARS} characters"
                    )));
                }
                (
                    x.schema_version,
                    vec![
                        ("fact_id", &x.fact_id),
                        ("meter_id", &x.meter_id),
                        ("new_meter_id", &x.new_meter_id),
                    ],
                )
            }
        };
        check_version(version)?;
        for (what, id) in ids {
            check_id(what, id)?;
        }
        let is_control = matches!(
            f,
            MeterFact::Approval(_) | MeterFact::OrderHold(_) | MeterFact::MeterExchange(_)
        );
        if is_control != control {
            return Err(bad(format!(
                "a `{}` fact does not belong on the {} topic",
                f.type_label(),
                if control { "control" } else { "customer-facts" }
            )));
        }
        check_key(key, "meter_id", f.meter_id())?;
        Ok(f)
    }
}

/// Zone facts known now, and which meters wait on them.
#[derive(Default)]
pub struct FactBook {
    forecasts: DashMap<Box<str>, Arc<Vec<Forecast>>>,
    /// When the held forecast of a zone and day was issued.
    issued: DashMap<(String, Date), Timestamp>,
    emergencies: RwLock<Arc<Vec<(String, Emergency)>>>,
    emergency_view: RwLock<Arc<Vec<Emergency>>>,
    waiting: DashMap<Box<str>, DashSet<Arc<str>>>,
}

/// Forecast days kept per zone (older days are dropped first).
const DAYS_KEPT: usize = 45;

impl FactBook {
    pub fn new() -> Arc<FactBook> {
        Arc::new(FactBook::default())
    }

    /// Adds or replaces the forecast for the record's zone and date.
    pub fn upsert_forecast(&self, r: &WeatherRecord) {
        let f = Forecast {
            zone: r.zone.clone(),
            date: r.date,
            low_f: r.low_f,
            high_f: r.high_f,
        };
        let mut e = self
            .forecasts
            .entry(r.zone.as_str().into())
            .or_insert_with(|| Arc::new(Vec::new()));
        let v = Arc::make_mut(&mut e);
        match v.binary_search_by_key(&f.date, |x| x.date) {
            Ok(i) => {
                // A forecast issued before the one held (a late, stale record) does not replace it.
                let held = self.issued.get(&(r.zone.clone(), r.date)).map(|t| *t);
                if let (Some(held), Some(new)) = (held, r.issued_at) {
                    if new < held {
                        return;
                    }
                }
                v[i] = f
            }
            Err(i) => v.insert(i, f),
        }
        if let Some(t) = r.issued_at {
            self.issued.insert((r.zone.clone(), r.date), t);
        }
        if v.len() > DAYS_KEPT {
            let extra = v.len() - DAYS_KEPT;
            v.drain(..extra);
        }
    }

    pub fn forecasts(&self, zone: &str) -> Arc<Vec<Forecast>> {
        self.forecasts
            .get(zone)
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    /// Adds or replaces an emergency; `None` removes it (tombstone).
    pub(crate) fn upsert_emergency(&self, id: &str, e: Option<&EmergencyRecord>) {
        let mut all = self.emergencies.write().expect("lock");
        let mut v: Vec<(String, Emergency)> =
            all.iter().filter(|(i, _)| i != id).cloned().collect();
        if let Some(r) = e {
            v.push((
                id.to_string(),
                Emergency {
                    declared_at: r.declared_at,
                    ended_at: r.ended_at,
                    zones: r.zones.clone(),
                },
            ));
        }
        *self.emergency_view.write().expect("lock") =
            Arc::new(v.iter().map(|(_, e)| e.clone()).collect());
        *all = Arc::new(v);
    }

    pub(crate) fn emergencies(&self) -> Arc<Vec<Emergency>> {
        self.emergency_view.read().expect("lock").clone()
    }

    /// The meter holds an order deferred by zone facts in `zone`.
    pub(crate) fn hold(&self, zone: &str, meter_id: &Arc<str>) {
        if let Some(s) = self.waiting.get(zone) {
            if s.contains(meter_id) {
                return;
            }
        }
        self.waiting
            .entry(zone.into())
            .or_default()
            .insert(meter_id.clone());
    }

    pub(crate) fn release(&self, zone: &str, meter_id: &str) {
        if let Some(s) = self.waiting.get(zone) {
            s.remove(meter_id);
        }
    }

    /// Meters waiting in `zone` (or in every zone with `None`).
    pub(crate) fn waiting(&self, zone: Option<&str>) -> Vec<Arc<str>> {
        match zone {
            Some(z) => self
                .waiting
                .get(z)
                .map(|s| s.iter().map(|m| m.clone()).collect())
                .unwrap_or_default(),
            None => self
                .waiting
                .iter()
                .flat_map(|s| s.iter().map(|m| m.clone()).collect::<Vec<_>>())
                .collect(),
        }
    }

    #[cfg(test)]
    fn waiting_count(&self) -> usize {
        self.waiting.iter().map(|s| s.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weather_records_are_checked_and_keyed_by_zone() {
        let ok =
            br#"{"schema_version":1,"zone":"north","date":"2026-12-02","low_f":28,"high_f":40}"#;
        assert!(WeatherRecord::parse(Some("north/2026-12-02"), ok).is_ok());
        let e = WeatherRecord::parse(Some("north"), ok).unwrap_err();
        assert!(e.0.contains("differs from zone/date"), "{e}");
        let hot_low =
            br#"{"schema_version":1,"zone":"north","date":"2026-12-02","low_f":50,"high_f":40}"#;
        assert!(WeatherRecord::parse(Some("north/2026-12-02"), hot_low)
            .unwrap_err()
            .0
            .contains("above high_f"));
        let absurd =
            br#"{"schema_version":1,"zone":"north","date":"2026-12-02","low_f":-400,"high_f":40}"#;
        assert!(WeatherRecord::parse(Some("north/2026-12-02"), absurd)
            .unwrap_err()
            .0
            .contains("plausible"));
        let extra = br#"{"schema_version":1,"zone":"north","date":"2026-12-02","low_f":20,"high_f":40,"wind":3}"#;
        assert!(WeatherRecord::parse(Some("north/2026-12-02"), extra)
            .unwrap_err()
            .0
            .contains("unknown field"));
    }

    #[test]
    fn meter_facts_belong_on_their_topic() {
        let ap = br#"{"type":"approval","schema_version":1,"fact_id":"A1","meter_id":"M1","order_id":"SO-1","decision":"approve","by":"supervisor7","at":"2026-12-02T15:00:00Z"}"#;
        assert!(MeterFact::parse(Some("M1"), ap, true).is_ok());
        let e = MeterFact::parse(Some("M1"), ap, false).unwrap_err();
        assert!(e.0.contains("does not belong"), "{e}");
        let pay = br#"{"type":"payment","schema_version":1,"fact_id":"P1","meter_id":"M1","amount":-5,"paid_at":"2026-12-02T15:00:00Z"}"#;
        assert!(MeterFact::parse(Some("M1"), pay, false)
            .unwrap_err()
            .0
            .contains("non-negative"));
        let cert = br#"{"type":"medical_certificate","schema_version":1,"fact_id":"C1","meter_id":"M1","protection":"medical","expires_at":"2027-03-01T00:00:00Z"}"#;
        assert!(MeterFact::parse(None, cert, false)
            .unwrap_err()
            .0
            .contains("no key"));
        let wrong = br#"{"type":"medical_certificate","schema_version":1,"fact_id":"C1","meter_id":"M1","protection":"hypochondria","expires_at":"2027-03-01T00:00:00Z"}"#;
        assert!(MeterFact::parse(Some("M1"), wrong, false).is_err());
    }

    #[test]
    fn the_book_replaces_a_day_and_indexes_waiting_meters_by_zone() {
        let b = FactBook::new();
        let rec = |d: &str, low: f64| WeatherRecord {
            schema_version: 1,
            zone: "north".into(),
            date: d.parse().unwrap(),
            low_f: low,
            high_f: 50.0,
            issued_at: None,
        };
        b.upsert_forecast(&rec("2026-12-03", 20.0));
        b.upsert_forecast(&rec("2026-12-02", 25.0));
        b.upsert_forecast(&rec("2026-12-03", 40.0));
        let f = b.forecasts("north");
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].low_f, 40.0);
        assert!(b.forecasts("south").is_empty());
        // A late record issued before the one held does not replace it.
        let issued = |d: &str, low: f64, at: &str| WeatherRecord {
            issued_at: Some(at.parse().unwrap()),
            ..rec(d, low)
        };
        b.upsert_forecast(&issued("2026-12-04", 10.0, "2026-12-03T12:00:00Z"));
        b.upsert_forecast(&issued("2026-12-04", 50.0, "2026-12-02T12:00:00Z"));
        assert_eq!(b.forecasts("north")[2].low_f, 10.0);
        b.upsert_forecast(&issued("2026-12-04", 30.0, "2026-12-03T18:00:00Z"));
        assert_eq!(b.forecasts("north")[2].low_f, 30.0);
        let m: Arc<str> = Arc::from("M1");
        b.hold("north", &m);
        b.hold("north", &m);
        assert_eq!(b.waiting(Some("north")).len(), 1);
        assert!(b.waiting(Some("south")).is_empty());
        b.release("north", "M1");
        assert_eq!(b.waiting_count(), 0);
    }
}
