//! Self-contained SVG charts (no plotting dependency): reports embed them as they are.
//! Lines with interval bands for series over x; a series of one point (a strategy on a
//! frontier) is a labelled marker with an error bar. Ticks are round values spaced so that
//! labels never touch; the legend is laid out in rows below the axis, clear of the data.

use std::fmt::Write;

/// A point with its 95% interval: `(x, y, lo, hi)`.
pub type Point = (f64, f64, f64, f64);

/// One chart: named series with interval bands, and an optional horizontal reference line.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Title above the chart.
    pub title: String,
    /// Label of the x axis.
    pub x_label: String,
    /// Place x on a log2 scale.
    pub log2_x: bool,
    /// `(name, points)`.
    pub series: Vec<(String, Vec<Point>)>,
    /// `(name, y)` of a baseline drawn as a dashed line.
    pub reference: Option<(String, f64)>,
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];
const W: f64 = 400.0;
/// Plot area: from the title to the x axis.
const PLOT_TOP: f64 = 28.0;
const PLOT_BOTTOM: f64 = 210.0;
/// Left margin (y tick labels) and right margin of a panel.
const MARGIN_LEFT: f64 = 50.0;
const MARGIN_RIGHT: f64 = 15.0;
const PLOT_WIDTH: f64 = W - MARGIN_LEFT - MARGIN_RIGHT;
/// Below the axis: tick labels and the axis label.
const AXIS_SPACE: f64 = 34.0;
const LEGEND_ROW: f64 = 14.0;
/// Approximate advance of one character at font-size 10 (for layout only).
const CHAR_W: f64 = 5.8;
/// Closest two x tick labels may be, in pixels.
const MIN_TICK_GAP: f64 = 34.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Legend entries laid out in rows across the panel's width: `(row, x offset)` per entry.
fn legend_layout(names: &[&str], width: f64) -> Vec<(usize, f64)> {
    let mut out = Vec::with_capacity(names.len());
    let (mut row, mut x) = (0, 0.0);
    for name in names {
        let w = 24.0 + CHAR_W * name.chars().count() as f64 + 12.0;
        if x > 0.0 && x + w > width {
            row += 1;
            x = 0.0;
        }
        out.push((row, x));
        x += w;
    }
    out
}

fn legend_names(p: &Panel) -> Vec<&str> {
    let mut names: Vec<&str> = p.series.iter().map(|(n, _)| n.as_str()).collect();
    if let Some((name, y)) = &p.reference {
        if y.is_finite() {
            names.push(name);
        }
    }
    names
}

fn panel_height(p: &Panel) -> f64 {
    let names = legend_names(p);
    let rows = legend_layout(&names, PLOT_WIDTH)
        .last()
        .map_or(0, |(row, _)| row + 1);
    PLOT_BOTTOM + AXIS_SPACE + 6.0 + rows as f64 * LEGEND_ROW + 4.0
}

/// Renders the panels side by side as one SVG document (as tall as the tallest legend needs).
pub fn panels(panels: &[Panel]) -> String {
    let total_w = W * panels.len().max(1) as f64;
    let h = panels
        .iter()
        .map(panel_height)
        .fold(PLOT_BOTTOM + AXIS_SPACE, f64::max);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{total_w}\" height=\"{h}\" viewBox=\"0 0 {total_w} {h}\" style=\"max-width:100%;height:auto\" font-family=\"sans-serif\" font-size=\"10\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (i, p) in panels.iter().enumerate() {
        panel(&mut s, p, i as f64 * W);
    }
    s.push_str("</svg>\n");
    s
}

/// Rectangles of the point labels placed so far, to keep labels apart.
type Placed = Vec<(f64, f64, f64, f64)>;

fn overlaps(a: (f64, f64, f64, f64), placed: &Placed) -> bool {
    placed
        .iter()
        .any(|b| a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3)
}

fn panel(s: &mut String, p: &Panel, x0: f64) {
    let (left, right, top, bottom) = (
        x0 + MARGIN_LEFT,
        x0 + W - MARGIN_RIGHT,
        PLOT_TOP,
        PLOT_BOTTOM,
    );
    let fx = |x: f64| if p.log2_x { x.max(1e-12).log2() } else { x };
    let pts = p.series.iter().flat_map(|(_, v)| v.iter());
    let xs: Vec<f64> = pts
        .clone()
        .map(|q| fx(q.0))
        .filter(|v| v.is_finite())
        .collect();
    let mut ys: Vec<f64> = pts
        .flat_map(|q| [q.1, q.2, q.3])
        .filter(|v| v.is_finite())
        .collect();
    if let Some((_, r)) = &p.reference {
        if r.is_finite() {
            ys.push(*r);
        }
    }
    let (xmin, xmax) = bounds(&xs);
    let (ymin, ymax) = bounds(&ys);
    let sx = |x: f64| left + (fx(x) - xmin) / (xmax - xmin) * (right - left);
    let sy = |y: f64| bottom - (y - ymin) / (ymax - ymin) * (bottom - top);
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"16\" text-anchor=\"middle\" font-size=\"12\">{}</text>",
        (left + right) / 2.0,
        esc(&p.title)
    );
    let _ = writeln!(s, "<line x1=\"{left}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\" stroke=\"black\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{bottom}\" stroke=\"black\"/>");
    let (yticks, ydigits) = nice_ticks(ymin, ymax, 5);
    for y in yticks {
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" y1=\"{at:.1}\" x2=\"{right}\" y2=\"{at:.1}\" stroke=\"#eee\"/><text x=\"{lx}\" y=\"{ty:.1}\" text-anchor=\"end\">{label}</text>",
            at = sy(y),
            lx = left - 4.0,
            ty = sy(y) + 3.0,
            label = fmt_tick(y, ydigits)
        );
    }
    // A log2 axis ticks at the data's x values (the n of best-of-n); a linear one at round
    // values. Either way no label comes closer than MIN_TICK_GAP to the previous one.
    let xticks: Vec<(f64, String)> = if p.log2_x {
        let mut v: Vec<f64> = p
            .series
            .iter()
            .flat_map(|(_, v)| v.iter().map(|q| q.0))
            .filter(|x| x.is_finite())
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v.dedup();
        v.into_iter().map(|x| (x, fmt_tick(x, 0))).collect()
    } else {
        let (t, digits) = nice_ticks(xmin, xmax, 5);
        t.into_iter().map(|x| (x, fmt_tick(x, digits))).collect()
    };
    let mut last_end = f64::NEG_INFINITY;
    for (x, label) in &xticks {
        let at = sx(*x);
        let half = CHAR_W * label.len() as f64 / 2.0;
        if at - half < last_end + 4.0 || at - left < -1.0 || at - right > 1.0 {
            continue;
        }
        last_end = at + half.max(MIN_TICK_GAP / 2.0);
        let _ = writeln!(
            s,
            "<line x1=\"{at:.1}\" y1=\"{bottom}\" x2=\"{at:.1}\" y2=\"{}\" stroke=\"black\"/><text x=\"{at:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
            bottom + 4.0,
            bottom + 15.0,
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        (left + right) / 2.0,
        bottom + 28.0,
        esc(&p.x_label)
    );
    let mut placed: Placed = Vec::new();
    for (i, (name, v)) in p.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let with_interval = |q: &&Point| q.2.is_finite() && q.3.is_finite();
        if v.len() > 1 && v.iter().all(|q| with_interval(&q)) {
            let band: Vec<String> = v
                .iter()
                .map(|q| format!("{:.1},{:.1}", sx(q.0), sy(q.3)))
                .chain(
                    v.iter()
                        .rev()
                        .map(|q| format!("{:.1},{:.1}", sx(q.0), sy(q.2))),
                )
                .collect();
            let _ = writeln!(
                s,
                "<polygon points=\"{}\" fill=\"{color}\" fill-opacity=\"0.15\" stroke=\"none\"/>",
                band.join(" ")
            );
        } else {
            // A lone point shows its interval as an error bar.
            for q in v.iter().filter(with_interval) {
                let _ = writeln!(
                    s,
                    "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{2:.1}\" stroke=\"{color}\" stroke-width=\"1.5\"/>",
                    sx(q.0),
                    sy(q.2),
                    sy(q.3)
                );
            }
        }
        let line: Vec<String> = v
            .iter()
            .filter(|q| q.1.is_finite())
            .map(|q| format!("{:.1},{:.1}", sx(q.0), sy(q.1)))
            .collect();
        if line.len() > 1 {
            let _ = writeln!(
                s,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>",
                line.join(" ")
            );
        }
        let r = if v.len() == 1 { 4.5 } else { 3.0 };
        for q in v.iter().filter(|q| q.1.is_finite()) {
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{r}\" fill=\"{color}\" stroke=\"white\" stroke-width=\"1\"/>",
                sx(q.0),
                sy(q.1)
            );
        }
        // A series of one point (a strategy on the frontier) is named beside its point.
        if let [q] = v.as_slice() {
            if q.1.is_finite() {
                let (px, py) = (sx(q.0), sy(q.1));
                let w = CHAR_W * name.chars().count() as f64;
                let candidates = [
                    (px + 7.0, py - 5.0),
                    (px + 7.0, py + 12.0),
                    (px - 7.0 - w, py - 5.0),
                    (px - 7.0 - w, py + 12.0),
                    (px - w / 2.0, py - 10.0),
                    (px - w / 2.0, py + 18.0),
                ];
                let rect = |(x, y): (f64, f64)| (x, y - 9.0, x + w, y + 2.0);
                let inside = |(x, _): (f64, f64)| x >= left && x + w <= right + 10.0;
                let at = candidates
                    .iter()
                    .copied()
                    .find(|c| inside(*c) && !overlaps(rect(*c), &placed))
                    .unwrap_or(candidates[0]);
                placed.push(rect(at));
                let _ = writeln!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{}</text>",
                    at.0,
                    at.1,
                    esc(name)
                );
            }
        }
    }
    if let Some((_, y)) = &p.reference {
        if y.is_finite() {
            let _ = writeln!(s, "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{right}\" y2=\"{0:.1}\" stroke=\"gray\" stroke-dasharray=\"4 3\"/>", sy(*y));
        }
    }
    // The legend sits below the axis label, in rows, never over the data.
    let names = legend_names(p);
    let legend_top = bottom + AXIS_SPACE + 6.0;
    for (i, (name, (row, dx))) in names
        .iter()
        .zip(legend_layout(&names, PLOT_WIDTH))
        .enumerate()
    {
        let y = legend_top + row as f64 * LEGEND_ROW;
        let x = left + dx;
        let reference = i >= p.series.len();
        let (color, dash) = if reference {
            ("gray", " stroke-dasharray=\"4 3\"")
        } else {
            (COLORS[i % COLORS.len()], "")
        };
        let _ = writeln!(s, "<line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>", x + 18.0, x + 22.0, y + 3.5, esc(name));
    }
}

fn bounds(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = (hi - lo) * 0.08;
    (lo - pad, hi + pad)
}

/// Round tick values (steps of 1, 2 or 5 times a power of ten) inside `[lo, hi]`, about
/// `target` of them, and the decimals their step needs.
fn nice_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, usize) {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return (Vec::new(), 0);
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let digits = (-step.log10().floor()).max(0.0) as usize;
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    let ticks = (first..=last).map(|k| k as f64 * step).collect();
    (ticks, digits)
}

fn fmt_tick(v: f64, digits: usize) -> String {
    let v = if v.abs() < 1e-12 { 0.0 } else { v };
    format!("{v:.digits$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_valid_looking_svg() {
        let p = Panel {
            title: "a < b".into(),
            x_label: "n".into(),
            log2_x: true,
            series: vec![(
                "s".into(),
                vec![(1.0, 0.1, 0.05, 0.15), (4.0, 0.2, 0.1, 0.3)],
            )],
            reference: Some(("ref".into(), 0.12)),
        };
        let svg = panels(&[p.clone(), p]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt; b"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn ticks_are_round_and_spaced_and_lone_points_are_named() {
        let (t, digits) = nice_ticks(4.01, 4.31, 5);
        assert_eq!(digits, 1);
        assert_eq!(t.len(), 3, "{t:?}");
        assert_eq!(fmt_tick(t[0], digits), "4.1");
        let (t, digits) = nice_ticks(0.0, 0.0384, 5);
        assert_eq!((t.len(), digits), (4, 2), "{t:?}");
        let frontier = Panel {
            title: "frontier".into(),
            x_label: "novelty (bits)".into(),
            log2_x: false,
            series: [
                "random",
                "popular",
                "cooccurrence",
                "best_of_n",
                "n1",
                "oracle_like",
                "seven",
                "eight",
                "nine",
            ]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    n.to_string(),
                    vec![(4.038 + 0.01 * i as f64, 0.1 + 0.001 * i as f64, 0.09, 0.12)],
                )
            })
            .collect(),
            reference: None,
        };
        let svg = panels(&[frontier]);
        for name in ["random", "best_of_n", "nine"] {
            assert_eq!(
                svg.matches(&format!(">{name}</text>")).count(),
                2,
                "label and legend: {name}"
            );
        }
        // Tick labels never run together: consecutive x tick label centres are far apart.
        let xs: Vec<f64> = svg
            .lines()
            .filter(|l| {
                l.contains("text-anchor=\"middle\">")
                    && l.contains(&format!("y=\"{}\"", PLOT_BOTTOM + 15.0))
            })
            .filter_map(|l| {
                l.split("<text x=\"")
                    .nth(1)?
                    .split('"')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        assert!(xs.len() >= 2, "{svg}");
        assert!(xs.windows(2).all(|w| w[1] - w[0] >= MIN_TICK_GAP), "{xs:?}");
        // Legend rows fit inside the document.
        let height: f64 = svg
            .split("height=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let last_legend_y = svg
            .lines()
            .filter(|l| l.contains("stroke-width=\"2\"/><text"))
            .filter_map(|l| {
                l.split(" y1=\"")
                    .nth(1)?
                    .split('"')
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .fold(0.0, f64::max);
        assert!(last_legend_y + 6.0 <= height, "{last_legend_y} vs {height}");
    }
}
