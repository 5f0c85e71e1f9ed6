//! Policy before power: the one pure module that decides whether a disconnect may run now.
//! No I/O and no clock reads: the order, the meter's flags, the time and the known facts are
//! inputs; the output is a [`Decision`] (execute, defer until a time or a fact, await approval,
//! reject) carrying the rule names, the rule-pack version and the inputs it used.
//! Rule packs are data (`config/rules/*.toml`), validated at load ([`RulePack::from_toml`]).
//!
//! Restoring power (reconnect, move-in), reads and cancels are never held by disconnect rules.

use std::collections::BTreeMap;

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

pub use crate::domain::{Day, Decision, DecisionInputs, Protection, RuleHit, Verdict};
use crate::domain::{MeterFlags, Order, OrderKind, ReasonCode, Timestamp};

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

/// A temperature moratorium. Forecast days from the day of the scheduled time through
/// `window_hours` later are checked; with `day_before_and_of` (DC-style) an extreme forecast day
/// bars itself, the day before, and the weekend / holidays that directly follow it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeatherRule {
    pub name: String,
    pub window_hours: u32,
    #[serde(default)]
    pub low_at_or_below_f: Option<f64>,
    #[serde(default)]
    pub high_at_or_above_f: Option<f64>,
    #[serde(default)]
    pub day_before_and_of: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulePack {
    pub jurisdiction: String,
    pub version: String,
    pub time_zone: String,
    #[serde(default)]
    pub barred_weekdays: Vec<Day>,
    #[serde(default)]
    pub bar_holidays: bool,
    #[serde(default)]
    pub bar_day_before_holiday: bool,
    /// Days after a declared emergency ends during which disconnects stay suspended (they are
    /// always suspended while it lasts).
    #[serde(default)]
    pub emergency_extension_days: Option<u32>,
    #[serde(default)]
    pub holidays: Vec<Date>,
    #[serde(default)]
    pub min_balance_for_non_payment: Option<f64>,
    #[serde(default)]
    pub approval_required_for: Vec<Protection>,
    #[serde(default)]
    pub notice_days: BTreeMap<String, u32>,
    #[serde(default)]
    pub weather: Vec<WeatherRule>,
    /// With weather rules: a day the rules look at that has no forecast for the zone defers the
    /// disconnect (`forecast_missing`) instead of counting as "not extreme".
    #[serde(default)]
    pub require_forecast: bool,
    /// Allowed local hours per weekday, `["08:00", "16:00"]`; a day without a window is barred.
    #[serde(default)]
    pub business_windows: BTreeMap<Day, [String; 2]>,
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
    pub declared_at: Timestamp,
    #[serde(default)]
    pub ended_at: Option<Timestamp>,
    /// Zones it covers; empty = every zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
}

/// What is known when deciding.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    pub zone: &'a str,
    pub forecasts: &'a [Forecast],
    pub emergencies: &'a [Emergency],
    pub approved: bool,
}

/// Protected customers that are never disconnected for non-payment without an explicit
/// approval, whatever the rule pack says (a pack may add to this list, never remove from it).
pub const BASELINE_PROTECTIONS: [Protection; 3] = [
    Protection::LifeSupport,
    Protection::Medical,
    Protection::CriticalCare,
];

/// A loaded, validated pack with its parsed time zone and windows.
#[derive(Debug, Clone)]
pub struct Policy {
    pub pack: RulePack,
    tz: TimeZone,
    windows: BTreeMap<Day, (Time, Time)>,
}

fn reason_key(r: ReasonCode) -> String {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, file: &str) -> Result<T, PackError> {
    toml::from_str(text).map_err(|e| PackError::Parse {
        file: file.into(),
        message: e.to_string(),
    })
}

fn invalid(file: &str, key: &str, message: String) -> PackError {
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
        Ok(Policy { pack, tz, windows })
    }
}

impl Policy {
    /// No jurisdiction rules: only the built-in protections ([`BASELINE_PROTECTIONS`]) apply.
    /// Used when no rule pack is configured (embedded defaults, tests); logged at start.
    pub fn baseline() -> Policy {
        RulePack::from_toml(
            "jurisdiction = \"baseline\"\nversion = \"1\"\ntime_zone = \"UTC\"\n",
            "<built-in baseline>",
        )
        .expect("the baseline pack is valid")
    }

    pub fn label(&self) -> String {
        format!("{}@{}", self.pack.jurisdiction, self.pack.version)
    }

    fn local_date(&self, t: Timestamp) -> Date {
        t.to_zoned_datetime(self.tz.clone()).date()
    }

    fn is_holiday(&self, d: Date) -> bool {
        self.pack.holidays.contains(&d)
    }

    /// Why this local day is barred by the calendar, if it is.
    fn day_bar(&self, d: Date) -> Option<RuleHit> {
        let day = Day::of(d);
        if self.pack.barred_weekdays.contains(&day) {
            return Some(RuleHit {
                rule: "barred_weekday".into(),
                detail: format!("no disconnects on {day:?} ({d})"),
            });
        }
        if self.pack.bar_holidays && self.is_holiday(d) {
            return Some(RuleHit {
                rule: "holiday".into(),
                detail: format!("{d} is a holiday"),
            });
        }
        if self.pack.bar_day_before_holiday
            && d.tomorrow().map(|t| self.is_holiday(t)).unwrap_or(false)
        {
            return Some(RuleHit {
                rule: "day_before_holiday".into(),
                detail: format!("{d} is the day before a holiday"),
            });
        }
        if !self.windows.is_empty() && !self.windows.contains_key(&day) {
            return Some(RuleHit {
                rule: "no_business_window".into(),
                detail: format!("no business window on {day:?}"),
            });
        }
        None
    }

    fn extreme(&self, w: &WeatherRule, f: &Forecast) -> bool {
        w.low_at_or_below_f.is_some_and(|t| f.low_f <= t)
            || w.high_at_or_above_f.is_some_and(|t| f.high_f >= t)
    }

    /// The weather rule that bars a disconnect at `t`, if any.
    fn weather_bar(&self, t: Timestamp, facts: &Facts) -> Option<RuleHit> {
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

    fn emergency_until(
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

    /// Whether the calendar, the window and the weather allow a disconnect at `t`, else why not.
    fn time_bar(&self, t: Timestamp, facts: &Facts) -> Option<RuleHit> {
        let z = t.to_zoned_datetime(self.tz.clone());
        if let Some(hit) = self.day_bar(z.date()) {
            return Some(hit);
        }
        if let Some((s, e)) = self.windows.get(&Day::of(z.date())) {
            if z.time() < *s || z.time() >= *e {
                return Some(RuleHit {
                    rule: "outside_business_window".into(),
                    detail: format!("{} local is outside {s}-{e}", z.time()),
                });
            }
        }
        self.weather_bar(t, facts)
    }

    /// The first time at or after `from` (within 60 days) that calendar, window and weather allow.
    fn next_allowed(&self, from: Timestamp, facts: &Facts) -> Option<Timestamp> {
        if self.time_bar(from, facts).is_none() {
            return Some(from);
        }
        let mut day = self.local_date(from);
        for _ in 0..60 {
            let start = match self.windows.get(&Day::of(day)) {
                Some((s, _)) => *s,
                None if self.windows.is_empty() => Time::midnight(),
                None => {
                    day = day.tomorrow().ok()?;
                    continue;
                }
            };
            if let Ok(z) = day.to_datetime(start).to_zoned_datetime(self.tz.clone()) {
                let t = z.timestamp();
                if t > from && self.time_bar(t, facts).is_none() {
                    return Some(t);
                }
            }
            day = day.tomorrow().ok()?;
        }
        None
    }

    /// Whether disconnects in `zone` are barred at `t` whatever the order (calendar, business
    /// window, weather, declared emergency), with the rule and the next time the facts known
    /// now allow them. A campaign uses it to hold a zone's releases without losing its place.
    pub fn zone_bar(
        &self,
        t: Timestamp,
        zone: &str,
        forecasts: &[Forecast],
        emergencies: &[Emergency],
    ) -> Option<(RuleHit, Option<Timestamp>)> {
        let facts = Facts {
            zone,
            forecasts,
            emergencies,
            approved: false,
        };
        if let Some((until, hit)) = self.emergency_until(t, &facts) {
            return Some((hit, until.and_then(|u| self.next_allowed(u.max(t), &facts))));
        }
        let hit = self.time_bar(t, &facts)?;
        Some((hit, self.next_allowed(t, &facts)))
    }

    /// The decision for `order` on a meter with `flags` at `now`.
    pub fn decide(
        &self,
        order: &Order,
        flags: MeterFlags,
        now: Timestamp,
        facts: &Facts,
    ) -> Decision {
        let pack = self.label();
        let inputs = DecisionInputs {
            at: now,
            zone: facts.zone.to_string(),
            protections: Protection::ALL
                .into_iter()
                .filter(|p| flags.contains(p.flag()))
                .collect(),
            approved: facts.approved,
            notice_sent_at: order.notice_sent_at,
            amount_due: order.amount_due,
            forecasts_known: facts
                .forecasts
                .iter()
                .filter(|f| f.zone == facts.zone)
                .count(),
            emergencies_known: facts
                .emergencies
                .iter()
                .filter(|e| e.zones.is_empty() || e.zones.iter().any(|z| z == facts.zone))
                .count(),
        };
        let done = |verdict, rules| Decision {
            verdict,
            pack: pack.clone(),
            rules,
            inputs: inputs.clone(),
        };
        if order.kind != OrderKind::Disconnect && order.kind != OrderKind::MoveOut {
            return done(
                Verdict::Execute,
                vec![RuleHit {
                    rule: "not_a_disconnect".into(),
                    detail: format!(
                        "{} orders are not held by disconnect rules",
                        order.kind.as_str()
                    ),
                }],
            );
        }
        let mut rules = Vec::new();
        // Protection and special handling: a person decides.
        let mut needs: Vec<Protection> = self
            .pack
            .approval_required_for
            .iter()
            .copied()
            .filter(|p| flags.contains(p.flag()))
            .collect();
        if order.reason == ReasonCode::NonPayment {
            for p in BASELINE_PROTECTIONS {
                if flags.contains(p.flag()) && !needs.contains(&p) {
                    needs.push(p);
                }
            }
        }
        if !needs.is_empty() && !facts.approved {
            rules.push(RuleHit {
                rule: "approval_required".into(),
                detail: format!("meter flagged {needs:?}: an explicit approval is required"),
            });
            return done(Verdict::AwaitApproval, rules);
        }
        if order.reason == ReasonCode::NonPayment {
            if let (Some(min), Some(due)) =
                (self.pack.min_balance_for_non_payment, order.amount_due)
            {
                if due <= min {
                    rules.push(RuleHit { rule: "minimum_balance".into(), detail: format!("amount due {due:.2} is at or below {min:.2}: not disconnected for non-payment") });
                    return done(Verdict::Reject, rules);
                }
            }
        }
        let mut from = now;
        if let Some(days) = self.pack.notice_days.get(&reason_key(order.reason)) {
            match order.notice_sent_at {
                None => {
                    rules.push(RuleHit { rule: "notice_required".into(), detail: format!("a {} disconnect needs a notice sent {days} days before; none is recorded", reason_key(order.reason)) });
                    return done(Verdict::Reject, rules);
                }
                Some(sent) => {
                    let due = sent
                        .checked_add(jiff::SignedDuration::from_hours(24 * *days as i64))
                        .unwrap_or(sent);
                    if due > from {
                        rules.push(RuleHit {
                            rule: "notice_period".into(),
                            detail: format!("notice sent {sent}; {days} days end {due}"),
                        });
                        from = due;
                    }
                }
            }
        }
        if let Some(e) = order.earliest_at {
            if e > from {
                from = e;
            }
        }
        if let Some((until, hit)) = self.emergency_until(now, facts) {
            rules.push(hit);
            let until = until
                .map(|u| u.max(from))
                .and_then(|u| self.next_allowed(u, facts));
            return done(Verdict::Defer { until }, rules);
        }
        if from == now {
            match self.time_bar(now, facts) {
                None => {
                    rules.push(RuleHit {
                        rule: "allowed".into(),
                        detail: "calendar, window, weather, notice and protection allow it".into(),
                    });
                    return done(Verdict::Execute, rules);
                }
                Some(hit) => rules.push(hit),
            }
        }
        let until = self.next_allowed(from, facts);
        done(Verdict::Defer { until }, rules)
    }
}

impl Decision {
    /// The decision as sentences a customer-service representative can read aloud.
    pub fn explain(&self, order: &Order, at: Timestamp) -> String {
        let mut out = format!(
            "Order {} ({} of meter {}) at {at}, under rule pack {}:\n",
            order.order_id,
            order.kind.as_str(),
            order.meter_id,
            self.pack
        );
        let verdict = match &self.verdict {
            Verdict::Execute => "The order may be carried out now.".to_string(),
            Verdict::Defer { until: Some(u) } => format!("The order must wait. With what is known now, the earliest allowed time is {u}."),
            Verdict::Defer { until: None } => "The order must wait until the situation below changes.".to_string(),
            Verdict::AwaitApproval => "The order needs an explicit approval by an authorised person before it can be carried out.".to_string(),
            Verdict::Reject => "The order may not be carried out.".to_string(),
        };
        out.push_str(&format!("  Decision: {verdict}\n"));
        for r in &self.rules {
            out.push_str(&format!("  Rule {}: {}\n", r.rule, r.detail));
        }
        out
    }
}

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
                let mut merged = BTreeMap::new();
                for (day, [s, e]) in &p.business_windows {
                    let Some([os, oe]) = o.business_windows.get(day) else {
                        merged.insert(*day, [s.clone(), e.clone()]);
                        continue;
                    };
                    let key = format!(
                        "business_windows.{}",
                        serde_json::to_value(day).unwrap().as_str().unwrap_or("")
                    );
                    let t = |x: &String| {
                        x.parse::<Time>()
                            .map_err(|err| bad(&key, format!("`{x}` is not HH:MM: {err}")))
                    };
                    let start = if t(os)? > t(s)? { os } else { s };
                    let end = if t(oe)? < t(e)? { oe } else { e };
                    if t(start)? >= t(end)? {
                        return Err(bad(
                            &key,
                            format!("{os}-{oe} does not overlap the pack's {s}-{e}"),
                        ));
                    }
                    merged.insert(*day, [start.clone(), end.clone()]);
                }
                p.business_windows = merged;
            }
        }
        let text = toml::to_string(&p).map_err(|e| PackError::Parse {
            file: file.into(),
            message: e.to_string(),
        })?;
        RulePack::from_toml(&text, file)
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

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
