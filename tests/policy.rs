//! Policy before power, end to end through Kafka (embedded mock cluster, real rdkafka clients),
//! one scenario per shipped rule pack, on a manual clock: a week of rules runs in a few seconds
//! of wall time, with no sleeps standing in for the hours. Facts (weather, emergencies,
//! payments, certificates, approvals) arrive on their topics like in production.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rdkafka::producer::FutureProducer;
use serde_json::json;
use switchyard::clock::ManualClock;
use switchyard::domain::{AuditKind, OrderStatus, Timestamp};
use switchyard::{App, Config};

const T: Duration = Duration::from_secs(30);

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn with_pack(dir: &std::path::Path, pack: &str) -> Config {
    let mut c = test_config(dir);
    c.policy.rule_pack = Some(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/rules")
            .join(pack),
    );
    c
}

async fn start_at(cfg: Config, clock: &Arc<ManualClock>) -> App {
    start_on(cfg, clock.clone()).await
}

async fn register_in(
    app: &App,
    p: &FutureProducer,
    id: &str,
    zone: &str,
    extra: serde_json::Value,
) {
    let mut rec = meter_in(id, zone, true);
    for (k, v) in extra.as_object().unwrap() {
        rec[k] = v.clone();
    }
    register_records(app, p, &[rec]).await
}

/// Produces a forecast and waits until switchyard holds exactly it.
async fn weather(app: &App, p: &FutureProducer, zone: &str, date: &str, low: f64, high: f64) {
    produce_json(
        p,
        &app.config.topics.weather,
        &format!("{zone}/{date}"),
        json!({"schema_version":1,"zone":zone,"date":date,"low_f":low,"high_f":high}),
    )
    .await;
    let date: jiff::civil::Date = date.parse().unwrap();
    eventually(format!("forecast {zone} {date} applied"), T, async || {
        app.facts
            .forecasts(zone)
            .iter()
            .any(|f| f.date == date && f.low_f == low && f.high_f == high)
    })
    .await
}

/// A customer's disconnect for non-payment, notice given at `notice`.
fn disconnect(id: &str, meter: &str, notice: &str) -> Order {
    Order::disconnect(id, meter)
        .notice(notice)
        .amount_due(412.50)
        .account(&format!("ACC-{meter}"))
}

/// A read of `meter`, produced and awaited to its final status: once it is final, the meter's
/// actor has taken a step at the clock's current time (and re-decided every order it holds).
async fn read_through(app: &App, p: &FutureProducer, events: &TopicLog, id: &str, meter: &str) {
    Order::read(id, meter)
        .produce(p, &app.config.topics.orders)
        .await;
    let ev = events.wait_final(id, T).await;
    assert_eq!(ev.last().unwrap().status, OrderStatus::Completed, "{ev:?}");
}

/// Asserts that no command went out for `order` (as far as the topic has told).
fn assert_not_dispatched(events: &TopicLog, order: &str) {
    let st = events.statuses(order);
    assert!(!st.contains(&OrderStatus::Dispatched), "{order}: {st:?}");
}

/// Waits for an event of `order` with `status`; returns it.
async fn wait_status(
    log: &TopicLog,
    order: &str,
    status: OrderStatus,
) -> switchyard::domain::OrderEvent {
    log.wait(&format!("{order} {status:?}"), T, |l| {
        l.of(order).iter().any(|e| e.status == status)
    })
    .await;
    log.of(order)
        .into_iter()
        .rev()
        .find(|e| e.status == status)
        .unwrap()
}

#[actix_rt::test]
async fn a_cold_week_in_virginia() {
    let dir = tempfile::tempdir().unwrap();
    // Tuesday 2026-12-01, 10:00 in Richmond.
    let clock = ManualClock::starting_at(ts("2026-12-01T15:00:00Z"));
    let app = start_at(with_pack(dir.path(), "virginia.toml"), &clock).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    register_in(&app, &p, "VA-1", "richmond", json!({})).await;
    register_in(&app, &p, "VA-2", "richmond", json!({})).await;
    register_in(&app, &p, "VA-3", "norfolk", json!({})).await;
    // A cold snap over Richmond today and tomorrow; Norfolk is mild.
    weather(&app, &p, "richmond", "2026-12-01", 25.0, 38.0).await;
    weather(&app, &p, "richmond", "2026-12-02", 28.0, 40.0).await;
    weather(&app, &p, "norfolk", "2026-12-01", 41.0, 55.0).await;
    weather(&app, &p, "norfolk", "2026-12-02", 43.0, 57.0).await;
    for (id, m) in [("SO-VA-1", "VA-1"), ("SO-VA-3", "VA-3")] {
        disconnect(id, m, "2026-11-10T15:00:00Z")
            .produce(&p, &app.config.topics.orders)
            .await;
    }
    // Richmond: deferred by the 24-hour forecast rule, with the pack version and the inputs.
    let d = wait_status(&events, "SO-VA-1", OrderStatus::Deferred).await;
    assert_eq!(d.reason.as_deref(), Some("va_forecast_cold_or_hot_24h"));
    let pol = d.policy.as_ref().expect("decision on the event");
    assert_eq!(pol.pack, "virginia@2026.1");
    assert_eq!(pol.inputs.zone, "richmond");
    assert_eq!(pol.inputs.forecasts_known, 2);
    // Known facts say Thursday 08:00 is the first allowed time.
    assert_eq!(d.retry_at, Some(ts("2026-12-03T13:00:00Z")));
    // Norfolk: mild, a weekday inside the window, notice given: sent now.
    events.wait_final("SO-VA-3", T).await;
    assert_eq!(
        events.of("SO-VA-3").last().unwrap().status,
        OrderStatus::Completed
    );
    let sent = events
        .of("SO-VA-3")
        .into_iter()
        .find(|e| e.status == OrderStatus::Dispatched)
        .unwrap();
    assert!(matches!(
        sent.policy.unwrap().verdict,
        switchyard::policy::Verdict::Execute
    ));
    assert_not_dispatched(&events, "SO-VA-1");

    // The snap ends early: the new forecasts release the order at once, no scan, no wait.
    weather(&app, &p, "richmond", "2026-12-01", 36.0, 50.0).await;
    weather(&app, &p, "richmond", "2026-12-02", 39.0, 52.0).await;
    events.wait_final("SO-VA-1", T).await;
    let st = events.statuses("SO-VA-1");
    assert_eq!(st.last(), Some(&OrderStatus::Completed), "{st:?}");

    // Thursday 17:00, after the window: deferred to Monday 08:00 (Friday to Sunday are barred).
    clock.set(ts("2026-12-03T22:00:00Z"));
    disconnect("SO-VA-2", "VA-2", "2026-11-10T15:00:00Z")
        .produce(&p, &app.config.topics.orders)
        .await;
    let d = wait_status(&events, "SO-VA-2", OrderStatus::Deferred).await;
    assert_eq!(d.reason.as_deref(), Some("outside_business_window"));
    assert_eq!(d.retry_at, Some(ts("2026-12-07T13:00:00Z")));
    // Friday noon: still nothing sent, even when the meter takes a step (a read) at that time.
    clock.set(ts("2026-12-04T17:00:00Z"));
    read_through(&app, &p, &events, "SO-VA-2-READ", "VA-2").await;
    assert_not_dispatched(&events, "SO-VA-2");
    // Monday 08:00: the meter's own timer fires and the command goes out.
    clock.set(ts("2026-12-07T13:00:00Z"));
    events.wait_final("SO-VA-2", T).await;
    let sent = events
        .of("SO-VA-2")
        .into_iter()
        .find(|e| e.status == OrderStatus::Dispatched)
        .expect("dispatched on Monday");
    assert_eq!(sent.at, ts("2026-12-07T13:00:00Z"));
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_heat_wave_in_maryland_with_a_protected_customer_and_a_small_balance() {
    let dir = tempfile::tempdir().unwrap();
    // Monday 2027-07-12, 10:00 in Annapolis (EDT).
    let clock = ManualClock::starting_at(ts("2027-07-12T14:00:00Z"));
    let app = start_at(with_pack(dir.path(), "maryland.toml"), &clock).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    register_in(&app, &p, "MD-1", "annapolis", json!({})).await;
    register_in(&app, &p, "MD-2", "annapolis", json!({"life_support": true})).await;
    register_in(&app, &p, "MD-3", "annapolis", json!({})).await;
    // 97 F forecast on Wednesday: inside the 72-hour window.
    weather(&app, &p, "annapolis", "2027-07-14", 75.0, 97.0).await;
    disconnect("SO-MD-1", "MD-1", "2027-06-20T14:00:00Z")
        .produce(&p, &app.config.topics.orders)
        .await;
    disconnect("SO-MD-2", "MD-2", "2027-06-20T14:00:00Z")
        .produce(&p, &app.config.topics.orders)
        .await;
    disconnect("SO-MD-3", "MD-3", "2027-06-20T14:00:00Z")
        .amount_due(150.0)
        .produce(&p, &app.config.topics.orders)
        .await;

    let d = wait_status(&events, "SO-MD-1", OrderStatus::Deferred).await;
    assert_eq!(d.reason.as_deref(), Some("md_forecast_32_95_72h"));
    assert_eq!(d.policy.as_ref().unwrap().pack, "maryland@2026.1");
    // The life-support customer waits for a person, whatever the weather.
    let a = wait_status(&events, "SO-MD-2", OrderStatus::AwaitingApproval).await;
    assert_eq!(a.reason.as_deref(), Some("approval_required"));
    // A balance at or below $200 is never disconnected for non-payment.
    let r = wait_status(&events, "SO-MD-3", OrderStatus::Rejected).await;
    assert_eq!(r.reason.as_deref(), Some("minimum_balance"));

    // A supervisor approves SO-MD-2: the approval lifts only the approval; the heat still holds it.
    produce_json(&p, &app.config.topics.control, "MD-2", json!({"type":"approval","schema_version":1,"fact_id":"APR-1","meter_id":"MD-2","order_id":"SO-MD-2","decision":"approve","by":"supervisor.lee","at":"2027-07-12T14:05:00Z"})).await;
    let d = wait_status(&events, "SO-MD-2", OrderStatus::Deferred).await;
    assert_eq!(d.reason.as_deref(), Some("md_forecast_32_95_72h"));
    assert!(d.policy.unwrap().inputs.approved);

    // The forecast drops to 88 F: both go out now, nobody scanned every meter.
    weather(&app, &p, "annapolis", "2027-07-14", 70.0, 88.0).await;
    for id in ["SO-MD-1", "SO-MD-2"] {
        events.wait_final(id, T).await;
        assert_eq!(
            events.of(id).last().unwrap().status,
            OrderStatus::Completed,
            "{id}"
        );
    }
    assert_not_dispatched(&events, "SO-MD-3");
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_cold_thursday_before_christmas_in_dc_bars_through_the_weekend() {
    let dir = tempfile::tempdir().unwrap();
    // Wednesday 2026-12-23, 10:00 in Washington.
    let clock = ManualClock::starting_at(ts("2026-12-23T15:00:00Z"));
    let app = start_at(with_pack(dir.path(), "district-of-columbia.toml"), &clock).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    register_in(&app, &p, "DC-1", "dc", json!({})).await;
    // Thursday 24th forecast low 30 F: bars Wednesday (day before), Thursday, and the holiday and
    // weekend that follow.
    weather(&app, &p, "dc", "2026-12-24", 30.0, 41.0).await;
    disconnect("SO-DC-1", "DC-1", "2026-11-20T15:00:00Z")
        .produce(&p, &app.config.topics.orders)
        .await;
    let d = wait_status(&events, "SO-DC-1", OrderStatus::Deferred).await;
    assert_eq!(d.reason.as_deref(), Some("dc_forecast_day_before_and_of"));
    assert_eq!(d.retry_at, Some(ts("2026-12-28T13:00:00Z")), "Monday 08:00");
    // Saturday: still held, even when the meter takes a step (a read) then. Monday 08:00: sent.
    clock.set(ts("2026-12-26T17:00:00Z"));
    read_through(&app, &p, &events, "SO-DC-1-READ", "DC-1").await;
    assert_not_dispatched(&events, "SO-DC-1");
    clock.set(ts("2026-12-28T13:00:00Z"));
    events.wait_final("SO-DC-1", T).await;
    assert_eq!(
        events.of("SO-DC-1").last().unwrap().status,
        OrderStatus::Completed
    );
    app.shutdown().await;
}

/// `/readyz` of `app`, as JSON.
async fn readyz(app: &App) -> serde_json::Value {
    let (code, body) = http_get(app.http_addr, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[actix_rt::test]
async fn a_meter_holding_a_deferred_order_passivates_and_the_directory_wakes_it_on_time() {
    // A disconnect deferred from Wednesday to Monday 08:00 needs no live actor meanwhile (1M
    // deferred disconnects must not hold 1M actors): the meter passivates like an idle one
    // (after 1 s in the tests), and the directory's one timer wakes it on Monday.
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_at(ts("2026-12-23T15:00:00Z"));
    let app = start_at(with_pack(dir.path(), "district-of-columbia.toml"), &clock).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    register_in(&app, &p, "DC-2", "dc", json!({})).await;
    weather(&app, &p, "dc", "2026-12-24", 30.0, 41.0).await;
    disconnect("SO-DC-2", "DC-2", "2026-11-20T15:00:00Z")
        .produce(&p, &app.config.topics.orders)
        .await;
    let d = wait_status(&events, "SO-DC-2", OrderStatus::Deferred).await;
    assert_eq!(d.retry_at, Some(ts("2026-12-28T13:00:00Z")), "Monday 08:00");
    let r = eventually("the deferred meter passivated", T, async || {
        let r = readyz(&app).await;
        (r["live_meter_actors"] == 0).then_some(r)
    })
    .await;
    assert_eq!(r["meters_waiting_for_a_time"], 1, "{r}");
    // Monday 08:00: woken, decided again, sent and confirmed.
    clock.set(ts("2026-12-28T13:00:00Z"));
    events.wait_final("SO-DC-2", T).await;
    assert_eq!(
        events.of("SO-DC-2").last().unwrap().status,
        OrderStatus::Completed
    );
    assert_eq!(readyz(&app).await["meters_waiting_for_a_time"], 0);
    app.shutdown().await;
}

#[actix_rt::test]
async fn payments_withdraw_disconnects_and_a_late_certificate_restores_power() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_at(ts("2026-12-01T15:00:00Z"));
    // Baseline policy (no pack): only the built-in protections.
    let app = start_at(test_config(dir.path()), &clock).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    for m in ["P-1", "P-2", "P-3"] {
        register_in(&app, &p, m, "zone-a", json!({})).await;
    }
    let t = &app.config.topics;
    // P-1: a payment that arrives before its order (another topic, another path) still wins.
    produce_json(&p, &t.customer_facts, "P-1", json!({"type":"payment","schema_version":1,"fact_id":"PAY-1","meter_id":"P-1","order_id":"SO-P-1","amount":412.5,"paid_at":"2026-12-01T14:59:00Z"})).await;
    // P-2: a future earliest_at keeps it pending; the payment arrives while it waits.
    disconnect("SO-P-2", "P-2", "2026-11-10T15:00:00Z")
        .earliest_at("2026-12-02T15:00:00Z")
        .produce(&p, &t.orders)
        .await;
    wait_status(&events, "SO-P-2", OrderStatus::Scheduled).await;
    // The P-1 payment is stored (its meter audited it) before its order is sent.
    eventually("the P-1 payment stored at its meter", T, async || {
        app.store
            .store()
            .audit("P-1")
            .unwrap()
            .iter()
            .any(|a| a.kind == AuditKind::FactReceived)
    })
    .await;
    disconnect("SO-P-1", "P-1", "2026-11-10T15:00:00Z")
        .produce(&p, &t.orders)
        .await;
    produce_json(&p, &t.customer_facts, "P-2", json!({"type":"payment","schema_version":1,"fact_id":"PAY-2","meter_id":"P-2","account_id":"ACC-P-2","amount":412.5,"paid_at":"2026-12-01T15:01:00Z"})).await;
    for id in ["SO-P-1", "SO-P-2"] {
        let c = wait_status(&events, id, OrderStatus::Cancelled).await;
        assert_eq!(c.reason.as_deref(), Some("payment_received"), "{id}");
        assert_not_dispatched(&events, id);
    }
    clock.set(ts("2026-12-02T16:00:00Z"));
    // P-3: cut for non-payment; then a medical certificate arrives: switchyard reconnects.
    disconnect("SO-P-3", "P-3", "2026-11-10T15:00:00Z")
        .produce(&p, &t.orders)
        .await;
    events.wait_final("SO-P-3", T).await;
    assert_eq!(
        events.of("SO-P-3").last().unwrap().status,
        OrderStatus::Completed
    );
    produce_json(&p, &t.customer_facts, "P-3", json!({"type":"medical_certificate","schema_version":1,"fact_id":"MED-3","meter_id":"P-3","protection":"medical","expires_at":"2027-03-01T00:00:00Z"})).await;
    let restore = "SO-P-3/restore";
    let r = wait_status(&events, restore, OrderStatus::Received).await;
    assert_eq!(r.reason.as_deref(), Some("restore_obligation"));
    events.wait_final(restore, T).await;
    let last = events.of(restore).last().unwrap().clone();
    assert_eq!(last.status, OrderStatus::Completed);
    assert_eq!(
        last.switch_state,
        Some(switchyard::domain::SwitchState::Connected)
    );
    // The raised order is stored like any other (the operator API knows it).
    let (code, body) = http_get(app.http_addr, "/api/v1/orders/SO-P-3%2Frestore").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("restore_obligation"), "{body}");
    app.shutdown().await;
}

#[actix_rt::test]
async fn bad_facts_are_dead_lettered_with_a_reason_and_never_weaken_a_rule() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_at(ts("2026-12-01T15:00:00Z"));
    let app = start_at(with_pack(dir.path(), "virginia.toml"), &clock).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    let dlq = TopicLog::follow(&app.bootstrap, &app.config.topics.dead_letter);
    register_in(&app, &p, "B-1", "richmond", json!({})).await;
    let t = &app.config.topics;
    weather(&app, &p, "richmond", "2026-12-01", 20.0, 30.0).await;
    // A "correction" that is not a forecast: low above high. It must not replace the cold one.
    produce_json(
        &p,
        &t.weather,
        "richmond/2026-12-01",
        json!({"schema_version":1,"zone":"richmond","date":"2026-12-01","low_f":60,"high_f":30}),
    )
    .await;
    // Keyed by the wrong zone.
    produce_json(
        &p,
        &t.weather,
        "norfolk/2026-12-01",
        json!({"schema_version":1,"zone":"richmond","date":"2026-12-01","low_f":50,"high_f":60}),
    )
    .await;
    // An approval sent to the customer-facts topic, a payment for an unknown meter, not JSON.
    produce_json(&p, &t.customer_facts, "B-1", json!({"type":"approval","schema_version":1,"fact_id":"A-9","meter_id":"B-1","order_id":"SO-B-1","decision":"approve","by":"x","at":"2026-12-01T15:00:00Z"})).await;
    produce_json(&p, &t.customer_facts, "NOPE", json!({"type":"payment","schema_version":1,"fact_id":"P-9","meter_id":"NOPE","amount":1,"paid_at":"2026-12-01T15:00:00Z"})).await;
    produce(&p, &t.control, "B-1", b"approve everything").await;
    produce_json(&p, &t.emergencies, "E-1", json!({"schema_version":1,"emergency_id":"E-1","declared_at":"2026-12-01T00:00:00Z","ended_at":"2026-11-01T00:00:00Z"})).await;
    dlq.wait("six dead letters", T, |l| l.len() >= 6).await;
    let msgs = dlq.messages.lock().unwrap().clone();
    assert_eq!(msgs.len(), 6);
    let reasons: Vec<String> = msgs
        .iter()
        .map(|m| header(m, "switchyard.dlq.reason").unwrap())
        .collect();
    assert_eq!(
        reasons.iter().filter(|r| *r == "invalid_fact").count(),
        5,
        "{reasons:?}"
    );
    assert_eq!(
        reasons.iter().filter(|r| *r == "unknown_meter").count(),
        1,
        "{reasons:?}"
    );
    let details: Vec<String> = msgs
        .iter()
        .map(|m| header(m, "switchyard.dlq.detail").unwrap())
        .collect();
    assert!(
        details.iter().any(|d| d.contains("above high_f")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("does not belong")),
        "{details:?}"
    );
    // Good records keep flowing, and the cold forecast still holds the disconnect.
    disconnect("SO-B-1", "B-1", "2026-11-10T15:00:00Z")
        .produce(&p, &t.orders)
        .await;
    let d = wait_status(&events, "SO-B-1", OrderStatus::Deferred).await;
    assert_eq!(d.reason.as_deref(), Some("va_forecast_cold_or_hot_24h"));
    app.shutdown().await;
}

/// Switchyard on the Virginia pack with a test-hosted mock cluster (it outlives a restart): a
/// disconnect of `meter` deferred by a cold forecast in Richmond, then switchyard stopped.
async fn deferred_then_stopped(
    meter: &str,
    order: &str,
) -> (
    tempfile::TempDir,
    Config,
    Option<std::mem::ManuallyDrop<switchyard::kafka::EmbeddedKafka>>,
    Arc<ManualClock>,
    FutureProducer,
    TopicLog,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = with_pack(dir.path(), "virginia.toml");
    let kafka = host_kafka(&mut cfg);
    let clock = ManualClock::starting_at(ts("2026-12-01T15:00:00Z"));
    let app = start_at(cfg.clone(), &clock).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    register_in(&app, &p, meter, "richmond", json!({})).await;
    weather(&app, &p, "richmond", "2026-12-01", 25.0, 38.0).await;
    disconnect(order, meter, "2026-11-10T15:00:00Z")
        .produce(&p, &app.config.topics.orders)
        .await;
    wait_status(&events, order, OrderStatus::Deferred).await;
    app.shutdown().await;
    (dir, cfg, kafka, clock, p, events)
}

/// A deferred order survives a restart still held: the forecasts are replayed before any held
/// order is re-decided (a restart must not read "no forecast known" as "no cold"), and the
/// waiting index is rebuilt, so a later forecast still releases it.
#[actix_rt::test]
async fn a_deferred_order_stays_held_across_a_restart_and_is_released_after_it() {
    let (_dir, cfg, _kafka, clock, p, events) = deferred_then_stopped("R-1", "SO-R-1").await;

    clock.set(ts("2026-12-01T16:00:00Z"));
    let app = start_at(cfg, &clock).await;
    // Recovered and re-decided with the replayed forecast: still held.
    eventually("meter R-1 recovered, holding its order", T, async || {
        let (code, body) = http_get(app.http_addr, "/api/v1/meters/R-1").await;
        if code == 200 && body.contains("\"live_actor\":true") && body.contains("\"hold\"") {
            Ok(())
        } else {
            Err(format!("{code} {body}"))
        }
    })
    .await;
    assert_eq!(app.facts.forecasts("richmond").len(), 1);
    // A later step of the same meter: once its read is final, anything recovery decided for
    // SO-R-1 is on the topic before it (one meter, one partition, in order).
    read_through(&app, &p, &events, "SO-R-1-READ", "R-1").await;
    assert_not_dispatched(&events, "SO-R-1");
    // The snap ends: the rebuilt waiting index wakes the meter.
    weather(&app, &p, "richmond", "2026-12-01", 40.0, 52.0).await;
    events.wait_final("SO-R-1", T).await;
    assert_eq!(
        events.of("SO-R-1").last().unwrap().status,
        OrderStatus::Completed
    );
    app.shutdown().await;
}

/// A payment sent while switchyard is down is applied before held orders resume: the deferred
/// disconnect it pays off is never sent, even though the forecast allows it after the restart.
#[actix_rt::test]
async fn a_payment_sent_during_downtime_wins_over_a_restart() {
    let (_dir, cfg, _kafka, clock, p, events) = deferred_then_stopped("D-1", "SO-D-1").await;
    let topics = cfg.topics.clone();

    // While it is down: the cold forecast is withdrawn and the customer pays.
    produce_json(
        &p,
        &topics.weather,
        "richmond/2026-12-01",
        json!({"schema_version":1,"zone":"richmond","date":"2026-12-01","low_f":45,"high_f":60}),
    )
    .await;
    produce_json(&p, &topics.customer_facts, "D-1", json!({"type":"payment","schema_version":1,"fact_id":"PAY-D-1","meter_id":"D-1","order_id":"SO-D-1","amount":412.5,"paid_at":"2026-12-01T15:30:00Z"})).await;
    clock.set(ts("2026-12-01T16:00:00Z"));
    let app = start_at(cfg, &clock).await;
    let c = wait_status(&events, "SO-D-1", OrderStatus::Cancelled).await;
    assert_eq!(c.reason.as_deref(), Some("payment_received"));
    assert_not_dispatched(&events, "SO-D-1");
    app.shutdown().await;
}

/// A UAT run of a rule pack on a chosen date, the way `switchyard run` does it (`[clock]`):
/// business time starts on Christmas Eve morning in Richmond, the day before a holiday. The
/// disconnect is held to Monday 08:00 (Christmas Eve, Christmas and the weekend are barred), and
/// `/readyz` says the clock is shifted. (The speed is covered by the clock's paused-time unit
/// test and by the `run` child in tests/cli, which also checks the process-wide metrics.)
#[actix_rt::test]
async fn a_uat_run_decides_on_the_chosen_date() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = with_pack(dir.path(), "virginia.toml");
    cfg.clock.start_at = Some(ts("2026-12-24T10:00:00-05:00"));
    // The second pass of tests/run.sh runs on the real broker: for this test, a UAT cluster.
    cfg.clock.allow_with_external_broker = !cfg.kafka.brokers.trim().is_empty();
    cfg.validate()
        .expect("a shifted clock is allowed with the embedded Kafka or a UAT cluster");
    let clock = cfg.clock.clock();
    let app = start_on(cfg, clock).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    register_in(&app, &p, "UAT-1", "richmond", json!({})).await;
    disconnect("SO-UAT-1", "UAT-1", "2026-12-01T15:00:00Z")
        .produce(&p, &app.config.topics.orders)
        .await;

    let held = wait_status(&events, "SO-UAT-1", OrderStatus::Deferred).await;
    assert_eq!(held.retry_at, Some(ts("2026-12-28T13:00:00Z")), "{held:?}");
    assert!(
        held.at.to_string().starts_with("2026-12-24T15:"),
        "{held:?}"
    );

    let (status, body) = http_get(app.http_addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        ready["uat_clock"]["started_at"], "2026-12-24T15:00:00Z",
        "{body}"
    );
    assert_eq!(ready["uat_clock"]["speed"], 1.0, "{body}");
    let now: Timestamp = ready["business_time"].as_str().unwrap().parse().unwrap();
    assert!(
        now >= ts("2026-12-24T15:00:00Z") && now < ts("2026-12-24T16:00:00Z"),
        "{body}"
    );
    app.shutdown().await;
}
