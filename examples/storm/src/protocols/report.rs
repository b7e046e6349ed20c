//! The benchmark's Markdown table and SVG chart.

use std::fmt::Write;

use super::{Median, Operation, Transport};

/// One Markdown table of every cell, in the order they ran: the median round's figures, and
/// the range of requests per second over every round.
pub fn markdown(results: &[Median]) -> String {
    let rounds = results.first().map_or(0, |r| r.runs.len());
    let mut out = format!(
        "| operation | protocol | connections × streams each | req/s | req/s over {rounds} rounds | \
         p50 ms | p99 ms | server CPU µs/req | client CPU µs/req | bytes/req | failed |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for result in results {
        let m = &result.median;
        let cell = m.cell;
        let streams = cell.concurrency / cell.connections.max(1);
        let (low, high) = result.range();
        let failed: u64 = result.runs.iter().map(|r| r.failures).sum();
        let server = m
            .server_cpu_us
            .map_or_else(|| "—".to_owned(), |us| format!("{us:.1}"));
        let _ = writeln!(
            out,
            "| {} | {} | {} × {streams} | {:.0} | {low:.0}–{high:.0} | {:.2} | {:.2} | {server} \
             | {:.1} | {:.0} | {failed} |",
            cell.operation.label(),
            cell.transport.label(),
            cell.connections,
            m.per_second(),
            m.p50.as_secs_f64() * 1e3,
            m.p99.as_secs_f64() * 1e3,
            m.client_cpu_us,
            m.bytes_per_request,
        );
    }
    out
}

const WIDTH: f64 = 900.0;
const ROW: f64 = 22.0;
const LABEL: f64 = 330.0;
const TOP: f64 = 50.0;

fn colour(transport: Transport) -> &'static str {
    match transport {
        Transport::Http1 => "#1565c0",
        Transport::H2c => "#6a1b9a",
        Transport::Grpc => "#2e7d32",
    }
}

/// Two panels of horizontal bars, one row per cell at the highest concurrency: requests per
/// second, and server CPU time per request.
pub fn svg(title: &str, results: &[Median]) -> String {
    let top = results
        .iter()
        .map(|m| m.median.cell.concurrency)
        .max()
        .unwrap_or(1);
    let rows: Vec<_> = results
        .iter()
        .map(|m| &m.median)
        .filter(|m| m.cell.concurrency == top)
        .collect();
    let panel = (WIDTH - LABEL - 40.0) / 2.0;
    let height = TOP + ROW * rows.len() as f64 + 40.0;
    let max_rate = rows.iter().map(|m| m.per_second()).fold(1.0, f64::max);
    let max_cpu = rows
        .iter()
        .filter_map(|m| m.server_cpu_us)
        .fold(1.0, f64::max);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"15\">{title}</text>\n\
         <text x=\"{LABEL}\" y=\"40\">requests per second ({top} in flight)</text>\n\
         <text x=\"{}\" y=\"40\">server CPU µs per request</text>",
        LABEL + panel + 20.0
    );
    let mut last: Option<Operation> = None;
    for (index, m) in rows.iter().enumerate() {
        let y = TOP + ROW * index as f64;
        let cell = m.cell;
        let label = format!(
            "{}{}, {} conn",
            if last == Some(cell.operation) {
                String::new()
            } else {
                format!("{}: ", cell.operation.label())
            },
            cell.transport.label(),
            cell.connections
        );
        last = Some(cell.operation);
        let rate = m.per_second() / max_rate * (panel - 60.0);
        let cpu = m.server_cpu_us.unwrap_or(0.0) / max_cpu * (panel - 60.0);
        let fill = colour(cell.transport);
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{label}</text>\n\
             <rect x=\"{LABEL}\" y=\"{y}\" width=\"{rate:.1}\" height=\"{}\" fill=\"{fill}\"/>\n\
             <text x=\"{:.1}\" y=\"{}\">{:.0}</text>\n\
             <rect x=\"{}\" y=\"{y}\" width=\"{cpu:.1}\" height=\"{}\" fill=\"{fill}\"/>\n\
             <text x=\"{:.1}\" y=\"{}\">{}</text>",
            LABEL - 8.0,
            y + 14.0,
            ROW - 6.0,
            LABEL + rate + 4.0,
            y + 14.0,
            m.per_second(),
            LABEL + panel + 20.0,
            ROW - 6.0,
            LABEL + panel + 24.0 + cpu,
            y + 14.0,
            m.server_cpu_us
                .map_or_else(|| "—".to_owned(), |us| format!("{us:.0}")),
        );
    }
    svg.push_str("</svg>\n");
    svg
}
