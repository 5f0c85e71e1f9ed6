//! The operator API's writes and who may make them (issue 15): bearer tokens with roles, and
//! the approvals queue of the disconnect desk. A protected customer's disconnect waits for an
//! approval; a viewer sees it in the queue but cannot approve it (403), no token is 401, a
//! supervisor's approval goes the Kafka control topic's way and the disconnect is then
//! executed, with the supervisor's name in the order's audit trail; an approval for an unknown
//! or an already final order is a 4xx, never a silent success.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use switchyard::domain::OrderStatus;

const T: Duration = Duration::from_secs(30);

fn entry(name: &str, role: &str, token: &str) -> String {
    format!("{name}:{role}:{}", switchyard::token_hash(token))
}

#[actix_rt::test]
async fn a_supervisor_approves_a_protected_disconnect_through_the_api_and_a_viewer_cannot() {
    let (_dir, app, p, events) = started(|c| {
        c.http.auth.tokens = vec![
            entry("val", "viewer", "viewer-token-0001"),
            entry("olu", "operator", "operator-token-01"),
            entry("kim", "supervisor", "supervisor-token-1"),
        ];
        // Reads need a token too (the listener is on loopback).
        c.http.auth.open_reads_on_loopback = false;
    })
    .await
    .split();
    let mut life_support = meter("OA-1", true);
    life_support["life_support"] = json!(true);
    register_records(&app, &p, &[life_support, meter("OA-2", true)]).await;
    Order::disconnect("SO-OA-1", "OA-1")
        .produce(&p, &app.config.topics.orders)
        .await;
    events
        .wait("SO-OA-1 awaiting approval", T, |l| {
            l.of("SO-OA-1")
                .iter()
                .any(|e| e.status == OrderStatus::AwaitingApproval)
        })
        .await;
    let addr = app.http_addr;
    const SUP: Option<&str> = Some("supervisor-token-1");
    const VIEWER: Option<&str> = Some("viewer-token-0001");
    const ONE: &str = "/api/v1/approvals/SO-OA-1";
    let approve = r#"{"decision":"approve","note":"customer confirmed battery backup"}"#;

    // The queue: a token is needed, a viewer's will do.
    expect(addr, 401, "GET", "/api/v1/approvals", None, None).await;
    let q: Value =
        serde_json::from_str(&expect(addr, 200, "GET", "/api/v1/approvals", VIEWER, None).await)
            .unwrap();
    let ids: Vec<&str> = q["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["SO-OA-1"], "{q}");
    let first = &q["approvals"][0];
    assert_eq!(first["meter_id"], "OA-1");
    assert_eq!(first["protections"], json!(["life_support"]), "{q}");
    assert_eq!(first["held"]["rules"], json!(["approval_required"]), "{q}");

    // Deciding needs a supervisor's token.
    post(addr, 401, ONE, None, Some(approve)).await;
    post(addr, 401, ONE, Some("not-a-token-at-all"), Some(approve)).await;
    for (token, name) in [("viewer-token-0001", "val"), ("operator-token-01", "olu")] {
        let body = post(addr, 403, ONE, Some(token), Some(approve)).await;
        assert!(body.contains(name) && body.contains("supervisor"), "{body}");
    }
    // Bad requests say what is wrong, and change nothing.
    let long = format!(r#"{{"decision":"approve","note":"{}"}}"#, "x".repeat(251));
    let body = post(addr, 400, ONE, SUP, Some(&long)).await;
    assert!(body.contains("250"), "{body}");
    post(addr, 400, ONE, SUP, Some(r#"{"decision":"maybe"}"#)).await;
    post(addr, 404, "/api/v1/approvals/SO-NONE", SUP, Some(approve)).await;
    assert!(
        !events
            .of("SO-OA-1")
            .iter()
            .any(|e| e.status == OrderStatus::Dispatched),
        "nothing was sent before the approval"
    );

    // The supervisor approves: the disconnect goes ahead, and the audit names who approved.
    let a: Value = serde_json::from_str(&post(addr, 202, ONE, SUP, Some(approve)).await).unwrap();
    assert_eq!(
        (a["by"].as_str(), a["meter_id"].as_str()),
        (Some("kim"), Some("OA-1"))
    );
    let fin = events.wait_final("SO-OA-1", T).await;
    assert_eq!(
        fin.last().unwrap().status,
        OrderStatus::Completed,
        "{fin:?}"
    );
    let body = expect(addr, 200, "GET", "/api/v1/orders/SO-OA-1", VIEWER, None).await;
    assert!(
        body.contains("kim"),
        "the approval is in the order's audit trail with who gave it: {body}"
    );
    // Final now: nothing left to decide (409), and the queue is empty.
    let body = post(addr, 409, ONE, SUP, Some(approve)).await;
    assert!(body.contains("final"), "{body}");
    let body = expect(addr, 200, "GET", "/api/v1/approvals", SUP, None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["approvals"],
        json!([])
    );

    // An order that never needed an approval cannot be approved (409), and is unaffected.
    Order::disconnect("SO-OA-2", "OA-2")
        .produce(&p, &app.config.topics.orders)
        .await;
    let fin = events.wait_final("SO-OA-2", T).await;
    assert_eq!(fin.last().unwrap().status, OrderStatus::Completed);
    post(addr, 409, "/api/v1/approvals/SO-OA-2", SUP, Some(approve)).await;
    // The probes stay open.
    expect(addr, 200, "GET", "/healthz", None, None).await;
    expect(addr, 200, "GET", "/metrics", None, None).await;
    app.shutdown().await;
}

/// Calls the operator endpoint and asserts the status; returns the body.
async fn expect(
    addr: std::net::SocketAddr,
    status: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> String {
    let (code, text) = http_call(addr, method, path, token, body).await;
    assert_eq!(code, status, "{method} {path} as {token:?}: {text}");
    text
}

#[actix_rt::test]
async fn without_any_token_configured_reads_stay_open_and_writes_are_refused() {
    let (_dir, app, _p, _events) = started(|_| {}).await.split();
    let (code, body) = http_get(app.http_addr, "/api/v1/approvals").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_call(
        app.http_addr,
        "POST",
        "/api/v1/approvals/SO-1",
        None,
        Some(r#"{"decision":"approve"}"#),
    )
    .await;
    assert_eq!(code, 401, "{body}");
    assert!(
        body.contains("http.auth.tokens"),
        "says how to turn writes on: {body}"
    );
    app.shutdown().await;
}

#[actix_rt::test]
async fn an_operator_defines_and_pauses_a_campaign_through_the_api_on_the_kafka_path() {
    let (_dir, app, p, _events) = started(|c| {
        c.http.auth.tokens = vec![
            entry("val", "viewer", "viewer-token-0001"),
            entry("olu", "operator", "operator-token-01"),
        ];
    })
    .await
    .split();
    register_records(&app, &p, &[meter("OC-1", true)]).await;
    let progress = TopicLog::follow(&app.bootstrap, &app.config.topics.campaign_events);
    let addr = app.http_addr;
    const OP: Option<&str> = Some("operator-token-01");
    let day = json!(["00:00", "23:59"]);
    let def = |id: &str, rate: u32| {
        json!({"schema_version":1,"campaign_id":id,"rate_per_hour":rate,"time_zone":"UTC",
            "windows":{"monday":day,"tuesday":day,"wednesday":day,"thursday":day,"friday":day,"saturday":day,"sunday":day},
            "start_at":"2026-12-01T00:00:00Z"})
        .to_string()
    };
    // A viewer may list but not define; a definition that breaks a rule names it.
    let c1 = def("C-API-1", 600);
    post(
        addr,
        403,
        "/api/v1/campaigns",
        Some("viewer-token-0001"),
        Some(&c1),
    )
    .await;
    let body = post(addr, 400, "/api/v1/campaigns", OP, Some(&def("C-API-0", 0))).await;
    assert!(body.contains("rate_per_hour"), "{body}");
    let body = post(addr, 404, "/api/v1/campaigns/C-NONE/pause", OP, None).await;
    assert!(body.contains("not defined"), "{body}");
    // Defined through Kafka's path: the campaign starts, stored and published.
    let a: Value =
        serde_json::from_str(&post(addr, 202, "/api/v1/campaigns", OP, Some(&c1)).await).unwrap();
    assert_eq!(a["by"], "olu");
    let listed = async |status: &str| {
        // Polled: anonymous reads share one request budget (http.auth.requests_per_second),
        // which a 10 ms poll exceeds on a slow machine; a 429 is "not yet".
        let (code, body) = http_call(addr, "GET", "/api/v1/campaigns", None, None).await;
        if code == 429 {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            return false;
        }
        assert_eq!(code, 200, "GET /api/v1/campaigns: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["campaigns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["campaign_id"] == "C-API-1" && c["status"] == status)
    };
    eventually("C-API-1 listed active", T, async || listed("active").await).await;
    post(addr, 409, "/api/v1/campaigns", OP, Some(&c1)).await;
    // Paused, with who paused it in the campaign's events.
    post(
        addr,
        403,
        "/api/v1/campaigns/C-API-1/pause",
        Some("viewer-token-0001"),
        None,
    )
    .await;
    post(addr, 202, "/api/v1/campaigns/C-API-1/pause", OP, None).await;
    eventually("C-API-1 listed paused", T, async || listed("paused").await).await;
    progress
        .wait("a paused event by olu", T, |l| {
            l.json()
                .iter()
                .any(|e| e["event"] == "paused" && e["by"] == "olu")
        })
        .await;
    post(
        addr,
        400,
        "/api/v1/campaigns/C-API-1/rate",
        OP,
        Some(r#"{"rate_per_hour":0}"#),
    )
    .await;
    post(addr, 404, "/api/v1/campaigns/C-API-1/explode", OP, None).await;
    post(addr, 202, "/api/v1/campaigns/C-API-1/cancel", OP, None).await;
    eventually("C-API-1 listed cancelled", T, async || {
        listed("cancelled").await
    })
    .await;
    let body = post(addr, 409, "/api/v1/campaigns/C-API-1/resume", OP, None).await;
    assert!(body.contains("ended"), "{body}");
    app.shutdown().await;
}

/// [`expect`] for a POST.
async fn post(
    addr: std::net::SocketAddr,
    status: u16,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> String {
    expect(addr, status, "POST", path, token, body).await
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The disconnect desk's day through the API: find orders by part of an id (any case) and by
/// status, with their service level; hold a protected customer's disconnect (it leaves the
/// approvals queue and cannot be approved while held), release it (it waits for its approval
/// again), cancel another open order; work an exception as a task (assign, a stale change
/// refused, resolve), each change in the meter's audit trail with who made it.
#[actix_rt::test]
async fn the_desk_searches_orders_holds_releases_and_cancels_them_and_works_exceptions() {
    let (_dir, app, p, events) = started(|c| {
        c.http.auth.tokens = vec![
            entry("val", "viewer", "viewer-token-0001"),
            entry("olu", "operator", "operator-token-01"),
            entry("kim", "supervisor", "supervisor-token-1"),
        ];
    })
    .await
    .split();
    let mut life_support = meter("DK-1", true);
    life_support["life_support"] = json!(true);
    register_records(
        &app,
        &p,
        &[life_support, meter("DK-2", true), meter("DK-3", false)],
    )
    .await;
    let orders = &app.config.topics.orders;
    Order::disconnect("SO-Desk-1", "DK-1")
        .account("ACC-77")
        .produce(&p, orders)
        .await;
    // Not due for a day: open, scheduled.
    Order::disconnect("SO-Desk-2", "DK-2")
        .earliest_at(&(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24)).to_string())
        .produce(&p, orders)
        .await;
    // No remote switch: a field order is needed (an exception).
    Order::disconnect("SO-Desk-3", "DK-3")
        .produce(&p, orders)
        .await;
    events
        .wait("the three orders settled", T, |l| {
            l.of("SO-Desk-1")
                .iter()
                .any(|e| e.status == OrderStatus::AwaitingApproval)
                && l.of("SO-Desk-2")
                    .iter()
                    .any(|e| e.status == OrderStatus::Scheduled)
                && !l.of("SO-Desk-3").is_empty()
        })
        .await;
    let addr = app.http_addr;
    const OP: Option<&str> = Some("operator-token-01");
    const SUP: Option<&str> = Some("supervisor-token-1");
    const VIEWER: Option<&str> = Some("viewer-token-0001");

    // Search: a part of an id in any case; a status; bad filters are 400.
    let found = parse(&expect(addr, 200, "GET", "/api/v1/orders?q=so-desk", VIEWER, None).await);
    let mut ids: Vec<&str> = found["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["SO-Desk-1", "SO-Desk-2", "SO-Desk-3"], "{found}");
    assert_eq!(found["scan_complete"], true);
    let by_account = parse(&expect(addr, 200, "GET", "/api/v1/orders?q=acc-7", VIEWER, None).await);
    assert_eq!(
        by_account["orders"][0]["order_id"], "SO-Desk-1",
        "{by_account}"
    );
    let waiting = parse(
        &expect(
            addr,
            200,
            "GET",
            "/api/v1/orders?status=awaiting_approval&kind=disconnect",
            VIEWER,
            None,
        )
        .await,
    );
    assert_eq!(waiting["orders"].as_array().unwrap().len(), 1, "{waiting}");
    let o = &waiting["orders"][0];
    assert_eq!(o["order_id"], "SO-Desk-1");
    // A non-payment disconnect is P3: due in 72 h, on track.
    assert_eq!(
        (o["sla"]["class"].as_str(), o["sla"]["state"].as_str()),
        (Some("p3"), Some("on_track")),
        "{o}"
    );
    let body = expect(
        addr,
        400,
        "GET",
        "/api/v1/orders?status=sleeping",
        VIEWER,
        None,
    )
    .await;
    assert!(body.contains("sleeping"), "{body}");
    // Paging: one at a time, the pages together are the whole result, each once.
    let mut paged = Vec::new();
    let mut path = "/api/v1/orders?q=SO-DESK&limit=1".to_string();
    loop {
        let page = parse(&expect(addr, 200, "GET", &path, VIEWER, None).await);
        paged.extend(
            page["orders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["order_id"].as_str().unwrap().to_string()),
        );
        match page["next_page_token"].as_str() {
            Some(t) => path = format!("/api/v1/orders?q=SO-DESK&limit=1&page_token={t}"),
            None => break,
        }
    }
    paged.sort();
    assert_eq!(paged, ["SO-Desk-1", "SO-Desk-2", "SO-Desk-3"]);

    // Hold: a viewer may not; an operator may. The held order leaves the approvals queue and
    // cannot be approved; a second hold is 409.
    post(addr, 403, "/api/v1/orders/SO-Desk-1/hold", VIEWER, None).await;
    let held = parse(
        &post(
            addr,
            202,
            "/api/v1/orders/SO-Desk-1/hold",
            OP,
            Some(r#"{"note":"customer disputes the bill"}"#),
        )
        .await,
    );
    assert_eq!(held["by"], "olu");
    events
        .wait("held", T, |l| {
            l.of("SO-Desk-1")
                .iter()
                .any(|e| e.reason.as_deref() == Some("operator_hold"))
        })
        .await;
    let q = parse(&expect(addr, 200, "GET", "/api/v1/approvals", VIEWER, None).await);
    assert_eq!(
        q["approvals"],
        json!([]),
        "a held order is not awaiting approval: {q}"
    );
    let approve = r#"{"decision":"approve"}"#;
    post(addr, 409, "/api/v1/approvals/SO-Desk-1", SUP, Some(approve)).await;
    let body = post(addr, 409, "/api/v1/orders/SO-Desk-1/hold", OP, None).await;
    assert!(body.contains("already held by olu"), "{body}");
    let found = parse(
        &expect(
            addr,
            200,
            "GET",
            "/api/v1/orders?q=SO-Desk-1&status=deferred",
            VIEWER,
            None,
        )
        .await,
    );
    assert_eq!(found["orders"][0]["held_by_operator"], "olu", "{found}");
    // Released: it waits for its approval again; approved, it is carried out.
    post(addr, 202, "/api/v1/orders/SO-Desk-1/release", OP, None).await;
    events
        .wait("back to awaiting approval", T, |l| {
            let e = l.of("SO-Desk-1");
            let held_at = e
                .iter()
                .position(|e| e.reason.as_deref() == Some("operator_hold"))
                .unwrap_or(usize::MAX);
            e.iter()
                .skip(held_at)
                .any(|e| e.status == OrderStatus::AwaitingApproval)
        })
        .await;
    post(addr, 409, "/api/v1/orders/SO-Desk-1/release", OP, None).await;
    post(addr, 202, "/api/v1/approvals/SO-Desk-1", SUP, Some(approve)).await;
    let fin = events.wait_final("SO-Desk-1", T).await;
    assert_eq!(
        fin.last().unwrap().status,
        OrderStatus::Completed,
        "{fin:?}"
    );
    let trail = expect(addr, 200, "GET", "/api/v1/orders/SO-Desk-1", VIEWER, None).await;
    assert!(
        trail.contains("held by olu") && trail.contains("released by olu"),
        "{trail}"
    );

    // Cancel an open order: it ends cancelled, the cancel names who; a final one is 409, an
    // unknown one 404.
    let c = parse(
        &post(
            addr,
            202,
            "/api/v1/orders/SO-Desk-2/cancel",
            OP,
            Some(r#"{"note":"moved out"}"#),
        )
        .await,
    );
    assert_eq!(c["cancel_order_id"], "SO-Desk-2~cancel");
    let fin = events.wait_final("SO-Desk-2", T).await;
    assert_eq!(
        fin.last().unwrap().status,
        OrderStatus::Cancelled,
        "{fin:?}"
    );
    let body = post(addr, 409, "/api/v1/orders/SO-Desk-2/cancel", OP, None).await;
    assert!(body.contains("cancelled"), "{body}");
    post(addr, 404, "/api/v1/orders/SO-NONE/cancel", OP, None).await;
    post(addr, 404, "/api/v1/orders/SO-Desk-2/explode", OP, None).await;
    let trail = expect(addr, 200, "GET", "/api/v1/meters/DK-2", VIEWER, None).await;
    assert!(
        trail.contains("cancelled by olu through the operator API: moved out"),
        "{trail}"
    );

    // The exception of the switchless meter, as a task.
    let list = parse(
        &expect(
            addr,
            200,
            "GET",
            "/api/v1/exceptions?state=open",
            VIEWER,
            None,
        )
        .await,
    );
    let x = list["exceptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["order_id"] == "SO-Desk-3")
        .cloned()
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(x["kind"], "field_order_needed");
    assert_eq!(x["version"], 0);
    let path = format!("/api/v1/exceptions/{}", x["exception_id"].as_str().unwrap());
    post(addr, 403, &path, VIEWER, Some(r#"{"assignee":"olu"}"#)).await;
    let t = parse(&post(addr, 200, &path, OP, Some(r#"{"state":"in_progress","assignee":"olu","note":"crew booked for Tuesday","version":0}"#)).await);
    assert_eq!(
        (
            t["state"].as_str(),
            t["assignee"].as_str(),
            t["version"].as_u64()
        ),
        (Some("in_progress"), Some("olu"), Some(1)),
        "{t}"
    );
    // A change made on the old version is refused, not applied.
    let body = post(
        addr,
        409,
        &path,
        OP,
        Some(r#"{"state":"resolved","version":0}"#),
    )
    .await;
    assert!(body.contains("version 1"), "{body}");
    let mine = parse(
        &expect(
            addr,
            200,
            "GET",
            "/api/v1/exceptions?assignee=olu&state=in_progress",
            VIEWER,
            None,
        )
        .await,
    );
    assert_eq!(mine["exceptions"].as_array().unwrap().len(), 1, "{mine}");
    let t = parse(
        &post(
            addr,
            200,
            &path,
            SUP,
            Some(r#"{"state":"resolved","note":"disconnected at the pole","version":1}"#),
        )
        .await,
    );
    assert_eq!(t["state"], "resolved");
    assert_eq!(t["notes"].as_array().unwrap().len(), 2, "{t}");
    let open = parse(
        &expect(
            addr,
            200,
            "GET",
            "/api/v1/exceptions?state=open,in_progress",
            VIEWER,
            None,
        )
        .await,
    );
    assert!(
        !open["exceptions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["order_id"] == "SO-Desk-3"),
        "{open}"
    );
    post(
        addr,
        404,
        "/api/v1/exceptions/SO-NONE/exception",
        OP,
        Some(r#"{"state":"resolved"}"#),
    )
    .await;
    let trail = expect(addr, 200, "GET", "/api/v1/meters/DK-3", VIEWER, None).await;
    assert!(
        trail.contains("assigned to olu")
            && trail.contains("state resolved")
            && trail.contains("by kim"),
        "{trail}"
    );
    // The dashboard's counts, for the whole day.
    let k = parse(&expect(addr, 200, "GET", "/api/v1/kpis", VIEWER, None).await);
    assert_eq!(
        k["today"]["received"], 4,
        "three orders and the API's cancel: {k}"
    );
    assert_eq!(
        k["today"]["by_status"]["completed"], 2,
        "SO-Desk-1 and the cancel: {k}"
    );
    assert_eq!(k["today"]["by_status"]["cancelled"], 1, "{k}");
    assert_eq!(k["today"]["by_status"]["failed"], 1, "the field order: {k}");
    assert_eq!(k["exceptions"]["open"], 0, "{k}");
    assert_eq!(k["exceptions"]["by_state"]["resolved"], 1, "{k}");
    assert_eq!(k["sla_breaches"], 0, "{k}");
    assert_eq!(k["open"]["in_flight"], 0, "{k}");
    app.shutdown().await;
}

/// Runs the `switchyard` binary's API commands against `addr` with `token` in
/// SWITCHYARD_TOKEN; returns (success, stdout, stderr).
async fn cli(addr: std::net::SocketAddr, token: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.args(args)
        .arg("--url")
        .arg(format!("http://{addr}"))
        .env("SWITCHYARD_TOKEN", token);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The command line on the same API: a viewer lists the approvals queue but cannot approve
/// (the API's 403 message, a failing exit); a supervisor approves; the order is carried out and
/// `orders show` names who approved; `--json` is the API's answer.
#[actix_rt::test]
async fn the_command_line_lists_and_approves_through_the_api() {
    let (_dir, app, p, events) = started(|c| {
        c.http.auth.tokens = vec![
            entry("val", "viewer", "viewer-token-0001"),
            entry("kim", "supervisor", "supervisor-token-1"),
        ];
        c.http.auth.open_reads_on_loopback = false;
    })
    .await
    .split();
    let mut protected = meter("CL-1", true);
    protected["medical"] = json!(true);
    register_records(&app, &p, &[protected]).await;
    Order::disconnect("SO-CLI-1", "CL-1")
        .produce(&p, &app.config.topics.orders)
        .await;
    events
        .wait("awaiting approval", T, |l| {
            l.of("SO-CLI-1")
                .iter()
                .any(|e| e.status == OrderStatus::AwaitingApproval)
        })
        .await;
    let addr = app.http_addr;
    let (ok, out, err) = cli(addr, "viewer-token-0001", &["approvals", "list"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("SO-CLI-1") && out.contains("medical"), "{out}");
    let (ok, out, _) = cli(addr, "viewer-token-0001", &["approvals", "list", "--json"]).await;
    assert!(ok);
    let v = parse(&out);
    assert_eq!(v["approvals"][0]["order_id"], "SO-CLI-1", "{v}");
    let (ok, _, err) = cli(
        addr,
        "viewer-token-0001",
        &["approvals", "approve", "SO-CLI-1"],
    )
    .await;
    assert!(!ok, "a viewer cannot approve");
    assert!(err.contains("403") && err.contains("supervisor"), "{err}");
    let (ok, _, err) = cli(addr, "not-a-valid-token", &["approvals", "list"]).await;
    assert!(
        !ok && err.contains("401") && err.contains("SWITCHYARD_TOKEN"),
        "{err}"
    );
    let (ok, out, err) = cli(
        addr,
        "supervisor-token-1",
        &[
            "approvals",
            "approve",
            "SO-CLI-1",
            "--note",
            "doctor confirmed",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("approve of SO-CLI-1 accepted (by kim"),
        "{out}"
    );
    let fin = events.wait_final("SO-CLI-1", T).await;
    assert_eq!(fin.last().unwrap().status, OrderStatus::Completed);
    let (ok, out, err) = cli(addr, "viewer-token-0001", &["orders", "show", "SO-CLI-1"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("completed") && out.contains("approved by kim"),
        "{out}"
    );
    let (ok, out, _) = cli(
        addr,
        "viewer-token-0001",
        &["orders", "list", "--q", "so-cli", "--json"],
    )
    .await;
    assert!(ok);
    assert_eq!(parse(&out)["orders"][0]["status"], "completed", "{out}");
    let (ok, out, err) = cli(addr, "viewer-token-0001", &["campaigns", "list"]).await;
    assert!(ok && out.starts_with("CAMPAIGN"), "{out}{err}");
    let (ok, _, err) = cli(
        addr,
        "supervisor-token-1",
        &["campaigns", "pause", "C-NONE"],
    )
    .await;
    assert!(!ok && err.contains("404"), "{err}");
    app.shutdown().await;
}

/// `[http.tls]`: the endpoint speaks HTTPS with the configured certificate (a client that
/// trusts it gets its answers), and no longer plain HTTP; a key that does not fit the
/// certificate is a start-up error naming the key.
#[actix_rt::test]
async fn with_a_certificate_the_api_is_served_over_https_only() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let wrong_key = dir.path().join("other-key.pem");
    std::fs::write(&wrong_key, other.signing_key.serialize_pem()).unwrap();

    let mut bad = test_config(dir.path());
    bad.http.tls.cert_file = Some(cert_file.clone());
    bad.http.tls.key_file = Some(wrong_key);
    let err = match switchyard::App::start(bad, std::sync::Arc::new(switchyard::clock::SystemClock))
        .await
    {
        Ok(_) => panic!("a key that does not fit its certificate must not start"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("http.tls.key_file"), "{err}");

    let (_dir, app, _p, _events) = started(|c| {
        c.http.tls.cert_file = Some(cert_file.clone());
        c.http.tls.key_file = Some(key_file.clone());
    })
    .await
    .split();
    let addr = app.http_addr;
    let curl = |url: String, ca: Option<std::path::PathBuf>| async move {
        tokio::task::spawn_blocking(move || {
            let mut c = std::process::Command::new("curl");
            c.args(["-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "5"]);
            if let Some(ca) = ca {
                c.arg("--cacert").arg(ca);
            }
            c.arg(url).output().expect("curl runs")
        })
        .await
        .unwrap()
    };
    let out = curl(
        format!("https://localhost:{}/healthz", addr.port()),
        Some(cert_file.clone()),
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && text.ends_with("200") && text.contains("ok"),
        "{text} {out:?}"
    );
    let out = curl(
        format!("https://localhost:{}/console", addr.port()),
        Some(cert_file.clone()),
    )
    .await;
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("200"),
        "{out:?}"
    );
    // Plain HTTP is not answered.
    let out = curl(format!("http://127.0.0.1:{}/healthz", addr.port()), None).await;
    assert!(
        !String::from_utf8_lossy(&out.stdout).ends_with("200"),
        "{out:?}"
    );
    app.shutdown().await;
}
