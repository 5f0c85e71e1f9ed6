//! What the meters know of their head-ends: each head-end's profile (reconnect by closing or
//! by arming the switch, load-side voltage checks; `[head_end.profiles]`, a meter's registry
//! `reconnect` overriding it) and its circuit breaker ([`super::breaker`]), shared by all
//! the meter actors of this instance.
//!
//! How the breaker reaches the meters:
//! - an actor records the outcome of every command it had in flight (communication failures
//!   and missed deadlines count as failures) before it steps;
//! - before each step it asks for its head-end's verdict ([`HeadEnds::facts`]): go, or down
//!   until a time. A half-open breaker's probes are handed out here; a probe the step did not
//!   use is given back;
//! - a meter the verdict held registers itself ([`HeadEnds::hold`]); when the breaker is due
//!   to try again, the directory wakes `probes` of the held meters (power restorations first),
//!   and when it closes, all of them (restorations first, paced like a recovery);
//! - every transition is published ([`HeadEnds::transitions`]): the directory's watcher and
//!   the exception alarm (`kafka::head_end_alarm`) follow it; the metrics
//!   `switchyard_head_end_breaker_state{head_end}` and
//!   `switchyard_head_end_breaker_opens_total{head_end}` are set here.
//!
//! Each instance keeps its own breakers (it judges by the commands it sent); nothing is
//! stored: after a restart a head-end starts closed and opens again within one window if it
//! is still down.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::broadcast;

use super::breaker::{Breaker, BreakerRules, BreakerState, Transition};
use crate::config::{BreakerConfig, HeadEndProfile};
use crate::domain::{MeterFlags, ReconnectMode, Timestamp};

/// What the machine must know of the meter's head-end: its profile (`[head_end.profiles]`, the
/// registry's per-meter `reconnect` overriding it) and its circuit breaker's verdict.
#[derive(Debug, Clone)]
pub(crate) struct HeadEndFacts {
    /// Reconnects arm the switch for the customer to close (`arm_connect`) instead of closing
    /// it.
    pub(crate) arm_reconnect: bool,
    /// How long an armed switch waits for the customer before the order fails
    /// `armed_not_closed`.
    pub(crate) arm_timeout: Duration,
    /// Commands ask the meter to check the load-side voltage.
    pub(crate) check_load_side_voltage: bool,
    /// The meter can take a demand limit (the profile's `load_limit`).
    pub(crate) can_limit_load: bool,
    /// The breaker is half-open and this meter may send a probe: a command goes, but the
    /// head-end is not known to be back.
    pub(crate) probing: bool,
    /// `Some(until)`: the head-end's breaker is open (or half-open with no probe left): no
    /// command goes; orders are held, not retried; `until` is when it is tried again.
    pub(crate) down_until: Option<Timestamp>,
    /// Orders held by an open breaker this long fail with `field_order_needed`.
    pub(crate) field_order_after: Duration,
    /// The meter's network segment has no room for another command now
    /// (`head_end::segments`): due work waits, unchanged, until the segment hands it a ticket.
    pub(crate) segment_full: bool,
}

impl Default for HeadEndFacts {
    fn default() -> Self {
        HeadEndFacts {
            arm_reconnect: false,
            arm_timeout: Duration::from_secs(24 * 3600),
            check_load_side_voltage: false,
            can_limit_load: false,
            probing: false,
            down_until: None,
            field_order_after: Duration::from_secs(4 * 3600),
            segment_full: false,
        }
    }
}

/// A breaker transition of one head-end.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HeadEndTransition {
    pub(crate) head_end: Arc<str>,
    pub(crate) transition: Transition,
}

struct Entry {
    breaker: Breaker,
    /// Meters holding orders for this head-end: those restoring power, and the others.
    held_restoring: HashSet<Arc<str>>,
    held_other: HashSet<Arc<str>>,
}

/// The verdict an actor took before its step: a probe must be given back if unused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Closed (or no breaker): no probe involved.
    Go,
    /// Half-open: this meter holds one of the probes.
    Probe,
    /// Open: held.
    Down,
}

pub struct HeadEnds {
    profiles: BTreeMap<String, HeadEndProfile>,
    arm_timeout: Duration,
    /// `None`: the breaker is disabled.
    rules: Option<BreakerRules>,
    field_order_after: Duration,
    breakers: DashMap<Arc<str>, Mutex<Entry>>,
    transitions: broadcast::Sender<HeadEndTransition>,
    /// Throttling per network segment.
    pub(crate) segments: super::segments::Segments,
    pub(crate) segment_by: crate::config::SegmentBy,
}

impl Default for HeadEnds {
    /// No profiles, the default breaker.
    fn default() -> Self {
        HeadEnds::new(
            BTreeMap::new(),
            Duration::from_secs(24 * 3600),
            &BreakerConfig::default(),
        )
    }
}

impl HeadEnds {
    pub(crate) fn new(
        profiles: BTreeMap<String, HeadEndProfile>,
        arm_timeout: Duration,
        breaker: &BreakerConfig,
    ) -> HeadEnds {
        HeadEnds {
            profiles,
            arm_timeout,
            rules: breaker.enabled.then(|| BreakerRules {
                window: Duration::from_secs(breaker.window_secs),
                min_commands: breaker.min_commands,
                failure_ratio: breaker.failure_ratio,
                open: Duration::from_secs(breaker.open_secs),
                open_max: Duration::from_secs(breaker.open_max_secs),
                probes: breaker.probes,
            }),
            field_order_after: Duration::from_secs(breaker.field_order_after_secs),
            breakers: DashMap::new(),
            transitions: broadcast::channel(1024).0,
            segments: super::segments::Segments::default(),
            segment_by: crate::config::SegmentBy::Collector,
        }
    }

    /// With throttling per network segment.
    pub(crate) fn with_throttle(mut self, t: &crate::config::ThrottleConfig) -> HeadEnds {
        self.segments = super::segments::Segments::new(t.max_in_flight);
        self.segment_by = t.segment;
        self
    }

    /// From the `[head_end]` config.
    pub(crate) fn from_config(c: &crate::config::HeadEndConfig) -> HeadEnds {
        HeadEnds::new(
            c.profiles.clone(),
            Duration::from_secs(c.arm_timeout_secs),
            &c.breaker,
        )
        .with_throttle(&c.throttle)
    }

    /// Follows every breaker transition from now on.
    pub(crate) fn transitions(&self) -> broadcast::Receiver<HeadEndTransition> {
        self.transitions.subscribe()
    }

    /// The probes a half-open breaker lets through.
    pub(crate) fn probes(&self) -> usize {
        self.rules.as_ref().map_or(0, |r| r.probes as usize)
    }

    fn with<T>(&self, head_end: &Arc<str>, f: impl FnOnce(&mut Entry) -> T) -> Option<T> {
        let rules = self.rules.as_ref()?;
        // (A read lock of the map's shard on the hot path; its write lock only the first time.)
        if let Some(entry) = self.breakers.get(head_end) {
            let mut e = entry.lock().expect("breaker lock");
            return Some(f(&mut e));
        }
        let entry = self
            .breakers
            .entry(head_end.clone())
            .or_insert_with(|| {
                crate::observability::head_end_breaker(head_end, 0.0, false);
                Mutex::new(Entry {
                    breaker: Breaker::new(rules.clone()),
                    held_restoring: HashSet::new(),
                    held_other: HashSet::new(),
                })
            })
            .downgrade();
        let mut e = entry.lock().expect("breaker lock");
        Some(f(&mut e))
    }

    fn publish(&self, head_end: &Arc<str>, t: Option<Transition>) {
        let Some(transition) = t else { return };
        let (state, opened) = match &transition {
            Transition::Opened { .. } => (1.0, true),
            Transition::HalfOpened { .. } => (2.0, false),
            Transition::Closed { .. } => (0.0, false),
        };
        crate::observability::head_end_breaker(head_end, state, opened);
        match &transition {
            Transition::Opened { until, .. } => {
                tracing::warn!(head_end = %head_end, until = %until, "head-end circuit breaker opened: commands to it are held")
            }
            Transition::HalfOpened { .. } => {
                tracing::info!(head_end = %head_end, "head-end circuit breaker half-open: probing")
            }
            Transition::Closed { .. } => {
                tracing::info!(head_end = %head_end, "head-end circuit breaker closed: held orders resume")
            }
        }
        let _ = self.transitions.send(HeadEndTransition {
            head_end: head_end.clone(),
            transition,
        });
    }

    /// The outcome of a command the meter had in flight at its head-end: `failed` = a
    /// communication failure, or no answer before the deadline.
    pub(crate) fn record(
        &self,
        head_end: &Arc<str>,
        now: Timestamp,
        issued_at: Timestamp,
        failed: bool,
    ) {
        let t = self
            .with(head_end, |e| e.breaker.record(now, issued_at, failed))
            .flatten();
        self.publish(head_end, t);
    }

    /// What a meter on `head_end` with registry `flags` must know before a step at `now`.
    pub(crate) fn facts(
        &self,
        head_end: &Arc<str>,
        flags: MeterFlags,
        now: Timestamp,
    ) -> (HeadEndFacts, Admission) {
        let profile = self.profiles.get(&**head_end);
        let arm = if flags.contains(MeterFlags::RECONNECT_ARM) {
            true
        } else if flags.contains(MeterFlags::RECONNECT_CLOSE) {
            false
        } else {
            profile.is_some_and(|p| p.reconnect == ReconnectMode::Arm)
        };
        let verdict = self.with(head_end, |e| {
            let (ok, t) = e.breaker.admit(now);
            let probing = !matches!(e.breaker.state(), BreakerState::Closed);
            let until = match e.breaker.state() {
                BreakerState::Open { until, .. } => Some(*until),
                // No probe left: the probes' answers decide (the watcher wakes the held
                // meters when it closes, and more probes while it stays half-open); a meter
                // asked meanwhile is told one more opening period from the half-open start.
                BreakerState::HalfOpen { since, wait, .. } => Some(after(*since, *wait)),
                BreakerState::Closed => None,
            };
            (ok, probing, until, t)
        });
        let (admission, down_until) = match verdict {
            None => (Admission::Go, None),
            Some((ok, probing, until, t)) => {
                self.publish(head_end, t);
                match (ok, probing) {
                    (true, false) => (Admission::Go, None),
                    (true, true) => (Admission::Probe, None),
                    (false, _) => (Admission::Down, until.or(Some(now))),
                }
            }
        };
        (
            HeadEndFacts {
                arm_reconnect: arm,
                arm_timeout: self.arm_timeout,
                check_load_side_voltage: profile.is_some_and(|p| p.check_load_side_voltage),
                can_limit_load: profile.is_some_and(|p| p.load_limit),
                probing: admission == Admission::Probe,
                down_until,
                field_order_after: self.field_order_after,
                segment_full: false,
            },
            admission,
        )
    }

    /// Whether `head_end`'s breaker is half-open (probing).
    pub(crate) fn half_open(&self, head_end: &Arc<str>) -> bool {
        self.with(head_end, |e| {
            matches!(e.breaker.state(), BreakerState::HalfOpen { .. })
        })
        .unwrap_or(false)
    }

    /// How long a breaker stays open at first.
    pub(crate) fn open_period(&self) -> Duration {
        self.rules.as_ref().map_or(Duration::ZERO, |r| r.open)
    }

    /// A probe the meter took and did not use.
    pub(crate) fn give_back(&self, head_end: &Arc<str>) {
        self.with(head_end, |e| e.breaker.give_back());
    }

    /// `meter` holds orders because `head_end` is down (`restoring`: one of them restores
    /// power), or (`held = false`) no longer does. True when the breaker closed meanwhile (after
    /// this meter's verdict, before it registered: the watcher's wake-up has passed it by), so
    /// the meter must wake itself.
    pub(crate) fn hold(
        &self,
        head_end: &Arc<str>,
        meter: &Arc<str>,
        held: bool,
        restoring: bool,
    ) -> bool {
        self.with(head_end, |e| {
            if held && matches!(e.breaker.state(), BreakerState::Closed) {
                e.held_restoring.remove(meter);
                e.held_other.remove(meter);
                return true;
            }
            if held && restoring {
                e.held_other.remove(meter);
                e.held_restoring.insert(meter.clone());
            } else if held {
                e.held_restoring.remove(meter);
                e.held_other.insert(meter.clone());
            } else {
                e.held_restoring.remove(meter);
                e.held_other.remove(meter);
            }
            false
        })
        .unwrap_or(false)
    }

    /// Up to `n` (all: `usize::MAX`) of the meters held by `head_end`, power restorations
    /// first; taken out of the held sets (a meter still held after its step registers again).
    pub(crate) fn take_held(&self, head_end: &Arc<str>, n: usize) -> Vec<Arc<str>> {
        self.with(head_end, |e| {
            let mut out: Vec<Arc<str>> = Vec::new();
            for set in [&mut e.held_restoring, &mut e.held_other] {
                let take: Vec<Arc<str>> = set.iter().take(n - out.len()).cloned().collect();
                for m in &take {
                    set.remove(m);
                }
                out.extend(take);
                if out.len() >= n {
                    break;
                }
            }
            out
        })
        .unwrap_or_default()
    }

    /// Meters held by a down head-end, over all head-ends.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.breakers
            .iter()
            .map(|e| {
                let e = e.lock().expect("breaker lock");
                e.held_restoring.len() + e.held_other.len()
            })
            .sum()
    }
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn head_ends() -> HeadEnds {
        let mut profiles = BTreeMap::new();
        profiles.insert(
            "HE-ARM".to_string(),
            HeadEndProfile {
                reconnect: ReconnectMode::Arm,
                check_load_side_voltage: true,
                load_limit: false,
            },
        );
        HeadEnds::new(
            profiles,
            Duration::from_secs(3600),
            &BreakerConfig {
                enabled: true,
                min_commands: 5,
                probes: 2,
                ..BreakerConfig::default()
            },
        )
    }

    #[test]
    fn a_meter_arms_where_its_head_end_or_its_registry_record_says_so() {
        let h = head_ends();
        let arm: Arc<str> = "HE-ARM".into();
        let close: Arc<str> = "HE-1".into();
        let (f, _) = h.facts(&arm, MeterFlags::HAS_SWITCH, t(0));
        assert!(f.arm_reconnect && f.check_load_side_voltage);
        let (f, _) = h.facts(&arm, MeterFlags::RECONNECT_CLOSE, t(0));
        assert!(!f.arm_reconnect, "the registry overrides the profile");
        let (f, _) = h.facts(&close, MeterFlags::HAS_SWITCH, t(0));
        assert!(!f.arm_reconnect && !f.check_load_side_voltage);
        let (f, _) = h.facts(&close, MeterFlags::RECONNECT_ARM, t(0));
        assert!(f.arm_reconnect);
    }

    #[test]
    fn a_down_head_end_holds_meters_and_hands_out_probes_then_wakes_the_held_restorations_first() {
        let h = head_ends();
        let he: Arc<str> = "HE-1".into();
        let mut seen = h.transitions();
        for _ in 0..5 {
            h.record(&he, t(0), t(0), true);
        }
        assert!(matches!(
            seen.try_recv().unwrap().transition,
            Transition::Opened { .. }
        ));
        let (f, a) = h.facts(&he, MeterFlags::HAS_SWITCH, t(1));
        assert_eq!(a, Admission::Down);
        assert_eq!(f.down_until, Some(t(30)));
        for (m, restoring) in [("A", false), ("B", true), ("C", false), ("D", true)] {
            h.hold(&he, &m.into(), true, restoring);
        }
        assert_eq!(h.held(), 4);
        // At the end of the wait: two probes, the rest held.
        let (_, a) = h.facts(&he, MeterFlags::HAS_SWITCH, t(30));
        assert_eq!(a, Admission::Probe);
        h.give_back(&he);
        assert_eq!(
            h.facts(&he, MeterFlags::HAS_SWITCH, t(30)).1,
            Admission::Probe
        );
        assert_eq!(
            h.facts(&he, MeterFlags::HAS_SWITCH, t(30)).1,
            Admission::Probe
        );
        assert_eq!(
            h.facts(&he, MeterFlags::HAS_SWITCH, t(30)).1,
            Admission::Down
        );
        let probes = h.take_held(&he, h.probes());
        let mut p: Vec<&str> = probes.iter().map(|m| &**m).collect();
        p.sort();
        assert_eq!(p, ["B", "D"], "power restorations probe first");
        h.record(&he, t(31), t(30), false);
        assert_eq!(h.facts(&he, MeterFlags::HAS_SWITCH, t(31)).1, Admission::Go);
        assert_eq!(h.take_held(&he, usize::MAX).len(), 2);
        assert_eq!(h.held(), 0);
    }

    #[test]
    fn a_disabled_breaker_never_holds() {
        let h = HeadEnds::new(
            BTreeMap::new(),
            Duration::from_secs(60),
            &BreakerConfig {
                enabled: false,
                ..BreakerConfig::default()
            },
        );
        let he: Arc<str> = "HE-1".into();
        for _ in 0..100 {
            h.record(&he, t(0), t(0), true);
        }
        assert_eq!(h.facts(&he, MeterFlags::HAS_SWITCH, t(1)).1, Admission::Go);
    }
}
