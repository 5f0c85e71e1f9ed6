//! The calendar rules, in the pack's time zone: barred weekdays, holidays and the day before
//! one, business windows, the notice period an order's reason needs, and the search for the
//! next time calendar, window and weather allow a disconnect.

use jiff::civil::{Date, Time};

use super::{Day, Facts, Policy, RuleHit};
use crate::domain::{Order, ReasonCode, Timestamp};

/// The reason's name as the rule pack and the contract spell it (`non_payment`).
pub(super) fn reason_key(r: ReasonCode) -> &'static str {
    r.into()
}

impl Policy {
    pub(super) fn local_date(&self, t: Timestamp) -> Date {
        t.to_zoned_datetime(self.tz.clone()).date()
    }

    pub(super) fn is_holiday(&self, d: Date) -> bool {
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

    /// Whether the calendar, the window and the weather allow a disconnect at `t`, else why not.
    pub(super) fn time_bar(&self, t: Timestamp, facts: &Facts) -> Option<RuleHit> {
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
    pub(super) fn next_allowed(&self, from: Timestamp, facts: &Facts) -> Option<Timestamp> {
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

    /// The notice rule for the reason of `order`: `Err` when it needs a notice and none is
    /// recorded; `Ok(Some((due, hit)))` while the notice period runs past `from`.
    pub(super) fn notice(
        &self,
        order: &Order,
        from: Timestamp,
    ) -> Result<Option<(Timestamp, RuleHit)>, RuleHit> {
        let Some(days) = self.pack.notice_days.get(reason_key(order.reason)) else {
            return Ok(None);
        };
        match order.notice_sent_at {
            None => Err(RuleHit {
                rule: "notice_required".into(),
                detail: format!(
                    "a {} disconnect needs a notice sent {days} days before; none is recorded",
                    reason_key(order.reason)
                ),
            }),
            Some(sent) => {
                let due = sent
                    .checked_add(jiff::SignedDuration::from_hours(24 * *days as i64))
                    .unwrap_or(sent);
                if due > from {
                    Ok(Some((
                        due,
                        RuleHit {
                            rule: "notice_period".into(),
                            detail: format!("notice sent {sent}; {days} days end {due}"),
                        },
                    )))
                } else {
                    Ok(None)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::VariantArray;

    /// A rule pack's `notice_days` is keyed by the reason as the contract spells it: a key that
    /// drifted from the wire name would silently drop the notice period of that reason.
    #[test]
    fn every_reason_key_is_its_name_on_the_wire() {
        for r in ReasonCode::VARIANTS {
            let wire = serde_json::to_value(r).unwrap();
            assert_eq!(Some(reason_key(*r)), wire.as_str(), "{r:?}");
        }
    }
}
