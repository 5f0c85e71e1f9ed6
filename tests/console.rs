//! The web console end to end in headless Chromium (issue 15, item 4): switchyard runs here
//! with a seeded desk (a life-support customer's disconnect awaiting approval, a meter with no
//! remote switch and its exception, a running campaign); `tests/console/e2e.mjs` drives Debian's
//! Chromium through playwright-core: it signs in, approves the order, sees its command
//! confirmed in the order's timeline, pauses the campaign, and saves a screenshot of each page
//! under docs/console/. This test then checks on Kafka that what the browser did happened:
//! the order completed after a dispatched command, the campaign was paused by the signed-in
//! supervisor.
//!
//! Needs `node`, `tests/console/node_modules` (`npm ci` there) and `/usr/bin/chromium`:
//! tests/run.sh installs them. `SWITCHYARD_CONSOLE_SKIP=1` skips it (says so).
//!
//! Screenshots go to target/console-screenshots/, or with `SWITCHYARD_WRITE_SCREENSHOTS=1` to
//! docs/console/ (the ones of record).
//!
//! `cargo test --release --test console -- --ignored serve_seeded_console --nocapture` serves
//! the same seeded desk for 30 minutes (for work on the page, with `SWITCHYARD_CONSOLE_DIR`).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use switchyard::domain::OrderStatus;

const T: Duration = Duration::from_secs(60);
pub const SUPERVISOR: &str = "console-supervisor-token";
pub const VIEWER: &str = "console-viewer-token-01";

fn entry(name: &str, role: &str, token: &str) -> String {
    format!("{name}:{role}:{}", switchyard::token_hash(token))
}

/// A running switchyard with a desk's worth of work.
/// `rate_per_hour`: the campaign's (it has 20 orders).
async fn seeded(rate_per_hour: u32) -> (tempfile::TempDir, switchyard::App, TopicLog, TopicLog) {
    let (dir, app, p, events) = started(|c| {
        c.http.auth.tokens = vec![
            entry("kim", "supervisor", SUPERVISOR),
            entry("val", "viewer", VIEWER),
        ];
        c.http.auth.open_reads_on_loopback = false;
    })
    .await
    .split();
    let progress = TopicLog::follow(&app.bootstrap, &app.config.topics.campaign_events);
    let mut protected = meter_in("CON-1", "Z1", true);
    protected["life_support"] = json!(true);
    let mut meters = vec![
        protected,
        meter_in("CON-2", "Z1", true),
        meter_in("CON-3", "Z2", false),
    ];
    meters.extend((0..20).map(|i| meter_in(&format!("CON-C-{i:02}"), "Z1", true)));
    register_records(&app, &p, &meters).await;
    let orders = &app.config.topics.orders;
    Order::disconnect("SO-CON-1", "CON-1")
        .account("ACC-4411")
        .produce(&p, orders)
        .await;
    Order::disconnect("SO-CON-2", "CON-2")
        .produce(&p, orders)
        .await;
    Order::disconnect("SO-CON-3", "CON-3")
        .produce(&p, orders)
        .await;
    // A campaign of 20 orders, all day.
    let day = json!(["00:00", "23:59"]);
    let def = json!({"schema_version":1,"campaign_id":"C-CON-1","name":"December non-payment","rate_per_hour":rate_per_hour,"time_zone":"UTC",
        "windows":{"monday":day,"tuesday":day,"wednesday":day,"thursday":day,"friday":day,"saturday":day,"sunday":day},
        "start_at":"2026-01-01T00:00:00Z"});
    produce_json(
        &p,
        &app.config.topics.campaign_control,
        "C-CON-1",
        json!({"type":"define","schema_version":1,"campaign":def}),
    )
    .await;
    for i in 0..20 {
        Order::disconnect(&format!("SO-CON-C-{i:02}"), &format!("CON-C-{i:02}"))
            .campaign("C-CON-1")
            .produce(&p, orders)
            .await;
    }
    events
        .wait("the desk's orders settled", T, |l| {
            l.of("SO-CON-1")
                .iter()
                .any(|e| e.status == OrderStatus::AwaitingApproval)
                && l.of("SO-CON-2")
                    .iter()
                    .any(|e| e.status == OrderStatus::Completed)
                && l.of("SO-CON-3")
                    .iter()
                    .any(|e| e.status == OrderStatus::Failed)
        })
        .await;
    // (Progress events come every 100 releases or at a change of state: ask the API.)
    let started = std::time::Instant::now();
    loop {
        let (code, body) = http_call(
            app.http_addr,
            "GET",
            "/api/v1/campaigns/C-CON-1",
            Some(SUPERVISOR),
            None,
        )
        .await;
        let released = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["campaign"]["released"].as_u64());
        if code == 200 && released >= Some(1) {
            break;
        }
        assert!(
            started.elapsed() < T,
            "the campaign released nothing in {T:?}: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (dir, app, events, progress)
}

fn browser_ready() -> Result<(), String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    if !root
        .join("tests/console/node_modules/playwright-core")
        .exists()
    {
        return Err("tests/console/node_modules/playwright-core is missing: run `npm ci` in tests/console (tests/run.sh does)".into());
    }
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        return Err(
            "/usr/bin/chromium is missing: `apt-get install chromium` (tests/run.sh does, as root)"
                .into(),
        );
    }
    Ok(())
}

#[actix_rt::test]
async fn a_supervisor_approves_an_order_and_pauses_a_campaign_in_headless_chromium() {
    if std::env::var_os("SWITCHYARD_CONSOLE_SKIP").is_some() {
        eprintln!("SKIPPED: SWITCHYARD_CONSOLE_SKIP is set");
        return;
    }
    if let Err(e) = browser_ready() {
        panic!("{e}");
    }
    // One release every 6 s: still running when the browser pauses it.
    let (_dir, app, events, progress) = seeded(600).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let url = format!("http://{}/console", app.http_addr);
    // docs/console/ keeps the screenshots of record: rewritten only when asked.
    let shots = if std::env::var_os("SWITCHYARD_WRITE_SCREENSHOTS").is_some() {
        root.join("docs/console")
    } else {
        root.join("target/console-screenshots")
    };
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(root.join("tests/console/e2e.mjs"))
            .env("CONSOLE_URL", url)
            .env("SUPERVISOR_TOKEN", SUPERVISOR)
            .env("VIEWER_TOKEN", VIEWER)
            .env("ORDER_ID", "SO-CON-1")
            .env("METER_ID", "CON-1")
            .env("CAMPAIGN_ID", "C-CON-1")
            .env("SCREENSHOT_DIR", shots)
            .current_dir(root.join("tests/console"))
            .output()
    })
    .await
    .expect("join")
    .expect("node runs");
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{log}");
    assert!(out.status.success(), "the browser run failed:\n{log}");
    // What the browser did, seen on Kafka.
    let fin = events.wait_final("SO-CON-1", T).await;
    let statuses: Vec<_> = fin.iter().map(|e| e.status).collect();
    assert!(
        statuses.contains(&OrderStatus::Dispatched)
            && statuses.last() == Some(&OrderStatus::Completed),
        "approved in the console, then carried out: {statuses:?}"
    );
    progress
        .wait("paused by kim", T, |l| {
            l.json().iter().any(|e| {
                e["campaign_id"] == "C-CON-1" && e["status"] == "paused" && e["by"] == "kim"
            })
        })
        .await;
    app.shutdown().await;
}

/// Serves the seeded desk for 30 minutes and prints where (for work on the console).
#[actix_rt::test]
#[ignore]
async fn serve_seeded_console() {
    let (_dir, app, _events, _progress) = seeded(60).await;
    println!(
        "console: http://{}/console  supervisor token: {SUPERVISOR}  viewer token: {VIEWER}",
        app.http_addr
    );
    tokio::time::sleep(Duration::from_secs(1_800)).await;
    app.shutdown().await;
}
