//! Embedded mode across a restart (issue 10, defect 5): the embedded Kafka forgets its topics,
//! the store keeps the registry, forecasts and emergencies it applied, so a restart on the same
//! data directory knows its meters and its weather; a meter that is not in the registry (yet) makes its orders wait, never fail as
//! "no switch".

use std::time::Duration;

use switchyard::domain::OrderStatus;

use crate::common::*;

const T: Duration = Duration::from_secs(30);

#[actix_rt::test]
async fn a_restart_in_embedded_mode_keeps_the_meters_it_knew() {
    let s = started(|c| {
        c.head_end.simulator.no_answer_rate = 1.0; // the command stays in flight
        c.head_end.command_deadline_secs = 600;
    })
    .await;
    let mut cfg = s.cfg.clone();
    let (_dir, app, p, events) = s.split();
    register(&app, &p, &[("M-1", true), ("M-2", true)]).await;
    // A forecast too: forgetting it would let through a disconnect that a weather rule holds.
    produce_json(
        &p,
        &app.config.topics.weather,
        "zone-a/2026-12-03",
        serde_json::json!({"schema_version":1,"zone":"zone-a","date":"2026-12-03","low_f":12.0,"high_f":25.0}),
    )
    .await;
    Order::disconnect("SO-1", "M-1")
        .produce(&p, &app.config.topics.orders)
        .await;
    events
        .wait("SO-1 dispatched", T, |l| {
            l.statuses("SO-1").contains(&OrderStatus::Dispatched)
        })
        .await;
    // The kept registry reaches the store in batches (every 200 ms).
    eventually("the registry and the forecast kept", T, async || {
        let s = app.store.store();
        let (registry, weather) = (s.kept("registry").unwrap(), s.kept("weather").unwrap());
        if registry.len() == 2 && weather.len() == 1 {
            Ok(())
        } else {
            Err(format!(
                "{} registry entries, {} forecasts",
                registry.len(),
                weather.len()
            ))
        }
    })
    .await;
    drop(p);
    app.shutdown().await;

    // Same data directory, a new (empty) embedded Kafka, no registry file.
    cfg.head_end.simulator.no_answer_rate = 0.0;
    let app = start(cfg).await;
    assert!(app.registry.contains("M-1") && app.registry.contains("M-2"));
    assert_eq!(
        app.facts.forecasts("zone-a").len(),
        1,
        "the forecast is kept too"
    );
    let (code, body) = http_get(app.http_addr, "/readyz").await;
    assert_eq!(code, 200);
    assert!(body.contains("\"registry_meters\":2"), "{body}");
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    let ev = events.wait_final("SO-1", T).await;
    assert_eq!(ev.last().unwrap().status, OrderStatus::Completed, "{ev:?}");
    assert!(ev
        .iter()
        .all(|e| e.reason.as_deref() != Some("field_order_needed")));
    // New orders for the known meters are accepted (not dead-lettered as unknown_meter).
    let p = producer(&app.bootstrap);
    Order::read("SO-2", "M-2")
        .produce(&p, &app.config.topics.orders)
        .await;
    let ev = events.wait_final("SO-2", T).await;
    assert_eq!(ev.last().unwrap().status, OrderStatus::Completed);
    app.shutdown().await;
}

#[actix_rt::test]
async fn an_open_order_of_a_meter_missing_from_the_registry_waits_for_it() {
    use switchyard::store::WriteBatch;
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path());
    {
        // An order accepted in an earlier life, for a meter this start does not know yet.
        let store = switchyard::open_store(&cfg).unwrap();
        let rec = Order::disconnect("SO-9", "M-9").accepted();
        store
            .apply(&[WriteBatch {
                new_orders: vec![rec],
                ..Default::default()
            }])
            .unwrap();
    }
    let app = start(cfg).await;
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    events
        .wait("SO-9 waits for its meter", T, |l| {
            l.of("SO-9")
                .iter()
                .any(|e| e.reason.as_deref() == Some("meter_not_in_registry"))
        })
        .await;
    assert!(
        events.finals().get("SO-9").is_none(),
        "not failed: {:?}",
        events.of("SO-9")
    );
    let p = producer(&app.bootstrap);
    register(&app, &p, &[("M-9", true)]).await;
    let ev = events.wait_final("SO-9", T).await;
    assert_eq!(ev.last().unwrap().status, OrderStatus::Completed, "{ev:?}");
    assert!(app.store.store().command("SO-9/1").unwrap().is_some());
    app.shutdown().await;
}
