//! The pictures, drawn on the server as SVG (no chart library in the
//! browser, nothing to fetch): a stacked bar, columns (counts per hour or
//! day, a histogram with a mark), lines per series (rates per host), and
//! the 12-hour clock of a master. Every text in them is escaped here, as
//! the templates escape theirs: labels and host names are untrusted.

use std::fmt::Write;

/// `text` escaped for HTML and SVG.
pub fn esc(text: &str) -> String {
    askama::filters::escape(text, askama::filters::Html)
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// Colours for series, in order (distinguishable, dark enough on white).
pub const PALETTE: [&str; 6] = [
    "#1565c0", "#2e7d32", "#b3261e", "#6a1b9a", "#ef6c00", "#00838f",
];

/// A horizontal stacked bar of `parts` (value, colour, what), `width`
/// pixels wide, each part titled with its number.
pub fn stacked_bar(parts: &[(i64, &str, &str)], width: f64) -> String {
    let total: i64 = parts.iter().map(|p| p.0).sum();
    let mut x = 0.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"12\" role=\"img\">"
    );
    if total > 0 {
        for (v, colour, what) in parts {
            let w = width * *v as f64 / total as f64;
            if w > 0.0 {
                let _ = write!(
                    out,
                    "<rect x=\"{x:.1}\" y=\"0\" width=\"{w:.1}\" height=\"12\" fill=\"{colour}\"><title>{}: {v}</title></rect>",
                    esc(what)
                );
            }
            x += w;
        }
    }
    out.push_str("</svg>");
    out
}

const W: f64 = 640.0;
const H: f64 = 160.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 20.0;

/// A round number at or above `v`, for the top of an axis.
fn ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

/// The frame of a chart: its y axis up to `top` (in `unit`), and the first
/// and last labels under the x axis.
fn frame(out: &mut String, top: f64, unit: &str, first: &str, last: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" class=\"chart\">\
<line x1=\"{LEFT}\" y1=\"0\" x2=\"{LEFT}\" y2=\"{y0}\" stroke=\"#9e9e9e\"/>\
<line x1=\"{LEFT}\" y1=\"{y0}\" x2=\"{W}\" y2=\"{y0}\" stroke=\"#9e9e9e\"/>\
<text x=\"{lx}\" y=\"10\" text-anchor=\"end\" font-size=\"10\">{top}</text>\
<text x=\"{lx}\" y=\"{y0}\" text-anchor=\"end\" font-size=\"10\">0</text>\
<text x=\"{ux}\" y=\"10\" font-size=\"10\" fill=\"#616161\">{unit}</text>\
<text x=\"{LEFT}\" y=\"{H}\" font-size=\"10\">{first}</text>\
<text x=\"{W}\" y=\"{H}\" text-anchor=\"end\" font-size=\"10\">{last}</text>",
        y0 = H - BOTTOM,
        lx = LEFT - 4.0,
        ux = LEFT + 4.0,
        top = fmt_num(top),
        unit = esc(unit),
        first = esc(first),
        last = esc(last),
    );
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Columns, one per (label, value), left to right, each titled with its
/// label and value; `mark` draws a dashed line at a fraction of the width
/// with its text (the histogram's `time_cost`).
pub fn columns(cols: &[(String, f64)], unit: &str, mark: Option<(f64, &str)>) -> String {
    let top = ceiling(cols.iter().map(|c| c.1).fold(0.0, f64::max));
    let mut out = String::new();
    let first = cols.first().map(|c| c.0.as_str()).unwrap_or("");
    let last = cols.last().map(|c| c.0.as_str()).unwrap_or("");
    frame(&mut out, top, unit, first, last);
    let plot = W - LEFT;
    let y0 = H - BOTTOM;
    let step = plot / cols.len().max(1) as f64;
    for (i, (label, v)) in cols.iter().enumerate() {
        let h = y0 * v / top;
        if h > 0.0 {
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{}: {}</title></rect>",
                LEFT + i as f64 * step + 0.5,
                y0 - h,
                (step - 1.0).max(0.5),
                PALETTE[0],
                esc(label),
                fmt_num(*v)
            );
        }
    }
    if let Some((at, text)) = mark {
        let x = LEFT + plot * at.clamp(0.0, 1.0);
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"12\" x2=\"{x:.1}\" y2=\"{y0}\" stroke=\"#b3261e\" stroke-dasharray=\"4 3\"/>\
<text x=\"{:.1}\" y=\"10\" font-size=\"10\" fill=\"#b3261e\">{}</text>",
            x + 3.0,
            esc(text)
        );
    }
    out.push_str("</svg>");
    out
}

/// One line per series (name, values at evenly spaced x), a legend of
/// the names; `first` and `last` label the x axis.
pub fn lines(series: &[(String, Vec<Option<f64>>)], unit: &str, first: &str, last: &str) -> String {
    let top = ceiling(
        series
            .iter()
            .flat_map(|s| s.1.iter().flatten())
            .copied()
            .fold(0.0, f64::max),
    );
    let mut out = String::new();
    frame(&mut out, top, unit, first, last);
    let y0 = H - BOTTOM;
    let plot = W - LEFT;
    for (k, (name, values)) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let step = plot / (values.len().max(2) - 1) as f64;
        let mut points = String::new();
        for (i, v) in values.iter().enumerate() {
            if let Some(v) = v {
                let _ = write!(
                    points,
                    "{:.1},{:.1} ",
                    LEFT + i as f64 * step,
                    y0 - y0 * v / top
                );
            }
        }
        let _ = write!(
            out,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"><title>{}</title></polyline>\
<text x=\"{:.1}\" y=\"{}\" font-size=\"10\" fill=\"{colour}\">{}</text>",
            points.trim_end(),
            esc(name),
            LEFT + 6.0,
            24 + 12 * k,
            esc(name)
        );
    }
    out.push_str("</svg>");
    out
}

/// A master's 12-hour clock: a ring whose arc is the time left before the
/// connection is cut (red within the last hour), the time in the middle.
pub fn clock(seconds_left: Option<i64>, text: &str) -> String {
    const R: f64 = 26.0;
    const C: f64 = 32.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 64 64\" width=\"64\" height=\"64\" role=\"img\" class=\"clock\">\
<circle cx=\"{C}\" cy=\"{C}\" r=\"{R}\" fill=\"none\" stroke=\"#e0e0e0\" stroke-width=\"6\"/>"
    );
    let left = seconds_left.unwrap_or(0).clamp(0, 12 * 3600);
    if left > 0 {
        let colour = if left < 3600 { "#b3261e" } else { "#2e7d32" };
        let frac = left as f64 / (12.0 * 3600.0);
        if frac >= 0.9999 {
            let _ = write!(
                out,
                "<circle cx=\"{C}\" cy=\"{C}\" r=\"{R}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"6\"/>"
            );
        } else {
            let a = frac * std::f64::consts::TAU;
            let (x, y) = (C + R * a.sin(), C - R * a.cos());
            let large = if frac > 0.5 { 1 } else { 0 };
            let _ = write!(
                out,
                "<path d=\"M {C} {:.1} A {R} {R} 0 {large} 1 {x:.1} {y:.1}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"6\"/>",
                C - R
            );
        }
    }
    let _ = write!(
        out,
        "<text x=\"{C}\" y=\"36\" text-anchor=\"middle\" font-size=\"11\">{}</text></svg>",
        esc(text)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_split_by_value() {
        let svg = stacked_bar(&[(1, "#000", "a"), (3, "#fff", "b")], 100.0);
        assert!(
            svg.contains("width=\"25.0\"") && svg.contains("width=\"75.0\""),
            "{svg}"
        );
        assert!(stacked_bar(&[(0, "#000", "a")], 100.0).ends_with("role=\"img\"></svg>"));
    }

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(ceiling(0.0), 1.0);
        assert_eq!(ceiling(7.0), 10.0);
        assert_eq!(ceiling(120.0), 200.0);
        assert_eq!(ceiling(0.3), 0.5);
    }

    #[test]
    fn text_in_pictures_is_escaped() {
        let svg = columns(&[("<script>".into(), 1.0)], "n", Some((0.5, "a&b")));
        assert!(svg.contains("&#60;script&#62;: 1"), "{svg}");
        assert!(
            !svg.contains("<script>") && svg.contains("a&#38;b"),
            "{svg}"
        );
        let svg = lines(
            &[("<b>".into(), vec![Some(1.0), None, Some(2.0)])],
            "MB/s",
            "a",
            "b",
        );
        assert!(!svg.contains("<b>"), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 1);
    }

    #[test]
    fn the_clock_shows_what_is_left() {
        assert!(clock(Some(6 * 3600), "6h").contains("A 26 26 0 0 1 32.0 58.0"));
        assert!(clock(Some(1800), "30m").contains("#b3261e"));
        assert!(!clock(None, "-").contains("<path"));
    }

    #[test]
    fn pictures_keep_their_shape() {
        let hours: Vec<(String, f64)> = (0..6)
            .map(|h| (format!("12-07 {h:02}:00"), (h * h) as f64))
            .collect();
        insta::assert_snapshot!("columns", columns(&hours, "results", None));
        let bins: Vec<(String, f64)> = (0..4)
            .map(|b| {
                (
                    format!("{}-{} s", b * 50, b * 50 + 50),
                    [3.0, 9.0, 4.0, 1.0][b],
                )
            })
            .collect();
        insta::assert_snapshot!(
            "histogram",
            columns(&bins, "components", Some((0.75, "time_cost 150 s")))
        );
        let rates = vec![
            (
                "fe1 pull".to_string(),
                vec![Some(20.0), Some(35.5), None, Some(28.0)],
            ),
            (
                "fe2 push".to_string(),
                vec![None, Some(12.0), Some(14.0), Some(9.5)],
            ),
        ];
        insta::assert_snapshot!("lines", lines(&rates, "MB/s", "12-07 00:00", "12-07 03:00"));
        insta::assert_snapshot!("clock", clock(Some(4 * 3600 + 1800), "4h"));
        insta::assert_snapshot!(
            "bar",
            stacked_bar(
                &[
                    (60, "#2e7d32", "done"),
                    (10, "#b3261e", "abandoned"),
                    (30, "#bdbdbd", "waiting")
                ],
                160.0
            )
        );
    }
}
