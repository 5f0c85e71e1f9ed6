//! `switchyard campaign plan`: a campaign's schedule without running it, and its chart.

use std::path::PathBuf;

use anyhow::Context;

#[derive(clap::Args)]
pub(crate) struct PlanArgs {
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
}

pub(crate) fn run(args: PlanArgs) -> anyhow::Result<()> {
    let PlanArgs {
        definition,
        orders,
        registry,
        pack,
        forecasts,
        svg,
    } = args;

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
        let o: switchyard::domain::Order = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not an order", orders.display(), i + 1))?;
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
            released_at: None,
        });
    }
    let policy = match &pack {
        Some(p) => Some(switchyard::policy::RulePack::from_toml(
            &std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
            &p.display().to_string(),
        )?),
        None => None,
    };
    let fc: Vec<switchyard::policy::Forecast> = match &forecasts {
        Some(f) => serde_json::from_slice(&std::fs::read(f)?)
            .context("forecasts file: expected a JSON array of {zone, date, low_f, high_f}")?,
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
