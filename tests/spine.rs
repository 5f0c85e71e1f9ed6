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

/// The audit trail (kind, status) of a disconnect that runs without a hitch.
fn completed_trail() -> Vec<(AuditKind, Option<OrderStatus>)> {
    vec![
        (AuditKind::OrderReceived, Some(OrderStatus::Received)),
        (AuditKind::Decision, Some(OrderStatus::Dispatched)),
        (AuditKind::CommandDispatched, None),
        (AuditKind::StatusChange, Some(OrderStatus::Dispatched)),
        (AuditKind::CommandResult, None),
        // The register in the confirmation is the disconnect's final read (high / low checked).
        (AuditKind::FinalRead, None),
        (AuditKind::StatusChange, Some(OrderStatus::Confirmed)),
        (AuditKind::StatusChange, Some(OrderStatus::Completed)),
    ]
}

#[actix_rt::test]
async fn orders_become_confirmed_switch_commands_with_an_audit_trail() {
    let (_dir, app, p, events) = started(|_| {}).await.split();
    let orders = &app.config.topics.orders;
    register(&app, &p, &[("M-1", true), ("M-2", true)]).await;

    Order::disconnect("SO-1", "M-1").produce(&p, orders).await;
    Order::read("SO-2", "M-2").produce(&p, orders).await;
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
    Order::reconnect("SO-3", "M-1").produce(&p, orders).await;
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
    assert_eq!(audit_trail(&app, "M-1", "SO-1"), completed_trail());
    let audit = app.store.store().audit("M-1").unwrap();
    assert!(audit.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.order_id.as_deref() == Some("SO-1"))
            .filter_map(|a| a.command_id.as_deref())
            .collect::<std::collections::BTreeSet<_>>(),
        std::collections::BTreeSet::from(["SO-1/1"]),
        "every command row of SO-1 names its command"
    );
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
    let (_dir, app, p, events) = started(|_| {}).await.split();
    let orders = &app.config.topics.orders;
    let commands_before = app.store.store().counts().unwrap().commands;
    register(&app, &p, &[("M-1", true)]).await;

    let o = Order::disconnect("SO-D", "M-1");
    o.produce(&p, orders).await;
    o.produce(&p, orders).await;
    events.wait_final("SO-D", T).await;
    // And once more after it completed.
    o.produce(&p, orders).await;
    Order::read("SO-E", "M-1").produce(&p, orders).await;
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
    let (_dir, app, p, events) = started(|_| {}).await.split();
    let orders = &app.config.topics.orders;
    let dlq = TopicLog::follow(&app.bootstrap, &app.config.topics.dead_letter);
    register(&app, &p, &[("M-1", true)]).await;

    produce(&p, orders, "M-1", b"{\"schema_version\":1, not json").await;
    Order::read("SO-OK-1", "M-1").produce(&p, orders).await;
    Order::disconnect("SO-BAD-2", "M-404")
        .produce(&p, orders)
        .await;
    Order::disconnect("SO-BAD-3", "M-1")
        .notes(&"x".repeat(251))
        .produce(&p, orders)
        .await;
    Order::new("SO-BAD-4", "explode", "M-1")
        .produce(&p, orders)
        .await;
    Order::disconnect("SO-OK-5", "M-1")
        .produce(&p, orders)
        .await;

    events.wait_final("SO-OK-5", T).await;
    events.wait_final("SO-OK-1", T).await;
    dlq.wait("4 dead letters", T, |l| l.len() >= 4).await;
    assert_eq!(dlq.len(), 4);
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
    let (_dir, app, p, events) = started(|c| {
        c.head_end.simulator.failure_rate = 1.0;
    })
    .await
    .split();
    let orders = &app.config.topics.orders;
    let exceptions = TopicLog::follow(&app.bootstrap, &app.config.topics.exceptions);
    register(&app, &p, &[("M-1", true)]).await;

    Order::disconnect("SO-F", "M-1").produce(&p, orders).await;
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
    let (_dir, app, p, events) = started(|c| {
        c.head_end.simulator.no_answer_rate = 1.0;
        c.head_end.max_attempts = 2;
    })
    .await
    .split();
    let orders = &app.config.topics.orders;
    register(&app, &p, &[("M-1", true)]).await;

    Order::disconnect("SO-N", "M-1").produce(&p, orders).await;
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
    assert!(
        s.command("SO-N/1/status-3").unwrap().is_none(),
        "max_attempts (2) status checks, no more"
    );
    assert_eq!(
        s.exception("SO-N/exception").unwrap().unwrap().kind,
        switchyard::domain::ExceptionKind::OutcomeUnknown
    );
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_meter_without_a_switch_gets_a_field_order_exception_not_a_command() {
    let (_dir, app, p, events) = started(|_| {}).await.split();
    let orders = &app.config.topics.orders;
    let exceptions = TopicLog::follow(&app.bootstrap, &app.config.topics.exceptions);
    register(&app, &p, &[("M-NS", false)]).await;
    Order::disconnect("SO-NS", "M-NS").produce(&p, orders).await;
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
    let (_dir, app, p, events) = started(|_| {}).await.split();
    let orders = &app.config.topics.orders;
    register(&app, &p, &[("M-1", true), ("M-2", true)]).await;
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2)).to_string();

    Order::disconnect("SO-P1", "M-1")
        .earliest_at(&later)
        .produce(&p, orders)
        .await;
    Order::reconnect("SO-R1", "M-1").produce(&p, orders).await;
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

    Order::disconnect("SO-P2", "M-2")
        .earliest_at(&later)
        .produce(&p, orders)
        .await;
    Order::cancel("SO-C2", "M-2", "SO-P2")
        .produce(&p, orders)
        .await;
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
    let s = started(|c| {
        c.head_end.simulator.no_answer_rate = 1.0; // commands stay in flight
        c.head_end.command_deadline_secs = 600;
    })
    .await;
    let cfg = s.cfg.clone();
    let (dir, app, p, events) = s.split();
    let orders = &app.config.topics.orders;
    register(&app, &p, &[("M-1", true), ("M-2", true)]).await;
    Order::disconnect("SO-X1", "M-1").produce(&p, orders).await;
    Order::read("SO-X2", "M-2").produce(&p, orders).await;
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
    // A deadline no loaded machine reaches: the read is answered once, so its trail is exact.
    let (_dir, app, p, events) = started(|c| c.head_end.command_deadline_secs = 600)
        .await
        .split();
    let orders = &app.config.topics.orders;
    register(&app, &p, &[("M-1", true)]).await;
    let reads_before = metric_of(
        app.http_addr,
        "switchyard_orders_received_total{kind=\"read\"}",
    )
    .await
    .unwrap_or(0.0);
    let latencies_before = metric_of(app.http_addr, "switchyard_command_latency_seconds_count")
        .await
        .unwrap_or(0.0);
    Order::read("SO-H", "M-1").produce(&p, orders).await;
    events.wait_final("SO-H", T).await;

    assert_eq!(http_get(app.http_addr, "/healthz").await.0, 200);
    let (code, body) = http_get(app.http_addr, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    // The recorder is the process's: other tests of this binary count into it at the same
    // time, so this test checks what its own read added, not a total.
    let reads = metric_of(
        app.http_addr,
        "switchyard_orders_received_total{kind=\"read\"}",
    )
    .await
    .expect("reads are counted");
    let latencies = metric_of(app.http_addr, "switchyard_command_latency_seconds_count")
        .await
        .expect("command latency is recorded");
    assert!(reads >= reads_before + 1.0, "{reads_before} -> {reads}");
    assert!(
        latencies >= latencies_before + 1.0,
        "{latencies_before} -> {latencies}"
    );
    let (code, body) = http_get(app.http_addr, "/api/v1/orders/SO-H").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["order"]["status"], "completed");
    let kinds: Vec<&str> = v["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "order_received",
            "command_dispatched",
            "status_change",
            "command_result",
            "status_change"
        ],
        "the read's whole trail, oldest first"
    );
    let (code, body) = http_get(app.http_addr, "/api/v1/orders/NOPE").await;
    assert_eq!(code, 404);
    assert!(body.contains("NOPE"));
    app.shutdown().await;
}

/// `/api/v1/meters/{id}/audit`: a meter's trail newest first, a page at a time, between two
/// instants; bad queries are refused with a message. (On the ScyllaDB store too, when this
/// binary runs with SWITCHYARD_TEST_BACKEND=scylla: the pages cross its time buckets.)
#[actix_rt::test]
async fn a_meters_audit_trail_pages_between_two_instants() {
    let (_dir, app, p, events) = started(|_| {}).await.split();
    let orders = &app.config.topics.orders;
    register(&app, &p, &[("M-1", true)]).await;
    for id in ["SO-A1", "SO-A2", "SO-A3"] {
        Order::read(id, "M-1").produce(&p, orders).await;
        events.wait_final(id, T).await;
    }
    let all = app.store.store().audit("M-1").unwrap();
    assert!(all.len() >= 9, "three reads' trails: {}", all.len());
    let get = |q: String| {
        let addr = app.http_addr;
        async move {
            let (code, body) = http_get(addr, &format!("/api/v1/meters/M-1/audit{q}")).await;
            (
                code,
                serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default(),
                body,
            )
        }
    };
    let page_rows = |v: &serde_json::Value| -> Vec<(String, String)> {
        v["audit"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["at"].as_str().unwrap().to_string(),
                    a["kind"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    // Every row once, newest first, two at a time.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let q = match &token {
            None => "?limit=2".to_string(),
            Some(t) => format!("?limit=2&page_token={t}"),
        };
        let (code, v, body) = get(q).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(v["order"], "newest_first");
        let rows = page_rows(&v);
        assert!(rows.len() <= 2);
        seen.extend(rows);
        match v["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    let expected: Vec<(String, String)> = all
        .iter()
        .rev()
        .map(|a| {
            let v = serde_json::to_value(a).unwrap();
            (
                v["at"].as_str().unwrap().to_string(),
                v["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(seen, expected);
    // Between two instants: the second read's trail only.
    let second: Vec<_> = all
        .iter()
        .filter(|a| a.order_id.as_deref() == Some("SO-A2"))
        .collect();
    let (from, to) = (second.first().unwrap().at, second.last().unwrap().at);
    let (code, v, body) = get(format!("?from={from}&to={to}&limit=1000")).await;
    assert_eq!(code, 200, "{body}");
    assert!(v["next_page_token"].is_null(), "{body}");
    let rows = v["audit"].as_array().unwrap();
    assert!(rows.iter().all(|a| a["order_id"] == "SO-A2"), "{body}");
    assert_eq!(rows.len(), second.len(), "{body}");
    // Refused, with a message naming the problem.
    for (q, says) in [
        ("?limit=0", "limit"),
        ("?limit=5000", "limit"),
        ("?from=yesterday", "from"),
        (&format!("?from={to}&to={from}") as &str, "after"),
        ("?page_token=zz", "page_token"),
        ("?colour=red", "query parameters"),
    ] {
        let (code, _, body) = get(q.to_string()).await;
        if from == to && says == "after" {
            continue;
        }
        assert_eq!(code, 400, "{q}: {body}");
        assert!(body.contains(says), "{q}: {body}");
    }
    let (code, body) = http_get(app.http_addr, "/api/v1/meters/NOPE/audit").await;
    assert_eq!(code, 404, "{body}");
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_restart_with_an_undelivered_order_and_a_command_in_flight_resolves_both_in_order() {
    use switchyard::domain::OrderStatus as S;
    use switchyard::store::WriteBatch;
    let s = started(|c| {
        c.head_end.simulator.no_answer_rate = 1.0;
        c.head_end.command_deadline_secs = 600;
    })
    .await;
    let cfg = s.cfg.clone();
    let (dir, app, p, events) = s.split();
    let orders = &app.config.topics.orders;
    register(&app, &p, &[("M-1", true), ("M-2", true)]).await;
    Order::disconnect("SO-A", "M-1").produce(&p, orders).await;
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
        let store = switchyard::open_store(&cfg).unwrap();
        // And, for a meter with nothing in flight, a disconnect its actor never saw.
        let batch = WriteBatch {
            new_orders: vec![
                Order::read("SO-B", "M-1").accepted(),
                Order::disconnect("SO-C", "M-2").accepted(),
            ],
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
    let (_dir, app, p, events) = started(|c| {
        c.kafka.unknown_meter_grace_ms = 15_000;
    })
    .await
    .split();
    let orders = &app.config.topics.orders;
    Order::disconnect("SO-LATE", "M-LATE")
        .produce(&p, orders)
        .await;
    // A positive sign that the intake holds the order: a record pending its commit, while the
    // meter is unknown and the order neither stored nor rejected.
    eventually(
        "the intake to hold the order pending its commit",
        T,
        async || {
            let pending =
                metric_of(app.http_addr, "switchyard_intake_records_pending_commit").await;
            match pending {
                Some(n) if n >= 1.0 => Ok(()),
                other => Err(format!("records pending commit: {other:?}")),
            }
        },
    )
    .await;
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
