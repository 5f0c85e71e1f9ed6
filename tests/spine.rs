//! The spine end to end through the Kafka protocol (librdkafka's mock cluster, embedded store,
//! simulated head-end): what an integrator sees on the topics and what the audit trail keeps.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::Message;
use switchyard::domain::{AuditKind, CommandKind, OrderStatus, SwitchState};

const T: Duration = Duration::from_secs(20);

/// The statuses of an order that runs without a hitch.
const COMPLETED_PATH: [OrderStatus; 4] = [
    OrderStatus::Received,
    OrderStatus::Dispatched,
    OrderStatus::Confirmed,
    OrderStatus::Completed,
];

#[actix_rt::test]
async fn orders_become_confirmed_switch_commands_with_an_audit_trail() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(test_config(dir.path())).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    register(&app, &p, &[("M-1", true), ("M-2", true)]).await;

    produce_json(
        &p,
        &app.config.topics.orders,
        "M-1",
        order("SO-1", "disconnect", "M-1"),
    )
    .await;
    produce_json(
        &p,
        &app.config.topics.orders,
        "M-2",
        order("SO-2", "read", "M-2"),
    )
    .await;
    let ev = events.wait_final("SO-1", T).await;
    assert_eq!(
        ev.iter().map(|e| e.status).collect::<Vec<_>>(),
        COMPLETED_PATH
    );
    let done = ev.last().unwrap();
    assert_eq!(done.switch_state, Some(SwitchState::Disconnected));
    assert_eq!(done.command_id.as_deref(), Some("SO-1/1"));
    assert!(
        ev.windows(2).all(|w| w[0].at <= w[1].at),
        "event times are ordered"
    );

    let read = events.wait_final("SO-2", T).await;
    assert_eq!(read.last().unwrap().status, OrderStatus::Completed);
    assert!(
        read.last().unwrap().register_kwh.is_some(),
        "a read reports the register"
    );

    // Reconnect the same meter: the switch closes again.
    produce_json(
        &p,
        &app.config.topics.orders,
        "M-1",
        order("SO-3", "reconnect", "M-1"),
    )
    .await;
    let ev = events.wait_final("SO-3", T).await;
    assert_eq!(
        ev.last().unwrap().switch_state,
        Some(SwitchState::Connected)
    );
    assert_eq!(
        app.simulator.as_ref().unwrap().field_state("M-1"),
        SwitchState::Connected
    );

    // The audit trail holds every step, in time order, linked to order and command ids.
    let audit = app.store.store().audit("M-1").unwrap();
    let kinds: Vec<AuditKind> = audit
        .iter()
        .filter(|a| a.order_id.as_deref() == Some("SO-1"))
        .map(|a| a.kind)
        .collect();
    for k in [
        AuditKind::OrderReceived,
        AuditKind::CommandDispatched,
        AuditKind::CommandResult,
        AuditKind::StatusChange,
    ] {
        assert!(kinds.contains(&k), "audit of SO-1 lacks {k:?}: {kinds:?}");
    }
    assert!(audit.windows(2).all(|w| w[0].at <= w[1].at));
    let rec = app.store.store().order("SO-1").unwrap().unwrap();
    assert_eq!(rec.status, OrderStatus::Completed);
    let cmd = app.store.store().command("SO-1/1").unwrap().unwrap();
    assert_eq!(cmd.command.kind, CommandKind::Disconnect);
    assert_eq!(cmd.results.len(), 1);
    assert_eq!(app.store.store().counts().unwrap().open_orders, 0);
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_duplicate_or_redelivered_order_never_causes_a_second_command() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(test_config(dir.path())).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    let commands_before = app.store.store().counts().unwrap().commands;
    register(&app, &p, &[("M-1", true)]).await;

    let o = order("SO-D", "disconnect", "M-1");
    produce_json(&p, &app.config.topics.orders, "M-1", o.clone()).await;
    produce_json(&p, &app.config.topics.orders, "M-1", o.clone()).await;
    events.wait_final("SO-D", T).await;
    // And once more after it completed.
    produce_json(&p, &app.config.topics.orders, "M-1", o.clone()).await;
    produce_json(
        &p,
        &app.config.topics.orders,
        "M-1",
        order("SO-E", "read", "M-1"),
    )
    .await;
    events.wait_final("SO-E", T).await;

    let st = events.statuses("SO-D");
    assert_eq!(
        st.iter().filter(|s| **s == OrderStatus::Received).count(),
        1,
        "{st:?}"
    );
    assert_eq!(
        st.iter().filter(|s| **s == OrderStatus::Dispatched).count(),
        1,
        "{st:?}"
    );
    assert_eq!(
        app.store.store().counts().unwrap().commands - commands_before,
        2,
        "one disconnect and one read"
    );
    let dups = app
        .store
        .store()
        .audit("M-1")
        .unwrap()
        .into_iter()
        .filter(|a| a.kind == AuditKind::DuplicateIgnored)
        .count();
    assert_eq!(dups, 2);
    app.shutdown().await;
}

#[actix_rt::test]
async fn bad_records_go_to_the_dead_letter_topic_and_the_rest_keeps_flowing() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(test_config(dir.path())).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    let dlq = TopicLog::follow(&app.bootstrap, &app.config.topics.dead_letter);
    register(&app, &p, &[("M-1", true)]).await;

    let orders = &app.config.topics.orders;
    produce(&p, orders, "M-1", b"{\"schema_version\":1, not json").await;
    produce_json(&p, orders, "M-1", order("SO-OK-1", "read", "M-1")).await;
    produce_json(
        &p,
        orders,
        "M-404",
        order("SO-BAD-2", "disconnect", "M-404"),
    )
    .await;
    let mut long = order("SO-BAD-3", "disconnect", "M-1");
    long["notes"] = "x".repeat(251).into();
    produce_json(&p, orders, "M-1", long).await;
    produce_json(&p, orders, "M-1", order("SO-BAD-4", "explode", "M-1")).await;
    produce_json(&p, orders, "M-1", order("SO-OK-5", "disconnect", "M-1")).await;

    events.wait_final("SO-OK-5", T).await;
    events.wait_final("SO-OK-1", T).await;
    dlq.wait("4 dead letters", T, |l| l.len() >= 4).await;
    let msgs = dlq.messages.lock().unwrap().clone();
    let by_reason = |r: &str| {
        msgs.iter()
            .find(|m| header(m, "switchyard.dlq.reason").as_deref() == Some(r))
            .cloned()
            .unwrap_or_else(|| panic!("no dead letter for {r}"))
    };
    let mut reasons: Vec<String> = msgs
        .iter()
        .map(|m| header(m, "switchyard.dlq.reason").unwrap())
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            "malformed_json",
            "notes_too_long",
            "unknown_kind",
            "unknown_meter"
        ]
    );
    // The original bytes, byte for byte, and where they came from.
    let bad = by_reason("malformed_json");
    assert_eq!(bad.payload().unwrap(), b"{\"schema_version\":1, not json");
    assert_eq!(bad.key().unwrap(), b"M-1");
    assert_eq!(
        header(&bad, "switchyard.dlq.source.topic").as_deref(),
        Some(orders.as_str())
    );
    assert!(header(&bad, "switchyard.dlq.source.offset")
        .unwrap()
        .parse::<i64>()
        .is_ok());
    assert!(
        header(&by_reason("notes_too_long"), "switchyard.dlq.detail")
            .unwrap()
            .contains("251 characters")
    );
    // Rejections with a readable order id are also order events.
    let r = events.wait_final("SO-BAD-2", T).await;
    assert_eq!(r.last().unwrap().status, OrderStatus::Rejected);
    assert_eq!(r.last().unwrap().reason.as_deref(), Some("unknown_meter"));
    assert!(
        app.store.store().order("SO-BAD-3").unwrap().is_none(),
        "rejected orders are not accepted"
    );
    app.shutdown().await;
}

#[actix_rt::test]
async fn failures_are_retried_with_backoff_then_raise_an_exception() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.head_end.simulator.failure_rate = 1.0;
    let app = start(cfg).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    let exceptions = TopicLog::follow(&app.bootstrap, &app.config.topics.exceptions);
    register(&app, &p, &[("M-1", true)]).await;

    produce_json(
        &p,
        &app.config.topics.orders,
        "M-1",
        order("SO-F", "disconnect", "M-1"),
    )
    .await;
    let ev = events.wait_final("SO-F", T).await;
    let st: Vec<OrderStatus> = ev.iter().map(|e| e.status).collect();
    assert_eq!(
        st.iter().filter(|s| **s == OrderStatus::Dispatched).count(),
        3,
        "{st:?}"
    );
    assert_eq!(
        st.iter()
            .filter(|s| **s == OrderStatus::RetryScheduled)
            .count(),
        2,
        "{st:?}"
    );
    assert_eq!(*st.last().unwrap(), OrderStatus::Failed);
    let retries: Vec<_> = ev
        .iter()
        .filter(|e| e.status == OrderStatus::RetryScheduled)
        .collect();
    let gap =
        |e: &switchyard::domain::OrderEvent| e.retry_at.unwrap().duration_since(e.at).as_millis();
    assert!(gap(retries[1]) > gap(retries[0]), "backoff grows");
    exceptions.wait("an exception", T, |l| l.len() == 1).await;
    let x = &exceptions.json()[0];
    assert_eq!(x["kind"], "retries_exhausted");
    assert_eq!(x["order_id"], "SO-F");
    assert!(app
        .store
        .store()
        .exception("SO-F/exception")
        .unwrap()
        .is_some());
    app.shutdown().await;
}

#[actix_rt::test]
async fn an_unanswered_command_is_resolved_by_a_status_check_never_by_resending() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.head_end.simulator.no_answer_rate = 1.0;
    cfg.head_end.max_attempts = 2;
    let app = start(cfg).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    register(&app, &p, &[("M-1", true)]).await;

    produce_json(
        &p,
        &app.config.topics.orders,
        "M-1",
        order("SO-N", "disconnect", "M-1"),
    )
    .await;
    let ev = events.wait_final("SO-N", Duration::from_secs(30)).await;
    assert_eq!(ev.last().unwrap().status, OrderStatus::Failed);
    assert_eq!(
        ev.last().unwrap().reason.as_deref(),
        Some("outcome_unknown")
    );
    let s = app.store.store();
    assert!(s.command("SO-N/1").unwrap().is_some());
    assert!(
        s.command("SO-N/2").unwrap().is_none(),
        "the disconnect was never sent a second time"
    );
    assert!(s.command("SO-N/1/status-1").unwrap().is_some());
    assert!(s.command("SO-N/1/status-2").unwrap().is_some());
    assert_eq!(
        s.exception("SO-N/exception").unwrap().unwrap().kind,
        switchyard::domain::ExceptionKind::OutcomeUnknown
    );
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_meter_without_a_switch_gets_a_field_order_exception_not_a_command() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(test_config(dir.path())).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    let exceptions = TopicLog::follow(&app.bootstrap, &app.config.topics.exceptions);
    register(&app, &p, &[("M-NS", false)]).await;
    produce_json(
        &p,
        &app.config.topics.orders,
        "M-NS",
        order("SO-NS", "disconnect", "M-NS"),
    )
    .await;
    let ev = events.wait_final("SO-NS", T).await;
    assert_eq!(ev.last().unwrap().status, OrderStatus::Failed);
    assert_eq!(
        ev.last().unwrap().reason.as_deref(),
        Some("field_order_needed")
    );
    assert!(!ev.iter().any(|e| e.status == OrderStatus::Dispatched));
    exceptions
        .wait("field order exception", T, |l| {
            l.json().iter().any(|x| x["kind"] == "field_order_needed")
        })
        .await;
    assert_eq!(app.store.store().counts().unwrap().commands, 0);
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_reconnect_or_cancel_supersedes_a_pending_disconnect() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(test_config(dir.path())).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    register(&app, &p, &[("M-1", true), ("M-2", true)]).await;
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2)).to_string();

    let mut d1 = order("SO-P1", "disconnect", "M-1");
    d1["earliest_at"] = later.clone().into();
    produce_json(&p, &app.config.topics.orders, "M-1", d1).await;
    produce_json(
        &p,
        &app.config.topics.orders,
        "M-1",
        order("SO-R1", "reconnect", "M-1"),
    )
    .await;
    let ev = events.wait_final("SO-P1", T).await;
    assert_eq!(
        ev.iter().map(|e| e.status).collect::<Vec<_>>(),
        vec![
            OrderStatus::Received,
            OrderStatus::Scheduled,
            OrderStatus::Cancelled
        ]
    );
    assert_eq!(
        ev.last().unwrap().reason.as_deref(),
        Some("superseded_by_reconnect")
    );
    assert_eq!(
        events.wait_final("SO-R1", T).await.last().unwrap().status,
        OrderStatus::Completed
    );

    let mut d2 = order("SO-P2", "disconnect", "M-2");
    d2["earliest_at"] = later.into();
    produce_json(&p, &app.config.topics.orders, "M-2", d2).await;
    let mut c = order("SO-C2", "cancel", "M-2");
    c["target_order_id"] = "SO-P2".into();
    produce_json(&p, &app.config.topics.orders, "M-2", c).await;
    assert_eq!(
        events.wait_final("SO-P2", T).await.last().unwrap().status,
        OrderStatus::Cancelled
    );
    let c = events.wait_final("SO-C2", T).await;
    assert_eq!(
        c.last().unwrap().reason.as_deref(),
        Some("target_cancelled")
    );
    assert!(app.store.store().command("SO-P1/1").unwrap().is_none());
    assert!(app.store.store().command("SO-P2/1").unwrap().is_none());
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_restart_resumes_open_orders_and_resolves_in_flight_commands_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.head_end.simulator.no_answer_rate = 1.0; // commands stay in flight
    cfg.head_end.command_deadline_secs = 600;
    let app = start(cfg.clone()).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    register(&app, &p, &[("M-1", true), ("M-2", true)]).await;
    produce_json(
        &p,
        &app.config.topics.orders,
        "M-1",
        order("SO-X1", "disconnect", "M-1"),
    )
    .await;
    produce_json(
        &p,
        &app.config.topics.orders,
        "M-2",
        order("SO-X2", "read", "M-2"),
    )
    .await;
    events
        .wait("both dispatched", T, |l| {
            ["SO-X1", "SO-X2"]
                .iter()
                .all(|o| l.statuses(o).contains(&OrderStatus::Dispatched))
        })
        .await;
    drop(p);
    app.shutdown().await;

    // Same store, answering head-end. The embedded Kafka is new (and empty): the meters come
    // from a registry file this time.
    let app = restart_answering(cfg, dir.path(), &["M-1", "M-2"]).await;
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    let x1 = events.wait_final("SO-X1", T).await;
    assert_eq!(x1.last().unwrap().status, OrderStatus::Completed);
    let x2 = events.wait_final("SO-X2", T).await;
    assert_eq!(x2.last().unwrap().status, OrderStatus::Completed);
    let s = app.store.store();
    assert!(
        s.command("SO-X1/1/status-1").unwrap().is_some(),
        "switch status asked before any retry"
    );
    let audit = s.audit("M-1").unwrap();
    let recovered = audit
        .iter()
        .position(|a| a.kind == AuditKind::Recovered)
        .expect("recovery audited");
    let status_check = audit
        .iter()
        .position(|a| a.command_id.as_deref() == Some("SO-X1/1/status-1"))
        .unwrap();
    assert!(recovered < status_check);
    app.shutdown().await;
}

#[actix_rt::test]
async fn operator_http_serves_health_readiness_metrics_and_order_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(test_config(dir.path())).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    register(&app, &p, &[("M-1", true)]).await;
    produce_json(
        &p,
        &app.config.topics.orders,
        "M-1",
        order("SO-H", "read", "M-1"),
    )
    .await;
    events.wait_final("SO-H", T).await;

    assert_eq!(http_get(app.http_addr, "/healthz").await.0, 200);
    let (code, body) = http_get(app.http_addr, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_get(app.http_addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        body.contains("switchyard_orders_received_total{kind=\"read\"}"),
        "{body}"
    );
    assert!(
        body.contains("switchyard_command_latency_seconds_bucket"),
        "{body}"
    );
    let (code, body) = http_get(app.http_addr, "/api/v1/orders/SO-H").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["order"]["status"], "completed");
    assert!(v["audit"].as_array().unwrap().len() >= 3);
    let (code, body) = http_get(app.http_addr, "/api/v1/orders/NOPE").await;
    assert_eq!(code, 404);
    assert!(body.contains("NOPE"));
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_restart_with_an_undelivered_order_and_a_command_in_flight_resolves_both_in_order() {
    use switchyard::domain::{OrderRecord, OrderStatus as S};
    use switchyard::store::{EmbeddedStore, Store, WriteBatch};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.head_end.simulator.no_answer_rate = 1.0;
    cfg.head_end.command_deadline_secs = 600;
    let app = start(cfg.clone()).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    register(&app, &p, &[("M-1", true), ("M-2", true)]).await;
    produce_json(
        &p,
        &app.config.topics.orders,
        "M-1",
        order("SO-A", "disconnect", "M-1"),
    )
    .await;
    events
        .wait("SO-A dispatched", T, |l| {
            l.statuses("SO-A").contains(&S::Dispatched)
        })
        .await;
    drop(p);
    app.shutdown().await;

    // The process "stopped" right after the intake stored a second order for the same meter,
    // before the meter's actor saw it.
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let now = jiff::Timestamp::now();
        let rec = |id: &str, kind: &str, m: &str| {
            let bytes = serde_json::to_vec(&order(id, kind, m)).unwrap();
            let o =
                switchyard::domain::validate_order(Some(m.as_bytes()), Some(&bytes), |_| true, now)
                    .unwrap();
            OrderRecord {
                order: o,
                status: S::Received,
                received_at: now,
                updated_at: now,
                reason: None,
                source: None,
            }
        };
        // And, for a meter with nothing in flight, a disconnect its actor never saw.
        let batch = WriteBatch {
            new_orders: vec![rec("SO-B", "read", "M-1"), rec("SO-C", "disconnect", "M-2")],
            ..Default::default()
        };
        store.apply(&[batch]).unwrap();
    }

    let app = restart_answering(cfg, dir.path(), &["M-1", "M-2"]).await;
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    let c = events.wait_final("SO-C", T).await;
    assert_eq!(c.last().unwrap().status, S::Completed);
    let st = app.store.store();
    assert!(st.command("SO-C/1").unwrap().is_some());
    assert!(
        st.command("SO-C/1/status-1").unwrap().is_none(),
        "a command sent after the restart is not mistaken for a lost one"
    );
    assert!(st.command("SO-C/2").unwrap().is_none());
    assert_eq!(
        events.wait_final("SO-A", T).await.last().unwrap().status,
        S::Completed
    );
    assert_eq!(
        events.wait_final("SO-B", T).await.last().unwrap().status,
        S::Completed
    );
    let s = app.store.store();
    // Exactly: the lost disconnect resolved by one status check (then re-sent once, since the
    // simulator of the first run is gone and the switch reads connected), and the read.
    assert!(s.command("SO-A/1/status-1").unwrap().is_some());
    assert!(s.command("SO-A/1/status-2").unwrap().is_none());
    assert!(s.command("SO-B/1").unwrap().is_some());
    assert!(s.command("SO-B/2").unwrap().is_none());
    let audit = s.audit("M-1").unwrap();
    let pos = |f: &dyn Fn(&switchyard::domain::AuditEvent) -> bool| {
        audit.iter().position(|a| f(a)).unwrap()
    };
    let recovered = pos(&|a| a.kind == AuditKind::Recovered);
    let check = pos(&|a| a.command_id.as_deref() == Some("SO-A/1/status-1"));
    assert!(
        recovered < check,
        "recovery is audited before the status check it causes"
    );
    let m = s.meter("M-1").unwrap().unwrap();
    assert!(m.is_idle(), "the stored snapshot is the latest one: {m:?}");
    assert_eq!(s.counts().unwrap().open_orders, 0);
    app.shutdown().await;
}

/// The README's kcat example sends a meter's registration and its order at once; the two
/// topics race. An order read before its meter's registration waits for the registry
/// (`kafka.unknown_meter_grace_ms`) instead of being rejected `unknown_meter`.
#[actix_rt::test]
async fn an_order_that_overtakes_its_meters_registration_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(dir.path());
    c.kafka.unknown_meter_grace_ms = 15_000;
    let app = start(c).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    produce_json(
        &p,
        &app.config.topics.orders,
        "M-LATE",
        order("SO-LATE", "disconnect", "M-LATE"),
    )
    .await;
    // A positive sign that the intake holds the order: a record pending its commit, while the
    // meter is unknown and the order neither stored nor rejected.
    let until = std::time::Instant::now() + T;
    loop {
        let (_, metrics) = http_get(app.http_addr, "/metrics").await;
        let pending = metrics
            .lines()
            .find_map(|l| l.strip_prefix("switchyard_intake_records_pending_commit "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if pending >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the intake never read the order"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!app.registry.contains("M-LATE"));
    assert!(app.store.store().order("SO-LATE").unwrap().is_none());
    assert!(
        events.of("SO-LATE").is_empty(),
        "not rejected while it waits"
    );
    register(&app, &p, &[("M-LATE", true)]).await;
    let ev = events.wait_final("SO-LATE", T).await;
    assert_eq!(
        ev.iter().map(|e| e.status).collect::<Vec<_>>(),
        COMPLETED_PATH
    );
    app.shutdown().await;
}
