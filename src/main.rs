//! The `switchyard` binary: `run`, `demo`, `check-config`. The only place `anyhow` is used.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use switchyard::clock::SystemClock;
use switchyard::{App, Config};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Remote connect / disconnect orchestration for electric utilities"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the service (embedded defaults when no --config is given).
    Run {
        /// TOML config file; SWITCHYARD__SECTION__KEY environment variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Generate a synthetic day into embedded Kafka, run it to completion, print a summary.
    Demo {
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
    },
    /// Load and validate a config file, print the effective configuration as TOML.
    CheckConfig {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run { config } => {
            let config = Config::load(config.as_deref()).context("configuration rejected")?;
            switchyard::observability::init_logging(config.log.format, &config.log.level);
            let sys = actix::System::new();
            sys.block_on(async move {
                let app = App::start(config, Arc::new(SystemClock))
                    .await
                    .context("switchyard could not start")?;
                println!("switchyard running");
                println!("  kafka bootstrap: {}", app.bootstrap);
                println!(
                    "  operator http:   http://{}/metrics  /healthz  /readyz",
                    app.http_addr
                );
                println!("  orders topic:    {}", app.config.topics.orders);
                println!("  events topic:    {}", app.config.topics.order_events);
                wait_for_signal().await;
                println!("switchyard stopping");
                app.shutdown().await;
                anyhow::Ok(())
            })
        }
        Cmd::Demo {
            config,
            meters,
            orders,
            invalid,
            data_dir,
        } => {
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
        Cmd::CheckConfig { config } => {
            let config = Config::load(config.as_deref()).context("configuration rejected")?;
            println!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
