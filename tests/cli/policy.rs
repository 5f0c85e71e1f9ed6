//! `switchyard policy explain`: the decision and rule trace a CSR can read aloud.

use std::process::Command;

use super::common::Order;

fn explain(args: &[&str], dir: &std::path::Path) -> (bool, String) {
    let pack = concat!(env!("CARGO_MANIFEST_DIR"), "/config/rules/virginia.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["policy", "explain", "--pack", pack, "--order"])
        .arg(dir.join("order.json"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn explains_a_cold_weather_deferral_a_protection_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("order.json"),
        Order::disconnect("SO-1", "M-1")
            .notice("2026-11-01T12:00:00Z")
            .bytes(),
    )
    .unwrap();
    let f = dir.path().join("forecasts.json");
    std::fs::write(
        &f,
        r#"[{"zone":"north","date":"2026-12-01","low_f":28,"high_f":40}]"#,
    )
    .unwrap();
    let (ok, text) = explain(
        &[
            "--forecasts",
            f.to_str().unwrap(),
            "--zone",
            "north",
            "--at",
            "2026-12-01T15:00:00Z",
        ],
        dir.path(),
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("virginia@2026.1")
            && text.contains("va_forecast_cold_or_hot_24h")
            && text.contains("low 28 F"),
        "{text}"
    );
    assert!(
        text.contains("earliest allowed time is 2026-12-02T13:00:00Z"),
        "{text}"
    );

    let (ok, text) = explain(
        &[
            "--zone",
            "north",
            "--flags",
            "life_support",
            "--at",
            "2026-12-03T15:00:00Z",
            "--json",
        ],
        dir.path(),
    );
    assert!(ok, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["verdict"], "await_approval");
    assert_eq!(v["rules"][0]["rule"], "approval_required");

    // A declared emergency, under the pack plus the example utility overlay.
    let e = dir.path().join("emergencies.json");
    std::fs::write(
        &e,
        r#"[{"declared_at":"2026-11-28T00:00:00Z","ended_at":"2026-11-30T00:00:00Z"}]"#,
    )
    .unwrap();
    let overlay = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/overlays/utility.example.toml"
    );
    let (ok, text) = explain(
        &[
            "--zone",
            "north",
            "--emergencies",
            e.to_str().unwrap(),
            "--overlay",
            overlay,
            "--at",
            "2026-12-03T15:00:00Z",
            "--json",
        ],
        dir.path(),
    );
    assert!(ok, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["verdict"], "defer");
    assert_eq!(v["pack"], "virginia+example-utility@2026.1+2026.3");
    assert_eq!(v["rules"][0]["rule"], "declared_emergency");
    // 30 days after the end is Wednesday 30 December, but the overlay's 31 December holiday
    // bars the day before it (Virginia bars days before holidays), then New Year and the
    // weekend: Monday 4 January, at the start of the overlay's narrower window (09:00).
    assert_eq!(v["until"], "2027-01-04T14:00:00Z");

    let (ok, text) = explain(&["--zone", "north", "--flags", "bogus"], dir.path());
    assert!(!ok);
    assert!(text.contains("unknown flag `bogus`"), "{text}");
    // Without the meter's zone no weather rule could be evaluated: refused, not skipped.
    let (ok, text) = explain(&["--at", "2026-12-01T15:00:00Z"], dir.path());
    assert!(!ok);
    assert!(text.contains("--zone is required"), "{text}");
}

/// `switchyard campaign plan`: the schedule as text and the chart as SVG.
#[test]
fn campaign_plan_prints_the_schedule_and_draws_the_chart() {
    let dir = tempfile::tempdir().unwrap();
    let def = dir.path().join("campaign.json");
    std::fs::write(&def, r#"{"type":"define","schema_version":1,"campaign":{"schema_version":1,"campaign_id":"NP-PLAN","rate_per_hour":500,"time_zone":"America/New_York","windows":{"monday":["08:00","14:00"],"tuesday":["08:00","14:00"],"wednesday":["08:00","14:00"],"thursday":["08:00","14:00"],"friday":["08:00","14:00"]},"start_at":"2026-12-07T13:00:00Z","call_center_capacity_per_hour":450}}"#).unwrap();
    let reg = dir.path().join("meters.ndjson");
    let orders = dir.path().join("orders.ndjson");
    let (mut r, mut o) = (String::new(), String::new());
    for i in 0..4000 {
        let zone = if i % 2 == 0 { "richmond" } else { "norfolk" };
        r.push_str(&format!("{{\"schema_version\":1,\"meter_id\":\"M-{i}\",\"zone\":\"{zone}\",\"head_end_id\":\"HE-1\",\"has_switch\":true}}\n"));
        let order = Order::disconnect(&format!("SO-{i}"), &format!("M-{i}"))
            .priority(5)
            .campaign("NP-PLAN");
        o.push_str(&format!("{}\n", order.json()));
    }
    std::fs::write(&reg, r).unwrap();
    std::fs::write(&orders, o).unwrap();
    let f = dir.path().join("forecasts.json");
    std::fs::write(
        &f,
        r#"[{"zone":"richmond","date":"2026-12-07","low_f":18,"high_f":30}]"#,
    )
    .unwrap();
    let svg = dir.path().join("plan.svg");
    let pack = concat!(env!("CARGO_MANIFEST_DIR"), "/config/rules/virginia.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["campaign", "plan", "--definition"])
        .arg(&def)
        .arg("--orders")
        .arg(&orders)
        .arg("--registry")
        .arg(&reg)
        .args(["--pack", pack, "--forecasts"])
        .arg(&f)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    // Richmond is cold on Monday: held today with the rule named; Norfolk goes at the full rate.
    assert!(
        text.contains("va_forecast_cold_or_hot_24h: 2000 orders in zones richmond"),
        "{text}"
    );
    assert!(text.contains("Mon 2026-12-07: 2000"), "{text}");
    assert!(
        text.contains("most releases in any sliding hour: 500"),
        "{text}"
    );
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(
        chart.starts_with("<svg") && chart.contains("call-center capacity 450/h"),
        "{}",
        &chart[..200.min(chart.len())]
    );
    // A bad definition is refused with the key.
    std::fs::write(&def, r#"{"schema_version":1,"campaign_id":"X","rate_per_hour":0,"time_zone":"UTC","windows":{"monday":["08:00","14:00"]},"start_at":"2026-12-07T13:00:00Z"}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["campaign", "plan", "--definition"])
        .arg(&def)
        .arg("--orders")
        .arg(&orders)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    super::assert_line(
        &String::from_utf8_lossy(&out.stderr),
        "Error: campaign X, key `rate_per_hour`: 0 is not a usable rate: give 1..=1000000 disconnects per hour",
    );
}
