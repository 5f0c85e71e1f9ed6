//! Facts about one meter as they arrive (payments, medical certificates, approvals): plain
//! data, delivered to the meter's actor and kept in its state. Parsing and validation of the
//! records is in `facts`.

use serde::{Deserialize, Serialize};

use super::{Protection, Timestamp};

/// A payment for an account / order. Withdraws the meter's open non-payment disconnects (only
/// `order_id` when given) before any command can be sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payment {
    pub(crate) schema_version: u32,
    pub(crate) fact_id: String,
    pub(crate) meter_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) order_id: Option<String>,
    pub(crate) amount: f64,
    pub(crate) paid_at: Timestamp,
}

/// A medical certificate (or life-support / critical-care registration) for the meter's
/// premise, valid until `expires_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub(crate) schema_version: u32,
    pub(crate) fact_id: String,
    pub(crate) meter_id: String,
    pub(crate) protection: Protection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) valid_from: Option<Timestamp>,
    pub(crate) expires_at: Timestamp,
}

impl Certificate {
    pub(crate) fn valid_at(&self, t: Timestamp) -> bool {
        self.valid_from.is_none_or(|f| f <= t) && t < self.expires_at
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalDecision {
    Approve,
    Reject,
}

/// An authorised person's decision on an order awaiting approval. Topic `control`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub(crate) schema_version: u32,
    pub(crate) fact_id: String,
    pub(crate) meter_id: String,
    pub(crate) order_id: String,
    pub(crate) decision: ApprovalDecision,
    /// Who decided (user id); recorded in the audit trail.
    pub(crate) by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
    pub(crate) at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldAction {
    Hold,
    Release,
}

/// An operator's hold on an open order (or its release). Topic `control`. A held order is not
/// started (no command, no policy decision) until it is released; a command already out is
/// not recalled (the hold is refused and audited).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderHold {
    pub(crate) schema_version: u32,
    pub(crate) fact_id: String,
    pub(crate) meter_id: String,
    pub(crate) order_id: String,
    pub(crate) action: HoldAction,
    /// Who (user id); recorded in the audit trail.
    pub(crate) by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
    pub(crate) at: Timestamp,
}

/// A meter exchange in the field (the meter-management seed): meter `meter_id` was removed and
/// `new_meter_id` installed at its service point at `exchanged_at`. The removed meter's final
/// register and the new meter's initial register, in kWh (multiplied). Control topic, key = the
/// removed meter: its actor hands its open work over to the new meter's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterExchange {
    pub(crate) schema_version: u32,
    pub(crate) fact_id: String,
    pub(crate) meter_id: String,
    pub(crate) new_meter_id: String,
    pub(crate) exchanged_at: Timestamp,
    pub(crate) final_read_kwh: f64,
    pub(crate) initial_read_kwh: f64,
    /// Who did it (crew, work order); recorded in the audit trail.
    pub(crate) by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
}

/// A fact about one meter, delivered to its actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MeterFact {
    Payment(Payment),
    MedicalCertificate(Certificate),
    Approval(Approval),
    OrderHold(OrderHold),
    MeterExchange(MeterExchange),
}

impl MeterFact {
    pub(crate) fn meter_id(&self) -> &str {
        match self {
            MeterFact::Payment(p) => &p.meter_id,
            MeterFact::MedicalCertificate(c) => &c.meter_id,
            MeterFact::Approval(a) => &a.meter_id,
            MeterFact::OrderHold(h) => &h.meter_id,
            MeterFact::MeterExchange(x) => &x.meter_id,
        }
    }
    pub(crate) fn fact_id(&self) -> &str {
        match self {
            MeterFact::Payment(p) => &p.fact_id,
            MeterFact::MedicalCertificate(c) => &c.fact_id,
            MeterFact::Approval(a) => &a.fact_id,
            MeterFact::OrderHold(h) => &h.fact_id,
            MeterFact::MeterExchange(x) => &x.fact_id,
        }
    }
    pub(crate) fn fact_type(&self) -> FactType {
        match self {
            MeterFact::Payment(_) => FactType::Payment,
            MeterFact::MedicalCertificate(_) => FactType::MedicalCertificate,
            MeterFact::Approval(_) => FactType::Approval,
            MeterFact::OrderHold(_) => FactType::OrderHold,
            MeterFact::MeterExchange(_) => FactType::MeterExchange,
        }
    }
    /// `payment`, `medical_certificate`, `approval`, `order_hold` or `meter_exchange`: the
    /// `type` tag on the wire.
    pub(crate) fn type_label(&self) -> &'static str {
        self.fact_type().into()
    }
}

/// Every kind of fact switchyard takes in: the meter facts above, and the zone facts of the
/// weather and emergencies tables (the label of `switchyard_facts_received_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum FactType {
    Payment,
    MedicalCertificate,
    Approval,
    OrderHold,
    MeterExchange,
    Weather,
    Emergency,
}
