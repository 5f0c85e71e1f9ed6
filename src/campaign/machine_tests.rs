//! The campaign machine alone: examples of each rule, then a property test that drives it with
//! random orders, operator commands, meter outcomes, policy bars, restarts and time steps, and
//! checks every promise of the module doc after every step.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;
use crate::campaign::tests::{orders, weekdays_8_to_14};
use crate::campaign::{CampaignDef, Ordering as QueueOrdering};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Monday 2026-12-07, 08:00 New York: the campaigns' `start_at`.
fn t0() -> Timestamp {
    ts("2026-12-07T13:00:00Z")
}

fn secs(t: Timestamp, s: i64) -> Timestamp {
    t + jiff::SignedDuration::from_secs(s)
}

fn record(def: &CampaignDef) -> CampaignRecord {
    CampaignRecord {
        def: def.clone(),
        status: CampaignStatus::Active,
        rate_per_hour: def.rate_per_hour,
        last_release_at: None,
        released: 0,
        updated_at: t0(),
    }
}

fn machine(def: CampaignDef, os: Vec<CampaignOrder>) -> CampaignMachine {
    let r = record(&def);
    CampaignMachine::new(def.validate(|_| true).unwrap(), r, os, &|_| None)
}

fn free(_: &str, _: Timestamp) -> Option<(String, Option<Timestamp>)> {
    None
}

fn released(a: &[Action]) -> Vec<&str> {
    a.iter()
        .filter_map(|a| match a {
            Action::Release { order_id, .. } => Some(&**order_id),
            _ => None,
        })
        .collect()
}

fn withdrawn(a: &[Action]) -> Vec<(&str, &str)> {
    a.iter()
        .filter_map(|a| match a {
            Action::Withdraw {
                order_id, reason, ..
            } => Some((&**order_id, *reason)),
            _ => None,
        })
        .collect()
}

fn events(a: &[Action]) -> Vec<&CampaignEvent> {
    a.iter()
        .filter_map(|a| match a {
            Action::Publish(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn wakes(a: &[Action]) -> Vec<Timestamp> {
    a.iter()
        .filter_map(|a| match a {
            Action::WakeAt(t) => Some(*t),
            _ => None,
        })
        .collect()
}

fn saved(a: &[Action]) -> Option<&CampaignRecord> {
    match a.last() {
        Some(Action::Save(r)) => Some(r),
        _ => None,
    }
}

fn pause() -> Input {
    Input::Control(Command::Pause { by: "ops".into() })
}

fn resume() -> Input {
    Input::Control(Command::Resume { by: "ops".into() })
}

fn cancel() -> Input {
    Input::Control(Command::Cancel { by: "ops".into() })
}

#[test]
fn a_release_is_stored_in_the_step_that_sends_it_and_the_next_waits_a_period() {
    // 60 an hour: one a minute.
    let mut m = machine(weekdays_8_to_14("C", 60), orders(3, &["north"]));
    let a = m.step(Input::Start, t0(), &free);
    let first = "SO-000000";
    assert_eq!(released(&a), [first]);
    assert!(a.contains(&Action::SaveRelease {
        order_id: first.into(),
        at: t0()
    }));
    assert_eq!(events(&a)[0].event, "started");
    assert_eq!(wakes(&a), [t0()], "the next release in a fresh turn");
    let r = saved(&a).expect("the step ends with the record");
    assert_eq!((r.released, r.last_release_at), (1, Some(t0())));
    // At once again: the rate says one minute later; nothing to store.
    let a = m.step(Input::Wake, t0(), &free);
    assert_eq!(a, [Action::WakeAt(secs(t0(), 60))]);
    let a = m.step(Input::Wake, secs(t0(), 60), &free);
    assert_eq!(released(&a), ["SO-000001"]);
    // The governor's budget agrees with the stored floor: a release 30 s after is refused.
    let b = Budget::new(60);
    assert_eq!(b.take(t0()), Ok(()));
    assert_eq!(b.take(secs(t0(), 30)), Err(Duration::from_secs(30)));
    assert_eq!(b.take(secs(t0(), 60)), Ok(()));
}

#[test]
fn outside_its_windows_a_campaign_waits_for_the_next_one_and_expires_at_end_by() {
    let mut def = weekdays_8_to_14("C", 60);
    def.end_by = Some(secs(t0(), 3600 + 30));
    let mut m = machine(def, orders(100, &["north"]));
    // 07:00 New York: the window opens at 08:00.
    let a = m.step(Input::Start, secs(t0(), -3600), &free);
    assert!(released(&a).is_empty());
    assert_eq!(wakes(&a), [t0()]);
    let mut n = 0;
    let mut t = t0();
    while m.record.status == CampaignStatus::Active {
        let a = m.step(Input::Wake, t, &free);
        n += released(&a).len();
        if m.record.status == CampaignStatus::Expired {
            let w = withdrawn(&a);
            assert_eq!(w.len(), 100 - 61);
            assert!(w.iter().all(|(_, r)| *r == "campaign_expired"));
            let e = events(&a)[0];
            assert_eq!(
                (e.event.as_str(), e.remaining, e.cancelled),
                ("expired", 0, 39)
            );
            assert_eq!(
                t,
                secs(t0(), 3600 + 60),
                "the first wake at or after end_by"
            );
        }
        t = m.wake.unwrap_or(t);
    }
    assert_eq!(n, 61, "08:00 to 09:00:30 at one a minute");
}

#[test]
fn a_pause_disarms_the_wake_and_a_resume_releases_again() {
    let mut m = machine(weekdays_8_to_14("C", 60), orders(3, &["north"]));
    m.step(Input::Start, t0(), &free);
    let a = m.step(pause(), secs(t0(), 1), &free);
    assert_eq!(a[0], Action::Disarm);
    assert_eq!(events(&a)[0].event, "paused");
    assert_eq!(m.wake, None);
    assert_eq!(saved(&a).unwrap().status, CampaignStatus::Paused);
    // An order arriving while paused waits.
    let mut extra = orders(4, &["north"]).pop().unwrap();
    extra.order_id = "SO-X".into();
    assert!(m
        .step(Input::Enqueue(extra), secs(t0(), 2), &free)
        .is_empty());
    // Resumed two minutes later: the next release at once.
    let a = m.step(resume(), secs(t0(), 120), &free);
    assert_eq!(events(&a)[0].event, "resumed");
    assert_eq!(released(&a), ["SO-000001"]);
}

#[test]
fn a_cancel_withdraws_what_waits_and_whatever_comes_later() {
    let mut m = machine(weekdays_8_to_14("C", 60), orders(5, &["north", "south"]));
    m.step(Input::Start, t0(), &free);
    let a = m.step(cancel(), secs(t0(), 10), &free);
    assert_eq!(withdrawn(&a).len(), 4);
    assert!(withdrawn(&a)
        .iter()
        .all(|(_, r)| *r == "campaign_cancelled"));
    let e = events(&a)[0];
    assert_eq!(
        (
            e.event.as_str(),
            e.cancelled,
            e.remaining,
            e.released,
            e.total
        ),
        ("cancelled", 4, 0, 1, 5)
    );
    // Nothing more is released; a later order is withdrawn at once, nothing stored.
    assert!(m.step(Input::Wake, secs(t0(), 600), &free).is_empty());
    let mut late = orders(6, &["north"]).pop().unwrap();
    late.order_id = "SO-LATE".into();
    let a = m.step(Input::Enqueue(late), secs(t0(), 700), &free);
    assert_eq!(withdrawn(&a), [("SO-LATE", "campaign_cancelled")]);
    assert_eq!(a.len(), 1);
    // Commands for an ended campaign change nothing.
    assert!(matches!(
        m.step(resume(), secs(t0(), 800), &free)[..],
        [Action::Ignored(Command::Resume { .. })]
    ));
    // The withdrawn orders' meters answer "cancelled": not counted twice.
    m.step(
        Input::Outcome {
            order_id: "SO-000001".into(),
            status: OrderStatus::Cancelled,
        },
        secs(t0(), 900),
        &free,
    );
    assert_eq!(m.counts.cancelled, 4);
}

#[test]
fn a_barred_zone_waits_for_its_bar_to_lift_and_the_others_go_on() {
    let mut m = machine(weekdays_8_to_14("C", 3600), orders(4, &["north", "south"]));
    let lift = secs(t0(), 30);
    let bar = |z: &str, t: Timestamp| {
        (z == "north" && t < lift).then(|| ("cold".to_string(), Some(lift)))
    };
    let mut out = Vec::new();
    let mut t = t0();
    out.extend(m.step(Input::Start, t, &bar));
    while m.record.status == CampaignStatus::Active {
        t = m.wake.unwrap();
        for a in m.step(Input::Wake, t, &bar) {
            if let Action::Release { order_id, at, .. } = &a {
                out.push(Action::SaveRelease {
                    order_id: order_id.clone(),
                    at: *at,
                });
            }
        }
    }
    let rel: Vec<(String, Timestamp)> = out
        .iter()
        .filter_map(|a| match a {
            Action::SaveRelease { order_id, at } => Some((order_id.to_string(), *at)),
            _ => None,
        })
        .collect();
    // South (odd orders) at 0 s and 1 s; north waits for 30 s, then one a second.
    let want = [
        ("SO-000001", 0),
        ("SO-000003", 1),
        ("SO-000000", 30),
        ("SO-000002", 31),
    ];
    let want: Vec<(String, Timestamp)> = want
        .iter()
        .map(|(o, s)| (o.to_string(), secs(t0(), *s)))
        .collect();
    assert_eq!(rel, want);
    assert_eq!(m.record.status, CampaignStatus::Finished);
}

#[test]
fn a_restart_sends_open_releases_again_and_keeps_the_rate_and_the_zone_rate() {
    let mut def = weekdays_8_to_14("C", 3600);
    def.zone_rate_per_hour = Some(360); // 10 s a zone
    let mut os = orders(4, &["north"]);
    os[0].released = true;
    os[1].released = true;
    let mut r = record(&def);
    r.released = 2;
    r.last_release_at = Some(t0());
    let status = |id: &str| (id == "SO-000000").then_some(OrderStatus::Completed);
    let mut m = CampaignMachine::new(def.validate(|_| true).unwrap(), r, os, &status);
    let a = m.step(Input::Start, secs(t0(), 1), &free);
    assert_eq!(
        a[0],
        Action::Resend {
            order_id: "SO-000001".into(),
            meter_id: "M-000001".into(),
            at: secs(t0(), 1)
        }
    );
    let e = events(&a)[0];
    assert_eq!(
        (e.completed, e.released, e.remaining, e.total),
        (1, 2, 2, 4)
    );
    assert!(released(&a).is_empty());
    // The campaign's rate would allow 1 s after the last release; the zone's asks 10 s.
    assert_eq!(wakes(&a), [secs(t0(), 10)]);
    let a = m.step(Input::Wake, secs(t0(), 10), &free);
    assert_eq!(released(&a), ["SO-000002"]);
}

#[test]
fn a_new_rate_counts_from_the_last_release() {
    let mut m = machine(weekdays_8_to_14("C", 60), orders(3, &["north"]));
    m.step(Input::Start, t0(), &free);
    let a = m.step(
        Input::Control(Command::SetRate {
            rate_per_hour: 3600,
            by: "ops".into(),
        }),
        secs(t0(), 0),
        &free,
    );
    assert_eq!(events(&a)[0].event, "rate_changed");
    assert_eq!(saved(&a).unwrap().rate_per_hour, 3600);
    assert_eq!(wakes(&a), [secs(t0(), 1)]);
    assert_eq!(
        released(&m.step(Input::Wake, secs(t0(), 1), &free)),
        ["SO-000001"]
    );
}

/// Drives `m` as its actor would if every timed wake fired `late(i)` seconds after its
/// instant (`i`: releases so far); the wake armed for "now" after a release fires at once.
/// The instants of the first `n` releases.
fn releases_with_late_wakes(
    m: &mut CampaignMachine,
    late: impl Fn(usize) -> i64,
    n: usize,
) -> Vec<i64> {
    let mut out = Vec::new();
    let mut now = t0();
    let mut a = m.step(Input::Start, now, &free);
    while out.len() < n {
        if !released(&a).is_empty() {
            out.push(now.duration_since(t0()).as_secs());
        }
        let w = *wakes(&a).last().expect("a wake armed");
        if w > now {
            now = secs(w, late(out.len()));
        }
        a = m.step(Input::Wake, now, &free);
    }
    out
}

#[test]
fn late_wakes_are_made_up_so_the_campaign_keeps_its_rate() {
    // 60 an hour: one a minute. Every timed wake 20 s late: the grid holds, the k-th release
    // is 20 s behind its minute, not 20 s more behind each time (that would be 75 % of the
    // rate).
    let mut m = machine(weekdays_8_to_14("C", 60), orders(10, &["north"]));
    let r = releases_with_late_wakes(&mut m, |_| 20, 10);
    let grid: Vec<i64> = (0..10)
        .map(|k| if k == 0 { 0 } else { 60 * k + 20 })
        .collect();
    assert_eq!(r, grid);
    // One wake 50 s late (a stall): made up within two releases, never closer than 30 s.
    let mut m = machine(weekdays_8_to_14("C", 60), orders(5, &["north"]));
    assert_eq!(
        releases_with_late_wakes(&mut m, |i| if i == 1 { 50 } else { 0 }, 5),
        [0, 110, 140, 180, 240]
    );
    // More than a period late (70 s): the grid starts again from that release, so a late
    // wake never brings a catch-up burst.
    let mut m = machine(weekdays_8_to_14("C", 60), orders(5, &["north"]));
    assert_eq!(
        releases_with_late_wakes(&mut m, |i| if i == 1 { 70 } else { 0 }, 5),
        [0, 130, 190, 250, 310]
    );
}

#[test]
fn a_made_up_release_never_puts_more_than_the_rate_in_a_sliding_hour() {
    // 2 an hour (one every 30 minutes). The first timed wake fires 14 minutes late (made up:
    // the next is at 60 min, on the grid). The grid's next instant, 90 min, would put three
    // releases (44, 60, 90) in the hour after 30 min: the hour log holds it until 104 min,
    // an hour after the late one.
    let mut m = machine(weekdays_8_to_14("C", 2), orders(4, &["north"]));
    let r = releases_with_late_wakes(&mut m, |i| if i == 1 { 14 * 60 } else { 0 }, 4);
    assert_eq!(r, [0, 44 * 60, 60 * 60, 104 * 60]);
}

// ---- property test --------------------------------------------------------------------------

const ZONES: [&str; 4] = ["a", "b", "c", "outside"];

#[derive(Debug, Clone)]
enum Env {
    /// A new order (stored, then enqueued) in zone `ZONES[z]`; the last zone is not the
    /// campaign's.
    Order {
        zone: u8,
        priority: u8,
    },
    /// Time passes; the wakes due meanwhile fire in order.
    Advance(u16),
    /// From now on every wake fires this many thousandths of the period late (a slow store
    /// write, a busy thread): up to 0.999 of a period.
    Lag(u16),
    Pause,
    Resume,
    Cancel,
    SetRate(u32),
    /// Policy bars a zone for `secs` (None: until the facts change).
    Bar {
        zone: u8,
        secs: Option<u16>,
    },
    Lift(u8),
    /// The meter of an order closes it or defers it: `roll` picks how; the outcome is on its
    /// way to the campaign until `Deliver`.
    Meter {
        pick: u16,
        roll: u8,
    },
    Deliver,
    /// The outcomes on their way arrive twice each (at least once, from another instance's
    /// outbox): the campaign counts each once.
    DeliverTwice,
    /// A rebalance: the campaign sends its open releases again, and nothing else.
    Rebalance,
    /// The process stops (outcomes on their way are lost; the store has them) and the
    /// campaign resumes from the store, if it has not ended.
    Restart,
}

fn env() -> impl Strategy<Value = Env> {
    prop_oneof![
        4 => (0u8..4, 1u8..10).prop_map(|(zone, priority)| Env::Order { zone, priority }),
        5 => (1u16..7200).prop_map(Env::Advance),
        1 => (0u16..1000).prop_map(Env::Lag),
        1 => Just(Env::Pause),
        1 => Just(Env::Resume),
        1 => Just(Env::Cancel),
        1 => (20u32..4000).prop_map(Env::SetRate),
        1 => (0u8..3, proptest::option::of(1u16..7200))
            .prop_map(|(zone, secs)| Env::Bar { zone, secs }),
        1 => (0u8..3).prop_map(Env::Lift),
        4 => (any::<u16>(), 0u8..6).prop_map(|(pick, roll)| Env::Meter { pick, roll }),
        2 => Just(Env::Deliver),
        1 => Just(Env::DeliverTwice),
        1 => Just(Env::Rebalance),
        1 => Just(Env::Restart),
    ]
}

#[derive(Debug, Clone)]
struct Setup {
    rate: u32,
    zone_divisor: Option<u32>,
    ordering: QueueOrdering,
    end_by_hours: Option<u16>,
    start_offset: u16,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        20u32..4000,
        proptest::option::of(1u32..5),
        prop_oneof![
            Just(QueueOrdering::Priority),
            Just(QueueOrdering::AmountDue),
            Just(QueueOrdering::ZoneStagger),
            Just(QueueOrdering::Arrival),
        ],
        proptest::option::of(1u16..80),
        0u16..20_000,
    )
        .prop_map(
            |(rate, zone_divisor, ordering, end_by_hours, start_offset)| Setup {
                rate,
                zone_divisor,
                ordering,
                end_by_hours,
                start_offset,
            },
        )
}

/// The campaign's world: the meters (what they know of each order), the store (what the
/// campaign wrote), policy bars, and the count of everything the campaign was told, to check its
/// counts exactly.
struct World {
    m: CampaignMachine,
    campaign: Campaign,
    now: Timestamp,
    bars: HashMap<String, Option<Timestamp>>,
    /// Every order stored for the campaign, in arrival order.
    orders: Vec<CampaignOrder>,
    /// At the meters: each order's final status, once it has one.
    closed: HashMap<String, OrderStatus>,
    /// Outcomes sent by the meters, not yet at the campaign.
    in_transit: Vec<(String, OrderStatus)>,
    /// The store.
    stored: Option<CampaignRecord>,
    stored_releases: HashSet<String>,
    /// Every release (first sends), and the last one overall and per zone.
    released: HashMap<String, Timestamp>,
    last_release: Option<Timestamp>,
    zone_last: HashMap<String, Timestamp>,
    /// Releases since the rate in force was set.
    at_rate: Vec<Timestamp>,
    /// How late wakes fire, in thousandths of the period.
    lag: u16,
    /// The rate in force (the definition's, then each command taken).
    rate: u32,
    /// Cancelled or expired: nothing may be released any more.
    ended: bool,
    // What the campaign was told, to check its counts.
    /// Final outcomes counted (delivered, or read from the store at a restart).
    counted: HashMap<String, OrderStatus>,
    /// Withdrawn at a cancel or expiry and counted cancelled then.
    withdrawn: HashSet<String>,
    /// Withdrawn as they arrived, the campaign having ended.
    turned_away: HashSet<String>,
    deferred: HashSet<String>,
}

fn bar_of(bars: &HashMap<String, Option<Timestamp>>, zone: &str, t: Timestamp) -> Bar {
    match bars.get(zone)? {
        None => Some(("cold".into(), None)),
        Some(until) if t < *until => Some(("cold".into(), Some(*until))),
        Some(_) => None,
    }
}

type Bar = Option<(String, Option<Timestamp>)>;

impl World {
    fn bar(&self, zone: &str, t: Timestamp) -> Bar {
        bar_of(&self.bars, zone, t)
    }

    fn zone_of(&self, order_id: &str) -> String {
        let o = self.orders.iter().find(|o| o.order_id == order_id);
        o.expect("known order").zone.clone()
    }

    /// What the campaign should say is waiting: its orders in its zones, not released, not
    /// closed as far as it knows, not withdrawn.
    fn waiting(&self) -> usize {
        self.orders
            .iter()
            .filter(|o| self.campaign.in_zone_scope(&o.zone))
            .filter(|o| !self.released.contains_key(&o.order_id))
            .filter(|o| !self.counted.contains_key(&o.order_id))
            .filter(|o| !self.withdrawn.contains(&o.order_id))
            .filter(|o| !self.turned_away.contains(&o.order_id))
            .count()
    }

    fn expected_counts(&self) -> Counts {
        let n = |f: &dyn Fn(OrderStatus) -> bool| {
            self.counted.values().filter(|s| f(**s)).count() as u64
        };
        let cancelled_counted: HashSet<&String> = self
            .counted
            .iter()
            .filter(|(_, s)| **s == OrderStatus::Cancelled)
            .map(|(o, _)| o)
            .collect();
        Counts {
            completed: n(&|s| s == OrderStatus::Completed),
            failed: n(&|s| s != OrderStatus::Completed && s != OrderStatus::Cancelled),
            cancelled: cancelled_counted
                .union(&self.withdrawn.iter().collect())
                .count() as u64,
            deferred: self.deferred.len() as u64,
        }
    }

    /// One step of the machine, every promise checked; its actions.
    fn step(&mut self, input: Input) -> Vec<Action> {
        let now = self.now;
        let status_before = self.m.record.status;
        let bars = &self.bars;
        let actions = self.m.step(input, now, &|z, t| bar_of(bars, z, t));
        let saves = actions
            .iter()
            .filter(|a| matches!(a, Action::Save(_)))
            .count();
        assert!(saves <= 1, "one record write per step");
        if saves == 1 {
            assert!(
                matches!(actions.last(), Some(Action::Save(_))),
                "{actions:?}"
            );
        }
        // Checked in their order: an event counts what the actions before it changed.
        let mut stored_now: HashSet<String> = HashSet::new();
        for a in &actions {
            match a {
                Action::SaveRelease { order_id, at } => {
                    let id = order_id.to_string();
                    let zone = self.zone_of(&id);
                    assert_eq!(*at, now);
                    assert!(!self.ended, "{id} released after a cancel or an expiry");
                    assert_eq!(self.m.record.status, CampaignStatus::Active);
                    assert!(!self.released.contains_key(&id), "{id} released twice");
                    assert!(self.campaign.in_zone_scope(&zone), "{id} outside the zones");
                    assert_eq!(
                        self.campaign.next_open(now),
                        Some(now),
                        "outside the windows"
                    );
                    assert_eq!(self.bar(&zone, now), None, "{id} into a barred zone");
                    if let Some(l) = self.last_release {
                        assert!(
                            now >= add(l, Campaign::period(self.rate) / 2),
                            "{id} at {now}: the last release was {l}, rate {}",
                            self.rate
                        );
                    }
                    // No sliding hour (ending now) holds more than the rate in force.
                    let hour_ago = now
                        .checked_sub(jiff::SignedDuration::from_hours(1))
                        .unwrap();
                    let in_hour = self.at_rate.iter().filter(|t| **t > hour_ago).count();
                    assert!(
                        in_hour < self.rate as usize,
                        "{id} at {now}: {in_hour} releases in the hour before, rate {}",
                        self.rate
                    );
                    self.at_rate.push(now);
                    if let (Some(zr), Some(l)) = (
                        self.campaign.def.zone_rate_per_hour,
                        self.zone_last.get(&zone),
                    ) {
                        assert!(now >= add(*l, Campaign::period(zr)), "zone {zone} too fast");
                    }
                    self.released.insert(id.clone(), now);
                    self.last_release = Some(now);
                    self.zone_last.insert(zone, now);
                    self.stored_releases.insert(id.clone());
                    stored_now.insert(id);
                }
                Action::Release {
                    order_id,
                    meter_id,
                    at,
                } => {
                    assert!(
                        stored_now.contains(&**order_id),
                        "{order_id} sent, not stored"
                    );
                    assert_eq!(*at, now);
                    let o = self.orders.iter().find(|o| *o.order_id == **order_id);
                    assert_eq!(&*o.unwrap().meter_id, &**meter_id);
                }
                Action::Publish(e) => {
                    let c = self.expected_counts();
                    assert_eq!(e.total as usize, self.orders.len(), "{e:?}");
                    assert_eq!(e.released as usize, self.released.len(), "{e:?}");
                    assert_eq!(e.remaining as usize, self.waiting(), "{e:?}");
                    assert_eq!(
                        (e.completed, e.failed, e.cancelled, e.deferred),
                        (c.completed, c.failed, c.cancelled, c.deferred),
                        "{e:?}"
                    );
                    let status = match e.event.as_str() {
                        "paused" => vec![CampaignStatus::Paused],
                        "resumed" | "progress" => vec![CampaignStatus::Active],
                        "started" | "rate_changed" => {
                            vec![CampaignStatus::Active, CampaignStatus::Paused]
                        }
                        "cancelled" => vec![CampaignStatus::Cancelled],
                        "expired" => vec![CampaignStatus::Expired],
                        "finished" => vec![CampaignStatus::Finished],
                        other => panic!("unknown event {other}"),
                    };
                    assert!(status.contains(&e.status), "{e:?}");
                    assert_eq!(e.at, now);
                }
                Action::Withdraw {
                    order_id, reason, ..
                } => {
                    let id = order_id.to_string();
                    assert!(
                        !self.released.contains_key(&id),
                        "{id} withdrawn after release"
                    );
                    let outside = !self.campaign.in_zone_scope(&self.zone_of(&id));
                    let ended = match self.m.record.status {
                        CampaignStatus::Cancelled => Some("campaign_cancelled"),
                        CampaignStatus::Expired => Some("campaign_expired"),
                        _ => None,
                    };
                    if outside {
                        // Outside the zones: said so, unless the campaign has ended.
                        assert!(
                            *reason == super::OUTSIDE_ZONES || Some(*reason) == ended,
                            "{id}: {reason}"
                        );
                    } else {
                        let want = ended.unwrap_or_else(|| {
                            panic!("withdrawn by a campaign {:?}", self.m.record.status)
                        });
                        assert_eq!(*reason, want);
                    }
                    if outside {
                        // Given back as it arrived (or again after a restart, while its meter
                        // has not said it closed): counted once its meter says so.
                        assert!(
                            !self.counted.contains_key(&id),
                            "{id} withdrawn again after its close was counted"
                        );
                        self.turned_away.insert(id.clone());
                    } else if status_before != self.m.record.status {
                        // Withdrawn by the cancel or expiry itself: counted cancelled now.
                        assert!(self.withdrawn.insert(id.clone()));
                    } else {
                        // Arrived after the end: counted once its meter says so.
                        assert!(self.turned_away.insert(id.clone()));
                    }
                    // The meter closes it, unless it has already.
                    if !self.closed.contains_key(&id) {
                        self.closed.insert(id.clone(), OrderStatus::Cancelled);
                        self.in_transit.push((id, OrderStatus::Cancelled));
                    }
                }
                Action::WakeAt(t) => assert!(*t >= now, "a wake in the past"),
                Action::Save(r) => {
                    assert_eq!(r.released as usize, self.released.len());
                    assert_eq!(r.last_release_at, self.last_release);
                    assert_eq!(r.updated_at, now);
                    if matches!(
                        r.status,
                        CampaignStatus::Cancelled | CampaignStatus::Expired
                    ) {
                        self.ended = true;
                    }
                    self.stored = Some(r.clone());
                }
                Action::Ignored(_) => assert!(matches!(
                    self.m.record.status,
                    CampaignStatus::Cancelled | CampaignStatus::Finished | CampaignStatus::Expired
                )),
                Action::Resend { .. } | Action::Disarm => {}
            }
        }
        assert_eq!(self.m.counts, self.expected_counts());
        assert_eq!(self.m.queue.len(), self.waiting());
        // A status is never only in memory: a restart would take the stored one.
        if let Some(stored) = &self.stored {
            assert_eq!(stored.status, self.m.record.status, "status not stored");
        }
        // Releases stored = released orders, open or closed as far as the campaign knows.
        let open = self
            .released
            .keys()
            .filter(|o| !self.counted.contains_key(*o))
            .count();
        assert_eq!(self.m.released_open.len(), open);
        assert_eq!(self.m.record.released as usize, self.released.len());
        if self.m.record.status == CampaignStatus::Active && !self.m.queue.is_empty() {
            assert!(
                self.m.wake.is_some_and(|w| w >= now),
                "an active campaign with orders waiting and no wake"
            );
        }
        actions
    }

    /// The actor's timer: every wake due by `until` fires, in order.
    fn advance(&mut self, until: Timestamp) {
        for _ in 0..100_000 {
            match self.m.wake {
                Some(w) if w <= until => {
                    let late = Campaign::period(self.rate) * u32::from(self.lag) / 1000;
                    self.now = self.now.max(add(w, late).min(until));
                    self.step(Input::Wake);
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    /// Released orders whose final outcome the campaign has not counted.
    fn open_releases(&self) -> HashSet<String> {
        self.released
            .keys()
            .filter(|o| !self.counted.contains_key(*o))
            .cloned()
            .collect()
    }

    fn deliver(&mut self, twice: bool) {
        for (id, status) in std::mem::take(&mut self.in_transit) {
            if status.is_terminal() {
                // A withdrawn order was counted when it was withdrawn.
                if !self.withdrawn.contains(&id) {
                    assert!(self.counted.insert(id.clone(), status).is_none());
                }
            } else if status == OrderStatus::Deferred
                && self.released.contains_key(&id)
                && !self.counted.contains_key(&id)
            {
                self.deferred.insert(id.clone());
            }
            if twice {
                self.step(Input::Outcome {
                    order_id: id.clone(),
                    status,
                });
            }
            self.step(Input::Outcome {
                order_id: id,
                status,
            });
        }
    }

    fn run(&mut self, e: Env) {
        match e {
            Env::Order { zone, priority } => {
                let i = self.orders.len();
                let o = CampaignOrder {
                    order_id: format!("SO-{i:04}"),
                    meter_id: format!("M-{i:04}"),
                    zone: ZONES[zone as usize].into(),
                    priority,
                    amount_cents: (i as i64 * 7919) % 10_000,
                    seq: i as u64,
                    released: false,
                    released_at: None,
                };
                self.orders.push(o.clone());
                self.step(Input::Enqueue(o));
            }
            Env::Advance(s) => self.advance(secs(self.now, s as i64)),
            Env::Lag(l) => self.lag = l,
            Env::Pause => {
                self.step(pause());
            }
            Env::Resume => {
                self.step(resume());
            }
            Env::Cancel => {
                self.step(cancel());
            }
            Env::SetRate(r) => {
                let ended = matches!(
                    self.m.record.status,
                    CampaignStatus::Cancelled | CampaignStatus::Finished | CampaignStatus::Expired
                );
                if !ended {
                    self.rate = r;
                    self.at_rate.clear();
                }
                self.step(Input::Control(Command::SetRate {
                    rate_per_hour: r,
                    by: "ops".into(),
                }));
            }
            Env::Bar { zone, secs: s } => {
                let until = s.map(|s| secs(self.now, s as i64));
                self.bars.insert(ZONES[zone as usize].into(), until);
            }
            Env::Lift(zone) => {
                self.bars.remove(ZONES[zone as usize]);
            }
            Env::Meter { pick, roll } => {
                if self.orders.is_empty() {
                    return;
                }
                let id = self.orders[pick as usize % self.orders.len()]
                    .order_id
                    .clone();
                if self.closed.contains_key(&id) {
                    return; // a meter reports an order's final status once
                }
                let status = if self.released.contains_key(&id) {
                    [
                        OrderStatus::Deferred,
                        OrderStatus::Completed,
                        OrderStatus::Failed,
                        OrderStatus::Rejected,
                        OrderStatus::Cancelled,
                        OrderStatus::Completed,
                    ][roll as usize]
                } else if roll == 0 {
                    // A payment or a reconnect closes an order still held for the campaign.
                    OrderStatus::Cancelled
                } else {
                    return;
                };
                if status.is_terminal() {
                    self.closed.insert(id.clone(), status);
                }
                self.in_transit.push((id, status));
            }
            Env::Deliver => self.deliver(false),
            Env::DeliverTwice => self.deliver(true),
            Env::Rebalance => {
                let want = self.open_releases();
                let a = self.step(Input::ResendOpen);
                let mut resent = HashSet::new();
                for x in &a {
                    match x {
                        Action::Resend { order_id, .. } => {
                            resent.insert(order_id.to_string());
                        }
                        other => panic!("a rebalance only sends releases again: {other:?}"),
                    }
                }
                assert_eq!(resent, want, "the releases still open are sent again");
            }
            Env::Restart => {
                let Some(record) = self.stored.clone() else {
                    return;
                };
                if !matches!(
                    record.status,
                    CampaignStatus::Active | CampaignStatus::Paused
                ) {
                    return; // an ended campaign is not resumed
                }
                self.in_transit.clear();
                let stored: Vec<CampaignOrder> = self
                    .orders
                    .iter()
                    .map(|o| CampaignOrder {
                        released: self.stored_releases.contains(&o.order_id),
                        released_at: self
                            .stored_releases
                            .contains(&o.order_id)
                            .then(|| self.released[&o.order_id]),
                        ..o.clone()
                    })
                    .collect();
                let closed = self.closed.clone();
                let status = move |id: &str| closed.get(id).copied();
                self.m = CampaignMachine::new(self.campaign.clone(), record, stored, &status);
                self.counted = self.closed.clone();
                self.withdrawn.clear();
                self.deferred.clear();
                let want = self.open_releases();
                let a = self.step(Input::Start);
                let resent: HashSet<String> = a
                    .iter()
                    .filter_map(|a| match a {
                        Action::Resend { order_id, .. } => Some(order_id.to_string()),
                        _ => None,
                    })
                    .collect();
                assert_eq!(resent, want, "the releases still open are sent again");
            }
        }
    }
}

fn world(s: &Setup) -> World {
    let mut def = weekdays_8_to_14("P", s.rate);
    def.zones = ZONES[..3].iter().map(|z| z.to_string()).collect();
    def.zone_rate_per_hour = s.zone_divisor.map(|d| (s.rate / d).max(1));
    def.ordering = s.ordering;
    def.end_by = s.end_by_hours.map(|h| secs(def.start_at, h as i64 * 3600));
    let campaign = def.clone().validate(|_| true).unwrap();
    World {
        m: CampaignMachine::new(campaign.clone(), record(&def), Vec::new(), &|_| None),
        campaign,
        now: secs(t0(), -(s.start_offset as i64)),
        bars: HashMap::new(),
        orders: Vec::new(),
        closed: HashMap::new(),
        in_transit: Vec::new(),
        stored: None,
        stored_releases: HashSet::new(),
        released: HashMap::new(),
        last_release: None,
        zone_last: HashMap::new(),
        at_rate: Vec::new(),
        lag: 0,
        rate: s.rate,
        ended: false,
        counted: HashMap::new(),
        withdrawn: HashSet::new(),
        turned_away: HashSet::new(),
        deferred: HashSet::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever happens (orders in and out of its zones, pauses, cancels, new rates, policy
    /// bars, meters closing or deferring orders, outcomes late or lost in a restart): no
    /// release outside a window, over the rate or a zone's rate, into a barred zone, twice,
    /// unstored, or after a cancel or an expiry; withdrawals only of orders never released;
    /// the published counts exactly what the campaign was told; an active campaign with
    /// orders waiting always has a wake. Then, with the bars lifted and time enough, nothing
    /// is left waiting.
    #[test]
    fn the_campaign_machine_keeps_its_promises(
        s in setup(),
        script in proptest::collection::vec(env(), 1..80),
    ) {
        let mut w = world(&s);
        w.step(Input::Start);
        for e in script {
            w.run(e);
        }
        w.bars.clear();
        w.run(Env::Deliver);
        w.run(Env::Resume);
        for _ in 0..500 {
            w.run(Env::Advance(3600));
            w.run(Env::Deliver);
        }
        prop_assert!(w.m.queue.is_empty(), "orders left waiting: {:?}", w.m);
        prop_assert_eq!(w.waiting(), 0);
        // No order is left held at its meter: those outside the zones were given back.
        for o in w.orders.iter().filter(|o| !w.campaign.in_zone_scope(&o.zone)) {
            prop_assert!(
                w.turned_away.contains(&o.order_id) || w.closed.contains_key(&o.order_id),
                "{} outside the zones and never withdrawn", o.order_id
            );
        }
        match w.m.record.status {
            CampaignStatus::Finished | CampaignStatus::Cancelled | CampaignStatus::Expired => {}
            CampaignStatus::Active => prop_assert!(
                w.orders.iter().all(|o| !w.campaign.in_zone_scope(&o.zone)),
                "still active with nothing waiting: {:?}", w.m
            ),
            CampaignStatus::Paused => prop_assert!(false, "still paused after a resume"),
        }
    }
}
