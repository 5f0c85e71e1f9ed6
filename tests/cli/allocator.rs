//! The service binary allocates with jemalloc (the default feature `jemalloc`): the month-end
//! load test measured a fifth less CPU per order than with glibc's malloc (docs/architecture.md,
//! "The allocator, measured again"), so losing it is a performance regression no other test
//! sees. Asked of jemalloc itself: with `stats_print` in its configuration (tikv-jemallocator
//! builds it with the `_rjem_` prefix, so the variable is `_RJEM_MALLOC_CONF`), it prints its
//! statistics when the process exits; the system's malloc ignores the variable.

use std::process::Command;

#[test]
fn the_switchyard_binary_allocates_with_jemalloc() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("the switchyard binary runs");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Begin jemalloc statistics"),
        "the binary did not report jemalloc's statistics: is the `jemalloc` feature off, or the \
         #[global_allocator] in src/main.rs gone? stderr:\n{}",
        stderr.chars().take(500).collect::<String>()
    );
}
