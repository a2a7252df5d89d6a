//! Results for people and tools: perf_analyzer's console summary and its CSV columns
//! (all times in microseconds).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::load::{Level, LevelResult};

/// The CSV header, perf_analyzer's columns then Nereid's extras.
pub fn csv_header(level: &Level) -> String {
    let first = match level {
        Level::Concurrency(_) => "Concurrency",
        Level::RequestRate { .. } => "Request Rate",
    };
    format!(
        "{first},Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,\
         Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,\
         Avg latency,Requests,Errors,Stable"
    )
}

/// The time neither the client nor the server's queue and compute account for: network,
/// protocol handling and server-side decoding/encoding.
pub fn network_us(r: &LevelResult) -> f64 {
    let s = &r.summary;
    let server = s
        .server
        .as_ref()
        .map(|b| b.queue_us + b.compute_input_us + b.compute_infer_us + b.compute_output_us);
    (s.avg_us - s.client_send_us - s.client_recv_us - server.unwrap_or(0.0)).max(0.0)
}

/// One CSV row.
pub fn csv_row(r: &LevelResult) -> String {
    let s = &r.summary;
    let b = s.server.clone().unwrap_or_default();
    format!(
        "{},{:.2},{:.0},{:.0},{:.0},{:.0},{:.0},{:.0},{:.0},{:.0},{:.0},{:.0},{:.0},{:.0},{},{},{}",
        r.level.value(),
        s.infer_per_sec,
        s.client_send_us,
        network_us(r),
        b.queue_us,
        b.compute_input_us,
        b.compute_infer_us,
        b.compute_output_us,
        s.client_recv_us,
        s.p50_us,
        s.p90_us,
        s.p95_us,
        s.p99_us,
        s.avg_us,
        s.count,
        s.errors,
        r.stable,
    )
}

/// Writes every level as CSV.
pub fn write_csv(path: &Path, results: &[LevelResult]) -> anyhow::Result<()> {
    let Some(first) = results.first() else {
        return Ok(());
    };
    let mut out = csv_header(&first.level);
    out.push('\n');
    for r in results {
        out.push_str(&csv_row(r));
        out.push('\n');
    }
    std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))
}

/// perf_analyzer's per-level block.
pub fn describe(r: &LevelResult) -> String {
    let s = &r.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}{}",
        capitalized(&r.level.label()),
        if r.stable { "" } else { " (not stable)" }
    );
    let _ = writeln!(out, "  Client:");
    let _ = writeln!(
        out,
        "    Request count: {} ({} errors, {} windows)",
        s.count, s.errors, r.windows
    );
    let _ = writeln!(out, "    Throughput: {:.2} infer/sec", s.infer_per_sec);
    let _ = writeln!(
        out,
        "    p50 latency: {:.0} usec | p90: {:.0} | p95: {:.0} | p99: {:.0} | avg: {:.0}",
        s.p50_us, s.p90_us, s.p95_us, s.p99_us, s.avg_us
    );
    let _ = writeln!(
        out,
        "    Avg request latency: {:.0} usec (client send {:.0} + network+server send/recv {:.0} + client recv {:.0})",
        s.avg_us,
        s.client_send_us,
        network_us(r),
        s.client_recv_us
    );
    if s.delayed > 0 {
        let _ = writeln!(
            out,
            "    Delayed requests (over --max-threads in flight): {}",
            s.delayed
        );
    }
    match &s.server {
        Some(b) => {
            let _ = writeln!(out, "  Server:");
            let _ = writeln!(
                out,
                "    Inference count: {} (average batch {:.2})",
                b.success, b.average_batch
            );
            let _ = writeln!(
                out,
                "    Avg request latency: {:.0} usec (queue {:.0} + compute input {:.0} + compute infer {:.0} + compute output {:.0})",
                b.request_us, b.queue_us, b.compute_input_us, b.compute_infer_us, b.compute_output_us
            );
        }
        None => {
            let _ = writeln!(out, "  Server: statistics unavailable");
        }
    }
    if let Some(e) = &s.first_error {
        let _ = writeln!(out, "  First error: {e}");
    }
    out
}

/// The closing table of every level.
pub fn table(results: &[LevelResult]) -> String {
    let mut out = String::from("Inferences/Second vs. Client p50 / p99 Latency\n");
    for r in results {
        let s = &r.summary;
        let _ = writeln!(
            out,
            "{}: {:.2} infer/sec, p50 {:.0} usec, p99 {:.0} usec",
            capitalized(&r.level.label()),
            s.infer_per_sec,
            s.p50_us,
            s.p99_us
        );
    }
    out
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Summary;

    #[test]
    fn csv_has_perf_analyzer_columns() {
        let r = LevelResult {
            level: Level::Concurrency(4),
            summary: Summary {
                infer_per_sec: 10.0,
                count: 7,
                avg_us: 100.0,
                client_send_us: 10.0,
                ..Default::default()
            },
            stable: true,
            windows: 3,
            total_success: 7,
            total_errors: 0,
            server_total: None,
        };
        let header = csv_header(&r.level);
        let row = csv_row(&r);
        assert!(header.starts_with("Concurrency,Inferences/Second,Client Send,"));
        assert_eq!(header.split(',').count(), row.split(',').count());
        assert!(row.starts_with("4,10.00,10,90,"));
        assert!(describe(&r).contains("Concurrency 4"));
    }
}
