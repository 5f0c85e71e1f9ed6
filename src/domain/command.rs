//! Head-end commands and results: the canonical taxonomy every head-end adapter maps to
//! (IEC 61968-9 EndDeviceControls / MultiSpeak CD: open = disconnect, close = connect).

use serde::{Deserialize, Serialize};

use super::Timestamp;

pub(crate) const COMMAND_SCHEMA_VERSION: u32 = 1;

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
pub enum CommandKind {
    /// Open the service switch (IEC 61968-9 `.31.0.23`).
    Disconnect,
    /// Close the service switch (`.31.0.18`).
    Connect,
    /// On-demand register read.
    Read,
    /// Ask the switch state (MultiSpeak InitiateCDStateRequest); changes nothing.
    SwitchStatus,
    /// Arm the switch for closure (IEC 61968-9 `.31.0.5`, MultiSpeak InitiateArmCDDevice): the
    /// customer presses the meter's button to close it. Sent instead of `connect` where the
    /// head-end's profile or the meter's registry record asks for it. The head-end answers
    /// `armed`, and later (a second result with the same command id) `connected` when the
    /// button is pressed.
    ArmConnect,
    /// Limit the premise's demand instead of cutting it off (DLMS/COSEM Limiter, "supply
    /// capacity control"): the meter keeps supply on and opens its switch only while the
    /// demand stays above `demand_limit_kw`, the customer closing it again once the load is
    /// reduced. Sent instead of `disconnect` where the rule pack's `[load_limit]` asks for it
    /// and the meter's head-end profile says its meters can (`load_limit = true`). The
    /// head-end answers switch state `load_limited`; a reconnect (`connect`) lifts the limit.
    LoadLimit,
}

impl CommandKind {
    pub(crate) const ALL: &'static [CommandKind] = <CommandKind as strum::VariantArray>::VARIANTS;
    pub(crate) fn as_str(self) -> &'static str {
        self.into()
    }
    pub(crate) fn index(self) -> usize {
        self as usize
    }
    /// The switch state this command aims for, if it operates the switch.
    pub(crate) fn target_state(self) -> Option<SwitchState> {
        match self {
            CommandKind::Disconnect => Some(SwitchState::Disconnected),
            CommandKind::Connect | CommandKind::ArmConnect => Some(SwitchState::Connected),
            CommandKind::LoadLimit => Some(SwitchState::LoadLimited),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchState {
    Connected,
    Disconnected,
    Armed,
    /// Supply on under a demand limit (a `load_limit` command took effect).
    LoadLimited,
    Unknown,
}

/// A command to the head-end. `command_id` is deterministic: `<order_id>/<attempt>` for an
/// execution, `<order_id>/<attempt>/status-<n>` for a status check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub schema_version: u32,
    pub command_id: String,
    pub order_id: String,
    pub meter_id: String,
    pub head_end_id: String,
    pub kind: CommandKind,
    pub attempt: u32,
    pub issued_at: Timestamp,
    /// The head-end must answer before this instant; later answers are treated as unknown.
    pub deadline: Timestamp,
    /// Check the voltage on the load side (IEC 61968-9 `needsVoltageLimitCheck`): before a
    /// connect (refuse it with `load_side_voltage` if voltage is present) and after a
    /// disconnect (report it in the answer's `load_side_voltage`). Set from the head-end's
    /// profile; absent = false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub check_load_side_voltage: bool,
    /// The demand limit of a `load_limit` command, in kW (the rule pack's
    /// `load_limit.demand_kw`); absent on every other command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demand_limit_kw: Option<f64>,
}

/// Why a command failed. Each code decides retry, exception or field order.
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
pub enum FailureCode {
    /// No network path to the meter (communication problem, not a meter problem).
    NetworkTimeout,
    /// The meter is busy (e.g. capacitor charging); try again later.
    MeterBusy,
    /// Voltage on the load side before a connect (backfeed, generator or bypass).
    LoadSideVoltage,
    /// The meter refused the command.
    MeterRejected,
    /// The switch did not reach the intended state.
    StateMismatch,
    /// The head-end adapter does not know the meter or the command.
    Unsupported,
    /// The command could not be handed to the head-end at all.
    HeadEndUnavailable,
    /// The head-end expired the command before it reached the meter (IEC 61968-9 final status
    /// EXPIRED, MultiSpeak past `expirationTime`): it was not executed.
    ExpiredAtHeadEnd,
    /// The switch closed but no voltage came on the load side: the connect did not restore
    /// power (a supply-side fault, or the switch did not make contact).
    NoVoltageAfterConnect,
    /// The switch reports a fault (stuck, damaged, disabled): a crew must look at it.
    SwitchFault,
    /// Voltage on the load side after a disconnect: the premise still has power (a bypass, a
    /// generator, tampering).
    LoadSideVoltageAfterDisconnect,
    /// The meter reports tampering (cover open, magnetic field, reverse energy, removal).
    Tamper,
}

/// What kind of trouble a failure is; decides what happens next (see [`FailureCode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum FailureClass {
    /// Reaching the meter failed (network, head-end): nothing happened at the meter. Counts
    /// toward a head-end's health.
    Communication,
    /// The meter was reached and could not do it (busy, refused, switch trouble).
    Device,
    /// Something at the premise makes it unsafe or suspicious (voltage on the load side,
    /// tampering): a person decides.
    Safety,
    /// The head-end or adapter cannot do this command for this meter (configuration).
    Configuration,
}

impl FailureCode {
    pub(crate) fn retryable(self) -> bool {
        matches!(
            self,
            FailureCode::NetworkTimeout
                | FailureCode::MeterBusy
                | FailureCode::StateMismatch
                | FailureCode::HeadEndUnavailable
                | FailureCode::ExpiredAtHeadEnd
                | FailureCode::NoVoltageAfterConnect
        )
    }
    pub(crate) fn class(self) -> FailureClass {
        match self {
            FailureCode::NetworkTimeout
            | FailureCode::HeadEndUnavailable
            | FailureCode::ExpiredAtHeadEnd => FailureClass::Communication,
            FailureCode::MeterBusy
            | FailureCode::StateMismatch
            | FailureCode::MeterRejected
            | FailureCode::NoVoltageAfterConnect
            | FailureCode::SwitchFault => FailureClass::Device,
            FailureCode::LoadSideVoltage
            | FailureCode::LoadSideVoltageAfterDisconnect
            | FailureCode::Tamper => FailureClass::Safety,
            FailureCode::Unsupported => FailureClass::Configuration,
        }
    }
    pub(crate) fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CommandOutcome {
    /// The head-end confirmed; `switch_state` is the actual state after the command.
    Confirmed {
        switch_state: SwitchState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        register_kwh: Option<f64>,
        /// Whether the meter measured voltage on the load side after the command (asked with
        /// `check_load_side_voltage`): after a disconnect, voltage means the premise still has
        /// power (bypass, generator, tamper); after a connect, none means power did not come
        /// back. Absent = not measured. Added 2026-12-06 (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        load_side_voltage: Option<bool>,
    },
    Failed {
        code: FailureCode,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
}

/// A head-end's answer to a command (value of the head-end-results topic). (serde cannot deny
/// unknown fields next to a flattened enum; the JSON Schema in docs/ is the strict contract.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    #[serde(default = "v1")]
    pub schema_version: u32,
    pub command_id: String,
    pub meter_id: String,
    #[serde(flatten)]
    pub outcome: CommandOutcome,
    pub at: Timestamp,
}

fn v1() -> u32 {
    COMMAND_SCHEMA_VERSION
}

impl CommandResult {
    pub(crate) fn outcome_label(&self) -> &'static str {
        match &self.outcome {
            CommandOutcome::Confirmed { .. } => "confirmed",
            CommandOutcome::Failed { code, .. } => code.as_str(),
        }
    }
}
