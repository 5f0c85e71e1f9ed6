//! Meters as the registry knows them: the v1 registry record (topic or file) and the compact
//! protection / capability flags kept in memory for every registered meter.

use serde::{Deserialize, Serialize};

pub(crate) const METER_SCHEMA_VERSION: u32 = 1;

/// One meter in the registry (value of the compacted registry topic, a line of the registry
/// file). Keyed by `meter_id` (the manufacturer serial).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterRecord {
    #[serde(default = "one")]
    pub(crate) schema_version: u32,
    pub(crate) meter_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) service_point_id: Option<String>,
    pub(crate) zone: String,
    pub(crate) head_end_id: String,
    pub(crate) has_switch: bool,
    #[serde(default)]
    pub(crate) life_support: bool,
    #[serde(default)]
    pub(crate) medical: bool,
    #[serde(default)]
    pub(crate) critical_care: bool,
    #[serde(default)]
    pub(crate) vip: bool,
    #[serde(default)]
    pub(crate) legal_dispute: bool,
    /// The active-energy register's multiplier (CT/PT ratio, dial constant); the default of
    /// the other usage types' multipliers.
    #[serde(default = "one_f")]
    pub(crate) multiplier: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reactive_multiplier: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) demand_multiplier: Option<f64>,
    /// How this meter reconnects, overriding its head-end's profile: `close` (the switch
    /// closes) or `arm` (the switch is armed and the customer presses the button). Absent =
    /// the head-end's profile. Added 2026-12-06 (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reconnect: Option<ReconnectMode>,
    /// The AMI network segment the meter talks through (an RF collector, base station or
    /// concentrator): `[head_end.throttle] segment = "collector"` limits commands in flight
    /// per collector. Added 2026-12-06 (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) collector_id: Option<String>,
    /// The distribution feeder of the service point: `[head_end.throttle] segment =
    /// "feeder"` limits commands in flight per feeder (cold-load pickup after reconnects).
    /// Added 2026-12-06 (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) feeder_id: Option<String>,
}

/// How a reconnect is executed at the meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconnectMode {
    /// The head-end closes the switch (`connect`).
    #[default]
    Close,
    /// The head-end arms the switch (`arm_connect`); the customer closes it at the meter.
    Arm,
}

/// The largest multiplier taken (CT ratios reach a few thousand).
pub(crate) const MAX_MULTIPLIER: f64 = 1e6;

fn one() -> u32 {
    1
}
fn one_f() -> f64 {
    1.0
}

impl MeterRecord {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.schema_version != METER_SCHEMA_VERSION {
            return Err(format!(
                "schema_version {} is not supported (use 1)",
                self.schema_version
            ));
        }
        if self.meter_id.is_empty()
            || self.meter_id.len() > 128
            || !self.meter_id.chars().all(|c| c.is_ascii_graphic())
        {
            return Err("meter_id must be 1-128 printable ASCII characters".into());
        }
        if self.zone.is_empty() || self.zone.len() > 64 {
            return Err("zone must be 1-64 characters".into());
        }
        if self.head_end_id.is_empty() || self.head_end_id.len() > 64 {
            return Err("head_end_id must be 1-64 characters".into());
        }
        for (name, v) in [
            ("collector_id", &self.collector_id),
            ("feeder_id", &self.feeder_id),
        ] {
            if v.as_ref().is_some_and(|v| v.is_empty() || v.len() > 64) {
                return Err(format!(
                    "{name} must be 1-64 characters when given (omit it for a meter without one)"
                ));
            }
        }
        for (name, m) in [
            ("multiplier", Some(self.multiplier)),
            ("reactive_multiplier", self.reactive_multiplier),
            ("demand_multiplier", self.demand_multiplier),
        ] {
            if let Some(m) = m.filter(|m| !(m.is_finite() && *m > 0.0 && *m <= MAX_MULTIPLIER)) {
                return Err(format!(
                    "{name} {m} must be a positive number up to {MAX_MULTIPLIER}"
                ));
            }
        }
        Ok(())
    }

    /// The multiplier of each usage type (reactive and demand default to `multiplier`).
    pub(crate) fn multipliers(&self) -> super::Multipliers {
        super::Multipliers {
            active: self.multiplier,
            reactive: self.reactive_multiplier.unwrap_or(self.multiplier),
            demand: self.demand_multiplier.unwrap_or(self.multiplier),
        }
    }

    pub(crate) fn flags(&self) -> MeterFlags {
        let mut f = MeterFlags::empty();
        f.set(MeterFlags::HAS_SWITCH, self.has_switch);
        f.set(MeterFlags::LIFE_SUPPORT, self.life_support);
        f.set(MeterFlags::MEDICAL, self.medical);
        f.set(MeterFlags::CRITICAL_CARE, self.critical_care);
        f.set(MeterFlags::VIP, self.vip);
        f.set(MeterFlags::LEGAL_DISPUTE, self.legal_dispute);
        f.set(
            MeterFlags::RECONNECT_ARM,
            self.reconnect == Some(ReconnectMode::Arm),
        );
        f.set(
            MeterFlags::RECONNECT_CLOSE,
            self.reconnect == Some(ReconnectMode::Close),
        );
        f
    }
}

/// Capability and protection flags in one byte (serialised as that byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MeterFlags(u8);

bitflags::bitflags! {
    impl MeterFlags: u8 {
        const HAS_SWITCH = 1;
        const LIFE_SUPPORT = 2;
        const MEDICAL = 4;
        const CRITICAL_CARE = 8;
        const VIP = 16;
        const LEGAL_DISPUTE = 32;
        /// The registry says this meter's reconnects arm (overrides the head-end profile).
        const RECONNECT_ARM = 64;
        /// The registry says this meter's reconnects close (overrides the head-end profile).
        const RECONNECT_CLOSE = 128;
    }
}
