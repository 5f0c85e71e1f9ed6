//! `switchyard demo`: a synthetic day into the embedded Kafka, run to completion, summarised.

use std::path::PathBuf;

use anyhow::Context;

use switchyard::Config;

#[derive(clap::Args)]
pub(crate) struct DemoArgs {
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Registered meters.
    #[arg(long, default_value_t = 100_000)]
    meters: usize,
    /// Valid service orders (mixed kinds).
    #[arg(long, default_value_t = 20_000)]
    orders: usize,
    /// Invalid records mixed in (they must reach the dead-letter topic).
    #[arg(long, default_value_t = 12)]
    invalid: usize,
    /// Keep the demo's data here instead of a temporary directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub(crate) fn run(args: DemoArgs) -> anyhow::Result<()> {
    let DemoArgs {
        config,
        meters,
        orders,
        invalid,
        data_dir,
    } = args;

    let config = Config::load(config.as_deref()).context("configuration rejected")?;
    switchyard::observability::init_logging(config.log.format, "warn");
    let sys = actix::System::new();
    sys.block_on(async move {
        let opts = switchyard::demo::DemoOptions {
            meters,
            orders,
            invalid,
            data_dir,
        };
        let summary = switchyard::demo::run(config, opts).await?;
        println!("{summary}");
        anyhow::Ok(())
    })
}
