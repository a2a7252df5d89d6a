//! Prometheus metrics: the `metrics` recorder, Triton's CPU gauges, and the /metrics route
//! on the metrics port.

use std::time::Duration;

use anyhow::Context;
use axum::{routing::get, Router};
use metrics::gauge;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Installs the global recorder; call before models load so their counters register.
/// The token latencies get buckets, so Prometheus receives histograms it can aggregate
/// across a fleet (without buckets the exporter would render client-side summaries).
pub(crate) fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Prefix(nereid_stream::metrics::LLM_PREFIX.into()),
            nereid_stream::metrics::LATENCY_BUCKETS,
        )
        .context("cannot set the token latency buckets")?
        .set_buckets_for_metric(
            Matcher::Prefix(nereid_gateway::METRICS_PREFIX.into()),
            nereid_stream::metrics::LATENCY_BUCKETS,
        )
        .context("cannot set the gateway latency buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    std::thread::Builder::new()
        .name("system-metrics".into())
        .spawn(sample_system)
        .context("cannot start the system metrics thread")?;
    Ok(handle)
}

/// The metrics port's router.
pub(crate) fn router(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    handle.render(),
                )
            }
        }),
    )
}

/// Samples host CPU utilisation and memory once a second into Triton's gauges.
fn sample_system() {
    let mut last = cpu_times();
    loop {
        // Memory first, so the gauges exist from the first scrape on.
        if let Some((total, available)) = memory() {
            gauge!("nv_cpu_memory_total_bytes").set(total as f64);
            gauge!("nv_cpu_memory_used_bytes").set(total.saturating_sub(available) as f64);
        }
        std::thread::sleep(Duration::from_secs(1));
        let now = cpu_times();
        if let (Some((busy0, total0)), Some((busy1, total1))) = (last, now) {
            let total = total1.saturating_sub(total0);
            if total > 0 {
                let utilisation = busy1.saturating_sub(busy0) as f64 / total as f64;
                gauge!("nv_cpu_utilization").set(utilisation);
            }
        }
        last = now;
    }
}

/// (busy, total) jiffies from /proc/stat.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// (total, available) bytes from /proc/meminfo.
fn memory() -> Option<(u64, u64)> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}
