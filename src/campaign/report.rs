//! `switchyard campaign plan`: a campaign's schedule as text (releases per day and hour, per
//! zone, expected finish, what policy holds today and why) and as an SVG chart of planned
//! releases per hour against the call center's capacity line (plotters, SVG backend).

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use super::plan::Plan;
use super::Campaign;
use crate::domain::Timestamp;

/// Orders held today by a zone bar: rule → (zones, orders).
pub type HeldToday = BTreeMap<String, (Vec<String>, usize)>;

/// The plan as text a supervisor reads before starting the campaign.
pub fn text(c: &Campaign, plan: &Plan, total: usize, held_today: &HeldToday) -> String {
    let tz = jiff::tz::TimeZone::get(&c.def.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let mut out = String::new();
    let d = &c.def;
    out.push_str(&format!(
        "Campaign {}{}: {} orders at {} per hour{}, windows in {}, ordering {:?}\n",
        d.campaign_id,
        d.name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        total,
        d.rate_per_hour,
        d.zone_rate_per_hour
            .map(|z| format!(" (at most {z} per zone)"))
            .unwrap_or_default(),
        d.time_zone,
        d.ordering
    ));
    match plan.finish {
        Some(f) => out.push_str(&format!(
            "  first release {}, last release {} ({} local)\n",
            plan.releases
                .first()
                .map(|r| r.at.to_string())
                .unwrap_or_default(),
            f,
            f.to_zoned_datetime(tz.clone())
                .strftime("%a %Y-%m-%d %H:%M")
        )),
        None => out.push_str("  nothing can be released\n"),
    }
    if plan.left > 0 {
        out.push_str(&format!(
            "  NOT released by the plan: {} orders (past end_by, or zones held until facts change)\n",
            plan.left
        ));
    }
    if !held_today.is_empty() {
        out.push_str("  held by policy today (zone bars, at the first window of the plan):\n");
        for (rule, (zones, n)) in held_today {
            out.push_str(&format!(
                "    {rule}: {n} orders in zones {}\n",
                zones.join(", ")
            ));
        }
    }
    let mut per_day: BTreeMap<jiff::civil::Date, (u32, u32)> = BTreeMap::new();
    for (h, n) in plan.per_hour() {
        let day = h.to_zoned_datetime(tz.clone()).date();
        let e = per_day.entry(day).or_default();
        e.0 += n;
        e.1 = e.1.max(n);
    }
    out.push_str("  releases per day (busiest clock hour):\n");
    for (day, (n, peak)) in &per_day {
        out.push_str(&format!(
            "    {} {}: {n} (peak hour {peak})\n",
            day.strftime("%a"),
            day
        ));
    }
    out.push_str(&format!(
        "  most releases in any sliding hour: {} (rate {})\n",
        plan.max_in_any_hour(),
        d.rate_per_hour
    ));
    out.push_str("  releases per zone:\n");
    for (z, n) in plan.per_zone() {
        out.push_str(&format!("    {z}: {n}\n"));
    }
    out
}

/// Planned releases per clock hour (bars) and the call center's capacity (line), as SVG.
pub fn svg(c: &Campaign, plan: &Plan, path: &Path) -> Result<(), String> {
    let per_hour = plan.per_hour();
    let (Some(first), Some(last)) = (per_hour.keys().next(), per_hour.keys().last()) else {
        return Err("nothing to draw: the plan releases nothing".into());
    };
    let hour = |t: &Timestamp| t.as_second() / 3600;
    let (h0, h1) = (hour(first), hour(last) + 1);
    let capacity = c
        .def
        .call_center_capacity_per_hour
        .unwrap_or(c.def.rate_per_hour);
    let top = per_hour.values().copied().max().unwrap_or(0).max(capacity) as f64 * 1.15;
    let root = SVGBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: planned releases per hour (bars) vs call-center capacity (line)",
                c.def.campaign_id
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..(h1 - h0) as f64, 0f64..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(format!("hours since {first} (UTC)"))
        .y_desc("disconnects released per hour")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(per_hour.iter().map(|(t, n)| {
            let x = (hour(t) - h0) as f64;
            Rectangle::new([(x, 0.0), (x + 0.9, *n as f64)], BLUE.mix(0.6).filled())
        }))
        .map_err(|e| e.to_string())?
        .label("planned releases")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], BLUE.mix(0.6).filled()));
    chart
        .draw_series(LineSeries::new(
            [(0.0, capacity as f64), ((h1 - h0) as f64, capacity as f64)],
            RED.stroke_width(2),
        ))
        .map_err(|e| e.to_string())?
        .label(format!("call-center capacity {capacity}/h"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
