//! Weather and emergencies: the pack's temperature moratoria ([`WeatherRule`]) checked
//! against the zone's forecasts (and, with `require_forecast`, a missing forecast defers), and
//! declared emergencies, which suspend disconnects while they last plus the pack's extension.

use serde::{Deserialize, Serialize};

use jiff::civil::Date;

use super::{Day, Facts, Policy, RuleHit};
use crate::domain::Timestamp;

/// A temperature moratorium. Forecast days from the day of the scheduled time through
/// `window_hours` later are checked; with `day_before_and_of` (DC-style) an extreme forecast day
/// bars itself, the day before, and the weekend / holidays that directly follow it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeatherRule {
    pub(crate) name: String,
    pub(crate) window_hours: u32,
    #[serde(default)]
    pub(crate) low_at_or_below_f: Option<f64>,
    #[serde(default)]
    pub(crate) high_at_or_above_f: Option<f64>,
    #[serde(default)]
    pub(crate) day_before_and_of: bool,
}

/// A forecast (or observation) for one zone and local day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    pub zone: String,
    pub date: Date,
    pub low_f: f64,
    pub high_f: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Emergency {
    pub(crate) declared_at: Timestamp,
    #[serde(default)]
    pub(crate) ended_at: Option<Timestamp>,
    /// Zones it covers; empty = every zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) zones: Vec<String>,
}

impl Policy {
    pub(super) fn extreme(&self, w: &WeatherRule, f: &Forecast) -> bool {
        w.low_at_or_below_f.is_some_and(|t| f.low_f <= t)
            || w.high_at_or_above_f.is_some_and(|t| f.high_f >= t)
    }

    /// The weather rule that bars a disconnect at `t`, if any.
    pub(super) fn weather_bar(&self, t: Timestamp, facts: &Facts) -> Option<RuleHit> {
        let day = self.local_date(t);
        if self.pack.require_forecast {
            for w in &self.pack.weather {
                // The days this rule looks at: through `window_hours` later, or (DC-style)
                // today and tomorrow (an extreme tomorrow bars today).
                let last = if w.day_before_and_of {
                    day.tomorrow().unwrap_or(day)
                } else {
                    let end = t
                        .checked_add(jiff::SignedDuration::from_hours(w.window_hours as i64))
                        .unwrap_or(t);
                    self.local_date(end)
                };
                let mut d = day;
                while d <= last {
                    let known = facts
                        .forecasts
                        .iter()
                        .any(|f| f.zone == facts.zone && f.date == d);
                    if !known {
                        return Some(RuleHit {
                            rule: "forecast_missing".into(),
                            detail: format!(
                                "no forecast for zone {} on {d}: rule {} needs one",
                                facts.zone, w.name
                            ),
                        });
                    }
                    match d.tomorrow() {
                        Ok(n) => d = n,
                        Err(_) => break,
                    }
                }
            }
        }
        for w in &self.pack.weather {
            for f in facts
                .forecasts
                .iter()
                .filter(|f| f.zone == facts.zone && self.extreme(w, f))
            {
                let hit = if w.day_before_and_of {
                    // The day before, the day of, and a weekend / holidays right after it.
                    let mut barred = vec![f.date.yesterday().unwrap_or(f.date), f.date];
                    let mut next = f.date.tomorrow().ok();
                    while let Some(n) = next {
                        if matches!(Day::of(n), Day::Saturday | Day::Sunday) || self.is_holiday(n) {
                            barred.push(n);
                            next = n.tomorrow().ok();
                        } else {
                            break;
                        }
                    }
                    barred.contains(&day)
                } else {
                    let end = t
                        .checked_add(jiff::SignedDuration::from_hours(w.window_hours as i64))
                        .unwrap_or(t);
                    f.date >= day && f.date <= self.local_date(end)
                };
                if hit {
                    return Some(RuleHit {
                        rule: w.name.clone(),
                        detail: format!(
                            "forecast for zone {} on {}: low {} F, high {} F",
                            f.zone, f.date, f.low_f, f.high_f
                        ),
                    });
                }
            }
        }
        None
    }

    pub(super) fn emergency_until(
        &self,
        now: Timestamp,
        facts: &Facts,
    ) -> Option<(Option<Timestamp>, RuleHit)> {
        // A declared emergency always suspends disconnects while it lasts; the pack's
        // extension adds days after it ends.
        let ext = self.pack.emergency_extension_days.unwrap_or(0);
        for e in facts.emergencies {
            if !e.zones.is_empty() && !e.zones.iter().any(|z| z == facts.zone) {
                continue;
            }
            if e.declared_at > now {
                continue;
            }
            let until = e.ended_at.map(|end| {
                end.checked_add(jiff::SignedDuration::from_hours(24 * ext as i64))
                    .unwrap_or(end)
            });
            if until.is_none_or(|u| now < u) {
                return Some((until, RuleHit { rule: "declared_emergency".into(), detail: format!("emergency declared {} ; suspension lasts until {ext} days after it ends", e.declared_at) }));
            }
        }
        None
    }
}
