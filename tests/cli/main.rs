//! The `switchyard` command line as a user runs it: each test starts the built binary as a
//! child process (never changing this process's working directory or environment), so the
//! tests of every subcommand share one test binary.
//!
//! - [`allocator`]: the binary allocates with jemalloc;
//! - [`config`]: the example configs load from any working directory (`check-config`, as the
//!   systemd unit starts switchyard: from `/`);
//! - [`demo`]: a piped demo writes plain text and does not count held orders as final;
//! - [`policy`]: `policy explain` and `campaign plan`;
//! - [`uat`]: `run` with a UAT business clock is marked everywhere, and refused against an
//!   external broker unless allowed.

use std::path::Path;
use std::process::{Command, Output};

#[path = "../common/mod.rs"]
mod common;

mod allocator;
mod config;
mod demo;
mod policy;
mod uat;

/// Runs `switchyard <args>` in `cwd` with RUST_BACKTRACE unset (error output as a user sees it).
pub fn switchyard(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("the switchyard binary runs")
}

/// Asserts that `stderr` has the line `line` (after its indent), exactly: an error a user reads
/// names its key and says all of what is wrong.
pub fn assert_line(stderr: &str, line: &str) {
    assert!(
        stderr.lines().any(|l| l.trim() == line),
        "no line `{line}` in:\n{stderr}"
    );
}

/// stdout and stderr of a finished run, as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
