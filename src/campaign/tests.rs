//! The pure campaign parts: validation, windows, queue ordering, and the planner.

use std::collections::HashSet;

use super::plan::{max_in_any_hour, plan};
use super::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub(crate) fn weekdays_8_to_14(id: &str, rate: u32) -> CampaignDef {
    let w = || ["08:00".to_string(), "14:00".to_string()];
    CampaignDef {
        schema_version: 1,
        campaign_id: id.into(),
        name: Some("month-end non-payment".into()),
        rate_per_hour: rate,
        zone_rate_per_hour: None,
        time_zone: "America/New_York".into(),
        windows: [
            Day::Monday,
            Day::Tuesday,
            Day::Wednesday,
            Day::Thursday,
            Day::Friday,
        ]
        .into_iter()
        .map(|d| (d, w()))
        .collect(),
        // Monday 2026-12-07, 08:00 New York.
        start_at: ts("2026-12-07T13:00:00Z"),
        end_by: None,
        ordering: Ordering::Priority,
        zones: vec![],
        call_center_capacity_per_hour: None,
        adopt: None,
    }
}

pub(crate) fn orders(n: usize, zones: &[&str]) -> Vec<CampaignOrder> {
    (0..n)
        .map(|i| CampaignOrder {
            order_id: format!("SO-{i:06}"),
            meter_id: format!("M-{i:06}"),
            zone: zones[i % zones.len()].to_string(),
            priority: (i % 9 + 1) as u8,
            amount_cents: ((i * 7919) % 100_000) as i64,
            seq: i as u64,
            released: false,
            released_at: None,
        })
        .collect()
}

#[test]
fn bad_definitions_are_refused_naming_the_key() {
    let known = |z: &str| z == "north" || z == "south";
    let check = |def: CampaignDef, key: &str, words: &str| {
        let e = def.validate(known).unwrap_err();
        assert_eq!(e.key, key, "{e}");
        assert!(e.to_string().contains(words), "{e}");
    };
    let mut d = weekdays_8_to_14("C-1", 0);
    check(d.clone(), "rate_per_hour", "not a usable rate");
    d.rate_per_hour = 500;
    let mut e = d.clone();
    e.windows.clear();
    check(e, "windows", "never release");
    let mut e = d.clone();
    e.windows
        .insert(Day::Monday, ["14:00".to_string(), "08:00".to_string()]);
    check(e, "windows.monday", "empty");
    let mut e = d.clone();
    e.end_by = Some(ts("2026-12-01T00:00:00Z"));
    check(e, "end_by", "not after start_at");
    let mut e = d.clone();
    e.zones = vec!["north".into(), "atlantis".into()];
    check(e, "zones", "unknown zone `atlantis`");
    let mut e = d.clone();
    e.time_zone = "Mars/Olympus".into();
    check(e, "time_zone", "IANA");
    let mut e = d.clone();
    e.zone_rate_per_hour = Some(900);
    check(e, "zone_rate_per_hour", "between 1 and rate_per_hour");
    assert!(d.validate(known).is_ok());
}

#[test]
fn windows_skip_nights_and_weekends_and_stop_at_end_by() {
    let mut d = weekdays_8_to_14("C-1", 500);
    d.end_by = Some(ts("2026-12-14T19:00:00Z"));
    let c = d.validate(|_| true).unwrap();
    // Before the start: the start.
    assert_eq!(
        c.next_open(ts("2026-12-01T00:00:00Z")),
        Some(ts("2026-12-07T13:00:00Z"))
    );
    // Friday 15:00: Monday 08:00.
    assert_eq!(
        c.next_open(ts("2026-12-11T20:00:00Z")),
        Some(ts("2026-12-14T13:00:00Z"))
    );
    // Inside a window: now.
    assert_eq!(
        c.next_open(ts("2026-12-08T15:30:00Z")),
        Some(ts("2026-12-08T15:30:00Z"))
    );
    // After end_by: never.
    assert_eq!(c.next_open(ts("2026-12-14T19:00:00Z")), None);
}

#[test]
fn ten_thousand_orders_at_500_an_hour_finish_on_thursday_never_faster() {
    let c = weekdays_8_to_14("C-10K", 500).validate(|_| true).unwrap();
    let os = orders(10_000, &["north", "south", "east", "west"]);
    let p = plan(&c, &os, c.def.start_at, 500, None, &|_, _| None);
    assert_eq!(p.releases.len(), 10_000);
    assert_eq!(p.left, 0);
    // 3,000 a day (6 h x 500): Monday, Tuesday, Wednesday, then 1,000 on Thursday 08:00-10:00.
    assert_eq!(p.finish, Some(ts("2026-12-10T14:59:52.800Z")));
    assert!(p.max_in_any_hour() <= 500, "{}", p.max_in_any_hour());
    let ids: HashSet<&str> = p.releases.iter().map(|r| &*r.order_id).collect();
    assert_eq!(ids.len(), 10_000, "each order exactly once");
    // Only inside windows.
    let tz = jiff::tz::TimeZone::get("America/New_York").unwrap();
    for r in &p.releases {
        let z = r.at.to_zoned_datetime(tz.clone());
        assert!(z.hour() >= 8 && z.hour() < 14, "{z}");
        assert!(!matches!(
            z.weekday(),
            jiff::civil::Weekday::Saturday | jiff::civil::Weekday::Sunday
        ));
    }
    // Priority ordering: the first hour is all priority 1 orders.
    let first: Vec<&str> = p.releases.iter().take(100).map(|r| &*r.order_id).collect();
    assert!(first
        .iter()
        .all(|id| os.iter().any(|o| o.order_id == *id && o.priority == 1)));
}

#[test]
fn a_moratorium_in_one_zone_holds_only_that_zone_and_keeps_its_place() {
    let c = weekdays_8_to_14("C-Z", 400).validate(|_| true).unwrap();
    let os = orders(4_000, &["north", "south"]);
    // North is barred on Monday (a cold day), lifted Tuesday 08:00.
    let tue = ts("2026-12-08T13:00:00Z");
    let bar =
        |z: &str, t: Timestamp| (z == "north" && t < tue).then(|| ("cold".to_string(), Some(tue)));
    let p = plan(&c, &os, c.def.start_at, 400, None, &bar);
    assert_eq!(p.releases.len(), 4_000);
    let monday: Vec<_> = p.releases.iter().filter(|r| r.at < tue).collect();
    assert!(monday.iter().all(|r| r.zone == "south"));
    assert_eq!(monday.len(), 2_000, "south keeps the full rate on Monday");
    assert!(p.max_in_any_hour() <= 400);
    // North's first release is Tuesday 08:00, in priority order.
    let north_first = p.releases.iter().find(|r| r.zone == "north").unwrap();
    assert_eq!(north_first.at, tue);
}

#[test]
fn zone_stagger_alternates_and_zone_rates_hold() {
    let mut d = weekdays_8_to_14("C-S", 600);
    d.ordering = Ordering::ZoneStagger;
    d.zone_rate_per_hour = Some(200);
    let c = d.validate(|_| true).unwrap();
    let os = orders(1_200, &["a", "b", "c", "d"]);
    let p = plan(&c, &os, c.def.start_at, 600, None, &|_, _| None);
    let zones: Vec<&str> = p.releases.iter().take(8).map(|r| r.zone.as_str()).collect();
    assert_eq!(zones, ["a", "b", "c", "d", "a", "b", "c", "d"]);
    for z in ["a", "b", "c", "d"] {
        let n = max_in_any_hour(p.releases.iter().filter(|r| r.zone == z).map(|r| r.at));
        assert!(n <= 200, "zone {z}: {n}");
    }
    assert!(p.max_in_any_hour() <= 600);
}
