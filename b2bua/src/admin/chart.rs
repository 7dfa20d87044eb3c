//! Bar charts for the console, drawn on the server as SVG: one series per chart, values
//! written on the bars' tooltips and in the table the page puts below every chart, so a chart
//! is readable without colour and without JavaScript. Small enough that a plotting crate
//! (and its font handling) would be more code to carry than it saves.

use std::fmt::Write;

/// One bar: its label, its height (any unit, the same for all bars of a chart, ≥ 0 drawn)
/// and the value written for it.
pub(super) struct Bar {
    pub(super) label: String,
    pub(super) value: i64,
    pub(super) shown: String,
}

const WIDTH: i64 = 720;
const HEIGHT: i64 = 240;
const LEFT: i64 = 8;
const TOP: i64 = 24;
const BOTTOM: i64 = 56;

fn esc(s: &str) -> String {
    super::console::esc(s)
}

/// A bar chart titled `title`, its series named `series` (for readers and tests).
pub(super) fn bars(id: &str, title: &str, series: &str, bars: &[Bar]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<figure class=\"chart\"><svg id=\"{id}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-labelledby=\"{id}-t\" xmlns=\"http://www.w3.org/2000/svg\">\
         <title id=\"{id}-t\">{}</title>",
        esc(title)
    );
    let plot_h = HEIGHT - TOP - BOTTOM;
    let base = TOP + plot_h;
    let _ = write!(
        h,
        "<line x1=\"{LEFT}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"currentColor\"/>",
        WIDTH - LEFT
    );
    if bars.is_empty() {
        let _ = write!(
            h,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">nothing in this range</text>",
            WIDTH / 2,
            TOP + plot_h / 2
        );
    }
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1);
    let n = bars.len().max(1) as i64;
    let slot = (WIDTH - 2 * LEFT) / n;
    let bar_w = (slot * 3 / 4).max(1);
    // Label as many bars as fit: every one, or every second, fifth …
    let every = ((n * 48) / (WIDTH - 2 * LEFT)).max(0) as usize + 1;
    let _ = write!(h, "<g class=\"series\" data-series=\"{}\">", esc(series));
    for (i, b) in bars.iter().enumerate() {
        let x = LEFT + slot * i as i64 + (slot - bar_w) / 2;
        let bh = (b.value.max(0) as i128 * plot_h as i128 / max as i128) as i64;
        let _ = write!(
            h,
            "<rect x=\"{x}\" y=\"{}\" width=\"{bar_w}\" height=\"{bh}\" fill=\"currentColor\" \
             data-key=\"{}\" data-value=\"{}\"><title>{}: {}</title></rect>",
            base - bh,
            esc(&b.label),
            esc(&b.shown),
            esc(&b.label),
            esc(&b.shown)
        );
        if i % every == 0 {
            let cx = x + bar_w / 2;
            let _ = write!(
                h,
                "<text x=\"{cx}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\" \
                 transform=\"rotate(-35 {cx} {})\">{}</text>",
                base + 14,
                base + 14,
                esc(&b.label)
            );
        }
    }
    h.push_str("</g>");
    if let Some(top) = bars.iter().max_by_key(|b| b.value) {
        let _ = write!(
            h,
            "<text x=\"{LEFT}\" y=\"{}\" font-size=\"12\">highest: {} ({})</text>",
            TOP - 8,
            esc(&top.shown),
            esc(&top.label)
        );
    }
    let _ = write!(h, "</svg><figcaption>{}</figcaption></figure>", esc(title));
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bar_carries_its_value_and_the_tallest_fills_the_plot() {
        let svg = bars(
            "c",
            "Revenue <USD>",
            "revenue",
            &[
                Bar {
                    label: "2026-12-01".into(),
                    value: 50,
                    shown: "0.50".into(),
                },
                Bar {
                    label: "2026-12-02".into(),
                    value: 100,
                    shown: "1.00".into(),
                },
            ],
        );
        assert!(svg.contains("data-series=\"revenue\""));
        assert!(svg.contains("data-key=\"2026-12-02\" data-value=\"1.00\""));
        assert!(svg.contains(&format!("height=\"{}\"", HEIGHT - TOP - BOTTOM)));
        assert!(svg.contains("Revenue &lt;USD&gt;"), "titles are escaped");
        assert!(bars("e", "t", "s", &[]).contains("nothing in this range"));
    }
}
