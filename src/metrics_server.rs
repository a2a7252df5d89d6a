//! Prometheus metrics: the `metrics` recorder, Triton's CPU gauges, and the /metrics route
//! on the metrics port.

use std::time::Duration;

use anyhow::Context;
use axum::{routing::get, Router};
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Installs the global recorder; call before models load so their counters register.
/// Every histogram gets buckets, so Prometheus receives histograms it can aggregate across
/// a fleet (without buckets the exporter would render client-side summaries); `config` is
/// `--metrics-config`.
pub(crate) fn install(config: &[String]) -> anyhow::Result<PrometheusHandle> {
    let mut durations = nereid_engine::DURATION_BUCKETS.to_vec();
    for entry in config {
        match entry.split_once('=') {
            Some(("duration_buckets", list)) => {
                durations = list
                    .split(',')
                    .map(|b| {
                        b.trim()
                            .parse::<f64>()
                            .ok()
                            .filter(|b| b.is_finite() && *b > 0.0)
                    })
                    .collect::<Option<Vec<f64>>>()
                    .filter(|b| !b.is_empty() && b.windows(2).all(|w| w[0] < w[1]))
                    .with_context(|| {
                        format!(
                            "--metrics-config {entry}: 'duration_buckets' must be increasing \
                             positive seconds, comma-separated"
                        )
                    })?;
            }
            _ => anyhow::bail!(
                "--metrics-config {entry}: unknown setting; the one setting is \
                 duration_buckets=S,S,..."
            ),
        }
    }
    let mut builder = PrometheusBuilder::new();
    for name in [
        nereid_engine::REQUEST_DURATION,
        nereid_engine::QUEUE_DURATION,
        nereid_engine::COMPUTE_DURATION,
    ] {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.into()), &durations)
            .context("cannot set the duration buckets")?;
    }
    let handle = builder
        .set_buckets_for_metric(
            Matcher::Full(nereid_engine::FIRST_RESPONSE.into()),
            nereid_engine::FIRST_RESPONSE_BUCKETS,
        )
        .context("cannot set the first response buckets")?
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
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("system-metrics".into())
        .spawn(move || sample_system(&upkeep))
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

/// Samples host CPU utilisation and memory once a second into Triton's gauges, and folds
/// the histograms' recorded values into their buckets: the recorder keeps every value
/// until then, so without this upkeep an unscraped server's memory grows with each request.
fn sample_system(handle: &PrometheusHandle) {
    let mut last = cpu_times();
    loop {
        handle.run_upkeep();
        // Memory first, so the gauges exist from the first scrape on.
        if let Some((total, available)) = memory() {
            gauge!("nv_cpu_memory_total_bytes").set(total as f64);
            gauge!("nv_cpu_memory_used_bytes").set(total.saturating_sub(available) as f64);
        }
        sample_process();
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

/// The process's own gauges, by Prometheus's conventional names: resident memory, CPU
/// seconds used, open file descriptors.
fn sample_process() {
    // statm: sizes in pages; the second is the resident set.
    if let Some(pages) = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
    {
        gauge!("process_resident_memory_bytes").set((pages * PAGE_SIZE) as f64);
    }
    // stat: utime and stime (fields 14 and 15) in clock ticks, after the parenthesised name.
    if let Some(ticks) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let fields: Vec<u64> = s
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect();
            (fields.len() == 2).then(|| fields[0] + fields[1])
        })
    {
        counter!("process_cpu_seconds_total").absolute(ticks / CLOCK_TICKS);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge!("process_open_fds").set(fds.count() as f64);
    }
}

/// Linux's page size and clock tick rate on the platforms Nereid ships for (x86-64 and
/// aarch64 with 4 KiB pages; USER_HZ is 100 everywhere).
const PAGE_SIZE: u64 = 4096;
const CLOCK_TICKS: u64 = 100;

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
