//! SVG plots of the report, written by hand (grouped bar charts with reference lines), so
//! the docs need no plotting stack.

use std::fmt::Write as _;

use super::markdown::cell;
use super::ReportData;
use crate::stats::Summary;

const PALETTE: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
];

/// A grouped bar chart.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// Label of the y axis.
    pub y_label: String,
    /// Group labels along the x axis.
    pub groups: Vec<String>,
    /// Series: a name and one value per group (missing values draw no bar).
    pub series: Vec<(String, Vec<Option<f64>>)>,
    /// Horizontal reference lines: value and label.
    pub lines: Vec<(f64, String)>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round axis maximum at or above `v`.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
        if step * magnitude >= v {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn label(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Draws the chart as a standalone SVG document.
pub fn bar_chart(chart: &Chart) -> String {
    let (width, height) = (900.0, 440.0);
    let (left, right, top, bottom) = (80.0, 20.0, 50.0, 110.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let top_value = chart
        .series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().copied())
        .chain(chart.lines.iter().map(|(v, _)| *v))
        .fold(0.0, f64::max);
    let y_max = nice_max(top_value * 1.08);
    let y = |v: f64| top + plot_h - (v / y_max).clamp(0.0, 1.0) * plot_h;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        width / 2.0,
        escape(&chart.title)
    );
    for i in 0..=5 {
        let v = y_max * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + plot_w,
            left - 6.0,
            y(v) + 4.0,
            label(v),
            y = y(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        top + plot_h / 2.0,
        escape(&chart.y_label)
    );
    let groups = chart.groups.len().max(1) as f64;
    let group_w = plot_w / groups;
    let bars = chart.series.len().max(1) as f64;
    let bar_w = (group_w * 0.8) / bars;
    for (g, name) in chart.groups.iter().enumerate() {
        let x0 = left + g as f64 * group_w + group_w * 0.1;
        for (k, (_, values)) in chart.series.iter().enumerate() {
            let Some(Some(v)) = values.get(g) else {
                continue;
            };
            let x = x0 + k as f64 * bar_w;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}</title></rect>"#,
                y(*v),
                (bar_w - 2.0).max(1.0),
                top + plot_h - y(*v),
                PALETTE[k % PALETTE.len()],
                label(*v)
            );
            if bar_w >= 22.0 {
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                    x + bar_w / 2.0 - 1.0,
                    y(*v) - 3.0,
                    label(*v)
                );
            }
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            left + (g as f64 + 0.5) * group_w,
            top + plot_h + 18.0,
            escape(name)
        );
    }
    for (v, text) in &chart.lines {
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#333" stroke-dasharray="5 4"/><text x="{}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"##,
            left + plot_w,
            left + plot_w - 4.0,
            y(*v) - 4.0,
            escape(text),
            y = y(*v)
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{left}" x2="{left}" y1="{top}" y2="{}" stroke="#333"/>"##,
        top + plot_h
    );
    let _ = writeln!(
        s,
        r##"<line x1="{left}" x2="{}" y1="{}" y2="{}" stroke="#333"/>"##,
        left + plot_w,
        top + plot_h,
        top + plot_h
    );
    let legend_y = height - 40.0;
    let mut x = left;
    for (k, (name, _)) in chart.series.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{legend_y:.1}">{}</text>"#,
            legend_y - 10.0,
            PALETTE[k % PALETTE.len()],
            x + 16.0,
            escape(name)
        );
        x += 24.0 + 7.0 * name.len() as f64;
    }
    s.push_str("</svg>\n");
    s
}

const REST: [&str; 4] = [
    "REST-JSON h1",
    "REST-binary h1",
    "REST-JSON h2",
    "REST-binary h2",
];

fn matrix_groups(data: &ReportData) -> Vec<(String, String, usize)> {
    let mut groups = Vec::new();
    for m in &data.matrix {
        let short = m
            .payload
            .split_whitespace()
            .next()
            .unwrap_or(&m.payload)
            .to_string();
        let key = (
            m.payload.clone(),
            format!("{short} c={}", m.concurrency),
            m.concurrency,
        );
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    groups
}

fn relative_chart(
    data: &ReportData,
    title: &str,
    y_label: &str,
    f: impl Fn(&Summary, &Summary) -> f64,
) -> Chart {
    let groups = matrix_groups(data);
    let series = REST
        .iter()
        .map(|t| {
            let values = groups
                .iter()
                .map(|(payload, _, c)| {
                    let v = f(
                        cell(data, payload, t, *c)?,
                        cell(data, payload, "gRPC", *c)?,
                    );
                    v.is_finite().then_some(v)
                })
                .collect();
            (t.to_string(), values)
        })
        .collect();
    Chart {
        title: title.into(),
        y_label: y_label.into(),
        groups: groups.into_iter().map(|(_, label, _)| label).collect(),
        series,
        lines: Vec::new(),
    }
}

/// Every plot of the report, as (file name, SVG).
pub fn plots(data: &ReportData) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let wire = Chart {
        title: "Bytes on the wire: one 768-d FP32 vector, request and response".into(),
        y_label: "bytes per request (TCP payload)".into(),
        groups: data
            .wire
            .iter()
            .filter(|w| w.request_wire.is_some())
            .map(|w| w.encoding.clone())
            .collect(),
        series: vec![
            (
                "request".into(),
                data.wire
                    .iter()
                    .filter_map(|w| w.request_wire.map(Some))
                    .collect(),
            ),
            (
                "response".into(),
                data.wire
                    .iter()
                    .filter_map(|w| w.response_wire.map(Some))
                    .collect(),
            ),
        ],
        lines: Vec::new(),
    };
    out.push(("bench-wire-bytes.svg".into(), bar_chart(&wire)));
    let mut latency = relative_chart(
        data,
        "p50 latency relative to gRPC (gRPC = 1)",
        "REST p50 / gRPC p50",
        |rest, grpc| rest.p50_us / grpc.p50_us,
    );
    latency.lines = vec![
        (1.0, "gRPC".into()),
        (5.0, "seed claim: 5x".into()),
        (10.0, "10x".into()),
    ];
    out.push(("bench-latency.svg".into(), bar_chart(&latency)));
    let mut throughput = relative_chart(
        data,
        "throughput relative to gRPC (gRPC = 1)",
        "REST req/s / gRPC req/s",
        |rest, grpc| rest.requests_per_sec / grpc.requests_per_sec,
    );
    throughput.lines = vec![(1.0, "gRPC".into()), (0.2, "seed claim: 5x slower".into())];
    out.push(("bench-throughput.svg".into(), bar_chart(&throughput)));
    if !data.bare.is_empty() {
        let bare = Chart {
            title: "Nereid throughput relative to a bare server on `simple`".into(),
            y_label: "Nereid req/s / bare req/s".into(),
            groups: data
                .bare
                .iter()
                .map(|b| format!("{} c={}", b.transport, b.concurrency))
                .collect(),
            series: vec![(
                "Nereid / bare".into(),
                data.bare
                    .iter()
                    .map(|b| {
                        (b.bare.requests_per_sec > 0.0)
                            .then(|| b.nereid.requests_per_sec / b.bare.requests_per_sec)
                    })
                    .collect(),
            )],
            lines: vec![(0.85, "target 0.85".into()), (1.0, "bare".into())],
        };
        out.push(("bench-bare.svg".into(), bar_chart(&bare)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_is_well_formed() {
        let chart = Chart {
            title: "t <x>".into(),
            y_label: "y".into(),
            groups: vec!["a".into(), "b".into()],
            series: vec![
                ("s1".into(), vec![Some(1.0), None]),
                ("s2".into(), vec![Some(3.0), Some(2.0)]),
            ],
            lines: vec![(2.5, "line".into())],
        };
        let svg = bar_chart(&chart);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(
            svg.matches("<rect x=").count(),
            3 + 2,
            "three bars and two legend boxes"
        );
        assert!(svg.contains("t &lt;x&gt;"));
        assert_eq!(nice_max(7.3), 8.0);
        assert_eq!(nice_max(0.0), 1.0);
    }
}
