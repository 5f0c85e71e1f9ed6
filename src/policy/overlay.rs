//! A utility's overlay on top of a rule pack (`policy.utility_overlay`, the pack's keys, all
//! optional), merged so that it can only tighten: days, holidays, weather rules and approvals
//! are added, amounts and periods take the stricter value, windows the intersection; a key
//! that would loosen a rule is an error naming the key.

use std::collections::BTreeMap;

use jiff::civil::{Date, Time};
use serde::Deserialize;

use super::pack::{invalid, parse_toml};
use super::{Day, PackError, Policy, Protection, RulePack, WeatherRule};

/// A utility's settings on top of a pack: every key optional; merged so that it can only
/// tighten ([`Policy::tightened_by`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Overlay {
    jurisdiction: Option<String>,
    version: Option<String>,
    time_zone: Option<String>,
    #[serde(default)]
    barred_weekdays: Vec<Day>,
    bar_holidays: Option<bool>,
    bar_day_before_holiday: Option<bool>,
    emergency_extension_days: Option<u32>,
    #[serde(default)]
    holidays: Vec<Date>,
    min_balance_for_non_payment: Option<f64>,
    #[serde(default)]
    approval_required_for: Vec<Protection>,
    #[serde(default)]
    notice_days: BTreeMap<String, u32>,
    #[serde(default)]
    weather: Vec<WeatherRule>,
    require_forecast: Option<bool>,
    #[serde(default)]
    business_windows: BTreeMap<Day, [String; 2]>,
}

impl Policy {
    /// This pack with a utility overlay applied. The overlay may only tighten: a key that would
    /// loosen a rule (turning a bar off, another time zone) is an error naming the key.
    pub fn tightened_by(&self, text: &str, file: &str) -> Result<Policy, PackError> {
        let o: Overlay = parse_toml(text, file)?;
        let bad = |key: &str, message: String| invalid(file, key, message);
        let mut p = self.pack.clone();
        if let Some(tz) = &o.time_zone {
            if *tz != p.time_zone {
                return Err(bad("time_zone", format!("`{tz}` differs from the pack's `{}`: an overlay cannot move the rules to another time zone", p.time_zone)));
            }
        }
        if let Some(j) = &o.jurisdiction {
            p.jurisdiction = format!("{}+{j}", p.jurisdiction);
        }
        if let Some(v) = &o.version {
            p.version = format!("{}+{v}", p.version);
        }
        for d in o.barred_weekdays {
            if !p.barred_weekdays.contains(&d) {
                p.barred_weekdays.push(d);
            }
        }
        for (key, over, base) in [
            ("bar_holidays", o.bar_holidays, &mut p.bar_holidays),
            (
                "bar_day_before_holiday",
                o.bar_day_before_holiday,
                &mut p.bar_day_before_holiday,
            ),
        ] {
            match over {
                Some(false) if *base => {
                    return Err(bad(
                        key,
                        "the pack bars these days; an overlay cannot lift that".into(),
                    ))
                }
                Some(v) => *base |= v,
                None => {}
            }
        }
        if let Some(e) = o.emergency_extension_days {
            p.emergency_extension_days = Some(p.emergency_extension_days.map_or(e, |b| b.max(e)));
        }
        for h in o.holidays {
            if !p.holidays.contains(&h) {
                p.holidays.push(h);
            }
        }
        if let Some(m) = o.min_balance_for_non_payment {
            p.min_balance_for_non_payment =
                Some(p.min_balance_for_non_payment.map_or(m, |b| b.max(m)));
        }
        for a in o.approval_required_for {
            if !p.approval_required_for.contains(&a) {
                p.approval_required_for.push(a);
            }
        }
        for (k, d) in o.notice_days {
            let e = p.notice_days.entry(k).or_insert(d);
            *e = (*e).max(d);
        }
        p.weather.extend(o.weather);
        match o.require_forecast {
            Some(false) if p.require_forecast => {
                return Err(bad(
                    "require_forecast",
                    "the pack requires forecasts; an overlay cannot lift that".into(),
                ))
            }
            Some(v) => p.require_forecast |= v,
            None => {}
        }
        if !o.business_windows.is_empty() {
            if p.business_windows.is_empty() {
                p.business_windows = o.business_windows;
            } else {
                p.business_windows =
                    intersect_windows(&p.business_windows, &o.business_windows, file)?;
            }
        }
        let text = toml::to_string(&p).map_err(|e| PackError::Parse {
            file: file.into(),
            message: e.to_string(),
        })?;
        RulePack::from_toml(&text, file)
    }
}

/// The pack's business windows narrowed by the overlay's: a day the overlay names gets the
/// intersection of both windows (an empty one is an error naming the key); a day it does not
/// name keeps the pack's window.
fn intersect_windows(
    base: &BTreeMap<Day, [String; 2]>,
    over: &BTreeMap<Day, [String; 2]>,
    file: &str,
) -> Result<BTreeMap<Day, [String; 2]>, PackError> {
    let mut merged = BTreeMap::new();
    for (day, [s, e]) in base {
        let Some([os, oe]) = over.get(day) else {
            merged.insert(*day, [s.clone(), e.clone()]);
            continue;
        };
        let key = format!(
            "business_windows.{}",
            serde_json::to_value(day).unwrap().as_str().unwrap_or("")
        );
        let t = |x: &String| {
            x.parse::<Time>()
                .map_err(|err| invalid(file, &key, format!("`{x}` is not HH:MM: {err}")))
        };
        let start = if t(os)? > t(s)? { os } else { s };
        let end = if t(oe)? < t(e)? { oe } else { e };
        if t(start)? >= t(end)? {
            return Err(invalid(
                file,
                &key,
                format!("{os}-{oe} does not overlap the pack's {s}-{e}"),
            ));
        }
        merged.insert(*day, [start.clone(), end.clone()]);
    }
    Ok(merged)
}
