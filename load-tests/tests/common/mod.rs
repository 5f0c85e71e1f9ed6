//! What the harness's tests share: the two binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The switchyard binary under test, `target/<profile>/switchyard`: this test runs as
/// `target/<profile>/deps/<test>-<hash>`, and `cargo test --release` at the repository root
/// builds the service's binary in the same invocation (its own tests need it). Run alone
/// (`cargo test -p switchyard-loadtest`), the harness's tests use whatever binary the last
/// build left there.
pub fn switchyard_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps/");
    let bin = profile_dir.join(format!("switchyard{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the switchyard binary under test, {}, is missing: build it first with \
         `cargo build --release` (or run `cargo test --release`) at the repository root",
        bin.display()
    );
    bin
}

/// `switchyard-loadtest --switchyard <the binary under test>`, arguments to follow.
pub fn harness() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_switchyard-loadtest"));
    c.arg("--switchyard").arg(switchyard_bin());
    c
}

/// Runs the harness to its end; it must succeed. Its stdout and stderr.
pub fn run_ok(harness: &mut Command) -> (String, String) {
    let run: Output = harness.output().expect("the harness runs");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "loadtest failed\n{stdout}\n{stderr}");
    (stdout, stderr)
}
