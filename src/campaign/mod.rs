//! Campaigns: staged mass disconnects released at a rate the call center can absorb.
//!
//! This module owns the pure parts: the campaign definition and its validation, the release
//! queue (orders grouped by zone, in the campaign's ordering), the release windows, and the
//! planner that computes a whole schedule without running anything (used by
//! `switchyard campaign plan` and for the expected finish time). A running campaign is the pure
//! [`machine`] (rate, windows, zone bars, exactly once, counts: it decides) driven by its
//! [`actor`] (it performs: store writes through [`persist`], releases and withdrawals to the
//! meters, one wake timer); the [`registry`] holds the actors and routes to them.
//!
//! An order joins a campaign by carrying its `campaign_id`; its meter holds it (status
//! `scheduled`, reason `campaign`) until the campaign releases it. Policy still decides per order
//! at release time; a zone that policy bars (weather, emergency, calendar) is skipped without
//! losing its place. Reconnects never belong to a campaign and never wait behind one.

pub mod actor;
pub(crate) mod machine;
mod persist;
pub mod plan;
pub mod registry;
pub mod report;

pub use machine::Command;

pub use crate::domain::{
    AdoptFilter, CampaignDef, CampaignEvent, CampaignOrder, CampaignRecord, CampaignStatus,
    ControlRecord, Ordering, CAMPAIGN_SCHEMA_VERSION,
};

use std::collections::{BTreeMap, VecDeque};

use jiff::civil::Time;
use jiff::tz::TimeZone;

use crate::domain::Day;
use crate::domain::Timestamp;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("campaign {campaign_id}, key `{key}`: {message}")]
pub struct CampaignError {
    pub(crate) campaign_id: String,
    pub(crate) key: String,
    pub(crate) message: String,
}

/// A validated campaign: definition plus parsed zone and windows.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub def: CampaignDef,
    tz: TimeZone,
    windows: BTreeMap<Day, (Time, Time)>,
}

impl CampaignDef {
    /// Checks every rule; `known_zone` says whether a zone exists in the meter registry.
    pub fn validate(self, known_zone: impl Fn(&str) -> bool) -> Result<Campaign, CampaignError> {
        let err = |key: &str, message: String| CampaignError {
            campaign_id: self.campaign_id.clone(),
            key: key.into(),
            message,
        };
        if self.schema_version != CAMPAIGN_SCHEMA_VERSION {
            return Err(err(
                "schema_version",
                format!("{} is not supported (use 1)", self.schema_version),
            ));
        }
        if self.campaign_id.is_empty()
            || self.campaign_id.len() > 128
            || !self.campaign_id.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(err(
                "campaign_id",
                "must be 1-128 printable ASCII characters".into(),
            ));
        }
        if self.rate_per_hour == 0 || self.rate_per_hour > 1_000_000 {
            return Err(err(
                "rate_per_hour",
                format!(
                    "{} is not a usable rate: give 1..=1000000 disconnects per hour",
                    self.rate_per_hour
                ),
            ));
        }
        if let Some(z) = self.zone_rate_per_hour {
            if z == 0 || z > self.rate_per_hour {
                return Err(err(
                    "zone_rate_per_hour",
                    format!(
                        "{z} must be between 1 and rate_per_hour ({})",
                        self.rate_per_hour
                    ),
                ));
            }
        }
        if self.call_center_capacity_per_hour == Some(0) {
            return Err(err(
                "call_center_capacity_per_hour",
                "must be at least 1".into(),
            ));
        }
        let tz = TimeZone::get(&self.time_zone).map_err(|e| {
            err(
                "time_zone",
                format!("`{}` is not an IANA time zone: {e}", self.time_zone),
            )
        })?;
        let windows =
            crate::policy::parse_windows("windows", &self.windows).map_err(|(k, m)| err(&k, m))?;
        if windows.is_empty() {
            return Err(err(
                "windows",
                "no day has a window: the campaign could never release anything".into(),
            ));
        }
        if let Some(end) = self.end_by {
            if end <= self.start_at {
                return Err(err(
                    "end_by",
                    format!("{end} is not after start_at {}", self.start_at),
                ));
            }
        }
        if let Some(a) = &self.adopt {
            if let (Some(f), Some(u)) = (a.due_from, a.due_until) {
                if u <= f {
                    return Err(err(
                        "adopt.due_until",
                        format!("{u} is not after adopt.due_from {f}"),
                    ));
                }
            }
        }
        for z in &self.zones {
            if !known_zone(z) {
                return Err(err(
                    "zones",
                    format!("unknown zone `{z}`: no meter of the registry is in it"),
                ));
            }
        }
        Ok(Campaign {
            def: self,
            tz,
            windows,
        })
    }
}

impl Campaign {
    pub(crate) fn id(&self) -> &str {
        &self.def.campaign_id
    }

    /// The first time at or after `t` inside a release window (and not before `start_at`), or
    /// `None` past `end_by` / when no window opens within 14 days.
    pub fn next_open(&self, t: Timestamp) -> Option<Timestamp> {
        let t = t.max(self.def.start_at);
        let z = t.to_zoned_datetime(self.tz.clone());
        let mut day = z.date();
        for i in 0..15 {
            if let Some((s, e)) = self.windows.get(&Day::of(day)) {
                let start = day
                    .to_datetime(*s)
                    .to_zoned_datetime(self.tz.clone())
                    .ok()?
                    .timestamp();
                let end = day
                    .to_datetime(*e)
                    .to_zoned_datetime(self.tz.clone())
                    .ok()?
                    .timestamp();
                let candidate = if i == 0 { t.max(start) } else { start };
                if candidate < end {
                    return self.before_end(candidate);
                }
            }
            day = day.tomorrow().ok()?;
        }
        None
    }

    fn before_end(&self, t: Timestamp) -> Option<Timestamp> {
        match self.def.end_by {
            Some(end) if t >= end => None,
            _ => Some(t),
        }
    }

    /// The end of the window that contains `t` (capped at `end_by`).
    pub(crate) fn window_end(&self, t: Timestamp) -> Option<Timestamp> {
        let day = t.to_zoned_datetime(self.tz.clone()).date();
        let (_, e) = self.windows.get(&Day::of(day))?;
        let end = day
            .to_datetime(*e)
            .to_zoned_datetime(self.tz.clone())
            .ok()?
            .timestamp();
        Some(match self.def.end_by {
            Some(b) => end.min(b),
            None => end,
        })
    }

    /// When the last of `n` releases happens, starting at `from`, at `rate_per_hour`, inside the
    /// windows (no policy holds assumed). O(days), not O(orders).
    pub(crate) fn finish_estimate(
        &self,
        from: Timestamp,
        n: u64,
        rate_per_hour: u32,
    ) -> Option<Timestamp> {
        if n == 0 {
            return None;
        }
        let p = Self::period(rate_per_hour).as_nanos() as i128;
        let mut t = self.next_open(from)?;
        let mut left = n as i128;
        for _ in 0..10_000 {
            let end = self.window_end(t)?;
            let span = end.as_nanosecond() - t.as_nanosecond();
            let k = ((span - 1) / p + 1).max(1);
            if left <= k {
                return Timestamp::from_nanosecond(t.as_nanosecond() + (left - 1) * p).ok();
            }
            left -= k;
            t = self.next_open(Timestamp::from_nanosecond(t.as_nanosecond() + k * p).ok()?)?;
        }
        None
    }

    /// Time between two releases at `rate_per_hour`.
    pub(crate) fn period(rate_per_hour: u32) -> std::time::Duration {
        std::time::Duration::from_nanos(3_600_000_000_000 / rate_per_hour.max(1) as u64)
    }

    pub(crate) fn in_zone_scope(&self, zone: &str) -> bool {
        self.def.zones.is_empty() || self.def.zones.iter().any(|z| z == zone)
    }
}

/// Unreleased orders per zone, each zone in the campaign's ordering. Picking the next release
/// looks at zone heads only: O(zones), however many orders wait in a barred zone.
#[derive(Debug, Default)]
pub struct Queue {
    ordering: Ordering,
    zones: BTreeMap<String, ZoneQueue>,
    /// Releases so far per zone (zone stagger takes the zone with the fewest).
    len: usize,
}

#[derive(Debug, Default)]
struct ZoneQueue {
    items: VecDeque<QueuedOrder>,
    released: u64,
}

/// What the queue keeps per order (about 80 bytes plus the two ids).
#[derive(Debug, Clone)]
pub(crate) struct QueuedOrder {
    pub(crate) order_id: Box<str>,
    pub(crate) meter_id: Box<str>,
    key: (i64, i64, u64),
}

impl Queue {
    pub fn new(ordering: Ordering) -> Queue {
        Queue {
            ordering,
            ..Queue::default()
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds an unreleased order in its place.
    pub(crate) fn push(&mut self, o: &CampaignOrder) {
        let q = QueuedOrder {
            order_id: o.order_id.as_str().into(),
            meter_id: o.meter_id.as_str().into(),
            key: o.key(self.ordering),
        };
        let z = self.zones.entry(o.zone.clone()).or_default();
        let pos = z.items.partition_point(|x| x.key <= q.key);
        z.items.insert(pos, q);
        self.len += 1;
    }

    /// Adds many unreleased orders at once: appended, then each zone sorted once
    /// (O(n log n); pushing one by one into the middle would be O(n²) for a big list).
    pub fn extend<'a>(&mut self, orders: impl IntoIterator<Item = &'a CampaignOrder>) {
        let ordering = self.ordering;
        for o in orders {
            self.zones
                .entry(o.zone.clone())
                .or_default()
                .items
                .push_back(QueuedOrder {
                    order_id: o.order_id.as_str().into(),
                    meter_id: o.meter_id.as_str().into(),
                    key: o.key(ordering),
                });
            self.len += 1;
        }
        for z in self.zones.values_mut() {
            z.items.make_contiguous().sort_by_key(|q| q.key);
        }
    }

    /// Counts a release made earlier (restart) for zone stagger.
    pub(crate) fn count_released(&mut self, zone: &str) {
        self.zones.entry(zone.to_string()).or_default().released += 1;
    }

    /// Removes and returns the next order to release among the zones `eligible` allows.
    pub(crate) fn pop(
        &mut self,
        mut eligible: impl FnMut(&str) -> bool,
    ) -> Option<(String, QueuedOrder)> {
        let ordering = self.ordering;
        let best = self
            .zones
            .iter()
            .filter(|(_, z)| !z.items.is_empty())
            .filter(|(name, _)| eligible(name))
            .min_by_key(|(_, z)| {
                // Zone stagger: the zone with the fewest releases, ties by zone name (round
                // robin); priority order holds within each zone.
                if ordering == Ordering::ZoneStagger {
                    (z.released as i64, 0, 0, 0)
                } else {
                    let k = z.items[0].key;
                    (0, k.0, k.1, k.2)
                }
            })
            .map(|(name, _)| name.clone())?;
        let z = self.zones.get_mut(&best).expect("present");
        let o = z.items.pop_front().expect("non-empty");
        z.released += 1;
        self.len -= 1;
        Some((best, o))
    }

    /// Removes a specific order (withdrawn by its meter: paid, cancelled, superseded).
    pub(crate) fn remove(&mut self, zone: &str, order_id: &str) -> bool {
        if let Some(z) = self.zones.get_mut(zone) {
            if let Some(i) = z.items.iter().position(|o| &*o.order_id == order_id) {
                z.items.remove(i);
                self.len -= 1;
                return true;
            }
        }
        false
    }

    /// Zones with orders waiting, and how many.
    pub(crate) fn waiting_by_zone(&self) -> Vec<(&str, usize)> {
        self.zones
            .iter()
            .filter(|(_, z)| !z.items.is_empty())
            .map(|(n, z)| (n.as_str(), z.items.len()))
            .collect()
    }

    /// Drains every waiting order (cancel, expiry).
    pub(crate) fn drain(&mut self) -> Vec<QueuedOrder> {
        self.len = 0;
        self.zones
            .values_mut()
            .flat_map(|z| z.items.drain(..))
            .collect()
    }
}

#[cfg(test)]
mod tests;
