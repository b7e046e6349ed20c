//! An SVG chart of responses by status over time: one line per status, counts per time slice.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::Attempt;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const SLICES: usize = 60;

fn colour(status: &str) -> &'static str {
    match status {
        "201" => "#2e7d32",
        "409" => "#f9a825",
        "429" => "#1565c0",
        "timeout" => "#6a1b9a",
        s if s.starts_with('5') => "#c62828",
        _ => "#616161",
    }
}

/// Renders the attempts as an SVG line chart titled `title`.
pub fn svg_chart(title: &str, attempts: &[Attempt]) -> String {
    let end = attempts
        .iter()
        .map(|a| a.at.as_secs_f64())
        .fold(0.001, f64::max);
    let slice = end / SLICES as f64;
    let mut series: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for attempt in attempts {
        let label = attempt
            .status
            .map_or_else(|| "timeout".to_owned(), |s| s.as_u16().to_string());
        // Truncation is the point: the slice an attempt falls in.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let index = ((attempt.at.as_secs_f64() / slice) as usize).min(SLICES - 1);
        series.entry(label).or_insert_with(|| vec![0; SLICES])[index] += 1;
    }
    let peak = series.values().flatten().copied().max().unwrap_or(1).max(1);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |i: usize| LEFT + plot_w * (i as f64 + 0.5) / SLICES as f64;
    let y = |n: usize| TOP + plot_h * (1.0 - n as f64 / peak as f64);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="24" font-size="15">{}</text>"#,
        escape(title)
    );
    // Axes and their labels.
    let _ = writeln!(
        svg,
        r##"<path d="M{LEFT} {TOP} V{} H{}" stroke="#333" fill="none"/>"##,
        TOP + plot_h,
        LEFT + plot_w
    );
    let _ = writeln!(svg, r#"<text x="8" y="{}">{peak}</text>"#, TOP + 4.0);
    let _ = writeln!(svg, r#"<text x="8" y="{}">0</text>"#, TOP + plot_h);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{}">0 s</text><text x="{}" y="{}" text-anchor="end">{end:.1} s</text>"#,
        TOP + plot_h + 18.0,
        LEFT + plot_w,
        TOP + plot_h + 18.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">time since the storm began (responses per {:.0} ms slice)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 12.0,
        slice * 1_000.0
    );
    for (row, (status, counts)) in series.iter().enumerate() {
        let points: Vec<String> = counts
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{:.1},{:.1}", x(i), y(*n)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
            points.join(" "),
            colour(status)
        );
        let total: usize = counts.iter().sum();
        let legend_y = TOP + 10.0 + 20.0 * row as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{} ({total})</text>"#,
            WIDTH - RIGHT + 15.0,
            legend_y - 10.0,
            colour(status),
            WIDTH - RIGHT + 32.0,
            legend_y,
            escape(status)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
