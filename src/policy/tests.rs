//! Scenario tests per shipped rule pack, bad-pack errors, and a property test: whenever the
//! policy says "execute" a disconnect, an independent check of every rule agrees, and a
//! deferral names a time at which the same policy would execute it.

use jiff::civil::Date;
use proptest::prelude::*;

use super::*;

fn pack(name: &str) -> Policy {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/rules")
        .join(name);
    RulePack::from_toml(&std::fs::read_to_string(&path).unwrap(), name).unwrap()
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn disconnect(amount: f64, notice: &str) -> Order {
    let v = serde_json::json!({"schema_version":1,"order_id":"SO-1","kind":"disconnect","reason":"non_payment","meter_id":"M-1","amount_due":amount,"notice_sent_at":notice});
    crate::domain::validate_order(
        Some(b"M-1"),
        Some(&serde_json::to_vec(&v).unwrap()),
        |_| true,
        ts("2030-01-01T00:00:00Z"),
    )
    .unwrap()
}

fn fc(zone: &str, date: &str, low: f64, high: f64) -> Forecast {
    Forecast {
        zone: zone.into(),
        date: date.parse().unwrap(),
        low_f: low,
        high_f: high,
    }
}

fn facts<'a>(forecasts: &'a [Forecast]) -> Facts<'a> {
    Facts {
        zone: "z",
        forecasts,
        emergencies: &[],
        approved: false,
        can_limit_load: false,
    }
}

#[test]
fn every_shipped_pack_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rules");
    let packs = load_dir(&dir).unwrap();
    assert_eq!(packs.len(), 3);
}

#[test]
fn virginia_cold_week_defers_until_the_cold_passes() {
    let va = pack("virginia.toml");
    let o = disconnect(300.0, "2026-11-01T12:00:00Z");
    // Tuesday 2026-12-01 10:00 New York; lows of 28 F Tue and Wed.
    let now = ts("2026-12-01T15:00:00Z");
    let f = [
        fc("z", "2026-12-01", 28.0, 40.0),
        fc("z", "2026-12-02", 30.0, 41.0),
        fc("z", "2026-12-03", 40.0, 50.0),
    ];
    let d = va.decide(&o, MeterFlags::empty(), now, &facts(&f));
    assert_eq!(d.rules[0].rule, "va_forecast_cold_or_hot_24h");
    // Thursday 08:00 local is the first allowed time (Thu forecast mild; Fri barred anyway).
    assert_eq!(
        d.verdict,
        Verdict::Defer {
            until: Some(ts("2026-12-03T13:00:00Z"))
        }
    );
    assert_eq!(d.pack, "virginia@2026.1");
    // Without the cold, it runs now.
    assert_eq!(
        va.decide(&o, MeterFlags::empty(), now, &facts(&[])).verdict,
        Verdict::Execute
    );
}

#[test]
fn virginia_bars_fridays_and_the_day_before_a_holiday() {
    let va = pack("virginia.toml");
    let o = disconnect(300.0, "2026-11-01T12:00:00Z");
    // Wednesday 2026-11-25 is the day before Thanksgiving (2026-11-26); Friday follows.
    let d = va.decide(
        &o,
        MeterFlags::empty(),
        ts("2026-11-25T15:00:00Z"),
        &facts(&[]),
    );
    assert_eq!(d.rules[0].rule, "day_before_holiday");
    assert_eq!(
        d.verdict,
        Verdict::Defer {
            until: Some(ts("2026-11-30T13:00:00Z"))
        },
        "next Monday 08:00"
    );
}

#[test]
fn maryland_heat_wave_and_small_balances() {
    let md = pack("maryland.toml");
    let now = ts("2027-07-13T14:00:00Z"); // Tuesday 10:00 EDT
    let f = [fc("z", "2027-07-15", 75.0, 97.0)];
    let d = md.decide(
        &disconnect(500.0, "2027-06-01T12:00:00Z"),
        MeterFlags::empty(),
        now,
        &facts(&f),
    );
    assert_eq!(
        d.rules[0].rule, "md_forecast_32_95_72h",
        "a 97 F day within 72 h bars today"
    );
    assert!(
        matches!(d.verdict, Verdict::Defer { until: Some(u) } if u >= ts("2027-07-16T04:00:00Z"))
    );
    let d = md.decide(
        &disconnect(150.0, "2027-06-01T12:00:00Z"),
        MeterFlags::empty(),
        now,
        &facts(&[]),
    );
    assert_eq!(d.verdict, Verdict::Reject);
    assert_eq!(d.rules[0].rule, "minimum_balance");
}

#[test]
fn dc_heat_on_a_friday_bars_thursday_through_the_weekend() {
    let dc = pack("district-of-columbia.toml");
    let o = disconnect(300.0, "2027-06-01T12:00:00Z");
    let f = [fc("z", "2027-07-16", 78.0, 96.0)]; // Friday
    let thursday = ts("2027-07-15T14:00:00Z");
    let d = dc.decide(&o, MeterFlags::empty(), thursday, &facts(&f));
    assert_eq!(d.rules[0].rule, "dc_forecast_day_before_and_of");
    assert_eq!(
        d.verdict,
        Verdict::Defer {
            until: Some(ts("2027-07-19T12:00:00Z"))
        },
        "Monday 08:00 EDT"
    );
}

/// A move-out is a disconnect under the premise's safety rules (protections, weather,
/// windows) but not under the debtor's (notice, minimum balance), and its decision says so.
#[test]
fn a_move_out_is_decided_as_a_move_and_says_so() {
    let md = pack("maryland.toml");
    let v = serde_json::json!({"schema_version":1,"order_id":"OUT-1","kind":"move_out","reason":"move",
        "meter_id":"M-1","earliest_at":"2027-07-13T12:00:00Z","amount_due":10.0});
    let o = crate::domain::validate_order(
        Some(b"M-1"),
        Some(&serde_json::to_vec(&v).unwrap()),
        |_| true,
        ts("2027-07-01T00:00:00Z"),
    )
    .unwrap();
    let now = ts("2027-07-13T14:00:00Z"); // Tuesday 10:00 EDT
                                          // A non-payment disconnect of 10.00 with no notice is refused; the move-out runs.
    let debt = md.decide(
        &disconnect(10.0, "2027-07-12T12:00:00Z"),
        MeterFlags::empty(),
        now,
        &facts(&[]),
    );
    assert_eq!(debt.verdict, Verdict::Reject);
    let d = md.decide(&o, MeterFlags::empty(), now, &facts(&[]));
    assert_eq!(d.verdict, Verdict::Execute, "{d:?}");
    assert_eq!(d.first_rule(), "allowed");
    assert_eq!(d.rules.last().unwrap().rule, "move_out");
    assert!(d.details().contains("not a non-payment disconnect"));
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["inputs"]["kind"], "move_out");
    assert_eq!(json["inputs"]["reason"], "move");
    // The premise's rules still hold it: heat, and a life-support flag.
    let hot = [fc("z", "2027-07-15", 75.0, 97.0)];
    let d = md.decide(&o, MeterFlags::empty(), now, &facts(&hot));
    assert!(matches!(d.verdict, Verdict::Defer { .. }));
    assert_eq!(d.first_rule(), "md_forecast_32_95_72h");
    let d = md.decide(&o, MeterFlags::LIFE_SUPPORT, now, &facts(&[]));
    assert_eq!(d.verdict, Verdict::AwaitApproval);
    assert_eq!(d.first_rule(), "approval_required");
}

#[test]
fn protected_meters_await_approval_and_reconnects_are_never_held() {
    let va = pack("virginia.toml");
    let o = disconnect(300.0, "2026-11-01T12:00:00Z");
    let now = ts("2026-12-01T15:00:00Z");
    let d = va.decide(&o, MeterFlags::LIFE_SUPPORT, now, &facts(&[]));
    assert_eq!(d.verdict, Verdict::AwaitApproval);
    let mut approved = facts(&[]);
    approved.approved = true;
    assert_eq!(
        va.decide(&o, MeterFlags::LIFE_SUPPORT, now, &approved)
            .verdict,
        Verdict::Execute
    );
    let mut r = o.clone();
    r.kind = OrderKind::Reconnect;
    let cold = [fc("z", "2026-12-01", 10.0, 20.0)];
    assert_eq!(
        va.decide(
            &r,
            MeterFlags::LIFE_SUPPORT,
            ts("2026-11-27T15:00:00Z"),
            &facts(&cold)
        )
        .verdict,
        Verdict::Execute
    );
}

#[test]
fn notice_period_and_emergencies_defer() {
    let va = pack("virginia.toml");
    let now = ts("2026-12-01T15:00:00Z");
    let d = va.decide(
        &disconnect(300.0, "2026-11-28T12:00:00Z"),
        MeterFlags::empty(),
        now,
        &facts(&[]),
    );
    assert_eq!(d.rules[0].rule, "notice_period");
    assert!(
        matches!(d.verdict, Verdict::Defer { until: Some(u) } if u >= ts("2026-12-08T12:00:00Z"))
    );
    let e = [Emergency {
        declared_at: ts("2026-11-20T00:00:00Z"),
        ended_at: Some(ts("2026-11-22T00:00:00Z")),
        zones: vec![],
    }];
    let f = Facts {
        zone: "z",
        forecasts: &[],
        emergencies: &e,
        approved: false,
        can_limit_load: false,
    };
    let d = va.decide(
        &disconnect(300.0, "2026-11-01T12:00:00Z"),
        MeterFlags::empty(),
        now,
        &f,
    );
    assert_eq!(d.rules[0].rule, "declared_emergency");
    assert!(
        matches!(d.verdict, Verdict::Defer { until: Some(u) } if u >= ts("2026-12-22T00:00:00Z"))
    );
}

#[test]
fn bad_packs_are_refused_with_the_key() {
    let base = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rules/virginia.toml"),
    )
    .unwrap();
    let cases = [
        (
            base.replace("America/New_York", "Mars/Olympus"),
            "time_zone",
        ),
        (
            base.replace(
                "monday = [\"08:00\", \"16:00\"]",
                "monday = [\"16:00\", \"08:00\"]",
            ),
            "business_windows.monday",
        ),
        (
            base.replace("low_at_or_below_f = 32.0\nhigh_at_or_above_f = 92.0", ""),
            "weather[0]",
        ),
        (
            base.replace("non_payment = 10", "non_paymnet = 10"),
            "notice_days.non_paymnet",
        ),
        (
            base.replace(
                "bar_holidays = true",
                "bar_holidays = true\nbar_holydays = true",
            ),
            "bar_holydays",
        ),
        (
            format!("{base}\n[load_limit]\ndemand_kw = 0.0\n"),
            "load_limit.demand_kw",
        ),
        (
            format!("{base}\n[load_limit]\ndemand_kw = 2.0\nreasons = []\n"),
            "load_limit.reasons",
        ),
        (
            format!("{base}\n[load_limit]\ndemand_kw = 2.0\nunsupported = \"skip\"\n"),
            "unsupported",
        ),
    ];
    for (text, key) in cases {
        let err = RulePack::from_toml(&text, "va").unwrap_err().to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn an_execute_is_allowed_by_every_rule_and_a_deferral_names_an_allowed_time(
        which in 0usize..3,
        minutes in 0i64..(60 * 24 * 120),
        lows in proptest::collection::vec(0.0f64..60.0, 130),
        highs in proptest::collection::vec(60.0f64..100.0, 130),
        flags in prop_oneof![3 => Just(0u8), 1 => 0u8..64],
        approved in any::<bool>(),
        notice_days_ago in 0i64..40,
        amount in 0.0f64..1000.0,
    ) {
        let p = pack(["virginia.toml", "maryland.toml", "district-of-columbia.toml"][which]);
        let start = ts("2026-11-01T00:00:00Z");
        let now = start + jiff::SignedDuration::from_mins(minutes);
        let first: Date = "2026-10-30".parse().unwrap();
        let forecasts: Vec<Forecast> = (0..130).map(|i| Forecast { zone: "z".into(), date: first.checked_add(jiff::Span::new().days(i as i64)).unwrap(), low_f: lows[i], high_f: highs[i] }).collect();
        let f = Facts { zone: "z", forecasts: &forecasts, emergencies: &[], approved, can_limit_load: false };
        let mut o = disconnect(amount, "2026-10-01T00:00:00Z");
        o.notice_sent_at = Some(now - jiff::SignedDuration::from_hours(24 * notice_days_ago));
        let mut mf = MeterFlags::empty();
        for (bit, flag) in [(1, MeterFlags::LIFE_SUPPORT), (2, MeterFlags::MEDICAL), (4, MeterFlags::CRITICAL_CARE), (8, MeterFlags::VIP), (16, MeterFlags::LEGAL_DISPUTE)] {
            mf.set(flag, flags & bit != 0);
        }
        let d = p.decide(&o, mf, now, &f);
        match d.verdict {
            Verdict::Execute => {
                // Independent restatement of the rules at `now`.
                prop_assert!(approved || !(mf.intersects(MeterFlags::LIFE_SUPPORT | MeterFlags::MEDICAL | MeterFlags::CRITICAL_CARE) || mf.contains(MeterFlags::VIP) || mf.contains(MeterFlags::LEGAL_DISPUTE)));
                if let Some(min) = p.pack.min_balance_for_non_payment { prop_assert!(amount > min); }
                let days = p.pack.notice_days.get("non_payment").copied().unwrap_or(0) as i64;
                prop_assert!(notice_days_ago >= days);
                let z = now.to_zoned_datetime(TimeZone::get(&p.pack.time_zone).unwrap());
                let day = Day::of(z.date());
                prop_assert!(!p.pack.barred_weekdays.contains(&day));
                prop_assert!(!p.pack.holidays.contains(&z.date()));
                let (s, e) = p.windows.get(&day).copied().expect("a window that day");
                prop_assert!(z.time() >= s && z.time() < e);
                for w in &p.pack.weather {
                    let horizon = (now + jiff::SignedDuration::from_hours(w.window_hours as i64)).to_zoned_datetime(TimeZone::get(&p.pack.time_zone).unwrap()).date();
                    for fc in forecasts.iter().filter(|fc| fc.date >= z.date() && fc.date <= horizon) {
                        prop_assert!(!p.extreme(w, fc), "executed into a moratorium: {fc:?}");
                    }
                    if w.day_before_and_of {
                        let tomorrow = z.date().tomorrow().unwrap();
                        for fc in forecasts.iter().filter(|fc| fc.date == tomorrow) {
                            prop_assert!(!p.extreme(w, fc), "executed the day before an extreme day");
                        }
                    }
                }
            }
            Verdict::Defer { until: Some(u) } => {
                prop_assert!(u > now);
                prop_assert_eq!(p.decide(&o, mf, u, &f).verdict, Verdict::Execute, "at {} the policy must allow it", u);
            }
            Verdict::Defer { until: None } | Verdict::AwaitApproval | Verdict::Reject => {}
        }
    }
}

#[test]
fn with_require_forecast_a_missing_forecast_defers_instead_of_allowing() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/rules/virginia.toml"
    ))
    .unwrap();
    let p = RulePack::from_toml(&format!("require_forecast = true\n{text}"), "va+require").unwrap();
    let o = disconnect(300.0, "2026-11-10T15:00:00Z");
    let now = ts("2026-12-02T15:00:00Z"); // Wednesday 10:00 New York
    let d = p.decide(&o, MeterFlags::empty(), now, &facts(&[]));
    assert_eq!(d.rules[0].rule, "forecast_missing");
    assert_eq!(d.verdict, Verdict::Defer { until: None });
    // Forecasts for today and tomorrow (the 24-hour window): allowed.
    let f = [
        fc("z", "2026-12-02", 40.0, 55.0),
        fc("z", "2026-12-03", 41.0, 56.0),
    ];
    assert_eq!(
        p.decide(&o, MeterFlags::empty(), now, &facts(&f)).verdict,
        Verdict::Execute
    );
    // An overlay cannot lift it.
    let e = p
        .tightened_by("require_forecast = false\n", "o.toml")
        .unwrap_err();
    assert!(e.to_string().contains("require_forecast"), "{e}");
}

/// `notice_days = N` ends at `notice_sent_at` + N × 24 h exactly (elapsed hours, not local
/// calendar days: across a DST change the local clock time moves by an hour), and the
/// disconnect may then run at the first moment the other rules allow at or after that: the end
/// itself when it falls inside a business window, else the start of the next allowed window.
/// It is not the window start of the N-th day.
#[test]
fn the_notice_period_ends_n_times_24_hours_after_the_notice() {
    let va = pack("virginia.toml"); // notice_days.non_payment = 10; Mon-Thu 08:00-16:00 New York
    let defer_until = |notice: &str, now: &str| {
        let d = va.decide(
            &disconnect(300.0, notice),
            MeterFlags::empty(),
            ts(now),
            &facts(&[]),
        );
        assert_eq!(d.first_rule(), "notice_period", "{d:?}");
        match d.verdict {
            Verdict::Defer { until } => until,
            other => panic!("{other:?}"),
        }
    };
    // Sent Monday 2026-11-30 10:30 EST: ends Thursday 2026-12-10 10:30 EST, inside the window,
    // and that is the time (not 08:00, the window start of that day).
    assert_eq!(
        defer_until("2026-11-30T15:30:00Z", "2026-12-02T15:00:00Z"),
        Some(ts("2026-12-10T15:30:00Z"))
    );
    // One second before the end: still held, until the end.
    assert_eq!(
        defer_until("2026-11-30T15:30:00Z", "2026-12-10T15:29:59Z"),
        Some(ts("2026-12-10T15:30:00Z"))
    );
    // At the end: allowed.
    let d = va.decide(
        &disconnect(300.0, "2026-11-30T15:30:00Z"),
        MeterFlags::empty(),
        ts("2026-12-10T15:30:00Z"),
        &facts(&[]),
    );
    assert_eq!(d.verdict, Verdict::Execute, "{d:?}");
    // Sent Monday 06:00 EST: ends Thursday 06:00 EST, before the window: the window start.
    assert_eq!(
        defer_until("2026-11-30T11:00:00Z", "2026-12-02T15:00:00Z"),
        Some(ts("2026-12-10T13:00:00Z"))
    );
    // Sent Monday 2026-10-26 10:00 EDT; DST ends on 1 November: 240 h later is Thursday
    // 2026-11-05 09:00 EST (14:00 UTC), not 10:00 local.
    assert_eq!(
        defer_until("2026-10-26T14:00:00Z", "2026-10-28T15:00:00Z"),
        Some(ts("2026-11-05T14:00:00Z"))
    );
}

/// Virginia with `[load_limit]` appended (`extra` lines inside the table).
fn limiting(extra: &str) -> Policy {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/rules/virginia.toml"
    ))
    .unwrap();
    RulePack::from_toml(
        &format!("{text}\n[load_limit]\ndemand_kw = 2.5\n{extra}"),
        "va+load_limit",
    )
    .unwrap()
}

fn facts_limit(can_limit_load: bool, approved: bool) -> Facts<'static> {
    Facts {
        zone: "z",
        forecasts: &[],
        emergencies: &[],
        approved,
        can_limit_load,
    }
}

#[test]
fn a_load_limit_replaces_an_allowed_non_payment_disconnect_where_the_meter_can_take_it() {
    let p = limiting("");
    let o = disconnect(300.0, "2026-11-10T15:00:00Z");
    let now = ts("2026-12-02T15:00:00Z"); // Wednesday 10:00 New York, notice long over
    let d = p.decide(&o, MeterFlags::empty(), now, &facts_limit(true, false));
    assert_eq!(d.verdict, Verdict::Execute);
    assert_eq!(d.load_limit_kw, Some(2.5));
    assert!(d.rules.iter().any(|r| r.rule == "load_limit"), "{d:?}");
    assert!(d.inputs.can_limit_load);
    // A meter that cannot be limited: a person decides (the pack's default) ...
    let d = p.decide(&o, MeterFlags::empty(), now, &facts_limit(false, false));
    assert_eq!(d.verdict, Verdict::AwaitApproval);
    assert_eq!(d.first_rule(), "load_limit_unsupported");
    // ... and once approved, the full disconnect goes, saying why.
    let d = p.decide(&o, MeterFlags::empty(), now, &facts_limit(false, true));
    assert_eq!(
        (d.verdict.clone(), d.load_limit_kw),
        (Verdict::Execute, None)
    );
    assert!(d.rules.iter().any(|r| r.rule == "load_limit_unsupported"));
    // A pack that allows the full cut for such meters.
    let d = limiting("unsupported = \"disconnect\"\n").decide(
        &o,
        MeterFlags::empty(),
        now,
        &facts_limit(false, false),
    );
    assert_eq!(
        (d.verdict.clone(), d.load_limit_kw),
        (Verdict::Execute, None)
    );
    // Outside the window nothing changes: deferred, no limit.
    let night = ts("2026-12-02T03:00:00Z");
    let d = p.decide(&o, MeterFlags::empty(), night, &facts_limit(true, false));
    assert!(matches!(d.verdict, Verdict::Defer { .. }), "{d:?}");
    assert_eq!(d.load_limit_kw, None);
    // Other reasons and kinds are cut as before.
    let mut tamper = o.clone();
    tamper.reason = ReasonCode::Tampering;
    let d = p.decide(&tamper, MeterFlags::empty(), now, &facts_limit(true, false));
    assert_eq!(
        (d.verdict.clone(), d.load_limit_kw),
        (Verdict::Execute, None)
    );
    let mut move_out = o.clone();
    move_out.kind = OrderKind::MoveOut;
    move_out.reason = ReasonCode::Move;
    let d = p.decide(
        &move_out,
        MeterFlags::empty(),
        now,
        &facts_limit(true, false),
    );
    assert_eq!(d.load_limit_kw, None, "a vacated premise is cut: {d:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// A load limit is never a way around a rule: with `[load_limit]` the verdict is the one
    /// the pack gives without it, except that an allowed disconnect becomes a limit (a meter
    /// that can take one) or waits for a person (one that cannot, unless approved).
    #[test]
    fn a_load_limit_only_changes_what_an_allowed_disconnect_does(
        minutes in 0i64..(60 * 24 * 60),
        flags in prop_oneof![3 => Just(0u8), 1 => 0u8..32],
        approved in any::<bool>(),
        can_limit in any::<bool>(),
        full_cut_allowed in any::<bool>(),
        notice_days_ago in 0i64..20,
        reason in prop_oneof![Just(ReasonCode::NonPayment), Just(ReasonCode::Tampering), Just(ReasonCode::CustomerRequest)],
    ) {
        let plain = pack("virginia.toml");
        let limited = limiting(if full_cut_allowed { "unsupported = \"disconnect\"\n" } else { "" });
        let now = ts("2026-11-01T00:00:00Z") + jiff::SignedDuration::from_mins(minutes);
        let mut o = disconnect(300.0, "2026-10-01T00:00:00Z");
        o.reason = reason;
        o.notice_sent_at = Some(now - jiff::SignedDuration::from_hours(24 * notice_days_ago));
        let mut mf = MeterFlags::empty();
        for (bit, flag) in [(1, MeterFlags::LIFE_SUPPORT), (2, MeterFlags::MEDICAL), (4, MeterFlags::CRITICAL_CARE), (8, MeterFlags::VIP), (16, MeterFlags::LEGAL_DISPUTE)] {
            mf.set(flag, flags & bit != 0);
        }
        let f = facts_limit(can_limit, approved);
        let before = plain.decide(&o, mf, now, &f);
        let after = limited.decide(&o, mf, now, &f);
        let applies = reason == ReasonCode::NonPayment;
        match (&before.verdict, applies) {
            (Verdict::Execute, true) if can_limit => {
                prop_assert_eq!(&after.verdict, &Verdict::Execute);
                prop_assert_eq!(after.load_limit_kw, Some(2.5));
            }
            (Verdict::Execute, true) if !approved && !full_cut_allowed => {
                prop_assert_eq!(&after.verdict, &Verdict::AwaitApproval);
                prop_assert_eq!(after.load_limit_kw, None);
            }
            _ => {
                prop_assert_eq!(&after.verdict, &before.verdict);
                prop_assert_eq!(after.load_limit_kw, None);
            }
        }
    }
}
