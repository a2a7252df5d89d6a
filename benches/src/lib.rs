//! `nereid-bench`: the load generator behind `nereid bench` and the protocol comparison
//! behind `nereid bench-report`.
//!
//! * [`run`] with [`BenchArgs`] is a perf_analyzer-style load generator: closed loop
//!   (`--concurrency-range`) or open loop (`--request-rate-range`) over gRPC or REST (JSON or
//!   binary tensors, HTTP/1.1 or h2c), measured in windows until stable, reporting infer/s,
//!   p50/p90/p95/p99 from HDR histograms, client send/receive time and the server's queue and
//!   compute time from its statistics API, with a live progress display and CSV output.
//! * [`report`] with [`ReportArgs`] answers "gRPC or REST, and at what cost?" on the live
//!   server: bytes on the wire, latency and throughput per protocol and payload, Nereid
//!   against bare tonic / axum servers; it writes a section of `docs/BENCHMARKS.md` and SVG
//!   plots.
//!
//! Module map: [`args`] flags, [`inputs`] request tensors, [`codec`] wire encodings,
//! [`clients`] raw gRPC and HTTP clients, [`load`] closed and open loops, [`stats`] HDR
//! histograms and summaries, [`server_stats`] the statistics API, [`output`] console and
//! CSV, [`progress`] the live display, [`server`] servers to measure, [`report`] the report.

pub mod args;
pub mod clients;
pub mod codec;
pub mod cpu;
pub mod inputs;
pub mod load;
pub mod output;
pub mod progress;
pub mod report;
pub mod server;
pub mod server_stats;
pub mod stats;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

pub use args::{BenchArgs, ReportArgs};
pub use report::report;

use clients::{Client, Endpoint};
use load::{Level, Plan, Target};

/// `nereid bench`: measures the levels the flags ask for and prints (and optionally writes
/// as CSV) perf_analyzer's numbers for each.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    args.validate()?;
    let endpoint = Endpoint {
        url: args.base_url(),
        protocol: args.protocol,
        http_version: args.http_version,
        input_format: args.input_tensor_format,
        output_format: args
            .output_tensor_format
            .unwrap_or(args.input_tensor_format),
        connections: args.connections.unwrap_or(1),
    };
    let client = Client::connect(&endpoint, Arc::default()).await?;
    let model = client.model_info(&args.model, &args.model_version).await?;
    if model.decoupled && !args.streaming {
        bail!("model {} is decoupled: add --streaming (gRPC)", model.name);
    }
    let inputs = inputs::build_inputs(&model, &args.input_data, &args.shape, args.batch_size)?;
    let server_stats = match client.statistics(&model.name, &model.version).await {
        Ok(_) => true,
        Err(e) => {
            eprintln!(
                "warning: server statistics unavailable ({e:#}); server-side times will be missing"
            );
            false
        }
    };
    let levels: Vec<Level> = match (&args.concurrency_range, &args.request_rate_range) {
        (_, Some(rates)) => rates
            .values()
            .into_iter()
            .map(|rate| Level::RequestRate {
                rate,
                distribution: args.request_distribution,
                max_inflight: args.max_threads,
            })
            .collect(),
        (Some(range), None) => range
            .values()
            .into_iter()
            .map(|n| Level::Concurrency(n as usize))
            .collect(),
        (None, None) => vec![Level::Concurrency(1)],
    };
    let plan = Plan::Stable {
        interval: Duration::from_millis(args.measurement_interval),
        percentage: args.stability_percentage,
        max_trials: args.max_trials,
        percentile: args.percentile,
    };

    println!("*** Measurement Settings ***");
    println!(
        "  Model: {} ({})",
        model.name,
        if model.version.is_empty() {
            "newest version"
        } else {
            &model.version
        }
    );
    println!("  Endpoint: {} {}", endpoint.label(), endpoint.url);
    println!(
        "  Batch size: {}{}",
        args.batch_size,
        if args.streaming { ", streaming" } else { "" }
    );
    println!(
        "  Measurement window: {} ms, stable within {}% over 3 windows (at most {} windows)",
        args.measurement_interval, args.stability_percentage, args.max_trials
    );
    println!(
        "  Latency: {}",
        args.percentile
            .map_or("average".to_string(), |p| format!("p{p}"))
    );
    println!();

    let progress = progress::Progress::new(!args.no_progress && std::io::stderr().is_terminal());
    let target = Arc::new(Target {
        client,
        model,
        inputs,
        streaming: args.streaming,
        batch: args.batch_size,
        server_stats,
        request_timeout: Duration::from_millis(args.request_timeout),
    });
    let mut results = Vec::new();
    for level in levels {
        let result = load::measure(target.clone(), level, plan, &progress).await?;
        progress.suspend(|| println!("{}", output::describe(&result)));
        results.push(result);
    }
    progress.clear();
    println!("{}", output::table(&results));
    if let Some(path) = &args.filename {
        output::write_csv(path, &results)?;
        println!("Wrote {}", path.display());
    }
    Ok(())
}
