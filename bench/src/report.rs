//! Statistics, the printed table and the JSON file of a suite.

use std::{fmt::Write as _, path::Path};

use anyhow::Context as _;
use serde_json::{Value, json};

/// Median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// Nearest-rank percentile `p` (0..=100) of `v` (NaN when empty).
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

pub fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// Median, min and max as JSON.
pub fn summary(v: &[f64]) -> Value {
    json!({ "median": median(v), "min": min(v), "max": max(v), "n": v.len() })
}

/// A plain text table: a header row and rows of cells, columns padded.
pub struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, header: &[&str]) -> Self {
        Self {
            title: title.to_owned(),
            header: header.iter().map(|s| (*s).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![0usize; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let mut out = format!("\n{}\n", self.title);
        let line = |out: &mut String, r: &[String]| {
            for (i, c) in r.iter().enumerate().take(cols) {
                if i == 0 {
                    let _ = write!(out, "{c:<w$}", w = width[i]);
                } else {
                    let _ = write!(out, "  {c:>w$}", w = width[i]);
                }
            }
            out.push('\n');
        };
        line(&mut out, &self.header);
        let total: usize = width.iter().sum::<usize>() + 2 * (cols - 1);
        out.push_str(&"-".repeat(total));
        out.push('\n');
        for r in &self.rows {
            line(&mut out, r);
        }
        out
    }
}

/// Formats a float with `d` decimals, `-` for NaN.
pub fn f(v: f64, d: usize) -> String {
    if v.is_nan() {
        "-".to_owned()
    } else {
        format!("{v:.d$}")
    }
}

/// Machine facts recorded with every result.
pub fn environment() -> Value {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "kernel": kernel,
        "cpu": cpu,
        "cpus": cpus,
        "unix_time": secs,
        "loadavg_1m_start": crate::sys::loadavg(),
    })
}

/// Writes `value` (with `loadavg_1m_end` added to its environment) as pretty JSON.
pub fn write_json(dir: &Path, suite: &str, mut value: Value) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    if let Some(env) = value.get_mut("environment").and_then(Value::as_object_mut) {
        env.insert("loadavg_1m_end".into(), json!(crate::sys::loadavg()));
    }
    let path = dir.join(format!("{suite}.json"));
    let text = serde_json::to_string_pretty(&value)?;
    std::fs::write(&path, text + "\n").with_context(|| format!("write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
