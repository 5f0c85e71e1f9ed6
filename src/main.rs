//! The `switchyard` binary: `run`, `demo`, `policy explain`, `campaign plan`, `check-config`,
//! one file each in `cli/`. (The load-test harness is its own binary, `switchyard-loadtest`.)

mod cli;

fn main() -> anyhow::Result<()> {
    cli::main()
}
