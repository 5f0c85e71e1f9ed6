//! `switchyard loadtest` without `--out` writes to a new directory of its own and says where;
//! the committed reports in load-tests/reports/ are replaced only when `--out` names them.

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

    let run = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["loadtest", "--scenario", "load-tests/scenarios/tiny.toml"])
        .current_dir(repo.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "loadtest failed\n{stdout}\n{stderr}");

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
