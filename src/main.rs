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
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCmd,
    },
    /// Load and validate a config file, print the effective configuration as TOML.
    CheckConfig {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Print the decision for one order and the rule trace behind it.
    Explain {
        /// Rule pack (e.g. config/rules/virginia.toml).
        #[arg(long)]
        pack: PathBuf,
        /// The order as on the orders topic (JSON file).
        #[arg(long)]
        order: PathBuf,
        /// Forecasts: JSON array of {"zone","date","low_f","high_f"}.
        #[arg(long)]
        forecasts: Option<PathBuf>,
        /// Declared emergencies: JSON array of {"declared_at","ended_at"?,"zones"?}.
        #[arg(long)]
        emergencies: Option<PathBuf>,
        /// The utility's overlay on top of the pack (see config/overlays/).
        #[arg(long)]
        overlay: Option<PathBuf>,
        /// The meter's weather zone.
        #[arg(long, default_value = "")]
        zone: String,
        /// Meter flags: life_support, medical, critical_care, vip, legal_dispute.
        #[arg(long, value_delimiter = ',')]
        flags: Vec<String>,
        /// An approval is on record.
        #[arg(long)]
        approved: bool,
        /// Decision time (RFC 3339); default now.
        #[arg(long)]
        at: Option<String>,
        /// Print the decision as JSON instead.
        #[arg(long)]
        json: bool,
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
        Cmd::Policy {
            command:
                PolicyCmd::Explain {
                    pack,
                    order,
                    forecasts,
                    emergencies,
                    overlay,
                    zone,
                    flags,
                    approved,
                    at,
                    json,
                },
        } => {
            use switchyard::domain::MeterFlags;
            use switchyard::policy::{Facts, Forecast, RulePack};
            let text = std::fs::read_to_string(&pack)
                .with_context(|| format!("cannot read {}", pack.display()))?;
            let mut policy = RulePack::from_toml(&text, &pack.display().to_string())?;
            if let Some(o) = overlay {
                let text = std::fs::read_to_string(&o)
                    .with_context(|| format!("cannot read {}", o.display()))?;
                policy = policy.tightened_by(&text, &o.display().to_string())?;
            }
            let bytes = std::fs::read(&order)
                .with_context(|| format!("cannot read {}", order.display()))?;
            let key: serde_json::Value =
                serde_json::from_slice(&bytes).context("the order file is not JSON")?;
            let meter = key
                .get("meter_id")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string();
            let at: jiff::Timestamp = match at {
                Some(a) => a
                    .parse()
                    .with_context(|| format!("--at `{a}` is not an RFC 3339 timestamp"))?,
                None => jiff::Timestamp::now(),
            };
            let order = switchyard::domain::validate_order(
                Some(meter.as_bytes()),
                Some(&bytes),
                |_| true,
                at,
            )
            .map_err(|r| {
                anyhow::anyhow!(
                    "the order is not valid ({}): {}",
                    r.reason.as_str(),
                    r.detail
                )
            })?;
            let forecasts: Vec<Forecast> = match forecasts {
                Some(f) => serde_json::from_slice(
                    &std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?,
                )
                .context("forecasts file: expected a JSON array of {zone, date, low_f, high_f}")?,
                None => Vec::new(),
            };
            let emergencies: Vec<switchyard::policy::Emergency> = match emergencies {
                Some(f) => serde_json::from_slice(
                    &std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?,
                )
                .context(
                    "emergencies file: expected a JSON array of {declared_at, ended_at?, zones?}",
                )?,
                None => Vec::new(),
            };
            let mut mf = MeterFlags::empty();
            for f in &flags {
                let flag = match f.as_str() {
                    "life_support" => MeterFlags::LIFE_SUPPORT,
                    "medical" => MeterFlags::MEDICAL,
                    "critical_care" => MeterFlags::CRITICAL_CARE,
                    "vip" => MeterFlags::VIP,
                    "legal_dispute" => MeterFlags::LEGAL_DISPUTE,
                    other => anyhow::bail!("--flags: unknown flag `{other}` (life_support, medical, critical_care, vip, legal_dispute)"),
                };
                mf.set(flag, true);
            }
            let facts = Facts {
                zone: &zone,
                forecasts: &forecasts,
                emergencies: &emergencies,
                approved,
            };
            let decision = policy.decide(&order, mf, at, &facts);
            if json {
                println!("{}", serde_json::to_string_pretty(&decision)?);
            } else {
                print!("{}", decision.explain(&order, at));
            }
            Ok(())
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
