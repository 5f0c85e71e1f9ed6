//! `switchyard-loadtest`: a load-test scenario against a switchyard child process, or a report
//! rendered again.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use switchyard_loadtest::report::Report;
use switchyard_loadtest::{fresh_out_dir, switchyard_next_to_harness, LoadtestOptions};

/// Run a load-test scenario (load-tests/scenarios/*.toml) against a switchyard child process and
/// write a report (Markdown, JSON, SVG plots) with the raw limits of its parts.
#[derive(Parser)]
#[command(name = "switchyard-loadtest", version)]
struct Args {
    /// The scenario file.
    #[arg(long, required_unless_present = "render")]
    scenario: Option<PathBuf>,
    /// Instead of running: render report.md and the plots again from DIR/report.json.
    #[arg(long, value_name = "DIR", conflicts_with = "scenario")]
    render: Option<PathBuf>,
    /// The switchyard binary under test (default: `switchyard` next to this executable, i.e.
    /// target/release/switchyard after `cargo build --release`).
    #[arg(long, value_name = "PATH", conflicts_with = "render")]
    switchyard: Option<PathBuf>,
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
    /// Instances of switchyard in one consumer group, sharing the meters (more than one needs
    /// the ScyllaDB store, `SWITCHYARD__STORE__BACKEND=scylla`, and a scenario without a kill).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    instances: u32,
}

fn main() -> anyhow::Result<()> {
    let Args {
        scenario,
        render,
        switchyard,
        brokers,
        out,
        scale,
        instances,
    } = Args::parse();

    switchyard::observability::init_logging(switchyard::config::LogFormat::Text, "warn");
    if let Some(dir) = render {
        let report = Report::read(&dir)
            .with_context(|| format!("cannot read {}/report.json", dir.display()))?;
        report.write(&dir).context("cannot write the report")?;
        println!("{}", report.table());
        return Ok(());
    }
    let scenario = scenario.context("--scenario is required")?;
    let switchyard = match switchyard {
        Some(path) => path,
        None => switchyard_next_to_harness().context("cannot locate the harness executable")?,
    };
    // Absolute, so that the child is this file wherever it runs from (never one on PATH).
    let switchyard = std::fs::canonicalize(&switchyard).map_err(|e| {
        anyhow::anyhow!(
            "the switchyard binary under test, {}, cannot be used ({e}): build it with \
             `cargo build --release`, or name it with --switchyard PATH",
            switchyard.display()
        )
    })?;
    let name = scenario
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".into());
    let out = out.unwrap_or_else(|| fresh_out_dir(&name));
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let report = rt.block_on(switchyard_loadtest::run(LoadtestOptions {
        scenario,
        switchyard,
        brokers,
        out: out.clone(),
        scale,
        command_line,
        instances: instances as usize,
    }))?;
    println!("{}", report.table());
    println!("report: {}", out.join("report.md").display());
    Ok(())
}
