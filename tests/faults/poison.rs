//! Poison records: a record too large to be dead-lettered whole must still be dead-lettered
//! (truncated, saying so, with its source position) and must not stop the records behind it.

use std::time::Duration;

use rdkafka::Message;
use switchyard::domain::OrderStatus;

use crate::common::*;

const T: Duration = Duration::from_secs(30);
/// A value just under a default librdkafka producer's `message.max.bytes` (1,000,000): it is
/// accepted from the integrator, but with switchyard's dead-letter headers it is not.
const HUGE: usize = 999_700;

#[actix_rt::test]
async fn a_record_too_large_to_dead_letter_whole_does_not_stop_the_orders_behind_it() {
    // The producer: librdkafka's defaults (its `message.max.bytes`), as an integrator has.
    let (_dir, app, p, events) = started(|_| {}).await.split();
    let dlq = TopicLog::follow(&app.bootstrap, &app.config.topics.dead_letter);
    register(&app, &p, &[("M-1", true)]).await;
    let orders = &app.config.topics.orders;

    Order::read("SO-BEFORE", "M-1").produce(&p, orders).await;
    produce(&p, orders, "M-1", &vec![b'#'; HUGE]).await;
    Order::read("SO-AFTER", "M-1").produce(&p, orders).await;

    for id in ["SO-BEFORE", "SO-AFTER"] {
        let ev = events.wait_final(id, T).await;
        assert_eq!(ev.last().unwrap().status, OrderStatus::Completed, "{id}");
        assert_eq!(
            app.store.store().order(id).unwrap().unwrap().status,
            OrderStatus::Completed
        );
    }
    dlq.wait("the huge record's dead letter", T, |l| {
        !l.messages.lock().unwrap().is_empty()
    })
    .await;
    let letters = dlq.messages.lock().unwrap().clone();
    assert_eq!(letters.len(), 1);
    let l = &letters[0];
    assert_eq!(
        header(l, "switchyard.dlq.reason").as_deref(),
        Some("malformed_json")
    );
    assert_eq!(
        header(l, "switchyard.dlq.source.topic").as_deref(),
        Some(orders.as_str())
    );
    let offset: i64 = header(l, "switchyard.dlq.source.offset")
        .unwrap()
        .parse()
        .unwrap();
    // SO-BEFORE, then the poison, on the one partition of M-1 (registry records go elsewhere).
    assert_eq!(offset, 1, "the poison's own offset");
    let kept = l.payload().unwrap().len();
    assert!(kept < HUGE && kept > 900_000, "kept {kept} bytes");
    assert!(l.payload().unwrap().iter().all(|b| *b == b'#'));
    assert_eq!(
        header(l, "switchyard.dlq.truncated"),
        Some(format!("original_value_bytes={HUGE},kept_bytes={kept}"))
    );
    assert_eq!(l.key(), Some(&b"M-1"[..]));
    app.shutdown().await;
}

#[actix_rt::test]
async fn poison_of_several_sizes_on_every_input_topic_is_dead_lettered_and_the_rest_flows() {
    let (_dir, app, p, events) = started(|_| {}).await.split();
    let dlq = TopicLog::follow(&app.bootstrap, &app.config.topics.dead_letter);
    register(&app, &p, &[("M-1", true)]).await;
    let t = &app.config.topics;
    let inputs = [
        &t.orders,
        &t.registry,
        &t.weather,
        &t.emergencies,
        &t.customer_facts,
        &t.control,
        &t.campaign_control,
    ];
    let sizes = [1usize, 17, 65_536, HUGE];
    for (t_i, topic) in inputs.iter().enumerate() {
        for (i, n) in sizes.iter().enumerate() {
            // Not JSON. Keys spread the records (and their dead letters) over partitions: the
            // embedded Kafka keeps only about 5 MB per partition.
            let mut v = vec![b'\xff'; *n];
            v[0] = b'{';
            produce(&p, topic, &format!("K-{t_i}-{i}"), &v).await;
        }
    }
    // Records behind the poison still flow: a new meter, then its order.
    register(&app, &p, &[("M-2", true)]).await;
    Order::read("SO-AFTER", "M-2").produce(&p, &t.orders).await;
    let ev = events.wait_final("SO-AFTER", T).await;
    assert_eq!(ev.last().unwrap().status, OrderStatus::Completed);

    let expected = inputs.len() * sizes.len();
    dlq.wait(&format!("{expected} dead letters"), T, |l| {
        l.len() >= expected
    })
    .await;
    let letters = dlq.messages.lock().unwrap().clone();
    let seen: Vec<(Option<String>, usize)> = letters
        .iter()
        .map(|m| {
            (
                header(m, "switchyard.dlq.source.topic"),
                m.payload().map_or(0, <[u8]>::len),
            )
        })
        .collect();
    assert_eq!(
        letters.len(),
        expected,
        "dead letters (source, bytes): {seen:?}"
    );
    for topic in inputs {
        let of: Vec<_> = letters
            .iter()
            .filter(|m| header(m, "switchyard.dlq.source.topic").as_deref() == Some(topic))
            .collect();
        assert_eq!(of.len(), sizes.len(), "dead letters from {topic}");
        let truncated = of
            .iter()
            .filter(|m| header(m, "switchyard.dlq.truncated").is_some())
            .count();
        assert_eq!(truncated, 1, "only the huge record of {topic} is truncated");
        for m in of {
            let reason = header(m, "switchyard.dlq.reason");
            let expected = if topic == &t.orders {
                "malformed_json"
            } else if topic == &t.campaign_control {
                "invalid_campaign"
            } else if topic == &t.registry {
                "invalid_registry_record"
            } else {
                "invalid_fact"
            };
            assert_eq!(
                reason.as_deref(),
                Some(expected),
                "the reason of a dead letter from {topic}"
            );
        }
    }
    app.shutdown().await;
}

/// Records removed from the orders topic before switchyard read them (the embedded Kafka keeps
/// about 5 MB per partition; a cluster's retention does the same) are counted in a metric and
/// logged, not silently skipped.
#[actix_rt::test]
async fn orders_trimmed_from_the_topic_before_they_were_read_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let _kafka = host_kafka(&mut cfg);
    let b = cfg.kafka.brokers.clone();
    let p = producer(&b);
    // About 8 MB on one partition (one meter), before switchyard runs: the first records are
    // trimmed away.
    let mut notes = String::new();
    notes.push_str(&"n".repeat(250));
    let n = 12_000;
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        futures::future::join_all(chunk.iter().map(|i| {
            let o = Order::read(&format!("SO-T{i:05}"), "M-1")
                .notes(&notes)
                .set("service_point_id", "s".repeat(400));
            let p = &p;
            let t = &cfg.topics.orders;
            async move { o.produce(p, t).await }
        }))
        .await;
    }
    let app = start(cfg).await;
    // Exactly the records the topic no longer holds: its first offset.
    let trimmed = first_offsets(&b, &app.config.topics.orders);
    assert!(
        trimmed > 0 && trimmed < n as i64,
        "trimmed {trimmed} of {n}"
    );
    let lost = eventually("the trimmed orders counted as lost", T, async || {
        let (_, metrics) = http_get(app.http_addr, "/metrics").await;
        let lost = metrics
            .lines()
            .find(|l| {
                l.starts_with("switchyard_kafka_records_lost_total")
                    && l.contains("switchyard.orders.v1")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if lost == trimmed as f64 {
            Ok(lost)
        } else {
            Err(format!("{lost} counted, {trimmed} trimmed"))
        }
    })
    .await;
    eprintln!("faults: {lost} of {n} orders were trimmed before intake read them");
    app.shutdown().await;
}
