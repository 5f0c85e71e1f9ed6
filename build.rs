//! Records the git commit being built as `SWITCHYARD_GIT_COMMIT` (the `commit` label of
//! `switchyard_build_info`). Without git, or outside a repository (a source tarball), nothing is
//! set and the code says `unknown`. It does not say whether the work tree had uncommitted
//! changes.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// Re-run when this file exists and changes (a missing path would re-run every build).
fn watch(git_path: &str) {
    if let Some(p) = git(&["rev-parse", "--git-path", git_path]) {
        if Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}

fn main() {
    // Re-run when HEAD moves (a commit, a checkout), not on every source change.
    println!("cargo:rerun-if-changed=build.rs");
    watch("HEAD");
    watch("packed-refs");
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch(&branch);
    }
    if let Some(c) = git(&["rev-parse", "--short=12", "HEAD"]) {
        println!("cargo:rustc-env=SWITCHYARD_GIT_COMMIT={c}");
    }
}
