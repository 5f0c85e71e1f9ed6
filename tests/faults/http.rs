//! The operator endpoint under a large meter (issue 10, defect 7): a meter's audit trail comes
//! in pages (newest first, a cursor to the next page), never as one unbounded answer; bad
//! paging parameters are a 400 with a message.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::*;

const T: Duration = Duration::from_secs(60);

#[actix_rt::test]
async fn a_meter_with_hundreds_of_orders_pages_its_audit_trail() {
    // A deadline no loaded machine reaches: every read is answered once, so its trail is exact.
    let (_dir, app, p, events) = started(|c| c.head_end.command_deadline_secs = 600)
        .await
        .split();
    register(&app, &p, &[("M-1", true)]).await;
    let n = 300;
    for i in 0..n {
        Order::read(&format!("SO-{i:04}"), "M-1")
            .produce(&p, &app.config.topics.orders)
            .await;
    }
    events
        .wait("every read final", T, |l| l.finals().len() >= n)
        .await;
    assert_eq!(events.finals().len(), n);
    // Five rows a read: received, dispatched and its status change, the result and its status
    // change (completed).
    let total = app.store.store().audit("M-1").unwrap().len();
    assert_eq!(total, 5 * n, "audit rows");

    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    let mut last_at: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/meters/M-1?limit=250&before={c}"),
            None => "/api/v1/meters/M-1?limit=250".to_string(),
        };
        let (code, body) = http_get(app.http_addr, &path).await;
        assert_eq!(code, 200, "{body}");
        assert!(
            body.len() < 200_000,
            "a page is bounded: {} bytes",
            body.len()
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let rows = v["audit"].as_array().unwrap();
        assert!(rows.len() <= 250);
        for r in rows {
            // Newest first across pages.
            let at = r["at"].as_str().unwrap().to_string();
            if let Some(prev) = &last_at {
                let (a, b): (jiff::Timestamp, jiff::Timestamp) =
                    (at.parse().unwrap(), prev.parse().unwrap());
                assert!(a <= b, "newest first: {a} after {b}");
            }
            last_at = Some(at);
            assert!(seen.insert(r.to_string()), "a row on two pages: {r}");
        }
        pages += 1;
        match v["next"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), total, "the pages hold the whole trail once");
    assert_eq!(pages, total.div_ceil(250));

    // The default page and the bounds.
    let (code, body) = http_get(app.http_addr, "/api/v1/meters/M-1").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["audit"].as_array().unwrap().len(), 100);
    for bad in [
        "/api/v1/meters/M-1?limit=0",
        "/api/v1/meters/M-1?limit=5000",
        "/api/v1/meters/M-1?before=nope",
        "/api/v1/meters/M-1?page=2",
    ] {
        let (code, body) = http_get(app.http_addr, bad).await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(body.contains("error"), "{bad}: {body}");
    }
    // An order's own trail, oldest first.
    let (code, body) = http_get(app.http_addr, "/api/v1/orders/SO-0007").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rows = v["audit"].as_array().unwrap();
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert!(rows.iter().all(|r| r["order_id"] == "SO-0007"));
    assert_eq!(v["audit_truncated"], false);
    app.shutdown().await;
}
