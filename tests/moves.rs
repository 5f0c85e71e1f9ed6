//! Move-out / move-in (issue 16, item 4) and meter exchange (item 5), end to end on Kafka.
//!
//! Moves: two linked legs on two meters
//! run on their dates; the move-out's final read travels over the control topic (a `move_link`
//! record from the move-out meter's outbox) to the move-in, whose `completed` event is the
//! move's one confirmation; a cancel of one leg cancels the other before it operates; bad move
//! orders are dead-lettered with the reason.

mod common;

use std::time::Duration;

use common::*;
use switchyard::domain::OrderStatus;

const T: Duration = Duration::from_secs(20);

fn leg(id: &str, kind: &str, meter: &str, at: jiff::Timestamp, other: (&str, &str)) -> Order {
    Order::new(id, kind, meter)
        .reason("move")
        .earliest_at(&at.to_string())
        .set("linked_order_id", other.0)
        .set("linked_meter_id", other.1)
}

#[actix_rt::test]
async fn a_linked_move_confirms_once_with_the_final_read_and_a_cancel_takes_both_legs() {
    let (_dir, app, p, events) = started(|_| {}).await.split();
    let orders = app.config.topics.orders.clone();
    let control = TopicLog::follow(&app.bootstrap, &app.config.topics.control);
    let dlq = TopicLog::follow(&app.bootstrap, &app.config.topics.dead_letter);
    register_records(
        &app,
        &p,
        &[
            meter("M-OLD", true),
            meter("M-NEW", true),
            meter("M-OLD-2", true),
            meter("M-NEW-2", true),
        ],
    )
    .await;
    let now = jiff::Timestamp::now();

    // The move: out of M-OLD, into M-NEW, both due now.
    leg("MV-OUT", "move_out", "M-OLD", now, ("MV-IN", "M-NEW"))
        .produce(&p, &orders)
        .await;
    leg("MV-IN", "move_in", "M-NEW", now, ("MV-OUT", "M-OLD"))
        .produce(&p, &orders)
        .await;
    let out = events.wait_final("MV-OUT", T).await;
    let out_done = out.last().unwrap();
    assert_eq!(out_done.status, OrderStatus::Completed);
    let final_kwh = out_done
        .final_read
        .as_ref()
        .expect("the move-out's final read")
        .kwh;
    let dispatched = events
        .json()
        .into_iter()
        .find(|e| e["order_id"] == "MV-OUT" && e["status"] == "dispatched")
        .expect("the move-out was sent");
    assert_eq!(dispatched["policy"]["inputs"]["kind"], "move_out");
    assert!(
        dispatched["policy"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule"] == "move_out"),
        "the decision says it is a move: {dispatched}"
    );
    events.wait_final("MV-IN", T).await;
    let done = events
        .json()
        .into_iter()
        .find(|e| e["order_id"] == "MV-IN" && e["status"] == "completed")
        .unwrap();
    assert_valid(
        &schema("order-event.v1.schema.json"),
        &done,
        "move-in completion",
    );
    assert_eq!(done["move"]["linked_order_id"], "MV-OUT");
    assert_eq!(done["move"]["linked_status"], "completed");
    assert_eq!(done["move"]["final_read"]["kwh"], final_kwh);
    let completions = |id: &str| {
        events
            .statuses(id)
            .into_iter()
            .filter(|s| *s == OrderStatus::Completed)
            .count()
    };
    assert_eq!(completions("MV-IN"), 1, "one confirmation of the move");
    // The link went over the control topic, keyed by the move-in's meter, valid to its schema.
    control
        .wait("the move-out's link on the control topic", T, |l| {
            l.json().iter().any(|r| r["type"] == "move_link")
        })
        .await;
    let link = control
        .json()
        .into_iter()
        .find(|r| r["type"] == "move_link" && r["from_order_id"] == "MV-OUT")
        .expect("the move-out's link on the control topic");
    assert_valid(&schema("control.v1.schema.json"), &link, "move_link");
    assert_eq!(link["meter_id"], "M-NEW");

    // A second move, a day ahead; the CIS cancels the move-in: the move-out goes too.
    let tomorrow = now + jiff::SignedDuration::from_hours(24);
    leg(
        "MV2-OUT",
        "move_out",
        "M-OLD-2",
        tomorrow,
        ("MV2-IN", "M-NEW-2"),
    )
    .produce(&p, &orders)
    .await;
    leg(
        "MV2-IN",
        "move_in",
        "M-NEW-2",
        tomorrow,
        ("MV2-OUT", "M-OLD-2"),
    )
    .produce(&p, &orders)
    .await;
    events
        .wait("both legs scheduled", T, |l| {
            l.statuses("MV2-OUT").contains(&OrderStatus::Scheduled)
                && l.statuses("MV2-IN").contains(&OrderStatus::Scheduled)
        })
        .await;
    Order::cancel("CX-1", "M-NEW-2", "MV2-IN")
        .produce(&p, &orders)
        .await;
    let out2 = events.wait_final("MV2-OUT", T).await;
    let last = out2.last().unwrap();
    assert_eq!(last.status, OrderStatus::Cancelled);
    assert_eq!(last.reason.as_deref(), Some("linked_order_cancelled"));
    assert!(!events
        .statuses("MV2-OUT")
        .contains(&OrderStatus::Dispatched));
    assert_eq!(
        events.wait_final("MV2-IN", T).await.last().unwrap().status,
        OrderStatus::Cancelled
    );

    // Bad move orders: no date; a link to a meter nobody registered; a non-payment reason.
    let bad = [
        leg("BAD-1", "move_out", "M-OLD", now, ("X", "M-NEW"))
            .set("earliest_at", serde_json::Value::Null),
        leg("BAD-2", "move_in", "M-NEW", now, ("X", "M-NOBODY")),
        leg("BAD-3", "move_out", "M-OLD", now, ("X", "M-NEW")).reason("non_payment"),
    ];
    for o in &bad {
        o.produce(&p, &orders).await;
    }
    dlq.wait("three dead letters", T, |l| l.len() >= 3).await;
    let reasons: Vec<(String, String)> = dlq
        .messages
        .lock()
        .unwrap()
        .iter()
        .map(|m| {
            let v: serde_json::Value =
                serde_json::from_slice(rdkafka::Message::payload(m).unwrap()).unwrap();
            (
                v["order_id"].as_str().unwrap_or_default().to_string(),
                header(m, "switchyard.dlq.reason").unwrap(),
            )
        })
        .collect();
    for (id, reason) in [
        ("BAD-1", "missing_field"),
        ("BAD-2", "unknown_meter"),
        ("BAD-3", "invalid_field"),
    ] {
        assert!(
            reasons.iter().any(|(i, r)| i == id && r == reason),
            "{id}: {reason} in {reasons:?}"
        );
    }
    app.shutdown().await;
}

/// Meter exchange (issue 16, item 5): the field removes M-EX-OLD and installs M-EX-NEW; the
/// removed meter's open disconnect is carried to the new meter over the control topic (a
/// `meter_handover` from the removed meter's outbox), stored under the new meter, and lives on
/// there (a cancel on the new meter withdraws it). A malformed exchange is dead-lettered.
#[actix_rt::test]
async fn an_exchange_carries_the_removed_meters_open_order_to_the_new_meter() {
    let (_dir, app, p, events) = started(|_| {}).await.split();
    let orders = app.config.topics.orders.clone();
    let control_topic = app.config.topics.control.clone();
    let control = TopicLog::follow(&app.bootstrap, &control_topic);
    let dlq = TopicLog::follow(&app.bootstrap, &app.config.topics.dead_letter);
    register_records(
        &app,
        &p,
        &[meter("M-EX-OLD", true), meter("M-EX-NEW", true)],
    )
    .await;
    let tomorrow = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
    Order::disconnect("SO-EX-1", "M-EX-OLD")
        .earliest_at(&tomorrow.to_string())
        .produce(&p, &orders)
        .await;
    events
        .wait("the disconnect scheduled", T, |l| {
            l.statuses("SO-EX-1").contains(&OrderStatus::Scheduled)
        })
        .await;
    let exchange = |id: &str, new: &str| {
        serde_json::json!({"type": "meter_exchange", "schema_version": 1, "fact_id": id,
            "meter_id": "M-EX-OLD", "new_meter_id": new,
            "exchanged_at": jiff::Timestamp::now().to_string(),
            "final_read_kwh": 1234.5, "initial_read_kwh": 0.5, "by": "crew-12"})
    };
    let good = exchange("EX-1", "M-EX-NEW");
    assert_valid(&schema("control.v1.schema.json"), &good, "meter_exchange");
    produce_json(&p, &control_topic, "M-EX-OLD", good).await;
    produce_json(&p, &control_topic, "M-EX-OLD", exchange("EX-2", "M-EX-OLD")).await;

    events
        .wait("the order received at the new meter", T, |l| {
            l.json().iter().any(|e| {
                e["order_id"] == "SO-EX-1"
                    && e["meter_id"] == "M-EX-NEW"
                    && e["reason"] == "meter_exchanged"
            })
        })
        .await;
    let store = app.store.store().clone();
    let open_at = |m: &str| -> Vec<String> {
        store
            .open_orders(m)
            .unwrap()
            .into_iter()
            .map(|o| o.order.order_id)
            .collect()
    };
    eventually("the order open at the new meter only", T, async || {
        (open_at("M-EX-OLD").is_empty() && open_at("M-EX-NEW") == ["SO-EX-1"]).then_some(())
    })
    .await;
    assert_eq!(
        store.order("SO-EX-1").unwrap().unwrap().order.meter_id,
        "M-EX-NEW"
    );
    control
        .wait("the handover on the control topic", T, |l| {
            l.json().iter().any(|r| r["type"] == "meter_handover")
        })
        .await;
    let handover = control
        .json()
        .into_iter()
        .find(|r| r["type"] == "meter_handover")
        .unwrap();
    assert_valid(
        &schema("control.v1.schema.json"),
        &handover,
        "meter_handover",
    );
    assert_eq!(handover["meter_id"], "M-EX-NEW");
    assert_eq!(handover["orders"][0]["order_id"], "SO-EX-1");

    // It lives at the new meter now: a cancel there withdraws it.
    Order::cancel("CX-EX", "M-EX-NEW", "SO-EX-1")
        .produce(&p, &orders)
        .await;
    let last = events.wait_final("SO-EX-1", T).await;
    assert_eq!(last.last().unwrap().status, OrderStatus::Cancelled);

    dlq.wait("the bad exchange dead-lettered", T, |l| l.len() >= 1)
        .await;
    let m = dlq.messages.lock().unwrap()[0].clone();
    assert_eq!(header(&m, "switchyard.dlq.reason").unwrap(), "invalid_fact");
    assert!(header(&m, "switchyard.dlq.detail")
        .unwrap()
        .contains("new_meter_id equals meter_id"));
    app.shutdown().await;
}
