//! `switchyard policy explain`: the decision for one order and the rule trace behind it.

use std::path::PathBuf;

use anyhow::Context;
use switchyard::domain::Protection;

#[derive(clap::Args)]
pub(crate) struct ExplainArgs {
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
    #[arg(long, value_delimiter = ',', value_parser = parse_protection)]
    flags: Vec<Protection>,
    /// An approval is on record.
    #[arg(long)]
    approved: bool,
    /// The meter's head-end can set a demand limit (for a pack with `[load_limit]`).
    #[arg(long)]
    can_limit_load: bool,
    /// Decision time (RFC 3339); default now.
    #[arg(long)]
    at: Option<String>,
    /// Print the decision as JSON instead.
    #[arg(long)]
    json: bool,
}

/// A `--flags` value: a [`Protection`] by its snake_case name.
fn parse_protection(s: &str) -> Result<Protection, String> {
    s.trim().parse().map_err(|_| {
        let known: Vec<&str> = Protection::ALL.iter().map(|p| p.as_str()).collect();
        format!("unknown flag `{s}` (known: {})", known.join(", "))
    })
}

pub(crate) fn run(args: ExplainArgs) -> anyhow::Result<()> {
    let ExplainArgs {
        pack,
        order,
        forecasts,
        emergencies,
        overlay,
        zone,
        flags,
        approved,
        can_limit_load,
        at,
        json,
    } = args;

    use switchyard::domain::MeterFlags;
    use switchyard::policy::{Facts, Forecast, RulePack};
    let text = std::fs::read_to_string(&pack)
        .with_context(|| format!("cannot read {}", pack.display()))?;
    let mut policy = RulePack::from_toml(&text, &pack.display().to_string())?;
    if let Some(o) = overlay {
        let text =
            std::fs::read_to_string(&o).with_context(|| format!("cannot read {}", o.display()))?;
        policy = policy.tightened_by(&text, &o.display().to_string())?;
    }
    if zone.trim().is_empty() && !policy.pack.weather.is_empty() {
        anyhow::bail!(
            "--zone is required: the pack has {} weather rule(s), and without the meter's zone none of them would be evaluated",
            policy.pack.weather.len()
        );
    }
    let bytes =
        std::fs::read(&order).with_context(|| format!("cannot read {}", order.display()))?;
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
    let order =
        switchyard::domain::validate_order(Some(meter.as_bytes()), Some(&bytes), |_| true, at)
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
        .context("emergencies file: expected a JSON array of {declared_at, ended_at?, zones?}")?,
        None => Vec::new(),
    };
    let mf = flags
        .iter()
        .fold(MeterFlags::empty(), |mf, p| mf | p.flag());
    let facts = Facts {
        zone: &zone,
        forecasts: &forecasts,
        emergencies: &emergencies,
        approved,
        can_limit_load,
    };
    let decision = policy.decide(&order, mf, at, &facts);
    if json {
        println!("{}", serde_json::to_string_pretty(&decision)?);
    } else {
        print!("{}", decision.explain(&order, at));
    }
    Ok(())
}
