//! Embedded mode across a restart (issue 10, defect 5): the embedded Kafka forgets its topics,
//! the store keeps the registry, forecasts and emergencies it applied, so a restart on the same
//! data directory knows its meters and its weather; a meter that is not in the registry (yet) makes its orders wait, never fail as
//! "no switch".

use std::time::Duration;

use switchyard::domain::OrderStatus;
use switchyard::store::Store;

use crate::common::*;

const T: Duration = Duration::from_secs(30);

#[actix_rt::test]
async fn a_restart_in_embedded_mode_keeps_the_meters_it_knew() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.head_end.simulator.no_answer_rate = 1.0; // the command stays in flight
    cfg.head_end.command_deadline_secs = 600;
    let app = start(cfg.clone()).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    register(&app, &p, &[("M-1", true), ("M-2", true)]).await;
    // A forecast too: forgetting it would let through a disconnect that a weather rule holds.
    produce_json(
        &p,
        &app.config.topics.weather,
        "zone-a/2026-12-03",
        serde_json::json!({"schema_version":1,"zone":"zone-a","date":"2026-12-03","low_f":12.0,"high_f":25.0}),
    )
    .await;
    produce_json(
        &p,
        &app.config.topics.orders,
        "M-1",
        order("SO-1", "disconnect", "M-1"),
    )
    .await;
    events
        .wait("SO-1 dispatched", T, |l| {
            l.statuses("SO-1").contains(&OrderStatus::Dispatched)
        })
        .await;
    // The kept registry reaches the store in batches (every 200 ms).
    let until = std::time::Instant::now() + T;
    while app.store.store().kept("registry").unwrap().len() < 2
        || app.store.store().kept("weather").unwrap().is_empty()
    {
        assert!(std::time::Instant::now() < until, "registry never kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    produce_json(
        &p,
        &app.config.topics.orders,
        "M-2",
        order("SO-2", "read", "M-2"),
    )
    .await;
    let ev = events.wait_final("SO-2", T).await;
    assert_eq!(ev.last().unwrap().status, OrderStatus::Completed);
    app.shutdown().await;
}

#[actix_rt::test]
async fn an_open_order_of_a_meter_missing_from_the_registry_waits_for_it() {
    use switchyard::store::{EmbeddedStore, WriteBatch};
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path());
    {
        // An order accepted in an earlier life, for a meter this start does not know yet.
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let rec = accepted("SO-9", "disconnect", "M-9");
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
