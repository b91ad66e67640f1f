//! Self-contained SVG line charts (no plotting dependency): reports embed them as they are.

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

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];
const W: f64 = 360.0;
const H: f64 = 260.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the panels side by side as one SVG document.
pub fn panels(panels: &[Panel]) -> String {
    let total_w = W * panels.len().max(1) as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{total_w}\" height=\"{H}\" viewBox=\"0 0 {total_w} {H}\" font-family=\"sans-serif\" font-size=\"10\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (i, p) in panels.iter().enumerate() {
        panel(&mut s, p, i as f64 * W);
    }
    s.push_str("</svg>\n");
    s
}

fn panel(s: &mut String, p: &Panel, x0: f64) {
    let (left, right, top, bottom) = (x0 + 45.0, x0 + W - 10.0, 25.0, H - 70.0);
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
        "<text x=\"{}\" y=\"14\" text-anchor=\"middle\" font-size=\"11\">{}</text>",
        (left + right) / 2.0,
        esc(&p.title)
    );
    let _ = writeln!(s, "<line x1=\"{left}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\" stroke=\"black\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{bottom}\" stroke=\"black\"/>");
    for k in 0..=4 {
        let y = ymin + (ymax - ymin) * k as f64 / 4.0;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            left - 3.0,
            sy(y) + 3.0,
            fmt_tick(y)
        );
    }
    let mut xticks: Vec<f64> = p
        .series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|q| q.0))
        .collect();
    xticks.sort_by(|a, b| a.total_cmp(b));
    xticks.dedup();
    for x in &xticks {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            sx(*x),
            bottom + 12.0,
            fmt_tick(*x)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        (left + right) / 2.0,
        bottom + 25.0,
        esc(&p.x_label)
    );
    let mut legend_y = bottom + 38.0;
    for (i, (name, v)) in p.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let band: Vec<String> = v
            .iter()
            .map(|q| format!("{:.1},{:.1}", sx(q.0), sy(q.3)))
            .chain(
                v.iter()
                    .rev()
                    .map(|q| format!("{:.1},{:.1}", sx(q.0), sy(q.2))),
            )
            .collect();
        if v.iter().all(|q| q.2.is_finite() && q.3.is_finite()) {
            let _ = writeln!(
                s,
                "<polygon points=\"{}\" fill=\"{color}\" fill-opacity=\"0.15\" stroke=\"none\"/>",
                band.join(" ")
            );
        }
        let line: Vec<String> = v
            .iter()
            .filter(|q| q.1.is_finite())
            .map(|q| format!("{:.1},{:.1}", sx(q.0), sy(q.1)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>",
            line.join(" ")
        );
        for q in v.iter().filter(|q| q.1.is_finite()) {
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"{color}\"/>",
                sx(q.0),
                sy(q.1)
            );
        }
        let _ = writeln!(s, "<line x1=\"{left}\" y1=\"{legend_y}\" x2=\"{}\" y2=\"{legend_y}\" stroke=\"{color}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{}</text>", left + 15.0, left + 19.0, legend_y + 3.0, esc(name));
        legend_y += 11.0;
    }
    if let Some((name, y)) = &p.reference {
        if y.is_finite() {
            let _ = writeln!(s, "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{right}\" y2=\"{0:.1}\" stroke=\"gray\" stroke-dasharray=\"4 3\"/>", sy(*y));
            let _ = writeln!(s, "<line x1=\"{left}\" y1=\"{legend_y}\" x2=\"{}\" y2=\"{legend_y}\" stroke=\"gray\" stroke-dasharray=\"4 3\"/><text x=\"{}\" y=\"{}\">{}</text>", left + 15.0, left + 19.0, legend_y + 3.0, esc(name));
        }
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
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 100.0 || (v.fract() == 0.0 && v.abs() < 1e6) {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
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
}
