//! SVG charts drawn from the benchmark JSON (plotters, SVG backend, no font files needed).
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::too_many_lines,
    reason = "small chart coordinates"
)]

use std::path::Path;

use anyhow::{Context as _, anyhow};
use plotters::prelude::*;
use serde_json::Value;

/// One bar per category: (median, low whisker, high whisker); `None` leaves a gap.
struct Series {
    name: &'static str,
    color: RGBColor,
    values: Vec<Option<(f64, f64, f64)>>,
}

const BLUE: RGBColor = RGBColor(0x2b, 0x6c, 0xb0);
const ORANGE: RGBColor = RGBColor(0xdd, 0x8a, 0x2e);
const GREEN: RGBColor = RGBColor(0x3a, 0x9a, 0x5b);

fn read(path: &Path) -> anyhow::Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok(Some(
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?,
    ))
}

/// Draws every chart whose JSON exists in `from` into `to`.
pub fn render_all(from: &Path, to: &Path) -> anyhow::Result<()> {
    let mut drawn = 0;
    if let Some(v) = read(&from.join("prog.json"))? {
        prog(&v, &to.join("prog.svg"))?;
        drawn += 1;
    }
    if let Some(v) = read(&from.join("e2e.json"))? {
        e2e(&v, to)?;
        drawn += 1;
    }
    if drawn == 0 {
        return Err(anyhow!("no prog.json or e2e.json in {}", from.display()));
    }
    Ok(())
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_f64()
}

fn prog(v: &Value, out: &Path) -> anyhow::Result<()> {
    let cats = [
        "entry",
        "non-service",
        "hit blue",
        "hit green",
        "new flow",
        "recovery blue",
        "recovery green",
        "egress rewrite",
    ];
    let rows = v
        .get("rows")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("prog.json has no rows"))?;
    let series = [
        ("tc", "tc ingress", BLUE),
        ("xdp", "xdp ingress", ORANGE),
        ("tc egress", "tc egress", GREEN),
    ]
    .into_iter()
    .map(|(hook, name, color)| {
        let baseline = rows
            .iter()
            .find(|r| r["hook"] == hook && r["key"] == "no-op")
            .and_then(|r| num(r, &["trimmed_mean_ns"]))
            .unwrap_or(0.0);
        let values = cats
            .iter()
            .map(|c| {
                let r = rows.iter().find(|r| r["hook"] == hook && r["key"] == *c)?;
                Some((
                    num(r, &["delta_ns"])?,
                    num(r, &["p10_ns"])? - baseline,
                    num(r, &["p90_ns"])? - baseline,
                ))
            })
            .collect();
        Series {
            name,
            color,
            values,
        }
    })
    .collect::<Vec<_>>();
    bars(
        out,
        "Cost over a no-op program of the same type (ns per packet; trimmed mean, whiskers p10-p90)",
        "ns over no-op",
        &cats.map(str::to_owned),
        &series,
        &[
            (10.0, "goal non-service +10"),
            (40.0, "goal hit +40"),
            (150.0, "goal new flow +150"),
        ],
    )
}

fn e2e(v: &Value, dir: &Path) -> anyhow::Result<()> {
    let order: Vec<String> = v
        .get("order")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("e2e.json has no order"))?
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect();
    let sc = &v["scenarios"];
    let names: Vec<String> = order
        .iter()
        .map(|k| {
            sc[k]["name"]
                .as_str()
                .unwrap_or(k)
                .split(" (")
                .next()
                .unwrap_or(k)
                .to_owned()
        })
        .collect();
    let pick = |field: &str| -> Vec<Option<(f64, f64, f64)>> {
        order
            .iter()
            .map(|k| {
                let s = &sc[k][field];
                Some((num(s, &["median"])?, num(s, &["min"])?, num(s, &["max"])?))
            })
            .collect()
    };
    bars(
        &dir.join("e2e.svg"),
        "Ratio to direct connections of the same round (median, whiskers min-max)",
        "x direct",
        &names,
        &[
            Series {
                name: "new connections/s",
                color: BLUE,
                values: pick("conn_ratio"),
            },
            Series {
                name: "1-stream throughput",
                color: ORANGE,
                values: pick("tput1_ratio"),
            },
            Series {
                name: "2-stream throughput",
                color: GREEN,
                values: pick("tput2_ratio"),
            },
        ],
        &[(1.0, "direct")],
    )?;
    bars(
        &dir.join("e2e-cost.svg"),
        "CPU per connection and request latency (us; median, whiskers min-max over rounds)",
        "microseconds",
        &names,
        &[
            Series {
                name: "CPU per connection",
                color: BLUE,
                values: pick("cpu_us_per_conn"),
            },
            Series {
                name: "latency p50",
                color: ORANGE,
                values: pick("lat_p50_us"),
            },
            Series {
                name: "latency p99",
                color: GREEN,
                values: pick("lat_p99_us"),
            },
        ],
        &[],
    )
}

fn bars(
    out: &Path,
    title: &str,
    y_desc: &str,
    cats: &[String],
    series: &[Series],
    hlines: &[(f64, &str)],
) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", out.display());
    let top = series
        .iter()
        .flat_map(|s| s.values.iter().flatten().map(|v| v.0.max(v.2)))
        .chain(hlines.iter().map(|h| h.0))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.15;
    let bottom = series
        .iter()
        .flat_map(|s| s.values.iter().flatten().map(|v| v.0.min(v.1)))
        .fold(0.0f64, f64::min)
        * 1.15;
    let root = SVGBackend::new(out, (1000, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let n = cats.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 17))
        .margin(14)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..n, bottom..top)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(y_desc)
        .draw()
        .map_err(|e| err(&e))?;
    let k = series.len() as f64;
    let width = 0.8 / k;
    for (j, s) in series.iter().enumerate() {
        let color = s.color;
        let x0 = |i: usize| i as f64 + 0.1 + j as f64 * width;
        chart
            .draw_series(s.values.iter().enumerate().filter_map(|(i, v)| {
                let (m, _, _) = (*v)?;
                Some(Rectangle::new(
                    [(x0(i), 0.0), (x0(i) + width * 0.9, m)],
                    color.filled(),
                ))
            }))
            .map_err(|e| err(&e))?
            .label(s.name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        chart
            .draw_series(s.values.iter().enumerate().filter_map(|(i, v)| {
                let (_, lo, hi) = (*v)?;
                let xc = x0(i) + width * 0.45;
                Some(PathElement::new(
                    vec![(xc, lo), (xc, hi)],
                    BLACK.stroke_width(1),
                ))
            }))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(s.values.iter().enumerate().filter_map(|(i, v)| {
                let (m, _, hi) = (*v)?;
                let label = if m.abs() >= 100.0 {
                    format!("{m:.0}")
                } else {
                    format!("{m:.2}")
                };
                Some(Text::new(
                    label,
                    (x0(i), m.max(hi) + (top - bottom) * 0.01),
                    ("sans-serif", 10),
                ))
            }))
            .map_err(|e| err(&e))?;
    }
    for (y, label) in hlines {
        let style = RGBColor(0xc0, 0x30, 0x30).stroke_width(1);
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, *y), (n, *y)],
                style,
            )))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(std::iter::once(Text::new(
                (*label).to_owned(),
                (n - 1.2, *y + (top - bottom) * 0.01),
                ("sans-serif", 10)
                    .into_font()
                    .color(&RGBColor(0xc0, 0x30, 0x30)),
            )))
            .map_err(|e| err(&e))?;
    }
    for (i, c) in cats.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, bottom));
        let text_w = (c.len() as i32) * 6;
        root.draw(&Text::new(
            c.clone(),
            (px - text_w / 2, py + 10),
            ("sans-serif", 12),
        ))
        .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    eprintln!("drew {}", out.display());
    Ok(())
}
