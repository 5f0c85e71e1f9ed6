//! What a policy decision is, as data: the verdict, the rules that held an order, the inputs the
//! decision was made from, and the calendar days and protections rules are written in. The rule
//! engine that makes decisions lives in `policy`; audit rows, order events and the store carry
//! these types without depending on it.

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::{MeterFlags, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Day {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl Day {
    pub fn as_str(self) -> &'static str {
        match self {
            Day::Monday => "monday",
            Day::Tuesday => "tuesday",
            Day::Wednesday => "wednesday",
            Day::Thursday => "thursday",
            Day::Friday => "friday",
            Day::Saturday => "saturday",
            Day::Sunday => "sunday",
        }
    }

    pub fn of(d: Date) -> Day {
        use jiff::civil::Weekday as W;
        match d.weekday() {
            W::Monday => Day::Monday,
            W::Tuesday => Day::Tuesday,
            W::Wednesday => Day::Wednesday,
            W::Thursday => Day::Thursday,
            W::Friday => Day::Friday,
            W::Saturday => Day::Saturday,
            W::Sunday => Day::Sunday,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protection {
    LifeSupport,
    Medical,
    CriticalCare,
    Vip,
    LegalDispute,
}

impl Protection {
    pub const ALL: [Protection; 5] = [
        Protection::LifeSupport,
        Protection::Medical,
        Protection::CriticalCare,
        Protection::Vip,
        Protection::LegalDispute,
    ];
    pub fn flag(self) -> MeterFlags {
        match self {
            Protection::LifeSupport => MeterFlags::LIFE_SUPPORT,
            Protection::Medical => MeterFlags::MEDICAL,
            Protection::CriticalCare => MeterFlags::CRITICAL_CARE,
            Protection::Vip => MeterFlags::VIP,
            Protection::LegalDispute => MeterFlags::LEGAL_DISPUTE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Execute,
    /// Not now. `until`: the next time the rules allow it with the facts known now; `None`:
    /// only a change of facts can allow it.
    Defer {
        until: Option<Timestamp>,
    },
    AwaitApproval,
    Reject,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleHit {
    pub rule: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    #[serde(flatten)]
    pub verdict: Verdict,
    /// `jurisdiction@version`
    pub pack: String,
    pub rules: Vec<RuleHit>,
    /// What the decision was made from.
    pub inputs: DecisionInputs,
}

/// The inputs a decision used, recorded with it so that it can be replayed and explained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionInputs {
    pub at: Timestamp,
    pub zone: String,
    /// Protections the meter carries (registry flags and valid certificates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protections: Vec<Protection>,
    pub approved: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice_sent_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_due: Option<f64>,
    /// Forecast days known for the zone, and emergencies known.
    pub forecasts_known: usize,
    pub emergencies_known: usize,
}

impl Decision {
    /// `deferred`, `awaiting_approval`, `rejected` or `execute`: for logs and audit reasons.
    pub fn verdict_label(&self) -> &'static str {
        match self.verdict {
            Verdict::Execute => "execute",
            Verdict::Defer { .. } => "deferred",
            Verdict::AwaitApproval => "awaiting_approval",
            Verdict::Reject => "rejected",
        }
    }
    /// Every rule's detail, in one line.
    pub fn details(&self) -> String {
        self.rules
            .iter()
            .map(|r| r.detail.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The first rule that held the order (the one to quote), or `allowed`.
    pub fn first_rule(&self) -> &str {
        self.rules
            .first()
            .map(|r| r.rule.as_str())
            .unwrap_or("allowed")
    }
}
