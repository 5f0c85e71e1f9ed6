//! `switchyard migrate`: create the ScyllaDB keyspace and apply the schema migrations not
//! applied yet (before a fleet of instances starts with `store.scylla.migrate_at_start = false`).

use std::path::PathBuf;

use anyhow::Context;

use switchyard::Config;

#[derive(clap::Args)]
pub(crate) struct MigrateArgs {
    #[arg(long, short)]
    config: Option<PathBuf>,
}

pub(crate) fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref()).context("configuration rejected")?;
    let applied = switchyard::migrate_store(&config).context("migration failed")?;
    if applied.is_empty() {
        println!("schema is current (nothing to apply)");
    } else {
        println!("applied migrations {applied:?}");
    }
    Ok(())
}
