//! What a policy decision is, as data: the verdict, the rules that held an order, the inputs the
//! decision was made from, and the calendar days and protections rules are written in. The rule
//! engine that makes decisions lives in `policy`; audit rows, order events and the store carry
//! these types without depending on it.

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::{MeterFlags, Timestamp};

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
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
    pub(crate) fn as_str(self) -> &'static str {
        self.into()
    }

    pub(crate) fn of(d: Date) -> Day {
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

/// A customer protection: the registry flags and certificates policy rules are written in.
/// Its snake_case name is the same on the wire, in rule packs and on the command line
/// (`policy explain --flags`).
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
    strum::EnumString,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Protection {
    LifeSupport,
    Medical,
    CriticalCare,
    Vip,
    LegalDispute,
}

impl Protection {
    pub const ALL: &'static [Protection] = <Protection as strum::VariantArray>::VARIANTS;
    pub fn as_str(self) -> &'static str {
        self.into()
    }
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

/// What a decision says to do, as a label (metrics, logs, audit reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum VerdictKind {
    Execute,
    Deferred,
    AwaitingApproval,
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleHit {
    pub rule: String,
    pub(crate) detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    #[serde(flatten)]
    pub verdict: Verdict,
    /// `jurisdiction@version`
    pub pack: String,
    pub(crate) rules: Vec<RuleHit>,
    /// An allowed disconnect the rule pack turns into a demand limit (`[load_limit]`): the
    /// limit in kW the meter is set to instead of opening its switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_limit_kw: Option<f64>,
    /// What the decision was made from.
    pub inputs: DecisionInputs,
}

/// The inputs a decision used, recorded with it so that it can be replayed and explained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionInputs {
    pub(crate) at: Timestamp,
    /// What was decided on: the order's kind and reason (a move-out is not a non-payment
    /// disconnect, and the decision says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<super::OrderKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<super::ReasonCode>,
    pub zone: String,
    /// Protections the meter carries (registry flags and valid certificates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) protections: Vec<Protection>,
    pub approved: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) notice_sent_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) amount_due: Option<f64>,
    /// Forecast days known for the zone, and emergencies known.
    pub forecasts_known: usize,
    pub(crate) emergencies_known: usize,
    /// The meter can take a demand limit (its head-end profile's `load_limit`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) can_limit_load: bool,
}

impl Decision {
    /// The verdict without its data: the label of `switchyard_policy_decisions_total`.
    pub(crate) fn verdict_kind(&self) -> VerdictKind {
        match self.verdict {
            Verdict::Execute => VerdictKind::Execute,
            Verdict::Defer { .. } => VerdictKind::Deferred,
            Verdict::AwaitApproval => VerdictKind::AwaitingApproval,
            Verdict::Reject => VerdictKind::Rejected,
        }
    }
    /// `deferred`, `awaiting_approval`, `rejected` or `execute`: for logs and audit reasons.
    pub(crate) fn verdict_label(&self) -> &'static str {
        self.verdict_kind().into()
    }
    /// Every rule's detail, in one line.
    pub(crate) fn details(&self) -> String {
        self.rules
            .iter()
            .map(|r| r.detail.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The first rule that held the order (the one to quote), or `allowed`.
    pub(crate) fn first_rule(&self) -> &str {
        self.rules
            .first()
            .map(|r| r.rule.as_str())
            .unwrap_or("allowed")
    }
}
