//! The example configuration files stay valid when switchyard is started from another working
//! directory, as systemd starts deploy/switchyard.service (no WorkingDirectory: from `/`).
//! One test in this binary: it changes the process's working directory.

use std::path::{Path, PathBuf};

use switchyard::Config;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn example_configs_load_from_any_working_directory() {
    let no_env = Vec::<(String, String)>::new;
    std::env::set_current_dir("/").unwrap();

    // Every config file in config/, in place.
    let mut loaded = Vec::new();
    for entry in std::fs::read_dir(repo("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let c = Config::load_with_env(Some(&path), no_env())
            .unwrap_or_else(|e| panic!("{} from /: {e}", path.display()));
        for p in [
            &c.policy.rule_pack,
            &c.policy.utility_overlay,
            &c.registry.file,
        ]
        .into_iter()
        .flatten()
        {
            assert!(
                p.is_file(),
                "{}: {} resolves to a file",
                path.display(),
                p.display()
            );
        }
        loaded.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    loaded.sort();
    assert_eq!(loaded, ["default.toml", "production-kafka.example.toml"]);

    // The production example installed as deploy/switchyard.service expects it.
    let unit = std::fs::read_to_string(repo("deploy/switchyard.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart");
    let installed = exec
        .split_whitespace()
        .skip_while(|a| *a != "--config")
        .nth(1)
        .expect("ExecStart passes --config");
    let installed = Path::new(installed);
    assert!(installed.is_absolute(), "{exec}");
    assert!(
        !unit.lines().any(|l| l.starts_with("WorkingDirectory=")),
        "this test assumes the unit runs from /"
    );
    // /etc/switchyard/{switchyard.toml, rules/, overlays/} under a temporary root.
    let root = tempfile::tempdir().unwrap();
    let etc = root
        .path()
        .join(installed.parent().unwrap().strip_prefix("/").unwrap());
    copy_dir(&repo("config/rules"), &etc.join("rules"));
    copy_dir(&repo("config/overlays"), &etc.join("overlays"));
    let file = etc.join(installed.file_name().unwrap());
    std::fs::copy(repo("config/production-kafka.example.toml"), &file).unwrap();
    let c = Config::load_with_env(Some(&file), no_env()).unwrap();
    assert_eq!(c.policy.rule_pack, Some(etc.join("rules/virginia.toml")));
    assert_eq!(
        c.policy.utility_overlay,
        Some(etc.join("overlays/utility.example.toml"))
    );
    assert_eq!(c.data_dir, Path::new("/var/lib/switchyard"));
    // Keys the example leaves out keep the defaults; its durations are human strings.
    assert_eq!(c.kafka.embedded_partitions, 4);
    assert_eq!(c.head_end.command_deadline_secs, 300);
    assert_eq!(c.head_end.shutdown_drain_secs, 120);
    assert_eq!(c.head_end.backoff_max_ms, 900_000);
    // The unit's stop timeout outlasts the drain, as its comment says.
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec")
        .trim()
        .parse()
        .unwrap();
    assert!(stop > c.head_end.shutdown_drain_secs + 20, "{stop}");
    // A relative path given on the command line is taken from the working directory.
    std::env::set_current_dir(root.path()).unwrap();
    let relative = file.strip_prefix(root.path()).unwrap();
    let c = Config::load_with_env(Some(relative), no_env()).unwrap();
    assert_eq!(c.policy.rule_pack, Some(etc.join("rules/virginia.toml")));
}
