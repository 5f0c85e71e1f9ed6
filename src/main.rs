//! The `switchyard` binary: `run`, `demo`, `policy explain`, `campaign plan`, `check-config`,
//! one file each in `cli/`. (The load-test harness is its own binary, `switchyard-loadtest`.)

mod cli;

/// jemalloc, not the system's malloc: the service allocates and frees many small values per
/// order on four threads, and with jemalloc its CPU per order was about a fifth lower than with
/// glibc's malloc (the month-end load test: docs/architecture.md, "The allocator, measured
/// again"). `tests/cli/allocator.rs` fails if the binary stops using it.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    cli::main()
}
