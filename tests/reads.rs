//! Meter reads on Kafka (issue 16, items 1 and 2), end to end on the embedded Kafka: reads of
//! meters nobody watches wake no actor and write nothing; bad reads are dead-lettered with the
//! reason while the rest keep flowing; a meter confirmed disconnected is watched (the watch is
//! stored), and consumption on it beyond the tolerance raises one
//! `consumption_after_disconnect` exception on the exceptions topic, measured in engineering
//! units (the registry's multiplier applied). One test in this binary: it reads process-wide
//! counters.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

fn register_read(id: &str, meter: &str, dial: f64) -> serde_json::Value {
    serde_json::json!({
        "schema_version": 1, "read_id": id, "meter_id": meter, "kind": "register",
        "source": "head_end", "read_at": jiff::Timestamp::now().to_string(),
        "values": [{"usage": "active", "value": dial}]
    })
}

#[actix_rt::test]
async fn reads_of_unwatched_meters_wake_nothing_and_consumption_after_a_cut_raises_an_exception() {
    let (_dir, app, p, events) = started(|_| {}).await.split();
    let reads = app.config.topics.reads.clone();
    let dlq = TopicLog::follow(&app.bootstrap, &app.config.topics.dead_letter);
    let exceptions = TopicLog::follow(&app.bootstrap, &app.config.topics.exceptions);
    let mut ct = meter("M-CT", true);
    ct["multiplier"] = 10.into();
    register_records(&app, &p, &[ct, meter("M-IDLE", true)]).await;
    let store = app.store.store().clone();

    // The cut: the head-end's answer carries the register, which becomes the baseline.
    Order::disconnect("SO-CUT", "M-CT")
        .produce(&p, &app.config.topics.orders)
        .await;
    let done = events.wait_final("SO-CUT", T).await;
    let baseline = done
        .iter()
        .find_map(|e| e.register_kwh)
        .expect("the simulator reports the register with the cut");
    // The completion carries the final read: no earlier read of this meter, so unvalidated.
    let completed = events
        .json()
        .into_iter()
        .find(|e| e["order_id"] == "SO-CUT" && e["status"] == "completed")
        .unwrap();
    assert_valid(
        &schema("order-event.v1.schema.json"),
        &completed,
        "completion",
    );
    assert_eq!(completed["final_read"]["kwh"], baseline);
    assert_eq!(completed["final_read"]["class"], "no_history");
    let watched = eventually("the watch stored with the meter", T, async || {
        store
            .read_watches()
            .ok()?
            .into_iter()
            .find(|w| w.meter_id == "M-CT")
    })
    .await;
    assert_eq!(watched.order_id, "SO-CUT");
    assert_eq!(watched.baseline_kwh, Some(baseline));

    let activations = || metric_of(app.http_addr, "switchyard_meter_actor_activations_total");
    let before = activations().await.unwrap_or(0.0);

    // 200 reads of a meter nobody watches, and a read of the cut meter within the tolerance
    // (0.05 kWh above the baseline: the dial times the multiplier 10).
    for i in 0..200 {
        let r = register_read(&format!("RD-IDLE-{i}"), "M-IDLE", 1000.0 + f64::from(i));
        produce_json(&p, &reads, "M-IDLE", r).await;
    }
    let near = register_read("RD-CT-1", "M-CT", (baseline + 0.05) / 10.0);
    produce_json(&p, &reads, "M-CT", near).await;
    // Bad reads: a negative value, an unknown meter, a key that is not the meter.
    let mut negative = register_read("RD-BAD-1", "M-IDLE", 1.0);
    negative["values"][0]["value"] = (-5.0).into();
    produce_json(&p, &reads, "M-IDLE", negative).await;
    produce_json(&p, &reads, "M-404", register_read("RD-BAD-2", "M-404", 1.0)).await;
    produce_json(&p, &reads, "M-IDLE", register_read("RD-BAD-3", "M-CT", 1.0)).await;
    // Then 25 kWh on the cut meter.
    let far = register_read("RD-CT-2", "M-CT", (baseline + 25.0) / 10.0);
    produce_json(&p, &reads, "M-CT", far).await;

    exceptions
        .wait("the watchdog's exception", T, |l| {
            l.json()
                .iter()
                .any(|x| x["kind"] == "consumption_after_disconnect")
        })
        .await;
    let x: Vec<serde_json::Value> = exceptions
        .json()
        .into_iter()
        .filter(|x| x["kind"] == "consumption_after_disconnect")
        .collect();
    assert_eq!(x.len(), 1, "{x:?}");
    let x = &x[0];
    assert_valid(&schema("exception.v1.schema.json"), x, "watchdog exception");
    assert_eq!(x["exception_id"], "SO-CUT/consumption_after_disconnect");
    assert_eq!(
        (x["meter_id"].as_str(), x["order_id"].as_str()),
        (Some("M-CT"), Some("SO-CUT"))
    );
    let detail = x["detail"].as_str().unwrap();
    assert!(detail.contains("25.000 kWh above"), "{detail}");
    assert!(
        detail.contains("RD-CT-2") && !detail.contains("RD-CT-1"),
        "{detail}"
    );

    dlq.wait("three dead letters", T, |l| l.len() >= 3).await;
    let mut reasons: Vec<(String, String)> = dlq
        .messages
        .lock()
        .unwrap()
        .iter()
        .map(|m| {
            (
                header(m, "switchyard.dlq.reason").unwrap(),
                header(m, "switchyard.dlq.detail").unwrap(),
            )
        })
        .collect();
    reasons.sort();
    let names: Vec<&str> = reasons.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        names,
        ["invalid_read", "key_mismatch", "unknown_meter"],
        "{reasons:?}"
    );
    assert!(reasons[0].1.contains("finite number"), "{reasons:?}");

    // Every read was taken: 201 ignored (200 idle, one within the tolerance), one delivered,
    // three rejected; the 200 reads of the idle meter woke no actor.
    let counted = |outcome: &'static str| {
        let addr = app.http_addr;
        async move {
            let name = format!("switchyard_reads_total{{outcome=\"{outcome}\"}}");
            metric_of(addr, &name).await.unwrap_or(0.0)
        }
    };
    eventually("every read counted", T, async || {
        let (i, d, r) = (
            counted("ignored").await,
            counted("delivered").await,
            counted("rejected").await,
        );
        ((i, d, r) == (201.0, 1.0, 3.0))
            .then_some(())
            .ok_or(format!("ignored {i}, delivered {d}, rejected {r}"))
    })
    .await;
    let woken = activations().await.unwrap_or(0.0) - before;
    assert!(
        woken <= 1.0,
        "only the cut meter may have been woken (for its read): {woken}"
    );
    assert!(
        store.meter("M-IDLE").unwrap().is_none(),
        "nothing stored for a meter whose reads matter to nobody"
    );

    // The watch ended with the exception (stored), and a reconnect of the idle meter's twin
    // works as before: a cut and a reconnect leave no watch behind.
    eventually("the watch cleared in the store", T, async || {
        store
            .read_watches()
            .is_ok_and(|w| w.iter().all(|w| w.meter_id != "M-CT"))
    })
    .await;
    Order::disconnect("SO-IDLE-CUT", "M-IDLE")
        .produce(&p, &app.config.topics.orders)
        .await;
    events.wait_final("SO-IDLE-CUT", T).await;
    eventually("M-IDLE's cut watched", T, async || {
        store
            .read_watches()
            .is_ok_and(|w| w.iter().any(|w| w.meter_id == "M-IDLE" && !w.history))
    })
    .await;
    Order::reconnect("SO-IDLE-BACK", "M-IDLE")
        .produce(&p, &app.config.topics.orders)
        .await;
    events.wait_final("SO-IDLE-BACK", T).await;
    eventually("M-IDLE no longer watched", T, async || {
        store.read_watches().is_ok_and(|w| w.is_empty())
    })
    .await;
    app.shutdown().await;
}
