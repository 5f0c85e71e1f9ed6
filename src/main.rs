//! The `switchyard` binary: `run`, `demo`, `policy explain`, `campaign plan`, `loadtest`,
//! `check-config`, one file each in `cli/`.

mod cli;

fn main() -> anyhow::Result<()> {
    cli::main()
}
