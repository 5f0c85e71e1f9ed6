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
    /// Campaign tools.
    Campaign {
        #[command(subcommand)]
        command: CampaignCmd,
    },
    /// Run a load-test scenario (load-tests/scenarios/*.toml) against a switchyard child
    /// process and write a report (Markdown, JSON, SVG plots) with the raw limits of its parts.
    Loadtest {
        /// The scenario file.
        #[arg(long, required_unless_present = "render")]
        scenario: Option<PathBuf>,
        /// Instead of running: render report.md and the plots again from DIR/report.json.
        #[arg(long, value_name = "DIR", conflicts_with = "scenario")]
        render: Option<PathBuf>,
        /// An external Kafka-API broker (e.g. tansu from load-tests/tansu.sh, or your cluster);
        /// default: librdkafka's mock cluster inside the harness.
        #[arg(long)]
        brokers: Option<String>,
        /// Report directory (default: a new target/loadtest/<scenario>-<time>; the committed
        /// reports in load-tests/reports/ are written only when named here).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Multiply every count in the scenario (e.g. 0.1 for a tenth of it).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
    },
    /// Load and validate a config file, print the effective configuration as TOML.
    CheckConfig {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CampaignCmd {
    /// Print a campaign's schedule (per day, hour and zone, expected finish, what policy holds
    /// today and why) and optionally draw it against the call-center capacity.
    Plan {
        /// The campaign: a definition (JSON) or a `define` record of the campaign-control topic.
        #[arg(long)]
        definition: PathBuf,
        /// Its orders: NDJSON, one order per line as on the orders topic.
        #[arg(long)]
        orders: PathBuf,
        /// Meter registry file (CSV or NDJSON) for the meters' zones.
        #[arg(long)]
        registry: Option<PathBuf>,
        /// Rule pack whose calendar, windows and weather rules hold zones.
        #[arg(long)]
        pack: Option<PathBuf>,
        /// Forecasts: JSON array of {"zone","date","low_f","high_f"}.
        #[arg(long)]
        forecasts: Option<PathBuf>,
        /// Write a chart of releases per hour against the capacity line here (SVG).
        #[arg(long)]
        svg: Option<PathBuf>,
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
        /// The meter's weather zone (required when the pack has weather rules).
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
        Cmd::Loadtest {
            scenario,
            render,
            brokers,
            out,
            scale,
        } => {
            switchyard::observability::init_logging(switchyard::config::LogFormat::Text, "warn");
            if let Some(dir) = render {
                let report = switchyard::loadtest::report::Report::read(&dir)
                    .with_context(|| format!("cannot read {}/report.json", dir.display()))?;
                report.write(&dir).context("cannot write the report")?;
                println!("{}", report.table());
                return Ok(());
            }
            let scenario = scenario.context("--scenario is required")?;
            let name = scenario
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "scenario".into());
            let out = out.unwrap_or_else(|| switchyard::loadtest::fresh_out_dir(&name));
            let command_line = std::env::args().collect::<Vec<_>>().join(" ");
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("tokio runtime")?;
            let report = rt.block_on(switchyard::loadtest::run(
                switchyard::loadtest::LoadtestOptions {
                    scenario,
                    brokers,
                    out: out.clone(),
                    scale,
                    command_line,
                },
            ))?;
            println!("{}", report.table());
            println!("report: {}", out.join("report.md").display());
            Ok(())
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
            if zone.trim().is_empty() && !policy.pack.weather.is_empty() {
                anyhow::bail!(
                    "--zone is required: the pack has {} weather rule(s), and without the meter's zone none of them would be evaluated",
                    policy.pack.weather.len()
                );
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
        Cmd::Campaign {
            command:
                CampaignCmd::Plan {
                    definition,
                    orders,
                    registry,
                    pack,
                    forecasts,
                    svg,
                },
        } => {
            use switchyard::campaign::{plan, report, CampaignDef, CampaignOrder, ControlRecord};
            let text = std::fs::read_to_string(&definition)
                .with_context(|| format!("cannot read {}", definition.display()))?;
            let def: CampaignDef = match serde_json::from_str::<CampaignDef>(&text) {
                Ok(d) => d,
                Err(first) => match serde_json::from_str::<ControlRecord>(&text) {
                    Ok(ControlRecord::Define { campaign, .. }) => campaign,
                    _ => anyhow::bail!(
                        "{}: not a campaign definition ({first})",
                        definition.display()
                    ),
                },
            };
            let reg = switchyard::registry::Registry::new();
            if let Some(r) = &registry {
                reg.load_file(r)?;
            }
            let c = def
                .validate(|z| registry.is_none() || reg.has_zone(z))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let body = std::fs::read_to_string(&orders)
                .with_context(|| format!("cannot read {}", orders.display()))?;
            let mut list = Vec::new();
            for (i, line) in body
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let o: switchyard::domain::Order =
                    serde_json::from_str(line).with_context(|| {
                        format!("{} line {}: not an order", orders.display(), i + 1)
                    })?;
                if o.kind != switchyard::domain::OrderKind::Disconnect {
                    continue;
                }
                list.push(CampaignOrder {
                    zone: reg
                        .get(&o.meter_id)
                        .map(|m| m.zone.to_string())
                        .unwrap_or_else(|| "unknown".into()),
                    meter_id: o.meter_id,
                    priority: o.priority,
                    amount_cents: o
                        .amount_due
                        .map(|a| (a * 100.0).round() as i64)
                        .unwrap_or(0),
                    seq: i as u64,
                    order_id: o.order_id,
                    released: false,
                });
            }
            let policy = match &pack {
                Some(p) => Some(switchyard::policy::RulePack::from_toml(
                    &std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read {}", p.display()))?,
                    &p.display().to_string(),
                )?),
                None => None,
            };
            let fc: Vec<switchyard::policy::Forecast> = match &forecasts {
                Some(f) => serde_json::from_slice(&std::fs::read(f)?).context(
                    "forecasts file: expected a JSON array of {zone, date, low_f, high_f}",
                )?,
                None => Vec::new(),
            };
            let bar = |zone: &str, t: jiff::Timestamp| {
                policy
                    .as_ref()?
                    .zone_bar(t, zone, &fc, &[])
                    .map(|(hit, until)| (hit.rule, until))
            };
            let started = std::time::Instant::now();
            let p = plan::plan(&c, &list, c.def.start_at, c.def.rate_per_hour, None, &bar);
            let took = started.elapsed();
            let mut held: report::HeldToday = Default::default();
            if let Some(first) = c.next_open(c.def.start_at) {
                let mut per_zone: std::collections::BTreeMap<&str, usize> = Default::default();
                for o in &list {
                    *per_zone.entry(o.zone.as_str()).or_default() += 1;
                }
                for (z, n) in per_zone {
                    if let Some((rule, _)) = bar(z, first) {
                        let e = held.entry(rule).or_default();
                        e.0.push(z.to_string());
                        e.1 += n;
                    }
                }
            }
            print!("{}", report::text(&c, &p, list.len(), &held));
            println!("  planned in {:.3} s", took.as_secs_f64());
            if let Some(path) = svg {
                report::svg(&c, &p, &path).map_err(|e| anyhow::anyhow!("chart: {e}"))?;
                println!("  chart written to {}", path.display());
            }
            Ok(())
        }
        Cmd::CheckConfig { config } => {
            let config = Config::load(config.as_deref()).context("configuration rejected")?;
            // Secrets (kafka.client passwords and keys) are not printed.
            println!("{}", toml::to_string_pretty(&config.redacted())?);
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
