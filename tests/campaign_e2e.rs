//! Campaigns end to end through Kafka (embedded mock cluster, real rdkafka clients): orders
//! carry a campaign id and wait; the campaign is defined and commanded on the campaign-control
//! topic; releases reach the meters at the campaign's rate; progress comes out on the
//! campaign-events topic; a restart in the middle neither repeats nor skips a release. Time is a
//! manual clock moved by the test.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rdkafka::producer::FutureProducer;
use serde_json::json;
use switchyard::clock::{Clock, ManualClock};
use switchyard::domain::{OrderStatus, Timestamp};
use switchyard::{App, Config};

const T: Duration = Duration::from_secs(30);

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

async fn start_at(cfg: Config, clock: &Arc<ManualClock>) -> App {
    start_on(cfg, clock.clone()).await
}

fn definition(id: &str, rate: u32, start: &str) -> serde_json::Value {
    let w = json!(["08:00", "14:00"]);
    json!({"type":"define","schema_version":1,"campaign":{
        "schema_version":1,"campaign_id":id,"rate_per_hour":rate,"time_zone":"America/New_York",
        "windows":{"monday":w,"tuesday":w,"wednesday":w,"thursday":w,"friday":w},
        "start_at":start,"ordering":"priority"}})
}

fn campaign_order(id: &str, meter: &str, campaign: &str, priority: u8) -> Order {
    Order::disconnect(id, meter)
        .campaign(campaign)
        .priority(priority)
        .notice("2026-11-10T15:00:00Z")
}

/// Registers the meters, the even ones in zone z1, the odd ones in z2.
async fn register_zone(app: &App, p: &FutureProducer, ids: &[String]) {
    let records: Vec<serde_json::Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| meter_in(id, if i % 2 == 0 { "z1" } else { "z2" }, true))
        .collect();
    register_records(app, p, &records).await
}

/// Moves the manual clock in steps of `step` until `cond` or `max` steps.
async fn advance_until(clock: &ManualClock, step: Duration, max: usize, cond: impl Fn() -> bool) {
    for _ in 0..max {
        if cond() {
            return;
        }
        clock.advance(step);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(cond(), "condition not reached after {max} steps");
}

/// Moves the clock a second at a time, waiting after each step for the release it allows,
/// until `n` orders were dispatched.
async fn step_releases(clock: &ManualClock, events: &TopicLog, n: usize) {
    events
        .wait("the first release", T, |l| !dispatched(l).is_empty())
        .await;
    while dispatched(events).len() < n {
        let k = dispatched(events).len();
        clock.advance(Duration::from_secs(1));
        events
            .wait("the next release", T, |l| dispatched(l).len() > k)
            .await;
    }
}

/// Moves the clock a second at a time until `n` orders were dispatched, at most `max` steps;
/// after each step it waits (up to 5 s, real time) for a release that step allowed, and moves
/// on when none comes (a step the campaign's pace does not release in).
async fn step_dispatches(clock: &ManualClock, events: &TopicLog, n: usize, max: usize) {
    for _ in 0..max {
        let k = dispatched(events).len();
        if k >= n {
            return;
        }
        clock.advance(Duration::from_secs(1));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while dispatched(events).len() == k && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(
        dispatched(events).len() >= n,
        "{n} dispatches not reached after {max} steps"
    );
}

/// Campaign orders (`SO-*`) dispatched, with the times.
fn dispatched(events: &TopicLog) -> HashMap<String, Vec<Timestamp>> {
    let mut m: HashMap<String, Vec<Timestamp>> = HashMap::new();
    for e in events.events() {
        if e.status == OrderStatus::Dispatched && e.order_id.starts_with("SO-") {
            m.entry(e.order_id.clone()).or_default().push(e.at);
        }
    }
    m
}

#[actix_rt::test]
async fn a_campaign_defined_on_kafka_releases_at_its_rate_pauses_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    // Wednesday 2026-12-02, 09:00 New York.
    let clock = ManualClock::starting_at(ts("2026-12-02T14:00:00Z"));
    let app = start_at(test_config(dir.path()), &clock).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    let progress = TopicLog::follow(&app.bootstrap, &app.config.topics.campaign_events);
    let dlq = TopicLog::follow(&app.bootstrap, &app.config.topics.dead_letter);
    let meters: Vec<String> = (0..12).map(|i| format!("CM-{i:02}")).collect();
    register_zone(&app, &p, &meters).await;
    let t = app.config.topics.clone();
    for (i, m) in meters.iter().enumerate() {
        campaign_order(&format!("SO-C-{i:02}"), m, "C-E2E", (i % 3 + 1) as u8)
            .produce(&p, &t.orders)
            .await;
    }
    // They wait for their campaign: scheduled `campaign`, nothing sent.
    events
        .wait("12 orders waiting for the campaign", T, |l| {
            l.events()
                .iter()
                .filter(|e| {
                    e.status == OrderStatus::Scheduled && e.reason.as_deref() == Some("campaign")
                })
                .count()
                == 12
        })
        .await;
    // A reconnect never waits behind the campaign.
    Order::reconnect("RC-1", &meters[0])
        .produce(&p, &t.orders)
        .await;
    let rc = events.wait_final("RC-1", T).await;
    assert_eq!(rc.last().unwrap().status, OrderStatus::Completed);
    // SO-C-00 was superseded by that reconnect and leaves the campaign.
    assert_eq!(
        events.of("SO-C-00").last().unwrap().status,
        OrderStatus::Cancelled
    );

    // Bad definitions are dead-lettered with the reason.
    let mut bad = definition("C-BAD", 0, "2026-12-02T13:00:00Z");
    produce_json(&p, &t.campaign_control, "C-BAD", bad.clone()).await;
    bad["campaign"]["rate_per_hour"] = json!(100);
    bad["campaign"]["zones"] = json!(["atlantis"]);
    produce_json(&p, &t.campaign_control, "C-BAD", bad).await;
    produce_json(
        &p,
        &t.campaign_control,
        "C-NONE",
        json!({"type":"pause","schema_version":1,"campaign_id":"C-NONE","by":"ops"}),
    )
    .await;
    dlq.wait("three refused campaign records", T, |l| l.len() >= 3)
        .await;
    let details: Vec<String> = dlq
        .messages
        .lock()
        .unwrap()
        .iter()
        .map(|m| header(m, "switchyard.dlq.detail").unwrap())
        .collect();
    assert_eq!(details.len(), 3, "{details:?}");
    // One record each, in the order sent (one key per campaign; C-BAD's two are in order).
    for words in ["rate_per_hour", "unknown zone `atlantis`", "not defined"] {
        assert_eq!(
            details.iter().filter(|d| d.contains(words)).count(),
            1,
            "{words}: {details:?}"
        );
    }

    // 3600 an hour = one a second, from 09:00 today.
    produce_json(
        &p,
        &t.campaign_control,
        "C-E2E",
        definition("C-E2E", 3600, "2026-12-02T14:00:00Z"),
    )
    .await;
    progress
        .wait("started event", T, |l| {
            l.json().iter().any(|v| v["event"] == "started")
        })
        .await;
    // One release at once, then one per second of the clock.
    step_releases(&clock, &events, 4).await;
    produce_json(
        &p,
        &t.campaign_control,
        "C-E2E",
        json!({"type":"pause","schema_version":1,"campaign_id":"C-E2E","by":"supervisor.kim"}),
    )
    .await;
    progress
        .wait("paused event", T, |l| {
            l.json().iter().any(|v| v["event"] == "paused")
        })
        .await;
    let released_at = |event: &str| {
        progress
            .json()
            .into_iter()
            .find(|v| v["event"] == event)
            .map(|v| v["released"].as_u64().unwrap())
            .unwrap()
    };
    let during_pause = dispatched(&events).len();
    // Twenty seconds of the clock pass while paused (twenty releases' worth at this rate).
    clock.advance(Duration::from_secs(20));
    produce_json(
        &p,
        &t.campaign_control,
        "C-E2E",
        json!({"type":"resume","schema_version":1,"campaign_id":"C-E2E","by":"supervisor.kim"}),
    )
    .await;
    // The campaign handles the resume after the clock moved: its own count of releases says
    // whether anything went out meanwhile.
    progress
        .wait("resumed event", T, |l| {
            l.json().iter().any(|v| v["event"] == "resumed")
        })
        .await;
    assert_eq!(
        released_at("resumed"),
        released_at("paused"),
        "nothing released while paused"
    );
    // The resume releases one at once, then one per second of the clock. The clock moves on
    // only once the last release was dispatched: a dispatch is timed by the meter, and on a
    // loaded machine a release could otherwise be dispatched a clock step after it was made.
    events
        .wait("the release at the resume", T, |l| {
            dispatched(l).len() > during_pause
        })
        .await;
    step_releases(&clock, &events, 11).await;
    advance_until(&clock, Duration::from_secs(1), 400, || {
        events
            .finals()
            .iter()
            .filter(|o| o.starts_with("SO-C-"))
            .count()
            == 12
    })
    .await;

    let d = dispatched(&events);
    assert_eq!(d.len(), 11, "every order but the superseded one, once");
    assert!(d.values().all(|v| v.len() == 1));
    assert_spaced(d.values().map(|v| v[0]).collect(), 1);
    // Priority ordering: the three priority-1 orders go first.
    let first3: Vec<String> = {
        let mut v: Vec<(Timestamp, String)> = d.iter().map(|(k, v)| (v[0], k.clone())).collect();
        v.sort();
        v.into_iter().take(3).map(|(_, k)| k).collect()
    };
    for o in &first3 {
        let i: usize = o[5..].parse().unwrap();
        assert_eq!(i % 3, 0, "{first3:?}");
    }
    progress
        .wait("finished event", T, |l| {
            l.json().iter().any(|v| v["event"] == "finished")
        })
        .await;
    let ev_schema = schema("campaign-event.v1.schema.json");
    for v in progress.json() {
        assert_valid(&ev_schema, &v, "published campaign event");
    }
    let fin = progress
        .json()
        .into_iter()
        .find(|v| v["event"] == "finished")
        .unwrap();
    assert_eq!(fin["released"], 11);
    assert_eq!(fin["remaining"], 0);
    assert_eq!(fin["cancelled"], 1);
    let (_, metrics) = http_get(app.http_addr, "/metrics").await;
    assert!(
        metrics.contains("switchyard_campaign_orders{campaign=\"C-E2E\",state=\"released\"} 11"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("campaign"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(clock.now() > ts("2026-12-02T14:00:00Z"));
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_restart_mid_campaign_neither_repeats_nor_skips_a_release() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let _kafka = host_kafka(&mut cfg);
    let clock = ManualClock::starting_at(ts("2026-12-02T14:00:00Z"));
    let app = start_at(cfg.clone(), &clock).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    let meters: Vec<String> = (0..16).map(|i| format!("RM-{i:02}")).collect();
    register_zone(&app, &p, &meters).await;
    let t = app.config.topics.clone();
    for (i, m) in meters.iter().enumerate() {
        campaign_order(&format!("SO-R-{i:02}"), m, "C-R", 5)
            .produce(&p, &t.orders)
            .await;
    }
    produce_json(
        &p,
        &t.campaign_control,
        "C-R",
        definition("C-R", 3600, "2026-12-02T14:00:00Z"),
    )
    .await;
    let progress = TopicLog::follow(&app.bootstrap, &app.config.topics.campaign_events);
    progress
        .wait("started event", T, |l| {
            l.json().iter().any(|v| v["event"] == "started")
        })
        .await;
    step_releases(&clock, &events, 6).await;
    app.shutdown().await;
    let before = dispatched(&events).len();

    let app = start_at(cfg, &clock).await;
    // One second of clock at a time, each after the release it allowed reached its meter: a
    // dispatch's time is the meter's clock, so moving the clock on while a release is still on
    // its way (the store is a real Cassandra node in the second pass) would stamp it late.
    step_dispatches(&clock, &events, 16, 60).await;
    advance_until(&clock, Duration::from_secs(1), 400, || {
        events
            .finals()
            .iter()
            .filter(|o| o.starts_with("SO-R-"))
            .count()
            == 16
    })
    .await;
    let d = dispatched(&events);
    assert_eq!(d.len(), 16, "none skipped");
    assert!(
        d.values().all(|v| v.len() == 1),
        "none released twice: {d:?}"
    );
    assert_eq!(before, 6, "one release per step of the clock");
    assert_spaced(d.values().map(|v| v[0]).collect(), 1);
    app.shutdown().await;
}

/// "All non-payment disconnects due this afternoon in zone z1": a campaign defined with a
/// filter takes in matching open orders already received; others are left alone.
#[actix_rt::test]
async fn a_campaign_defined_with_a_filter_takes_in_matching_open_orders() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_at(ts("2026-12-02T14:00:00Z"));
    let app = start_at(test_config(dir.path()), &clock).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    let progress = TopicLog::follow(&app.bootstrap, &app.config.topics.campaign_events);
    let meters: Vec<String> = (0..7).map(|i| format!("AD-{i:02}")).collect();
    register_zone(&app, &p, &meters).await; // even: z1, odd: z2
    let t = app.config.topics.clone();
    for (i, m) in meters.iter().enumerate() {
        let reason = if i == 6 { "tampering" } else { "non_payment" };
        Order::disconnect(&format!("SO-AD-{i:02}"), m)
            .reason(reason)
            .earliest_at("2026-12-02T15:00:00Z")
            .notice("2026-11-10T15:00:00Z")
            .produce(&p, &t.orders)
            .await;
    }
    events
        .wait("7 orders scheduled for 15:00", T, |l| {
            (0..7).all(|i| {
                l.statuses(&format!("SO-AD-{i:02}"))
                    .contains(&OrderStatus::Scheduled)
            })
        })
        .await;
    let mut def = definition("C-ADOPT", 3600, "2026-12-02T15:00:00Z");
    def["campaign"]["zones"] = json!(["z1"]);
    def["campaign"]["adopt"] = json!({"reason":"non_payment","due_until":"2026-12-03T00:00:00Z"});
    produce_json(&p, &t.campaign_control, "C-ADOPT", def).await;
    // z1 non-payment orders (0, 2, 4) are taken in; 6 is tampering, the odd ones are in z2.
    events
        .wait("three orders taken in", T, |l| {
            l.events()
                .iter()
                .filter(|e| {
                    e.campaign_id.as_deref() == Some("C-ADOPT")
                        && e.reason.as_deref() == Some("campaign")
                })
                .count()
                == 3
        })
        .await;
    let adopted: Vec<String> = events
        .events()
        .iter()
        .filter(|e| {
            e.campaign_id.as_deref() == Some("C-ADOPT") && e.reason.as_deref() == Some("campaign")
        })
        .map(|e| e.order_id.clone())
        .collect();
    for i in [0, 2, 4] {
        assert!(adopted.contains(&format!("SO-AD-{i:02}")), "{adopted:?}");
    }
    // 15:00: the others go at their earliest_at; the adopted ones one a second.
    clock.set(ts("2026-12-02T15:00:00Z"));
    for i in [1, 3, 5, 6] {
        let id = format!("SO-AD-{i:02}");
        events.wait_final(&id, T).await;
        assert_eq!(
            events.of(&id).last().unwrap().status,
            OrderStatus::Completed,
            "{id}"
        );
    }
    let waiting = [0, 2, 4]
        .iter()
        .filter(|i| !dispatched(&events).contains_key(&format!("SO-AD-{i:02}")))
        .count();
    step_dispatches(&clock, &events, dispatched(&events).len() + waiting, 30).await;
    advance_until(&clock, Duration::from_secs(1), 100, || {
        [0, 2, 4]
            .iter()
            .all(|i| events.finals().contains(&format!("SO-AD-{i:02}")))
    })
    .await;
    let d = dispatched(&events);
    assert_spaced(
        [0, 2, 4]
            .iter()
            .map(|i| d[&format!("SO-AD-{i:02}")][0])
            .collect(),
        1,
    );
    progress
        .wait("finished", T, |l| {
            l.json()
                .iter()
                .any(|v| v["event"] == "finished" && v["released"] == 3)
        })
        .await;
    app.shutdown().await;
}
