//! `switchyard check-config`: load and validate a config file, print the effective configuration (secrets redacted).

use std::path::PathBuf;

use anyhow::Context;

use switchyard::Config;

#[derive(clap::Args)]
pub(crate) struct CheckConfigArgs {
    #[arg(long, short)]
    config: Option<PathBuf>,
}

pub(crate) fn run(args: CheckConfigArgs) -> anyhow::Result<()> {
    let CheckConfigArgs { config } = args;

    let config = Config::load(config.as_deref()).context("configuration rejected")?;
    // Secrets (kafka.client passwords and keys) are not printed.
    println!("{}", toml::to_string_pretty(&config.redacted())?);
    Ok(())
}
