//! The example configuration files stay valid when switchyard is started from another working
//! directory, as systemd starts deploy/switchyard.service (no WorkingDirectory: from `/`).
//! Checked through `switchyard check-config`, which prints the effective configuration.

use std::path::{Path, PathBuf};

/// The effective configuration `check-config` prints for `file`, run from `cwd`.
fn effective(file: &Path, cwd: &Path) -> toml::Table {
    let out = super::switchyard(&["check-config", "--config", file.to_str().unwrap()], cwd);
    let (stdout, stderr) = super::text(&out);
    assert!(
        out.status.success(),
        "{} from {}: {stderr}",
        file.display(),
        cwd.display()
    );
    stdout.parse().expect("check-config prints TOML")
}

fn path_at(c: &toml::Table, section: &str, key: &str) -> Option<PathBuf> {
    c.get(section)?.get(key)?.as_str().map(PathBuf::from)
}

fn int_at(c: &toml::Table, section: &str, key: &str) -> i64 {
    c[section][key]
        .as_integer()
        .unwrap_or_else(|| panic!("{section}.{key} is an integer"))
}

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
    // Every config file in config/, in place.
    let mut loaded = Vec::new();
    for entry in std::fs::read_dir(repo("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let c = effective(&path, Path::new("/"));
        for p in [
            path_at(&c, "policy", "rule_pack"),
            path_at(&c, "policy", "utility_overlay"),
            path_at(&c, "registry", "file"),
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
    std::fs::copy(
        repo("config/operator-tokens.example"),
        etc.join("operator-tokens.example"),
    )
    .unwrap();
    let file = etc.join(installed.file_name().unwrap());
    std::fs::copy(repo("config/production-kafka.example.toml"), &file).unwrap();
    let c = effective(&file, Path::new("/"));
    assert_eq!(
        path_at(&c, "policy", "rule_pack"),
        Some(etc.join("rules/virginia.toml"))
    );
    assert_eq!(
        path_at(&c, "policy", "utility_overlay"),
        Some(etc.join("overlays/utility.example.toml"))
    );
    assert_eq!(c["data_dir"].as_str(), Some("/var/lib/switchyard"));
    // Auth is on in the production example: its tokens file, beside it.
    assert_eq!(
        c["http"]["auth"]["tokens_file"].as_str().map(PathBuf::from),
        Some(etc.join("operator-tokens.example"))
    );
    assert_eq!(
        c["http"]["auth"]["open_reads_on_loopback"].as_bool(),
        Some(false)
    );
    // Keys the example leaves out keep the defaults; its durations are human strings.
    assert_eq!(int_at(&c, "kafka", "embedded_partitions"), 4);
    assert_eq!(int_at(&c, "head_end", "command_deadline_secs"), 300);
    let drain = int_at(&c, "head_end", "shutdown_drain_secs");
    assert_eq!(drain, 120);
    assert_eq!(int_at(&c, "head_end", "backoff_max_ms"), 900_000);
    // The unit's stop timeout outlasts the drain, as its comment says.
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec")
        .trim()
        .parse()
        .unwrap();
    assert!(stop > drain as u64 + 20, "{stop}");
    // A relative path given on the command line is taken from the working directory.
    let relative = file.strip_prefix(root.path()).unwrap();
    let c = effective(relative, root.path());
    assert_eq!(
        path_at(&c, "policy", "rule_pack"),
        Some(etc.join("rules/virginia.toml"))
    );
}
