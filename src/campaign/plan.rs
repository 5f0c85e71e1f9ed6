//! The planner: the whole release schedule of a campaign, computed without running anything.
//! It follows the same rules as the campaign actor (one release per `3600 / rate` seconds, per
//! zone limits, windows, zones barred by policy skipped without losing their place), so its
//! finish time is the campaign's expected finish. Zone bars are looked up once per zone and
//! hour of simulated time (windows and policy bars are day- and hour-level), which keeps a
//! 1,000,000-order plan within seconds.

use std::collections::{BTreeMap, HashMap};

use super::{Campaign, CampaignOrder, Queue};
use crate::domain::Timestamp;

/// Why a zone may not release at a time: `Some(until)` (None = until the facts change).
pub(crate) type ZoneBar<'a> = dyn Fn(&str, Timestamp) -> Option<(String, Option<Timestamp>)> + 'a;

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRelease {
    pub(crate) at: Timestamp,
    pub(crate) order_id: Box<str>,
    pub(crate) zone: String,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub releases: Vec<PlannedRelease>,
    /// Orders the plan could not release (past `end_by`, or zones barred until facts change).
    pub(crate) left: usize,
    /// When the last release happens.
    pub finish: Option<Timestamp>,
}

impl Plan {
    /// Releases per hour (UTC hour start).
    pub(crate) fn per_hour(&self) -> BTreeMap<Timestamp, u32> {
        let mut m = BTreeMap::new();
        for r in &self.releases {
            let s = r.at.as_second();
            let h = Timestamp::from_second(s - s.rem_euclid(3600)).expect("in range");
            *m.entry(h).or_insert(0) += 1;
        }
        m
    }

    pub(crate) fn per_zone(&self) -> BTreeMap<&str, u32> {
        let mut m = BTreeMap::new();
        for r in &self.releases {
            *m.entry(r.zone.as_str()).or_insert(0) += 1;
        }
        m
    }

    /// The most releases in any window of one hour (sliding, not clock hours).
    pub(crate) fn max_in_any_hour(&self) -> usize {
        max_in_any_hour(self.releases.iter().map(|r| r.at))
    }
}

/// The most timestamps in any half-open hour `[t, t + 1 h)` (input in time order).
pub fn max_in_any_hour(times: impl Iterator<Item = Timestamp>) -> usize {
    let v: Vec<i64> = times.map(|t| t.as_nanosecond() as i64).collect();
    let hour = 3_600_000_000_000i64;
    let (mut best, mut lo) = (0, 0);
    for hi in 0..v.len() {
        while v[hi] - v[lo] >= hour {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

fn add(t: Timestamp, d: std::time::Duration) -> Timestamp {
    t.checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

/// Plans the release of `orders` (the unreleased ones) from `from`, at `rate_per_hour`, the
/// last release having happened at `last_release_at`.
pub fn plan(
    c: &Campaign,
    orders: &[CampaignOrder],
    from: Timestamp,
    rate_per_hour: u32,
    last_release_at: Option<Timestamp>,
    zone_bar: &ZoneBar,
) -> Plan {
    let mut q = Queue::new(c.def.ordering);
    q.extend(
        orders
            .iter()
            .filter(|o| !o.released && c.in_zone_scope(&o.zone)),
    );
    let period = Campaign::period(rate_per_hour);
    let zone_period = c.def.zone_rate_per_hour.map(Campaign::period);
    let mut plan = Plan {
        releases: Vec::with_capacity(q.len()),
        ..Plan::default()
    };
    let mut t = match last_release_at {
        Some(l) => from.max(add(l, period)),
        None => from,
    };
    let mut zone_next: HashMap<String, Timestamp> = HashMap::new();
    // zone → (hour, bar): looked up once per zone and hour (or again when a bar lifts).
    type Bar = Option<(String, Option<Timestamp>)>;
    let mut bar_cache: HashMap<String, (i64, Bar)> = HashMap::new();
    // The window `t` is in: releases step through it without time-zone arithmetic.
    let mut window_end: Option<Timestamp> = None;
    while !q.is_empty() {
        if window_end.is_none_or(|e| t >= e) {
            let Some(open) = c.next_open(t) else {
                break;
            };
            t = open;
            window_end = c.window_end(t);
        }
        let hour = t.as_second().div_euclid(3600);
        let mut bar = |z: &str| -> Bar {
            let stale = match bar_cache.get(z) {
                None => true,
                Some((h, b)) => *h != hour || matches!(b, Some((_, Some(u))) if *u <= t),
            };
            if stale {
                bar_cache.insert(z.to_string(), (hour, zone_bar(z, t)));
            }
            bar_cache.get(z).and_then(|(_, b)| b.clone())
        };
        let picked = q.pop(|z| zone_next.get(z).is_none_or(|n| *n <= t) && bar(z).is_none());
        match picked {
            Some((zone, o)) => {
                if let Some(zp) = zone_period {
                    zone_next.insert(zone.clone(), add(t, zp));
                }
                plan.releases.push(PlannedRelease {
                    at: t,
                    order_id: o.order_id,
                    zone,
                });
                t = add(t, period);
            }
            None => {
                // Nothing may go now: move to the earliest time a waiting zone may.
                let mut next: Option<Timestamp> = None;
                for (z, _) in q.waiting_by_zone() {
                    let free = match bar(z) {
                        Some((_, until)) => until,
                        None => Some(t),
                    };
                    let at = free.map(|f| f.max(zone_next.get(z).copied().unwrap_or(f)));
                    next = match (next, at) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                match next {
                    Some(n) => t = n.max(add(t, std::time::Duration::from_secs(1))),
                    None => break, // every waiting zone is held until its facts change
                }
            }
        }
    }
    plan.left = q.len();
    plan.finish = plan.releases.last().map(|r| r.at);
    plan
}
