//! The load-test harness, small: every scenario file parses and validates, and the smoke
//! scenario runs end to end against a real switchyard process (`target/<profile>/switchyard`)
//! and the mock cluster (a few seconds), producing a report whose numbers add up. The full
//! scenarios are run by hand (load-tests/README.md), never in CI.

mod common;

use std::path::Path;

use switchyard_loadtest::Scenario;

#[test]
fn every_scenario_file_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                Some(s.name.as_str()),
                path.file_stem().and_then(|n| n.to_str()),
                "a scenario is named after its file"
            );
            names.push(s.name);
        }
    }
    names.sort();
    for required in [
        "month-end",
        "registry-10m",
        "slow-head-end",
        "smoke",
        "steady",
        "storm-reconnect",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "missing scenario {required}"
        );
    }
}

#[test]
fn a_bad_scenario_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "name = \"bad\"\ndescription = \"x\"\nmeters = 10\n[campaign]\norders = 10\nrate_per_hour = 0\nstorm_reconnects = 1\nstorm_after_releases = 1\n",
    )
    .unwrap();
    let e = Scenario::load(&path).unwrap_err().to_string();
    assert!(e.contains("campaign.rate_per_hour"), "{e}");
    std::fs::write(
        &path,
        "name = \"bad\"\ndescription = \"x\"\nmeters = 10\nmeterz = 3\n",
    )
    .unwrap();
    let e = Scenario::load(&path).unwrap_err().to_string();
    assert!(e.contains("meterz"), "{e}");
}

#[test]
fn smoke_scenario_runs_and_reports_against_the_raw_limits() {
    let out = tempfile::tempdir().unwrap();
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke.toml");
    let (stdout, _) = common::run_ok(
        common::harness()
            .arg("--scenario")
            .arg(&scenario)
            .arg("--out")
            .arg(out.path()),
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    let s = &report["summary"];
    let num = |k: &str| s[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {s}"));
    // Everything produced was accepted and every order the scenario expects reached a final
    // status (1,000 preloaded; 100 storm reconnects and the 100 campaign disconnects they
    // withdraw or supersede), each counted once: campaign orders the campaign released on
    // other meters are counted apart (there was a `final 1209 of 1200 expected`).
    assert_eq!(s["timed_out"], false, "{s}");
    assert_eq!(num("orders_produced"), 1_500.0);
    assert_eq!(num("orders_accepted"), 1_500.0);
    assert_eq!(num("expected_final"), 1_200.0, "{s}");
    assert_eq!(num("orders_final"), 1_200.0, "{s}");
    // At most the 200 campaign orders on meters the storm did not touch, released meanwhile.
    assert!(num("other_final") <= 200.0, "{s}");
    // The campaign released at its configured rate, not faster (36,000/h = one per 100 ms).
    assert!(num("campaign_releases") >= 5.0, "{s}");
    let rate = num("campaign_releases_per_hour");
    assert!(rate <= 36_000.0 * 1.1, "released at {rate}/h");
    // Rates and their raw limits were measured in the same run; the ratios follow from them.
    let raw = &report["raw"];
    let consume = raw["consume_per_sec"].as_f64().unwrap();
    let append = raw["store_append_rows_per_sec"].as_f64().unwrap();
    assert!(consume > 0.0 && append > 0.0, "{raw}");
    assert!(num("ingest_per_sec") > 0.0 && num("end_to_end_per_sec") > 0.0);
    assert!((num("end_to_end_vs_raw_consume") - num("end_to_end_per_sec") / consume).abs() < 1e-6);
    assert!((num("audit_vs_raw_append") - num("audit_rows_per_sec") / append).abs() < 1e-6);
    // Internal latency came from the process's exact histograms: every accepted reconnect,
    // read and disconnect outside the campaign was dispatched and timed.
    assert!(s["dispatch"]["count"].as_u64().unwrap() >= 1_000, "{s}");
    assert!(s["dispatch"]["p99_us"].as_u64().unwrap() >= s["dispatch"]["p50_us"].as_u64().unwrap());
    assert!(num("bytes_per_registered_meter") > 0.0);
    // The report: the table, how to reproduce it, the machine, the plots.
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    for words in [
        "final 1200 of 1200 expected",
        "| ingest",
        "| end to end",
        "raw limit",
        "reproduce: `",
        "cores",
        "throughput.svg",
    ] {
        assert!(md.contains(words), "report.md lacks {words}:\n{md}");
    }
    for plot in [
        "throughput.svg",
        "audit.svg",
        "concurrency.svg",
        "memory.svg",
        "latency.svg",
        "campaign.svg",
    ] {
        let svg = std::fs::read_to_string(out.path().join(plot)).unwrap();
        assert!(svg.starts_with("<svg"), "{plot}");
    }
    assert!(stdout.contains("| measure |"), "{stdout}");
}

/// The `switchyard run` processes the harness spawns (children of any of its threads).
#[cfg(target_os = "linux")]
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    out
}

/// Alive and not a zombie waiting to be reaped.
#[cfg(target_os = "linux")]
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// A load tester's Ctrl-C or kill of the harness must not leave a switchyard behind (holding
/// gigabytes, a port and its data directory, and skewing the next run).
#[cfg(target_os = "linux")]
#[test]
fn a_killed_harness_takes_its_switchyard_with_it() {
    use std::time::{Duration, Instant};
    let out = tempfile::tempdir().unwrap();
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke.toml");
    let mut harness = common::harness()
        .arg("--scenario")
        .arg(&scenario)
        .arg("--out")
        .arg(out.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let child = loop {
        if let Some(c) = children(harness.id()).into_iter().find(|c| running(*c)) {
            break c;
        }
        assert!(
            Instant::now() < until,
            "the harness never started switchyard"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    harness.kill().unwrap(); // SIGKILL: no destructor of the harness runs
    harness.wait().unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while running(child) {
        if Instant::now() > until {
            let _ = std::process::Command::new("kill")
                .args(["-9", &child.to_string()])
                .status();
            panic!("switchyard (pid {child}) outlived its killed harness");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
