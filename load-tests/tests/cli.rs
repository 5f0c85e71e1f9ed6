//! The `switchyard-loadtest` command line: without `--out` a run writes to a new directory of
//! its own and says where (the committed reports in load-tests/reports/ are replaced only when
//! `--out` names them); a missing switchyard binary is named, with the flag that sets it.

mod common;

use std::process::Command;

#[test]
fn without_out_a_run_writes_a_fresh_directory_and_leaves_committed_reports_alone() {
    // A repository-like working directory: a scenario and its committed report.
    let repo = tempfile::tempdir().unwrap();
    let scenarios = repo.path().join("load-tests/scenarios");
    let committed = repo.path().join("load-tests/reports/tiny");
    std::fs::create_dir_all(&scenarios).unwrap();
    std::fs::create_dir_all(&committed).unwrap();
    std::fs::write(
        scenarios.join("tiny.toml"),
        "name = \"tiny\"\ndescription = \"a few reads\"\nmeters = 50\ntimeout_secs = 60\n[preload]\nreads = 20\n",
    )
    .unwrap();
    let report = "{\"committed\": true}\n";
    std::fs::write(committed.join("report.json"), report).unwrap();
    std::fs::write(committed.join("report.md"), "# committed\n").unwrap();

    let (stdout, stderr) = common::run_ok(
        common::harness()
            .args(["--scenario", "load-tests/scenarios/tiny.toml"])
            .current_dir(repo.path()),
    );

    // The committed report is untouched and nothing was added next to it.
    assert_eq!(
        std::fs::read_to_string(committed.join("report.json")).unwrap(),
        report
    );
    assert_eq!(
        std::fs::read_to_string(committed.join("report.md")).unwrap(),
        "# committed\n"
    );
    assert_eq!(std::fs::read_dir(&committed).unwrap().count(), 2);

    // The run's report is in a new target/loadtest/tiny-<time>/, and both the start and the
    // end of the output name it.
    let runs: Vec<_> = std::fs::read_dir(repo.path().join("target/loadtest"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let dir = &runs[0];
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("tiny-"), "{name}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["summary"]["orders_final"], 20, "{json}");
    assert!(dir.join("report.md").exists());
    assert!(stderr.contains(&name), "{stderr}");
    assert!(
        stdout.contains(&format!("{name}/report.md")),
        "the report's path is printed: {stdout}"
    );
}

#[test]
fn a_missing_switchyard_binary_is_named_with_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke.toml");
    let refused = |run: std::process::Output, path: &std::path::Path| {
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{stderr}");
        assert!(
            stderr.contains("--switchyard") && stderr.contains(&*path.to_string_lossy()),
            "{stderr}"
        );
    };
    // Named, and not there.
    let missing = dir.path().join("no-such-switchyard");
    let run = Command::new(env!("CARGO_BIN_EXE_switchyard-loadtest"))
        .arg("--switchyard")
        .arg(&missing)
        .arg("--scenario")
        .arg(&scenario)
        .output()
        .unwrap();
    refused(run, &missing);
    // By default the one next to the harness: a harness copied alone has none.
    let alone = dir
        .path()
        .canonicalize()
        .unwrap()
        .join("switchyard-loadtest");
    std::fs::copy(env!("CARGO_BIN_EXE_switchyard-loadtest"), &alone).unwrap();
    // A process forked meanwhile by another test may briefly hold the copy open for writing
    // (ETXTBSY): try again.
    let run = (0..50)
        .find_map(|_| {
            match Command::new(&alone)
                .arg("--scenario")
                .arg(&scenario)
                .output()
            {
                Err(e) if e.raw_os_error() == Some(26) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    None
                }
                r => Some(r.unwrap()),
            }
        })
        .expect("the copied harness runs");
    refused(run, &alone.with_file_name("switchyard"));
}
