//! `switchyard policy explain`: the decision and rule trace a CSR can read aloud.

use std::process::Command;

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
    std::fs::write(dir.path().join("order.json"), r#"{"schema_version":1,"order_id":"SO-1","kind":"disconnect","reason":"non_payment","meter_id":"M-1","notice_sent_at":"2026-11-01T12:00:00Z"}"#).unwrap();
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

    let (ok, text) = explain(&["--flags", "bogus"], dir.path());
    assert!(!ok);
    assert!(text.contains("unknown flag `bogus`"), "{text}");
}
