//! What a meter read means to switchyard: pure rules, no I/O, no clock. Owns the
//! post-disconnect watchdog's verdict: a read of a meter whose cut is watched either says
//! nothing (before the cut, within the tolerance), gives the watch the register value it lacked
//! (the baseline), shows consumption beyond the tolerance (possible bypass or tamper: the meter
//! raises an exception), or comes after the watch period (the watch ends).
//!
//! The reads handler asks it for every read of a watched meter *before* anything is copied or
//! any actor is woken, and the meter machine asks it again when a read reaches the meter (the
//! machine decides; the handler only filters).
//!
//! Also owns the high / low check of a final read (the CC&B practice in the seeds): the use
//! since the meter's last known read is compared with what its recent history predicts, and
//! classified very low, low, normal, high or very high by configurable factors; anything but
//! normal goes to a person for review instead of being passed on silently.

pub use crate::domain::{ReadClass, RegisterPoint};
use crate::domain::{ReadKind, Timestamp};

/// The watchdog's settings (`[reads]` in the configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadRules {
    /// Consumption on a disconnected meter up to this much (kWh, since the cut for a register
    /// read, within one interval for an interval read) is ignored: register resolution, a
    /// meter's own supply, rounding in the MDM.
    pub tolerance_kwh: f64,
    /// How long after a cut its meter's reads are watched.
    pub watch_days: u32,
    /// The final-read check's factors.
    pub high_low: HighLow,
}

impl Default for ReadRules {
    fn default() -> Self {
        ReadRules {
            tolerance_kwh: 1.0,
            watch_days: 30,
            high_low: HighLow::default(),
        }
    }
}

/// The high / low factors of the final-read check: a use below `very_low` × the expected use is
/// very low, below `low` × low, above `high` × high, above `very_high` × very high. A difference
/// of at most `slack_kwh` from the expected use is always normal (short gaps, small meters).
#[derive(Debug, Clone, PartialEq)]
pub struct HighLow {
    pub very_low: f64,
    pub low: f64,
    pub high: f64,
    pub very_high: f64,
    pub slack_kwh: f64,
}

impl Default for HighLow {
    fn default() -> Self {
        HighLow {
            very_low: 0.1,
            low: 0.5,
            high: 2.0,
            very_high: 4.0,
            slack_kwh: 1.0,
        }
    }
}

/// How many register reads a meter keeps as its history.
pub const HISTORY: usize = 4;

/// A history needs two reads at least this far apart to predict a use.
const MIN_HISTORY_HOURS: f64 = 24.0;

/// The high / low check of `read` against the meter's `history` (any order; points at or after
/// the read are ignored): its class, the use since the last earlier read, and the use the
/// history predicts for that gap.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub class: ReadClass,
    pub used_kwh: Option<f64>,
    pub expected_kwh: Option<f64>,
}

pub fn high_low(history: &[RegisterPoint], read: RegisterPoint, f: &HighLow) -> Checked {
    let mut before: Vec<RegisterPoint> =
        history.iter().copied().filter(|p| p.at < read.at).collect();
    before.sort_by(|a, b| a.at.cmp(&b.at));
    let unvalidated = |used| Checked {
        class: ReadClass::NoHistory,
        used_kwh: used,
        expected_kwh: None,
    };
    let Some(last) = before.last().copied() else {
        return unvalidated(None);
    };
    let used = read.kwh - last.kwh;
    let first = before[0];
    let hours = |a: Timestamp, b: Timestamp| b.duration_since(a).as_secs_f64() / 3600.0;
    let span = hours(first.at, last.at);
    if span < MIN_HISTORY_HOURS {
        return unvalidated(Some(used));
    }
    let per_hour = ((last.kwh - first.kwh) / span).max(0.0);
    let expected = per_hour * hours(last.at, read.at);
    let class = if used < 0.0 {
        ReadClass::VeryLow // the register went backwards: a wrong read, or a meter exchanged
    } else if (used - expected).abs() <= f.slack_kwh {
        ReadClass::Normal
    } else if used < f.very_low * expected {
        ReadClass::VeryLow
    } else if used < f.low * expected {
        ReadClass::Low
    } else if used > f.very_high * expected {
        ReadClass::VeryHigh
    } else if used > f.high * expected {
        ReadClass::High
    } else {
        ReadClass::Normal
    };
    Checked {
        class,
        used_kwh: Some(used),
        expected_kwh: Some(expected),
    }
}

/// The parts of a read the watchdog looks at (the active-energy value in kWh, multiplied).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    pub kind: ReadKind,
    pub interval_start: Option<Timestamp>,
    pub read_at: Timestamp,
    pub active_kwh: Option<f64>,
}

/// The watchdog's verdict on one read of a watched meter.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// Nothing to do (before the cut, no active value, within the tolerance).
    Nothing,
    /// The first register read after a cut whose register value was not known: it becomes
    /// the baseline later reads are measured against.
    Baseline(f64),
    /// Consumption beyond the tolerance after the cut.
    Consumption { kwh: f64, explanation: String },
    /// The read is past the watch period: the watch ends.
    Expired,
    /// A register read for a meter collecting its history (an open disconnect's final-read
    /// check).
    History,
}

impl Finding {
    /// Whether the meter must hear about the read (its actor is woken for it).
    pub fn matters(&self) -> bool {
        !matches!(self, Finding::Nothing)
    }
}

/// The watchdog's verdict on `read` for a cut confirmed at `since`, with the active register
/// at `baseline_kwh` then (if known).
pub fn after_cut(
    since: Timestamp,
    baseline_kwh: Option<f64>,
    read: &Observed,
    rules: &ReadRules,
) -> Finding {
    let starts = read.interval_start.unwrap_or(read.read_at);
    if starts < since || read.read_at <= since {
        return Finding::Nothing; // (partly) before the cut
    }
    let period = jiff::SignedDuration::from_hours(24 * i64::from(rules.watch_days));
    if read.read_at.duration_since(since) > period {
        return Finding::Expired;
    }
    let Some(kwh) = read.active_kwh else {
        return Finding::Nothing;
    };
    let (used, how) = match read.kind {
        ReadKind::Interval => (
            kwh,
            format!(
                "{kwh:.3} kWh used in the interval {starts} .. {} after the cut",
                read.read_at
            ),
        ),
        ReadKind::Register => match baseline_kwh {
            None => return Finding::Baseline(kwh),
            Some(base) => (
                kwh - base,
                format!(
                    "the register read {kwh:.3} kWh at {}, {:.3} kWh above the {base:.3} kWh at the cut",
                    read.read_at,
                    kwh - base
                ),
            ),
        },
    };
    if used > rules.tolerance_kwh {
        Finding::Consumption {
            kwh: used,
            explanation: format!(
                "{how} (tolerance {} kWh): the switch may not have opened or was closed again, or the meter is bypassed or tampered with",
                rules.tolerance_kwh
            ),
        }
    } else {
        Finding::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    struct Watch {
        since: Timestamp,
        baseline_kwh: Option<f64>,
    }

    fn watch(baseline: Option<f64>) -> Watch {
        Watch {
            since: t("2026-12-01T10:00:00Z"),
            baseline_kwh: baseline,
        }
    }

    fn after_cut(w: &Watch, read: &Observed, rules: &ReadRules) -> Finding {
        super::after_cut(w.since, w.baseline_kwh, read, rules)
    }

    fn register(at: &str, kwh: f64) -> Observed {
        Observed {
            kind: ReadKind::Register,
            interval_start: None,
            read_at: t(at),
            active_kwh: Some(kwh),
        }
    }

    fn interval(from: &str, to: &str, kwh: f64) -> Observed {
        Observed {
            kind: ReadKind::Interval,
            interval_start: Some(t(from)),
            read_at: t(to),
            active_kwh: Some(kwh),
        }
    }

    #[test]
    fn consumption_after_the_cut_beyond_the_tolerance_is_found() {
        let r = ReadRules::default();
        let w = watch(Some(5000.0));
        assert_eq!(
            after_cut(&w, &register("2026-12-01T09:00:00Z", 5100.0), &r),
            Finding::Nothing,
            "a read before the cut"
        );
        assert_eq!(
            after_cut(&w, &register("2026-12-02T09:00:00Z", 5000.9), &r),
            Finding::Nothing,
            "within the tolerance"
        );
        let f = after_cut(&w, &register("2026-12-02T09:00:00Z", 5012.5), &r);
        let Finding::Consumption { kwh, explanation } = f else {
            panic!("{f:?}")
        };
        assert!((kwh - 12.5).abs() < 1e-9);
        assert!(explanation.contains("12.500 kWh above"), "{explanation}");
        assert!(after_cut(
            &w,
            &interval("2026-12-02T09:00:00Z", "2026-12-02T09:15:00Z", 1.5),
            &r
        )
        .matters());
        assert_eq!(
            after_cut(
                &w,
                &interval("2026-12-01T09:55:00Z", "2026-12-01T10:10:00Z", 1.5),
                &r
            ),
            Finding::Nothing,
            "an interval that began before the cut"
        );
        assert_eq!(
            after_cut(&w, &register("2027-01-02T09:00:00Z", 9000.0), &r),
            Finding::Expired
        );
        assert_eq!(
            after_cut(&watch(None), &register("2026-12-02T09:00:00Z", 7.0), &r),
            Finding::Baseline(7.0)
        );
    }

    fn point(hours: i64, kwh: f64) -> RegisterPoint {
        RegisterPoint {
            at: t("2026-11-01T00:00:00Z") + jiff::SignedDuration::from_hours(hours),
            kwh,
        }
    }

    #[test]
    fn a_final_read_is_classified_against_the_meters_own_use() {
        let f = HighLow::default();
        // 24 kWh a day over the last ten days.
        let history = [point(0, 1000.0), point(120, 1120.0), point(240, 1240.0)];
        let class = |kwh: f64| high_low(&history, point(288, kwh), &f).class;
        // Two days after the last read: 48 kWh expected.
        assert_eq!(class(1288.0), ReadClass::Normal);
        assert_eq!(class(1240.5), ReadClass::VeryLow, "0.5 kWh in two days");
        assert_eq!(class(1260.0), ReadClass::Low);
        assert_eq!(class(1350.0), ReadClass::High);
        assert_eq!(class(1500.0), ReadClass::VeryHigh);
        assert_eq!(
            class(1200.0),
            ReadClass::VeryLow,
            "a register that went backwards"
        );
        let c = high_low(&history, point(288, 1288.0), &f);
        assert_eq!(c.expected_kwh, Some(48.0));
        assert_eq!(c.used_kwh, Some(48.0));
        // One read, or reads less than a day apart: nothing to predict from.
        assert_eq!(
            high_low(&history[..1], point(288, 9999.0), &f).class,
            ReadClass::NoHistory
        );
        assert_eq!(
            high_low(&[point(0, 1.0), point(5, 2.0)], point(288, 9999.0), &f).class,
            ReadClass::NoHistory
        );
        // Within the slack: normal even if the ratio is far off (an hour after the last read).
        assert_eq!(
            high_low(&history, point(241, 1240.9), &f).class,
            ReadClass::Normal
        );
        assert!(ReadClass::VeryHigh.suspicious() && !ReadClass::NoHistory.suspicious());
    }

    proptest! {
        /// The class never falls as the use rises (the factors are ordered), and the expected
        /// use itself is normal.
        #[test]
        fn more_use_never_reads_as_a_lower_class(
            rate in 0.1f64..50.0,
            gap in 1i64..400,
            a in 0.0f64..5000.0,
            b in 0.0f64..5000.0,
        ) {
            let f = HighLow::default();
            let history = [point(0, 100.0), point(48, 100.0 + rate * 48.0)];
            let last = 100.0 + rate * 48.0;
            let at = |used: f64| high_low(&history, point(48 + gap, last + used), &f).class;
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(at(lo) <= at(hi), "{lo} -> {:?}, {hi} -> {:?}", at(lo), at(hi));
            prop_assert_eq!(at(rate * gap as f64), ReadClass::Normal);
        }

        /// Whatever the read, no consumption at or below the tolerance is ever reported, and
        /// every report is beyond it.
        #[test]
        fn never_a_finding_within_the_tolerance(
            base in 0.0f64..1e6,
            used in -10.0f64..10.0,
            tol in 0.0f64..5.0,
            hours in 1i64..(24 * 40),
            interval_read: bool,
        ) {
            let r = ReadRules { tolerance_kwh: tol, watch_days: 30, ..ReadRules::default() };
            let w = watch(Some(base));
            let at = w.since + jiff::SignedDuration::from_hours(hours);
            let read = if interval_read {
                Observed { kind: ReadKind::Interval, interval_start: Some(at - jiff::SignedDuration::from_mins(15)), read_at: at, active_kwh: Some(used.max(0.0)) }
            } else {
                Observed { kind: ReadKind::Register, interval_start: None, read_at: at, active_kwh: Some(base + used) }
            };
            match after_cut(&w, &read, &r) {
                Finding::Consumption { kwh, .. } => prop_assert!(kwh > tol),
                Finding::Expired => prop_assert!(hours > 24 * 30),
                Finding::Nothing => {
                    let seen = if interval_read { used.max(0.0) } else { (base + used) - base };
                    prop_assert!(seen <= tol, "{seen} kWh beyond {tol} went unreported");
                }
                Finding::Baseline(_) | Finding::History => prop_assert!(false, "a cut with a baseline"),
            }
        }
    }
}
