//! Policy before power, at the level of the meter machine: the machine and the rule engine
//! together, driven by random rule packs, protections, weather series, emergencies, approvals,
//! payments, certificates and arrival orders over three weeks. Every disconnect command the
//! machine issues is checked against an independent oracle written from the rules' text; plus
//! scenarios for release on a fact change, approval, payment and the restore obligation.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use proptest::prelude::*;

use super::*;
use crate::domain::{CommandOutcome, CommandResult, Order, OrderKind, ReasonCode};
use crate::facts::{Approval, ApprovalDecision, Certificate, MeterFact, Payment};
use crate::policy::{
    Day, Emergency, Forecast, Protection, RulePack, WeatherRule, BASELINE_PROTECTIONS,
};

const TZ: &str = "America/New_York";
const ZONE: &str = "z1";

fn retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        backoff_initial: Duration::from_secs(10),
        backoff_max: Duration::from_secs(60),
        command_deadline: Duration::from_secs(30),
    }
}

fn start() -> Timestamp {
    // Tuesday 2026-12-01 00:00 New York.
    "2026-12-01T05:00:00Z".parse().unwrap()
}

fn disconnect(id: &str, reason: ReasonCode, notice: Option<Timestamp>, due: f64) -> Order {
    Order {
        order_id: id.into(),
        kind: OrderKind::Disconnect,
        reason,
        meter_id: "M".into(),
        service_point_id: None,
        account_id: Some("A-1".into()),
        priority: 5,
        earliest_at: None,
        latest_at: None,
        notice_sent_at: notice,
        campaign_id: None,
        target_order_id: None,
        linked_order_id: None,
        linked_meter_id: None,
        notes: None,
        created_at: None,
        amount_due: Some(due),
    }
}

fn reconnect(id: &str) -> Order {
    Order {
        kind: OrderKind::Reconnect,
        reason: ReasonCode::PaymentReceived,
        ..disconnect(id, ReasonCode::PaymentReceived, None, 0.0)
    }
}

fn confirm(c: &Command, at: Timestamp) -> Input {
    Input::Result(CommandResult {
        schema_version: 1,
        command_id: c.command_id.clone(),
        meter_id: c.meter_id.clone(),
        at,
        outcome: CommandOutcome::Confirmed {
            load_side_voltage: None,
            switch_state: c.kind.target_state().unwrap_or(SwitchState::Connected),
            register_kwh: None,
        },
    })
}

const DAYS: [Day; 7] = [
    Day::Monday,
    Day::Tuesday,
    Day::Wednesday,
    Day::Thursday,
    Day::Friday,
    Day::Saturday,
    Day::Sunday,
];

fn pack_strategy() -> impl Strategy<Value = RulePack> {
    (
        proptest::collection::vec(any::<bool>(), 7),
        proptest::collection::vec(0u8..21, 0..4),
        any::<bool>(),
        proptest::option::of(0u32..20),
        proptest::option::of(prop_oneof![Just(0u32), 4..16u32]),
        proptest::collection::vec(proptest::option::of((6u8..11, 13u8..19)), 7),
        (0u32..96, 20i8..40, 85u8..100),
        proptest::option::of(0u32..40),
        proptest::collection::vec(0usize..5, 0..3),
        (
            proptest::bool::weighted(0.25),
            proptest::option::weighted(0.3, any::<bool>()),
        ),
    )
        .prop_map(
            |(
                barred,
                hol,
                before,
                emerg,
                notice,
                windows,
                (wh, lo, hi),
                minbal,
                approvals,
                (rf, limit),
            )| {
                RulePack {
                    jurisdiction: "prop".into(),
                    version: "1".into(),
                    time_zone: TZ.into(),
                    barred_weekdays: DAYS
                        .iter()
                        .zip(barred)
                        .filter(|(_, b)| *b)
                        .map(|(d, _)| *d)
                        .filter(|d| *d == Day::Sunday || *d == Day::Saturday || *d == Day::Friday)
                        .collect(),
                    bar_holidays: true,
                    bar_day_before_holiday: before,
                    emergency_extension_days: emerg,
                    holidays: hol
                        .iter()
                        .map(|d| {
                            Date::constant(2026, 12, 1)
                                .checked_add(jiff::Span::new().days(*d as i64))
                                .unwrap()
                        })
                        .collect(),
                    min_balance_for_non_payment: minbal.map(|m| m as f64),
                    approval_required_for: approvals.iter().map(|i| Protection::ALL[*i]).collect(),
                    notice_days: notice
                        .map(|n| BTreeMap::from([("non_payment".to_string(), n)]))
                        .unwrap_or_default(),
                    weather: vec![WeatherRule {
                        name: "cold_or_hot".into(),
                        window_hours: wh,
                        low_at_or_below_f: Some(lo as f64),
                        high_at_or_above_f: Some(hi as f64),
                        day_before_and_of: false,
                    }],
                    require_forecast: rf,
                    business_windows: if windows.iter().all(|w| w.is_none()) {
                        BTreeMap::new()
                    } else {
                        DAYS.iter()
                            .zip(windows)
                            .filter_map(|(d, w)| {
                                w.map(|(s, e)| (*d, [format!("{s:02}:00"), format!("{e:02}:00")]))
                            })
                            .collect()
                    },
                    // A demand limit instead of the cut: held to every rule all the same.
                    load_limit: limit.map(|full_cut| crate::policy::LoadLimit {
                        demand_kw: 2.0,
                        reasons: vec![ReasonCode::NonPayment],
                        unsupported: if full_cut {
                            crate::policy::Unsupported::Disconnect
                        } else {
                            crate::policy::Unsupported::AwaitApproval
                        },
                    }),
                }
            },
        )
}

#[derive(Debug, Clone)]
enum Ev {
    /// A disconnect: non-payment?, notice sent this many hours before, amount due.
    Disconnect(bool, i64, u8),
    Reconnect,
    /// A forecast for day offset (0..21) with low / high.
    Weather(u8, i8, u8),
    Emergency(bool),
    Approve(u8),
    Reject(u8),
    Pay(u8),
    /// A certificate of protection index valid for this many hours.
    Certificate(usize, i64),
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => (any::<bool>(), 0i64..600, 0u8..100).prop_map(|(n, h, a)| Ev::Disconnect(n, h, a)),
        1 => Just(Ev::Reconnect),
        4 => (0u8..21, 10i8..60, 60u8..100).prop_map(|(d, l, h)| Ev::Weather(d, l, h)),
        1 => any::<bool>().prop_map(Ev::Emergency),
        2 => (0u8..8).prop_map(Ev::Approve),
        1 => (0u8..8).prop_map(Ev::Reject),
        1 => (0u8..8).prop_map(Ev::Pay),
        1 => (0usize..5, 1i64..400).prop_map(|(p, h)| Ev::Certificate(p, h)),
    ]
}

/// The rules, written again from their text, as the oracle for every disconnect command.
struct Oracle {
    pack: RulePack,
    tz: TimeZone,
    registry: MeterFlags,
}

impl Oracle {
    fn violations(&self, o: &Order, now: Timestamp, w: &World) -> Vec<String> {
        let mut v = Vec::new();
        let mut flags = self.registry;
        for c in &w.certs {
            if c.valid_at(now) {
                flags.set(c.protection.flag(), true);
            }
        }
        let mut needs: Vec<Protection> = self
            .pack
            .approval_required_for
            .iter()
            .copied()
            .filter(|p| flags.contains(p.flag()))
            .collect();
        if o.reason == ReasonCode::NonPayment {
            needs.extend(
                BASELINE_PROTECTIONS
                    .into_iter()
                    .filter(|p| flags.contains(p.flag())),
            );
        }
        // An approval covers the protections the meter had when it was given.
        let covered = w
            .approved
            .get(&o.order_id)
            .is_some_and(|at_approval| needs.iter().all(|p| at_approval.contains(p.flag())));
        if !needs.is_empty() && !covered {
            v.push(format!(
                "protected {needs:?} without an approval covering it"
            ));
        }
        if w.paid.contains(&o.order_id) && o.reason == ReasonCode::NonPayment {
            v.push("paid before dispatch".into());
        }
        if o.reason == ReasonCode::NonPayment {
            if let (Some(min), Some(due)) = (self.pack.min_balance_for_non_payment, o.amount_due) {
                if due <= min {
                    v.push("balance at or below the minimum".into());
                }
            }
        }
        if let Some(days) = self.pack.notice_days.get("non_payment") {
            if o.reason == ReasonCode::NonPayment {
                match o.notice_sent_at {
                    None => v.push("no notice".into()),
                    Some(s) => {
                        if now
                            < s.checked_add(jiff::SignedDuration::from_hours(24 * *days as i64))
                                .unwrap()
                        {
                            v.push("notice period not over".into());
                        }
                    }
                }
            }
        }
        let z = now.to_zoned_datetime(self.tz.clone());
        let day = z.date();
        let wd = DAYS[day.weekday().to_monday_zero_offset() as usize];
        if self.pack.barred_weekdays.contains(&wd) {
            v.push(format!("barred weekday {wd:?}"));
        }
        if self.pack.holidays.contains(&day) {
            v.push("holiday".into());
        }
        if self.pack.bar_day_before_holiday && self.pack.holidays.contains(&day.tomorrow().unwrap())
        {
            v.push("day before a holiday".into());
        }
        if !self.pack.business_windows.is_empty() {
            match self.pack.business_windows.get(&wd) {
                None => v.push("no window that day".into()),
                Some([s, e]) => {
                    let (s, e): (Time, Time) = (s.parse().unwrap(), e.parse().unwrap());
                    if z.time() < s || z.time() >= e {
                        v.push(format!("outside the window {s}-{e}"));
                    }
                }
            }
        }
        for r in &self.pack.weather {
            let last = now
                .checked_add(jiff::SignedDuration::from_hours(r.window_hours as i64))
                .unwrap()
                .to_zoned_datetime(self.tz.clone())
                .date();
            if self.pack.require_forecast {
                let mut d = day;
                while d <= last {
                    if !w.forecasts.iter().any(|f| f.date == d) {
                        v.push(format!("no forecast for {d} (required)"));
                    }
                    d = d.tomorrow().unwrap();
                }
            }
            for f in &*w.forecasts {
                let extreme = r.low_at_or_below_f.is_some_and(|t| f.low_f <= t)
                    || r.high_at_or_above_f.is_some_and(|t| f.high_f >= t);
                if extreme && f.date >= day && f.date <= last {
                    v.push(format!("weather moratorium {f:?}"));
                }
            }
        }
        // Suspended during any declared emergency, and for the pack's extension after it.
        {
            let ext = self.pack.emergency_extension_days.unwrap_or(0);
            for e in &*w.emergencies {
                let over = e.ended_at.map(|x| {
                    x.checked_add(jiff::SignedDuration::from_hours(24 * ext as i64))
                        .unwrap()
                });
                if e.declared_at <= now && over.is_none_or(|x| now < x) {
                    v.push("declared emergency".into());
                }
            }
        }
        v
    }
}

#[derive(Default)]
struct World {
    forecasts: Arc<Vec<Forecast>>,
    emergencies: Arc<Vec<Emergency>>,
    /// Order → the meter's protections when it was approved.
    approved: std::collections::HashMap<String, MeterFlags>,
    paid: HashSet<String>,
    certs: Vec<Certificate>,
}

fn facts_of(w: &World, policy: &Arc<Policy>, flags: MeterFlags) -> MeterFacts {
    MeterFacts {
        known: true,
        draining: false,
        has_switch: true,
        head_end_id: "HE".into(),
        zone: ZONE.into(),
        flags: {
            let mut f = flags;
            f.set(MeterFlags::HAS_SWITCH, true);
            f
        },
        policy: policy.clone(),
        forecasts: w.forecasts.clone(),
        emergencies: w.emergencies.clone(),
        reads: Arc::default(),
        head_end: Default::default(),
    }
}

/// Runs a script; returns (disconnect commands issued, violations found).
fn run(pack: RulePack, registry_bits: u8, script: Vec<(u32, Ev)>) -> (usize, Vec<String>) {
    let policy = Arc::new(RulePack::from_toml(&toml::to_string(&pack).unwrap(), "prop").unwrap());
    let registry = {
        let mut f = MeterFlags::empty();
        for (i, p) in Protection::ALL.iter().enumerate() {
            f.set(p.flag(), registry_bits & (1 << i) != 0);
        }
        f
    };
    let oracle = Oracle {
        tz: TimeZone::get(TZ).unwrap(),
        pack,
        registry,
    };
    let mut w = World::default();
    let mut m = MeterMachine::new("M");
    m.switch = SwitchState::Connected;
    let mut orders: BTreeMap<String, Order> = BTreeMap::new();
    let mut n_orders = 0u32;
    let mut wake: Option<Timestamp> = None;
    let mut answer: Option<(Timestamp, Command)> = None;
    let mut violations = Vec::new();
    let mut sent = 0usize;
    let mut t = start();
    let mut script = script.into_iter().peekable();
    let end = start()
        .checked_add(jiff::SignedDuration::from_hours(24 * 24))
        .unwrap();
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps < 20_000, "runaway");
        // The next thing to happen: a scripted event, the wake timer or the head-end's answer.
        let next_ev = script.peek().map(|(dt, _)| {
            t.checked_add(jiff::SignedDuration::from_mins(*dt as i64))
                .unwrap()
        });
        let candidates = [next_ev, wake, answer.as_ref().map(|(a, _)| *a)];
        let Some(now) = candidates.iter().flatten().min().copied() else {
            break;
        };
        if now > end {
            break;
        }
        t = now.max(t);
        let input = if answer.as_ref().is_some_and(|(a, _)| *a == now) {
            let (_, c) = answer.take().unwrap();
            confirm(&c, now)
        } else if wake == Some(now) {
            wake = None;
            Input::Wake
        } else {
            let (_, e) = script.next().unwrap();
            let id = |i: u8| format!("SO-{}", i as u32 % n_orders.max(1));
            match e {
                Ev::Disconnect(np, h, due) => {
                    let oid = format!("SO-{n_orders}");
                    n_orders += 1;
                    let reason = if np {
                        ReasonCode::NonPayment
                    } else {
                        ReasonCode::Tampering
                    };
                    let notice = (h > 0).then(|| {
                        now.checked_sub(jiff::SignedDuration::from_hours(h))
                            .unwrap()
                    });
                    let o = disconnect(&oid, reason, notice, due as f64);
                    orders.insert(oid, o.clone());
                    Input::Order(o)
                }
                Ev::Reconnect => {
                    let oid = format!("RC-{n_orders}");
                    n_orders += 1;
                    Input::Order(reconnect(&oid))
                }
                Ev::Weather(d, lo, hi) => {
                    let date = Date::constant(2026, 12, 1)
                        .checked_add(jiff::Span::new().days(d as i64))
                        .unwrap();
                    let v = Arc::make_mut(&mut w.forecasts);
                    v.retain(|f| f.date != date);
                    v.push(Forecast {
                        zone: ZONE.into(),
                        date,
                        low_f: lo as f64,
                        high_f: hi as f64,
                    });
                    Input::Wake
                }
                Ev::Emergency(declare) => {
                    let v = Arc::make_mut(&mut w.emergencies);
                    if declare || v.is_empty() {
                        v.push(Emergency {
                            declared_at: now,
                            ended_at: None,
                            zones: vec![],
                        });
                    } else {
                        for e in v.iter_mut() {
                            e.ended_at.get_or_insert(now);
                        }
                    }
                    Input::Wake
                }
                Ev::Approve(i) | Ev::Reject(i) => {
                    let approve = matches!(e, Ev::Approve(_));
                    let oid = id(i);
                    if approve {
                        let mut f = registry;
                        for c in &w.certs {
                            if c.valid_at(now) {
                                f.set(c.protection.flag(), true);
                            }
                        }
                        w.approved.insert(oid.clone(), f);
                    }
                    Input::Fact(MeterFact::Approval(Approval {
                        schema_version: 1,
                        fact_id: format!("AP-{oid}"),
                        meter_id: "M".into(),
                        order_id: oid,
                        decision: if approve {
                            ApprovalDecision::Approve
                        } else {
                            ApprovalDecision::Reject
                        },
                        by: "supervisor".into(),
                        note: None,
                        at: now,
                    }))
                }
                Ev::Pay(i) => {
                    let oid = id(i);
                    w.paid.insert(oid.clone());
                    Input::Fact(MeterFact::Payment(Payment {
                        schema_version: 1,
                        fact_id: format!("PAY-{oid}"),
                        meter_id: "M".into(),
                        account_id: Some("A-1".into()),
                        order_id: Some(oid),
                        amount: 10.0,
                        paid_at: now,
                    }))
                }
                Ev::Certificate(p, h) => {
                    let c = Certificate {
                        schema_version: 1,
                        fact_id: format!("C-{steps}"),
                        meter_id: "M".into(),
                        protection: Protection::ALL[p],
                        valid_from: None,
                        expires_at: now
                            .checked_add(jiff::SignedDuration::from_hours(h))
                            .unwrap(),
                    };
                    w.certs.push(c.clone());
                    Input::Fact(MeterFact::MedicalCertificate(c))
                }
            }
        };
        let mut facts = facts_of(&w, &policy, registry);
        // Bit 7: the meter's head-end can set a demand limit.
        facts.head_end.can_limit_load = registry_bits & 0x80 != 0;
        let actions = m.step(input, now, &facts, &retry());
        for a in &actions {
            match a {
                Action::Dispatch(c) => {
                    if matches!(c.kind, CommandKind::Disconnect | CommandKind::LoadLimit) {
                        sent += 1;
                        let o = &orders[&c.order_id];
                        for why in oracle.violations(o, now, &w) {
                            violations.push(format!("{} at {now}: {why}", c.command_id));
                        }
                    }
                    answer = Some((
                        now.checked_add(jiff::SignedDuration::from_secs(1)).unwrap(),
                        Command::clone(c),
                    ));
                }
                Action::WakeAt(at) => wake = Some(*at),
                _ => {}
            }
        }
        // The actor keeps its timer until a new one replaces it; a past one fires now.
        if let Some(wt) = wake {
            if wt < now {
                wake = Some(now.checked_add(jiff::SignedDuration::from_secs(1)).unwrap());
            }
        }
    }
    (sent, violations)
}

/// No disconnect command is ever issued for a protected meter without approval, during a
/// moratorium or emergency, outside a window, on a barred day, before the notice period ends,
/// for a balance under the minimum, or after a payment for the order arrived. Also checks that
/// the runs did issue commands (a property that holds because nothing is sent proves nothing).
#[test]
fn no_disconnect_command_breaks_a_rule() {
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config {
        cases: 512,
        ..Config::default()
    });
    let sent_total = std::cell::Cell::new(0usize);
    let strategy = (
        pack_strategy(),
        prop_oneof![3 => Just(0u8), 1 => 0u8..32, 1 => 0x80u8..0xa0],
        proptest::collection::vec((0u32..2000, ev()), 1..60),
    );
    runner
        .run(&strategy, |(pack, registry_bits, script)| {
            let (sent, violations) = run(pack, registry_bits, script);
            sent_total.set(sent_total.get() + sent);
            prop_assert!(violations.is_empty(), "{violations:#?}");
            Ok(())
        })
        .unwrap();
    eprintln!(
        "disconnect commands sent over the runs: {}",
        sent_total.get()
    );
    assert!(
        sent_total.get() > 200,
        "only {} disconnect commands in 512 runs: the generator no longer exercises sending",
        sent_total.get()
    );
}

/// The property above must not pass because nothing is ever sent: with permissive rules the
/// same harness issues commands.
#[test]
fn the_harness_does_send_when_the_rules_allow() {
    let pack = RulePack {
        jurisdiction: "open".into(),
        version: "1".into(),
        time_zone: TZ.into(),
        barred_weekdays: vec![],
        bar_holidays: false,
        bar_day_before_holiday: false,
        emergency_extension_days: None,
        holidays: vec![],
        min_balance_for_non_payment: None,
        approval_required_for: vec![],
        notice_days: BTreeMap::new(),
        weather: vec![],
        require_forecast: false,
        business_windows: BTreeMap::new(),
        load_limit: None,
    };
    let script = vec![
        (10, Ev::Disconnect(true, 0, 50)),
        (10, Ev::Reconnect),
        (10, Ev::Disconnect(true, 0, 50)),
    ];
    let (sent, violations) = run(pack, 0, script);
    assert!(violations.is_empty());
    assert_eq!(sent, 2);
}

fn va() -> Arc<Policy> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/rules/virginia.toml"
    ))
    .unwrap();
    Arc::new(RulePack::from_toml(&text, "virginia.toml").unwrap())
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn events(actions: &[Action]) -> Vec<(String, OrderStatus, Option<String>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(e) => Some((e.order_id.clone(), e.status, e.reason.clone())),
            _ => None,
        })
        .collect()
}

/// The verdicts the step reports for the decision metric (one per audited decision).
fn decided(actions: &[Action]) -> Vec<crate::domain::VerdictKind> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Decided(v) => Some(*v),
            _ => None,
        })
        .collect()
}

fn commands(actions: &[Action]) -> Vec<Command> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Dispatch(c) => Some(Command::clone(c)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_cold_snap_defers_and_its_end_releases_the_order_at_once() {
    let policy = va();
    let mut w = World::default();
    // Wednesday 2026-12-02 10:00 New York; notice sent 20 days before.
    let now = ts("2026-12-02T15:00:00Z");
    Arc::make_mut(&mut w.forecasts).push(Forecast {
        zone: ZONE.into(),
        date: "2026-12-02".parse().unwrap(),
        low_f: 25.0,
        high_f: 38.0,
    });
    let mut m = MeterMachine::new("M");
    m.switch = SwitchState::Connected;
    let o = disconnect(
        "SO-1",
        ReasonCode::NonPayment,
        Some(ts("2026-11-12T15:00:00Z")),
        300.0,
    );
    let a = m.step(
        Input::Order(o),
        now,
        &facts_of(&w, &policy, MeterFlags::empty()),
        &retry(),
    );
    assert!(commands(&a).is_empty());
    let ev = events(&a);
    assert_eq!(ev.last().unwrap().1, OrderStatus::Deferred);
    assert_eq!(
        ev.last().unwrap().2.as_deref(),
        Some("va_forecast_cold_or_hot_24h")
    );
    let decision = a
        .iter()
        .find_map(|x| match x {
            Action::Event(e) => e.policy.clone(),
            _ => None,
        })
        .unwrap();
    assert_eq!(decision.pack, "virginia@2026.1");
    assert_eq!(decision.inputs.forecasts_known, 1);
    assert_eq!(decided(&a), [crate::domain::VerdictKind::Deferred]);
    assert!(m.holds_on_zone_facts());
    // The same facts again: no new event (held orders are re-decided quietly).
    let a = m.step(
        Input::Wake,
        now,
        &facts_of(&w, &policy, MeterFlags::empty()),
        &retry(),
    );
    assert!(events(&a).is_empty() && commands(&a).is_empty());
    assert!(
        decided(&a).is_empty(),
        "a quiet re-decision is not counted again"
    );
    // A warmer forecast for the day replaces the cold one: released at once.
    let later = ts("2026-12-02T16:00:00Z");
    Arc::make_mut(&mut w.forecasts)[0].low_f = 40.0;
    let a = m.step(
        Input::Wake,
        later,
        &facts_of(&w, &policy, MeterFlags::empty()),
        &retry(),
    );
    let c = commands(&a);
    assert_eq!(c.len(), 1, "{a:#?}");
    assert_eq!(c[0].kind, CommandKind::Disconnect);
    assert_eq!(decided(&a), [crate::domain::VerdictKind::Execute]);
    assert!(!m.holds_on_zone_facts());
}

#[test]
fn a_life_support_meter_waits_for_an_approval_and_a_rejection_closes_it() {
    let policy = va();
    let w = World::default();
    let now = ts("2026-12-02T15:00:00Z");
    let facts = facts_of(&w, &policy, MeterFlags::LIFE_SUPPORT);
    let mut m = MeterMachine::new("M");
    m.switch = SwitchState::Connected;
    for id in ["SO-1", "SO-2"] {
        let o = disconnect(
            id,
            ReasonCode::NonPayment,
            Some(ts("2026-11-12T15:00:00Z")),
            300.0,
        );
        let a = m.step(Input::Order(o), now, &facts, &retry());
        assert!(commands(&a).is_empty());
        assert_eq!(events(&a).last().unwrap().1, OrderStatus::AwaitingApproval);
    }
    assert!(
        !m.holds_on_zone_facts(),
        "a person, not the weather, releases these"
    );
    let approval = |id: &str, d| {
        Input::Fact(MeterFact::Approval(Approval {
            schema_version: 1,
            fact_id: format!("AP-{id}"),
            meter_id: "M".into(),
            order_id: id.into(),
            decision: d,
            by: "supervisor7".into(),
            note: Some("medical equipment on battery; customer agreed".into()),
            at: now,
        }))
    };
    let a = m.step(
        approval("SO-2", ApprovalDecision::Reject),
        now,
        &facts,
        &retry(),
    );
    assert_eq!(
        events(&a),
        vec![(
            "SO-2".to_string(),
            OrderStatus::Rejected,
            Some("approval_denied".into())
        )]
    );
    let a = m.step(
        approval("SO-1", ApprovalDecision::Approve),
        now,
        &facts,
        &retry(),
    );
    let c = commands(&a);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].order_id, "SO-1");
}

#[test]
fn a_payment_before_dispatch_withdraws_the_disconnect_and_one_after_cannot_recall_it() {
    let policy = Arc::new(Policy::baseline());
    let w = World::default();
    let facts = facts_of(&w, &policy, MeterFlags::empty());
    let now = ts("2026-12-02T15:00:00Z");
    let pay = |order: &str| {
        Input::Fact(MeterFact::Payment(Payment {
            schema_version: 1,
            fact_id: format!("PAY-{order}"),
            meter_id: "M".into(),
            account_id: Some("A-1".into()),
            order_id: Some(order.into()),
            amount: 120.0,
            paid_at: now,
        }))
    };
    let mut m = MeterMachine::new("M");
    m.switch = SwitchState::Connected;
    // A read keeps the meter busy, so SO-1 is still pending when the payment arrives.
    let mut read = disconnect("RD-1", ReasonCode::Other, None, 0.0);
    read.kind = OrderKind::Read;
    let a = m.step(Input::Order(read), now, &facts, &retry());
    let rd = commands(&a).remove(0);
    m.step(
        Input::Order(disconnect("SO-1", ReasonCode::NonPayment, None, 80.0)),
        now,
        &facts,
        &retry(),
    );
    let a = m.step(pay("SO-1"), now, &facts, &retry());
    assert_eq!(
        events(&a),
        vec![(
            "SO-1".to_string(),
            OrderStatus::Cancelled,
            Some("payment_received".into())
        )]
    );
    let a = m.step(confirm(&rd, now), now, &facts, &retry());
    assert!(
        commands(&a).is_empty(),
        "no disconnect after the payment: {a:#?}"
    );
    // Dispatched first, paid after: the command cannot be recalled, it is never retried.
    let a = m.step(
        Input::Order(disconnect("SO-2", ReasonCode::NonPayment, None, 80.0)),
        now,
        &facts,
        &retry(),
    );
    let c = commands(&a).remove(0);
    m.step(pay("SO-2"), now, &facts, &retry());
    let a = m.step(
        Input::Result(CommandResult {
            schema_version: 1,
            command_id: c.command_id.clone(),
            meter_id: "M".into(),
            at: now,
            outcome: CommandOutcome::Failed {
                code: crate::domain::FailureCode::NetworkTimeout,
                detail: None,
            },
        }),
        now,
        &facts,
        &retry(),
    );
    assert!(commands(&a).is_empty());
    assert_eq!(
        events(&a).last().unwrap().2.as_deref(),
        Some("payment_received")
    );
}

#[test]
fn a_certificate_after_a_non_payment_cut_raises_a_reconnect_once() {
    let policy = Arc::new(Policy::baseline());
    let w = World::default();
    let facts = facts_of(&w, &policy, MeterFlags::empty());
    let now = ts("2026-12-02T15:00:00Z");
    let mut m = MeterMachine::new("M");
    m.switch = SwitchState::Connected;
    let a = m.step(
        Input::Order(disconnect("SO-1", ReasonCode::NonPayment, None, 80.0)),
        now,
        &facts,
        &retry(),
    );
    let c = commands(&a).remove(0);
    m.step(confirm(&c, now), now, &facts, &retry());
    assert_eq!(m.switch, SwitchState::Disconnected);
    let cert = Certificate {
        schema_version: 1,
        fact_id: "C-1".into(),
        meter_id: "M".into(),
        protection: Protection::Medical,
        valid_from: None,
        expires_at: ts("2027-03-01T00:00:00Z"),
    };
    let a = m.step(
        Input::Fact(MeterFact::MedicalCertificate(cert.clone())),
        now,
        &facts,
        &retry(),
    );
    let new: Vec<_> = a
        .iter()
        .filter_map(|x| match x {
            Action::NewOrder(r) => Some(r.order.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].reason, ReasonCode::RestoreObligation);
    let c = commands(&a);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].kind, CommandKind::Connect);
    // The same certificate again (a replay) raises nothing more.
    let a = m.step(
        Input::Fact(MeterFact::MedicalCertificate(cert)),
        now,
        &facts,
        &retry(),
    );
    assert!(a.iter().all(|x| !matches!(x, Action::NewOrder(_))));
}

#[test]
fn an_approval_covers_only_the_protections_known_when_it_was_given() {
    let policy = va();
    let w = World::default();
    let now = ts("2026-12-02T15:00:00Z");
    // A VIP meter: approved by a supervisor ...
    let facts = facts_of(&w, &policy, MeterFlags::VIP);
    let mut m = MeterMachine::new("M");
    m.switch = SwitchState::Connected;
    // ... while a read keeps the meter busy, so the disconnect is still pending afterwards.
    let mut read = disconnect("RD-1", ReasonCode::Other, None, 0.0);
    read.kind = OrderKind::Read;
    let rd = commands(&m.step(Input::Order(read), now, &facts, &retry())).remove(0);
    let o = disconnect(
        "SO-1",
        ReasonCode::NonPayment,
        Some(ts("2026-11-12T15:00:00Z")),
        300.0,
    );
    m.step(Input::Order(o), now, &facts, &retry());
    m.step(
        Input::Fact(MeterFact::Approval(Approval {
            schema_version: 1,
            fact_id: "AP-1".into(),
            meter_id: "M".into(),
            order_id: "SO-1".into(),
            decision: ApprovalDecision::Approve,
            by: "supervisor7".into(),
            note: None,
            at: now,
        })),
        now,
        &facts,
        &retry(),
    );
    // Then a life-support certificate arrives: the VIP approval does not cover it.
    let cert = Certificate {
        schema_version: 1,
        fact_id: "C-1".into(),
        meter_id: "M".into(),
        protection: Protection::LifeSupport,
        valid_from: None,
        expires_at: ts("2027-03-01T00:00:00Z"),
    };
    m.step(
        Input::Fact(MeterFact::MedicalCertificate(cert)),
        now,
        &facts,
        &retry(),
    );
    let a = m.step(confirm(&rd, now), now, &facts, &retry());
    assert!(commands(&a).is_empty(), "{a:#?}");
    assert_eq!(events(&a).last().unwrap().1, OrderStatus::AwaitingApproval);
}
