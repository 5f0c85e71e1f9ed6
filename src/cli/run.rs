//! `switchyard run`: the service, until SIGTERM or Ctrl-C (then a graceful drain).

use std::path::PathBuf;

use anyhow::Context;

use switchyard::{App, Config};

#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// TOML config file; SWITCHYARD__SECTION__KEY environment variables override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<()> {
    let RunArgs { config } = args;

    let config = Config::load(config.as_deref()).context("configuration rejected")?;
    switchyard::observability::init_logging(config.log.format, &config.log.level);
    let sys = actix::System::new();
    sys.block_on(async move {
        let clock = config.clock.clock();
        let app = App::start(config, clock)
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
        if app.config.clock.is_shifted() {
            println!(
                "  UAT CLOCK:       business time starts at {}, {}x speed (not for production)",
                app.config
                    .clock
                    .start_at
                    .map_or("now".to_string(), |t| t.to_string()),
                app.config.clock.speed
            );
        }
        wait_for_signal().await;
        println!("switchyard stopping");
        app.shutdown().await;
        anyhow::Ok(())
    })
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
