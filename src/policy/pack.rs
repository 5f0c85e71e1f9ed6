//! Rule packs as data: the pack's keys ([`RulePack`]), their parsing from TOML and validation
//! at load (every error names the key), the built-in baseline, and loading a directory of
//! packs. A valid pack becomes a [`Policy`] with its time zone and business windows parsed.

use std::collections::BTreeMap;

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use super::{Day, Policy, Protection, WeatherRule};
use crate::domain::ReasonCode;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("rule pack {file}: not valid TOML or unknown key: {message}")]
    Parse { file: String, message: String },
    #[error("rule pack {file}, key `{key}`: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulePack {
    pub(crate) jurisdiction: String,
    pub(crate) version: String,
    pub(crate) time_zone: String,
    #[serde(default)]
    pub(crate) barred_weekdays: Vec<Day>,
    #[serde(default)]
    pub(crate) bar_holidays: bool,
    #[serde(default)]
    pub(crate) bar_day_before_holiday: bool,
    /// Days after a declared emergency ends during which disconnects stay suspended (they are
    /// always suspended while it lasts).
    #[serde(default)]
    pub(crate) emergency_extension_days: Option<u32>,
    #[serde(default)]
    pub(crate) holidays: Vec<Date>,
    #[serde(default)]
    pub(crate) min_balance_for_non_payment: Option<f64>,
    #[serde(default)]
    pub(crate) approval_required_for: Vec<Protection>,
    #[serde(default)]
    pub(crate) notice_days: BTreeMap<String, u32>,
    #[serde(default)]
    pub weather: Vec<WeatherRule>,
    /// With weather rules: a day the rules look at that has no forecast for the zone defers the
    /// disconnect (`forecast_missing`) instead of counting as "not extreme".
    #[serde(default)]
    pub(crate) require_forecast: bool,
    /// Allowed local hours per weekday, `["08:00", "16:00"]`; a day without a window is barred.
    #[serde(default)]
    pub(crate) business_windows: BTreeMap<Day, [String; 2]>,
    /// A demand limit instead of a full cut (issue 16): an allowed disconnect for one of
    /// `reasons` sets the meter's demand limit where its head-end can.
    #[serde(default)]
    pub(crate) load_limit: Option<LoadLimit>,
}

/// `[load_limit]` of a rule pack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadLimit {
    /// The demand limit, kW (0 < demand_kw <= 100).
    pub(crate) demand_kw: f64,
    /// The disconnect reasons it applies to.
    #[serde(default = "non_payment")]
    pub(crate) reasons: Vec<ReasonCode>,
    /// A meter whose head-end cannot set a limit: `await_approval` (a person decides; the
    /// default) or `disconnect` (the full cut).
    #[serde(default)]
    pub(crate) unsupported: Unsupported,
}

fn non_payment() -> Vec<ReasonCode> {
    vec![ReasonCode::NonPayment]
}

/// What `[load_limit]` does for a meter that cannot be limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unsupported {
    #[default]
    AwaitApproval,
    Disconnect,
}

pub(super) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, PackError> {
    toml::from_str(text).map_err(|e| PackError::Parse {
        file: file.into(),
        message: e.to_string(),
    })
}

pub(super) fn invalid(file: &str, key: &str, message: String) -> PackError {
    PackError::Invalid {
        file: file.into(),
        key: key.into(),
        message,
    }
}

/// Parses `{day: ["HH:MM", "HH:MM"]}` windows; an error names the key (`<prefix>.<day>`).
pub(crate) fn parse_windows(
    prefix: &str,
    raw: &BTreeMap<Day, [String; 2]>,
) -> Result<BTreeMap<Day, (Time, Time)>, (String, String)> {
    let mut windows = BTreeMap::new();
    for (day, [s, e]) in raw {
        let key = format!("{prefix}.{}", day.as_str());
        let s_t: Time = s
            .parse()
            .map_err(|err| (key.clone(), format!("start `{s}` is not HH:MM: {err}")))?;
        let e_t: Time = e
            .parse()
            .map_err(|err| (key.clone(), format!("end `{e}` is not HH:MM: {err}")))?;
        if s_t >= e_t {
            return Err((
                key,
                format!("window {s}-{e} is empty (start must be before end)"),
            ));
        }
        windows.insert(*day, (s_t, e_t));
    }
    Ok(windows)
}

impl RulePack {
    /// Parses and validates a pack; every error names the key.
    pub fn from_toml(text: &str, file: &str) -> Result<Policy, PackError> {
        let pack: RulePack = parse_toml(text, file)?;
        let bad = |key: &str, message: String| invalid(file, key, message);
        if pack.jurisdiction.trim().is_empty() {
            return Err(bad("jurisdiction", "must not be empty".into()));
        }
        if pack.version.trim().is_empty() {
            return Err(bad("version", "must not be empty".into()));
        }
        let tz = TimeZone::get(&pack.time_zone).map_err(|e| {
            bad(
                "time_zone",
                format!("`{}` is not an IANA time zone: {e}", pack.time_zone),
            )
        })?;
        let windows = parse_windows("business_windows", &pack.business_windows)
            .map_err(|(key, message)| bad(&key, message))?;
        for (i, w) in pack.weather.iter().enumerate() {
            let key = format!("weather[{i}]");
            if w.low_at_or_below_f.is_none() && w.high_at_or_above_f.is_none() {
                return Err(bad(&key, "needs low_at_or_below_f or high_at_or_above_f: a weather rule with no threshold would never bar anything".into()));
            }
            for t in [w.low_at_or_below_f, w.high_at_or_above_f]
                .into_iter()
                .flatten()
            {
                if !(-80.0..=140.0).contains(&t) {
                    return Err(bad(
                        &key,
                        format!("threshold {t} F is not a plausible temperature"),
                    ));
                }
            }
            if w.window_hours > 24 * 14 {
                return Err(bad(
                    &key,
                    "window_hours must be at most 336 (14 days)".into(),
                ));
            }
        }
        for k in pack.notice_days.keys() {
            if serde_json::from_value::<ReasonCode>(serde_json::Value::String(k.clone())).is_err() {
                return Err(bad(
                    &format!("notice_days.{k}"),
                    "is not a reason code (see docs/topics.md)".into(),
                ));
            }
        }
        if let Some(b) = pack.min_balance_for_non_payment {
            if !(b.is_finite() && b >= 0.0) {
                return Err(bad(
                    "min_balance_for_non_payment",
                    "must be a non-negative amount".into(),
                ));
            }
        }
        if let Some(l) = &pack.load_limit {
            if !(l.demand_kw.is_finite() && l.demand_kw > 0.0 && l.demand_kw <= 100.0) {
                return Err(bad(
                    "load_limit.demand_kw",
                    format!(
                        "{} kW is not a demand limit a residential meter takes: give one above 0 and at most 100",
                        l.demand_kw
                    ),
                ));
            }
            if l.reasons.is_empty() {
                return Err(bad(
                    "load_limit.reasons",
                    "must name at least one disconnect reason (e.g. [\"non_payment\"]); remove [load_limit] to turn it off".into(),
                ));
            }
        }
        Ok(Policy { pack, tz, windows })
    }
}

impl Policy {
    /// No jurisdiction rules: only the built-in protections
    /// ([`BASELINE_PROTECTIONS`](super::BASELINE_PROTECTIONS)) apply.
    /// Used when no rule pack is configured (embedded defaults, tests); logged at start.
    pub fn baseline() -> Policy {
        RulePack::from_toml(
            "jurisdiction = \"baseline\"\nversion = \"1\"\ntime_zone = \"UTC\"\n",
            "<built-in baseline>",
        )
        .expect("the baseline pack is valid")
    }

    pub(crate) fn label(&self) -> String {
        format!("{}@{}", self.pack.jurisdiction, self.pack.version)
    }
}

/// Loads every `*.toml` rule pack of a directory.
pub fn load_dir(dir: &std::path::Path) -> Result<Vec<Policy>, PackError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| PackError::Parse {
        file: dir.display().to_string(),
        message: e.to_string(),
    })?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).map_err(|e| PackError::Parse {
            file: p.display().to_string(),
            message: e.to_string(),
        })?;
        out.push(RulePack::from_toml(&text, &p.display().to_string())?);
    }
    Ok(out)
}
