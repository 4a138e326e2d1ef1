//! `img-plot`: a line chart (SVG) of two numeric fields of JSON lines, as the tools write
//! metrics (`--metrics FILE.jsonl`) and the pipelines their quality tables.

use std::io::{BufRead, BufReader, Write};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::io::{check_io, InputPath, OutputPath};
use crate::plot::{number, Chart, Point, Series};

/// What `img-plot` draws.
pub struct ImgPlot {
    /// JSON lines, one object per line.
    pub input: InputPath,
    pub x: String,
    pub y: String,
    /// One series per distinct value of this field, in order of first appearance.
    pub by: Option<String>,
    /// A field whose value is written beside each point.
    pub label: Option<String>,
    pub title: Option<String>,
    pub log_y: bool,
    pub output: OutputPath,
}

/// Writes the chart of `y` against `x` over the lines that have numbers for both (others
/// are passed over), joined in input order.
pub fn img_plot(r: &ImgPlot) -> Result<()> {
    check_io(&[("INPUT", Some(&r.input))], &[("-o", Some(&r.output))])?;
    let (input, _) = r.input.open()?;
    let mut series: Vec<Series> = Vec::new();
    for (i, line) in BufReader::new(input).lines().enumerate() {
        let line = line.map_err(|e| Error::io(&r.input, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = |problem: String| Error::bad_input(&r.input, format!("line {}: {problem}", i + 1));
        let row: Value = serde_json::from_str(&line).map_err(|e| at(format!("is not JSON ({e})")))?;
        let row = row.as_object().ok_or_else(|| at("is not a JSON object".into()))?;
        let (Some(x), Some(y)) = (numeric(row, &r.x).map_err(at)?, numeric(row, &r.y).map_err(at)?) else {
            continue;
        };
        if r.log_y && y <= 0.0 {
            return Err(at(format!("'{}' is {y}, and a log axis needs positive values", r.y)));
        }
        let name = r.by.as_ref().map_or(String::new(), |f| row.get(f).map_or("-".into(), text));
        let label = r.label.as_ref().and_then(|f| row.get(f)).map(text);
        let point = Point { x, y, label };
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push(point),
            None => series.push(Series { name, points: vec![point] }),
        }
    }
    if series.is_empty() {
        return Err(Error::bad_input(&r.input, format!("no line has numbers for both '{}' and '{}'", r.x, r.y)));
    }
    if let Some(by) = &r.by {
        series.iter_mut().for_each(|s| s.name = format!("{by}={}", s.name));
    }
    let chart = Chart {
        title: r.title.clone().unwrap_or_else(|| format!("{} against {}", r.y, r.x)),
        x_label: r.x.clone(),
        y_label: r.y.clone(),
        series,
        log_y: r.log_y,
    };
    let mut out = r.output.create()?;
    out.write_all(chart.to_svg().as_bytes()).map_err(|e| Error::io(&r.output, e))?;
    out.finish()
}

/// The field as a finite number; `None` when it is absent or null (NaN in JSON lines).
fn numeric(row: &serde_json::Map<String, Value>, field: &str) -> std::result::Result<Option<f64>, String> {
    match row.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64().filter(|v| v.is_finite())),
        Some(other) => Err(format!("'{field}' is {other}, expected a number")),
    }
}

/// A value as a legend or label shows it: strings bare, numbers short.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), number),
        other => other.to_string(),
    }
}
