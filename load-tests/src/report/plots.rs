//! The report's SVG plots (plotters, SVG backend only: no fonts or image libraries needed).

use std::path::Path;

use plotters::prelude::*;
use switchyard::observability::LatencySummary;

use super::{rate_series, rate_series_over, Report};

/// Draws every plot that applies into `dir`; returns the names of those drawn (a plot that
/// fails is reported and left out).
pub(super) fn draw(report: &Report, dir: &Path) -> Vec<String> {
    let mut plots = Vec::new();
    let mut plot = |name: &str, r: Result<(), String>| match r {
        Ok(()) => plots.push(name.to_string()),
        Err(e) => eprintln!("plot {name} not drawn: {e}"),
    };
    let s = &report.samples;
    plot(
        "throughput.svg",
        line_chart(
            &dir.join("throughput.svg"),
            "orders per second (1 s windows)",
            "orders/s",
            &[
                (
                    "accepted (stored, offset committed)",
                    rate_series(s, |x| x.received),
                    BLUE,
                ),
                ("final status stored", rate_series(s, |x| x.terminal), GREEN),
                (
                    "commands to the head-end",
                    rate_series(s, |x| x.commands),
                    RED,
                ),
            ],
        ),
    );
    plot(
        "audit.svg",
        line_chart(
            &dir.join("audit.svg"),
            "audit rows written per second (1 s windows)",
            "rows/s",
            &[("audit rows", rate_series(s, |x| x.audit_rows), BLUE)],
        ),
    );
    plot(
        "concurrency.svg",
        line_chart(
            &dir.join("concurrency.svg"),
            "commands in flight and live meter actors",
            "count",
            &[
                (
                    "commands in flight",
                    s.iter().map(|x| (x.t, x.in_flight)).collect(),
                    RED,
                ),
                (
                    "live meter actors",
                    s.iter().map(|x| (x.t, x.live_actors)).collect(),
                    BLUE,
                ),
            ],
        ),
    );
    plot(
        "memory.svg",
        line_chart(
            &dir.join("memory.svg"),
            "switchyard resident memory",
            "MiB",
            &[(
                "RSS",
                s.iter().map(|x| (x.t, x.rss as f64 / 1048576.0)).collect(),
                BLUE,
            )],
        ),
    );
    if let (Some(d), Some(c)) = (report.summary.dispatch, report.summary.completion) {
        plot("latency.svg", latency_chart(&dir.join("latency.svg"), d, c));
    }
    if report.scenario.campaign.is_some() {
        plot(
            "campaign.svg",
            line_chart(
                &dir.join("campaign.svg"),
                "campaign releases per hour (rate over 30 s windows x 3600)",
                "releases/h",
                &[(
                    "campaign releases",
                    rate_series_over(s, |x| x.releases, 30.0)
                        .into_iter()
                        .map(|(t, r)| (t, r * 3600.0))
                        .collect(),
                    BLUE,
                )],
            ),
        );
    }
    plots
}

/// One line of a chart: its legend, its (x, y) points and its colour.
type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

fn line_chart(path: &Path, title: &str, y_desc: &str, series: &[Series<'_>]) -> Result<(), String> {
    let x_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds since switchyard was ready")
        .y_desc(y_desc)
        .draw()
        .map_err(|e| e.to_string())?;
    for (name, points, color) in series {
        let c = *color;
        chart
            .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn latency_chart(path: &Path, d: LatencySummary, c: LatencySummary) -> Result<(), String> {
    let bars = [
        ("dispatch p50", d.p50_us, BLUE),
        ("dispatch p99", d.p99_us, BLUE),
        ("dispatch p99.9", d.p999_us, BLUE),
        ("completion p50", c.p50_us, GREEN),
        ("completion p99", c.p99_us, GREEN),
        ("completion p99.9", c.p999_us, GREEN),
    ];
    let top = bars.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64 / 1000.0 * 1.15;
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "internal latency percentiles (head-end time excluded)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..bars.len() as f64, 0f64..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len())
        .x_label_formatter(&|x| {
            bars.get(*x as usize)
                .map(|b| b.0.to_string())
                .unwrap_or_default()
        })
        .y_desc("milliseconds")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, us, color))| {
            let x = i as f64;
            Rectangle::new(
                [(x + 0.1, 0.0), (x + 0.9, *us as f64 / 1000.0)],
                color.mix(0.6).filled(),
            )
        }))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
