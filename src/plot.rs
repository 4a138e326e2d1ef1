//! Line charts as SVG, for `img-plot`: a few series of (x, y) points on linear axes (y
//! optionally logarithmic) with "nice" ticks (1, 2 or 5 times a power of ten), a legend and
//! optional point labels. SVG is text, so the chart needs no font files and renders wherever
//! a README does.

use std::fmt::Write as _;

/// One point; `label` is drawn beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub label: Option<String>,
}

/// Points joined in their order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend's entry; empty for a chart of one unnamed series.
    pub name: String,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// A logarithmic y axis (every y must then be positive).
    pub log_y: bool,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 450.0;
/// The plotting area's margins: left, right, top, bottom.
const MARGIN: (f64, f64, f64, f64) = (80.0, 170.0, 45.0, 55.0);
/// Matplotlib's "tab10" colours, one per series in turn.
const COLOURS: [&str; 10] =
    ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

/// An axis: the data range it shows and where its ticks go.
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    log: bool,
}

impl Axis {
    fn new(values: impl Iterator<Item = f64> + Clone, log: bool) -> Axis {
        let map = |v: f64| if log { v.log10() } else { v };
        let lo = values.clone().map(map).fold(f64::INFINITY, f64::min);
        let hi = values.map(map).fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 0.5, lo + 0.5) };
        let ticks = if log { log_ticks(lo, hi) } else { nice_ticks(lo, hi, 6) };
        let (lo, hi) = (ticks[0].min(lo), ticks[ticks.len() - 1].max(hi));
        Axis { lo, hi, ticks, log }
    }

    /// Where `v` falls, 0 at `lo` to 1 at `hi`.
    fn fraction(&self, v: f64) -> f64 {
        let v = if self.log { v.log10() } else { v };
        (v - self.lo) / (self.hi - self.lo)
    }

    fn tick_text(&self, t: f64) -> String {
        if self.log {
            number(10f64.powf(t))
        } else {
            number(t)
        }
    }
}

/// About `target` ticks covering [lo, hi], at multiples of 1, 2 or 5 times a power of ten
/// (Heckbert, "Nice numbers for graph labels", Graphics Gems 1990), from the last multiple at
/// or below `lo` to the first at or above `hi`.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let raw = (hi - lo) / target.max(1) as f64;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * power).find(|&s| s >= raw).unwrap_or(10.0 * power);
    let (first, last) = ((lo / step).floor() as i64, (hi / step).ceil() as i64);
    // Multiples of the step, not sums of it, so 0.1 * 3 prints as 0.3.
    (first..=last).map(|i| round_to(i as f64 * step, step)).collect()
}

/// Ticks at the powers of ten (in log10 units) covering [lo, hi], at least two.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (first, last) = (lo.floor() as i64, hi.ceil() as i64);
    (first..=last.max(first + 1)).map(|p| p as f64).collect()
}

/// `v` rounded to the decimals of `step`, which removes the binary noise of i * step.
fn round_to(v: f64, step: f64) -> f64 {
    let decimals = (-step.log10().floor()).max(0.0) as i32;
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

/// A short decimal: up to four significant digits, no trailing zeros.
pub fn number(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let magnitude = v.abs().log10().floor() as i32;
    if !(-4..6).contains(&magnitude) {
        return format!("{v:.2e}");
    }
    let decimals = (3 - magnitude).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Text made safe inside an SVG element or attribute.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Chart {
    /// The chart as a standalone SVG document. Panics on a chart without points or with a
    /// non-finite value (or a y <= 0 on a log axis): [`crate::tools::plot`] checks first.
    pub fn to_svg(&self) -> String {
        let points = || self.series.iter().flat_map(|s| &s.points);
        assert!(points().next().is_some(), "a chart needs points");
        let x_axis = Axis::new(points().map(|p| p.x), false);
        let y_axis = Axis::new(points().map(|p| p.y), self.log_y);
        let (left, right, top, bottom) = MARGIN;
        let (w, h) = (WIDTH - left - right, HEIGHT - top - bottom);
        let px = |x: f64| left + x_axis.fraction(x) * w;
        let py = |y: f64| top + (1.0 - y_axis.fraction(y)) * h;

        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
            left + w / 2.0,
            escape(&self.title)
        );
        // Grid lines and tick labels.
        for &t in &x_axis.ticks {
            let x = left + (t - x_axis.lo) / (x_axis.hi - x_axis.lo) * w;
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{:.1}" stroke="#e0e0e0"/>"##,
                top + h
            );
            let _ = writeln!(
                svg,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                top + h + 18.0,
                x_axis.tick_text(t)
            );
        }
        for &t in &y_axis.ticks {
            let y = top + (1.0 - (t - y_axis.lo) / (y_axis.hi - y_axis.lo)) * h;
            let _ = writeln!(
                svg,
                r##"<line x1="{left:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e0e0e0"/>"##,
                left + w
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                left - 8.0,
                y + 4.0,
                y_axis.tick_text(t)
            );
        }
        let _ = writeln!(
            svg,
            r#"<rect x="{left:.1}" y="{top:.1}" width="{w:.1}" height="{h:.1}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            left + w / 2.0,
            HEIGHT - 14.0,
            escape(&self.x_label)
        );
        let (yx, yy) = (20.0, top + h / 2.0);
        let _ = writeln!(
            svg,
            r#"<text x="{yx:.1}" y="{yy:.1}" text-anchor="middle" transform="rotate(-90 {yx:.1} {yy:.1})">{}</text>"#,
            escape(&self.y_label)
        );
        // The series, then the legend.
        for (i, series) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let path: Vec<String> = series.points.iter().map(|p| format!("{:.1},{:.1}", px(p.x), py(p.y))).collect();
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                path.join(" ")
            );
            for p in &series.points {
                let (x, y) = (px(p.x), py(p.y));
                let _ = writeln!(svg, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{colour}"/>"#);
                if let Some(label) = &p.label {
                    let _ = writeln!(
                        svg,
                        r#"<text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
                        x + 6.0,
                        y - 6.0,
                        escape(label)
                    );
                }
            }
            if !series.name.is_empty() {
                let ly = top + 10.0 + 20.0 * i as f64;
                let lx = left + w + 15.0;
                let _ = writeln!(
                    svg,
                    r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"/>"#,
                    lx + 20.0
                );
                let _ =
                    writeln!(svg, r#"<text x="{:.1}" y="{:.1}">{}</text>"#, lx + 26.0, ly + 4.0, escape(&series.name));
            }
        }
        svg.push_str("</svg>\n");
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_numbers_that_cover_the_range() {
        assert_eq!(nice_ticks(0.0, 1.0, 6), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(nice_ticks(0.13, 0.47, 6), [0.1, 0.2, 0.3, 0.4, 0.5]);
        assert_eq!(nice_ticks(3.0, 97.0, 6), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(nice_ticks(-7.0, 12.0, 6), [-10.0, -5.0, 0.0, 5.0, 10.0, 15.0]);
        assert_eq!(log_ticks(-0.3, 1.2), [-1.0, 0.0, 1.0, 2.0]);
        assert_eq!(log_ticks(2.0, 2.0), [2.0, 3.0]);
    }

    #[test]
    fn numbers_print_short() {
        assert_eq!(number(0.30000000000000004), "0.3");
        assert_eq!(number(20.0), "20");
        assert_eq!(number(1234.5678), "1235");
        assert_eq!(number(0.012346), "0.01235");
        assert_eq!(number(-2.5), "-2.5");
        assert_eq!(number(1.5e7), "1.50e7");
        assert_eq!(number(0.0), "0");
    }

    /// The points land where the axes say: the corners of the data at the ticks' ends.
    #[test]
    fn points_map_onto_the_plotting_area() {
        let p = |x, y, label: Option<&str>| Point { x, y, label: label.map(String::from) };
        let chart = Chart {
            title: "a <b>".into(),
            x_label: "accuracy".into(),
            y_label: "fid".into(),
            series: vec![
                Series { name: "t=1".into(), points: vec![p(0.0, 0.0, Some("10%")), p(1.0, 10.0, None)] },
                Series { name: "t=0.5".into(), points: vec![p(0.5, 5.0, None)] },
            ],
            log_y: false,
        };
        let svg = chart.to_svg();
        let (left, right, top, bottom) = MARGIN;
        // x ticks 0..1, y ticks 0..10: (0, 0) is the bottom-left corner, (1, 10) the top-right.
        assert!(svg.contains(&format!("points=\"{left:.1},{:.1} {:.1},{top:.1}\"", HEIGHT - bottom, WIDTH - right)));
        let middle = format!("cx=\"{:.1}\" cy=\"{:.1}\"", (left + WIDTH - right) / 2.0, (top + HEIGHT - bottom) / 2.0);
        assert!(svg.contains(&middle), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">10%</text>") && svg.contains(">t=0.5</text>") && svg.contains("a &lt;b&gt;"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));

        let log = Chart {
            log_y: true,
            series: vec![Series { name: String::new(), points: vec![p(0.0, 1.0, None), p(1.0, 100.0, None)] }],
            ..chart
        };
        let svg = log.to_svg();
        // Decades 1, 10, 100: 10 sits half way up.
        assert!(
            svg.contains(&format!("y=\"{:.1}\" text-anchor=\"end\">10<", (top + HEIGHT - bottom) / 2.0 + 4.0)),
            "{svg}"
        );
    }
}
