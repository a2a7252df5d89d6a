//! `nereid bench-report`: the seed article's comparison on the live server, in one run.
//!
//! 1. Bytes on the wire for a 768-d FP32 vector: JSON, binary extension, protobuf, counted
//!    on the client's sockets.
//! 2. p50/p99 latency and throughput for `simple` and for 768-d and ~150k-element
//!    `identity_fp32`, at concurrency 1 and 64, over gRPC and REST (JSON and binary, HTTP/1.1
//!    and HTTP/2).
//! 3. Nereid against the bare tonic and axum servers on `simple` (what the engine costs),
//!    alternating the two twice and keeping each side's best run.
//!
//! It writes a generated section of `docs/BENCHMARKS.md` ([`markdown`]) and SVG plots
//! ([`svg`]).

pub mod markdown;
pub mod svg;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::args::{HttpVersion, ReportArgs, TensorFormat};
use crate::clients::{Client, Endpoint, WireCounter};
use crate::codec::{encode_http_request, grpc_request, grpc_request_typed};
use crate::cpu::CpuSource;
use crate::inputs::{random_fp32, random_int32, InputSet, InputTensor, ModelInfo};
use crate::load::{self, Level, Plan, Target};
use crate::progress::Progress;
use crate::server::{self, RunningServer};
use crate::stats::Summary;

/// Bytes one request and its response take, for one encoding.
#[derive(Clone, Debug, PartialEq)]
pub struct WireBytes {
    /// Encoding and transport, e.g. `REST-JSON h1`.
    pub encoding: String,
    /// Size of the encoded request body or protobuf message.
    pub body_bytes: usize,
    /// TCP payload bytes per request, client to server (headers and framing included).
    pub request_wire: Option<f64>,
    /// TCP payload bytes per response, server to client.
    pub response_wire: Option<f64>,
}

/// One measured cell of the protocol matrix.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Payload label (`simple`, `768-d FP32`, ...).
    pub payload: String,
    /// Transport label (`gRPC`, `REST-JSON h1`, ...).
    pub transport: String,
    /// Requests in flight.
    pub concurrency: usize,
    /// What was measured.
    pub summary: Summary,
}

/// Nereid against a bare server at one concurrency (best of the alternated runs).
#[derive(Clone, Debug)]
pub struct BareComparison {
    /// `gRPC` or `REST-binary h1`...
    pub transport: String,
    /// Requests in flight.
    pub concurrency: usize,
    /// Nereid's best run.
    pub nereid: Summary,
    /// The bare server's best run.
    pub bare: Summary,
}

/// The same requests straight to the engine and through `nereid gateway` in front of it,
/// at one concurrency (best of the alternated runs).
#[derive(Clone, Debug)]
pub struct GatewayComparison {
    /// The client's side of the gateway: `gRPC`, `REST-JSON h1`, `REST-binary h1`.
    pub transport: String,
    /// Requests in flight.
    pub concurrency: usize,
    /// Straight to the engine.
    pub direct: Summary,
    /// Through the gateway.
    pub gateway: Summary,
}

/// Everything one report run measured.
#[derive(Clone, Debug, Default)]
pub struct ReportData {
    /// UTC date of the run.
    pub date: String,
    /// Machine description (cores, CPU).
    pub machine: String,
    /// Where the servers ran.
    pub server_note: String,
    /// 1-minute load average before and after the run.
    pub load: (Option<f64>, Option<f64>),
    /// Measured and warm-up time per scenario.
    pub duration_ms: u64,
    /// Warm-up per scenario.
    pub warmup_ms: u64,
    /// Elements of the large payload.
    pub large_elements: usize,
    /// High concurrency used.
    pub high_concurrency: usize,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Bytes on the wire, 768-d FP32.
    pub wire: Vec<WireBytes>,
    /// The protocol matrix.
    pub matrix: Vec<Measured>,
    /// Nereid against bare servers.
    pub bare: Vec<BareComparison>,
    /// Direct against through the gateway.
    pub gateway: Vec<GatewayComparison>,
    /// What could not be measured, and why.
    pub notes: Vec<String>,
}

/// A request payload of the comparison.
#[derive(Clone)]
struct Payload {
    label: String,
    model: ModelInfo,
    inputs: Vec<InputSet>,
}

fn simple_payload() -> Payload {
    let tensor = |name: &str, seed| InputTensor {
        name: name.into(),
        datatype: "INT32".into(),
        shape: vec![1, 16],
        data: random_int32(16, seed),
    };
    Payload {
        label: "simple (2x16 INT32)".into(),
        model: ModelInfo::simple(),
        inputs: vec![Arc::new(vec![tensor("INPUT0", 1), tensor("INPUT1", 2)])],
    }
}

fn vector_payload(elements: usize, label: String) -> Payload {
    let tensor = InputTensor {
        name: "INPUT0".into(),
        datatype: "FP32".into(),
        shape: vec![1, elements as i64],
        data: random_fp32(elements, elements as u64),
    };
    Payload {
        label,
        model: ModelInfo::identity_fp32(),
        inputs: vec![Arc::new(vec![tensor])],
    }
}

/// The transports of the matrix, gRPC first.
fn transports(grpc: &str, http: &str) -> Vec<Endpoint> {
    let mut all = vec![Endpoint::grpc(grpc)];
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        for format in [TensorFormat::Json, TensorFormat::Binary] {
            all.push(Endpoint::http(http, version, format));
        }
    }
    all
}

struct Runner {
    plan: Plan,
    progress: Progress,
}

impl Runner {
    /// One measurement; with `cpu`, the server's CPU per request over the whole run
    /// (warm-up included, on both sides of the division).
    async fn run(
        &self,
        endpoint: &Endpoint,
        payload: &Payload,
        concurrency: usize,
        stats: bool,
        cpu: Option<&CpuSource>,
    ) -> anyhow::Result<Summary> {
        let client = Client::connect(endpoint, Arc::default()).await?;
        let target = Arc::new(Target {
            client,
            model: payload.model.clone(),
            inputs: payload.inputs.clone(),
            streaming: false,
            batch: 1,
            server_stats: stats,
            request_timeout: load::DEFAULT_REQUEST_TIMEOUT,
        });
        self.progress
            .set_scope(&format!("{} {}", endpoint.label(), payload.label));
        let cpu_before = cpu.and_then(CpuSource::read);
        let result = load::measure(
            target,
            Level::Concurrency(concurrency),
            self.plan,
            &self.progress,
        )
        .await?;
        let cpu_after = cpu.and_then(CpuSource::read);
        let requests = result.total_success + result.total_errors;
        let mut summary = result.summary;
        summary.server_cpu_us = cpu_before
            .zip(cpu_after)
            .filter(|_| requests > 0)
            .map(|(a, b)| b.saturating_sub(a).as_secs_f64() * 1e6 / requests as f64);
        Ok(summary)
    }
}

async fn wire_bytes(grpc: &str, http: &str, payload: &Payload) -> anyhow::Result<Vec<WireBytes>> {
    const N: usize = 20;
    let inputs = &payload.inputs[0];
    let mut out = Vec::new();
    for endpoint in transports(grpc, http) {
        let body_bytes = match endpoint.protocol {
            crate::args::Protocol::Grpc => {
                prost::Message::encoded_len(&grpc_request(&payload.model, inputs))
            }
            crate::args::Protocol::Http => {
                let binary = endpoint.input_format == TensorFormat::Binary;
                encode_http_request(inputs, binary, binary)?.body.len()
            }
        };
        let counter = Arc::new(WireCounter::default());
        let client = Client::connect(&endpoint, counter.clone()).await?;
        client
            .infer(&payload.model, inputs)
            .await
            .with_context(|| endpoint.label())?;
        counter.reset();
        for _ in 0..N {
            client.infer(&payload.model, inputs).await?;
        }
        let (sent, received) = counter.totals();
        out.push(WireBytes {
            encoding: endpoint.label(),
            body_bytes,
            request_wire: Some(sent as f64 / N as f64),
            response_wire: Some(received as f64 / N as f64),
        });
    }
    out.push(WireBytes {
        encoding: "protobuf, typed fp32_contents (size only)".into(),
        body_bytes: prost::Message::encoded_len(&grpc_request_typed(&payload.model, inputs)?),
        request_wire: None,
        response_wire: None,
    });
    Ok(out)
}

/// Alternates two endpoints twice at one concurrency; keeps each side's best run (highest
/// throughput, and its latency), which discounts one-off interference.
async fn alternate(
    runner: &Runner,
    first: (&Endpoint, Option<&CpuSource>),
    second: (&Endpoint, Option<&CpuSource>),
    payload: &Payload,
    concurrency: usize,
) -> anyhow::Result<(Summary, Summary)> {
    let mut best: [Option<Summary>; 2] = [None, None];
    for _ in 0..2 {
        for (side, (endpoint, cpu)) in [first, second].into_iter().enumerate() {
            let s = runner
                .run(endpoint, payload, concurrency, false, cpu)
                .await?;
            if best[side]
                .as_ref()
                .is_none_or(|b| s.requests_per_sec > b.requests_per_sec)
            {
                best[side] = Some(s);
            }
        }
    }
    let [Some(first_best), Some(second_best)] = best else {
        unreachable!("both sides ran")
    };
    Ok((first_best, second_best))
}

async fn versus_bare(
    runner: &Runner,
    nereid: (&Endpoint, Option<&CpuSource>),
    bare: (&Endpoint, Option<&CpuSource>),
    payload: &Payload,
    concurrency: usize,
) -> anyhow::Result<BareComparison> {
    let (nereid_best, bare_best) = alternate(runner, nereid, bare, payload, concurrency).await?;
    let nereid = nereid.0;
    Ok(BareComparison {
        transport: nereid.label(),
        concurrency,
        nereid: nereid_best,
        bare: bare_best,
    })
}

/// The gateway's cost: `simple` over gRPC, REST-JSON and REST-binary (HTTP/1.1), straight
/// to the engine and through a gateway in front of it.
async fn versus_gateway(
    runner: &Runner,
    (grpc, http): (&str, &str),
    (engine_cpu, gateway): (Option<&CpuSource>, &RunningServer),
    payload: &Payload,
    concurrencies: [usize; 2],
) -> anyhow::Result<Vec<GatewayComparison>> {
    // Through the gateway, the serving cost is the gateway's and the engine's together;
    // it is read only when the engine runs in this process too.
    let gateway_cpu = engine_cpu.and_then(|engine| engine.with(&gateway.cpu));
    let (gateway_grpc, gateway_http) = (gateway.grpc_url()?, gateway.http_url()?);
    let sides = |grpc: &str, http: &str| {
        [
            Endpoint::grpc(grpc),
            Endpoint::http(http, HttpVersion::Http1, TensorFormat::Json),
            Endpoint::http(http, HttpVersion::Http1, TensorFormat::Binary),
        ]
    };
    let mut out = Vec::new();
    for concurrency in concurrencies {
        for (direct, through) in sides(grpc, http)
            .into_iter()
            .zip(sides(&gateway_grpc, &gateway_http))
        {
            let (direct_best, gateway_best) = alternate(
                runner,
                (&direct, engine_cpu),
                (&through, gateway_cpu.as_ref()),
                payload,
                concurrency,
            )
            .await?;
            out.push(GatewayComparison {
                transport: direct.label(),
                concurrency,
                direct: direct_best,
                gateway: gateway_best,
            });
        }
    }
    Ok(out)
}

async fn start<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("server start panicked")?
}

/// Runs the whole comparison and returns what it measured (no files written).
pub async fn measure(args: &ReportArgs) -> anyhow::Result<ReportData> {
    let started = Instant::now();
    let threads = args.server_threads.unwrap_or_else(server::default_threads);
    let mut data = ReportData {
        date: markdown::utc_date(),
        machine: markdown::machine(),
        load: (markdown::load_average(), None),
        duration_ms: args.duration_ms,
        warmup_ms: args.warmup_ms,
        large_elements: args.large_elements,
        high_concurrency: args.high_concurrency,
        ..ReportData::default()
    };
    let _local: Option<RunningServer>;
    let (grpc, http) = match (&args.grpc_url, &args.http_url) {
        (Some(g), Some(h)) => {
            _local = None;
            data.server_note = format!("an external Nereid at {g} (gRPC) and {h} (HTTP)");
            (crate::args::normalize_url(g), crate::args::normalize_url(h))
        }
        _ => {
            let s = start(move || server::nereid_in_process(threads)).await?;
            data.server_note = format!(
                "Nereid's engine and gRPC/REST frontends in the bench process, on a runtime of their own \
                 ({threads} worker threads), built-in demo models"
            );
            let urls = (s.grpc_url()?, s.http_url()?);
            _local = Some(s);
            urls
        }
    };
    // The server's CPU is read only where it runs apart from the load generator's threads.
    let local_cpu = _local.as_ref().map(|s| s.cpu.clone());
    let runner = Runner {
        plan: Plan::Fixed {
            warmup: Duration::from_millis(args.warmup_ms),
            duration: Duration::from_millis(args.duration_ms),
        },
        progress: Progress::new(!args.no_progress && std::io::stderr().is_terminal()),
    };

    let simple = simple_payload();
    let vector = vector_payload(768, "768-d FP32".into());
    let large = vector_payload(
        args.large_elements,
        format!("{}-element FP32", args.large_elements),
    );

    runner.progress.start("bytes on the wire (768-d FP32)");
    data.wire = wire_bytes(&grpc, &http, &vector).await?;

    for payload in [&simple, &vector, &large] {
        for concurrency in [1, args.high_concurrency] {
            for endpoint in transports(&grpc, &http) {
                match runner
                    .run(&endpoint, payload, concurrency, true, local_cpu.as_ref())
                    .await
                {
                    Ok(summary) => data.matrix.push(Measured {
                        payload: payload.label.clone(),
                        transport: endpoint.label(),
                        concurrency,
                        summary,
                    }),
                    Err(e) => data.notes.push(format!(
                        "{} {} c={concurrency} failed: {e:#}",
                        endpoint.label(),
                        payload.label
                    )),
                }
            }
        }
    }

    let rest = Endpoint::http(&http, HttpVersion::Http1, TensorFormat::Binary);
    match start(move || server::bare_rest(threads)).await {
        Ok(bare) => {
            let bare_endpoint =
                Endpoint::http(&bare.http_url()?, HttpVersion::Http1, TensorFormat::Binary);
            for concurrency in [1, args.high_concurrency] {
                data.bare.push(
                    versus_bare(
                        &runner,
                        (&rest, local_cpu.as_ref()),
                        (&bare_endpoint, Some(&bare.cpu)),
                        &simple,
                        concurrency,
                    )
                    .await?,
                );
            }
        }
        Err(e) => data.notes.push(format!("bare axum server: {e:#}")),
    }
    match start(move || server::bare_grpc(threads)).await {
        Ok(bare) => {
            let bare_endpoint = Endpoint::grpc(&bare.grpc_url()?);
            for concurrency in [1, args.high_concurrency] {
                data.bare.push(
                    versus_bare(
                        &runner,
                        (&Endpoint::grpc(&grpc), local_cpu.as_ref()),
                        (&bare_endpoint, Some(&bare.cpu)),
                        &simple,
                        concurrency,
                    )
                    .await?,
                );
            }
        }
        Err(e) => data.notes.push(format!("bare tonic server: {e:#}")),
    }
    let engine_grpc: std::net::SocketAddr = grpc
        .trim_start_matches("http://")
        .parse()
        .context("the engine's gRPC address")?;
    match start(move || server::gateway_in_process(threads, engine_grpc)).await {
        Ok(gateway) => {
            let concurrencies = [1, args.high_concurrency];
            let servers = (local_cpu.as_ref(), &gateway);
            match versus_gateway(&runner, (&grpc, &http), servers, &simple, concurrencies).await {
                Ok(rows) => data.gateway = rows,
                Err(e) => data.notes.push(format!("through the gateway: {e:#}")),
            }
        }
        Err(e) => data.notes.push(format!("gateway: {e:#}")),
    }
    runner.progress.clear();
    data.elapsed = started.elapsed();
    data.load.1 = markdown::load_average();
    Ok(data)
}

/// `nereid bench-report`: measures, then writes the generated section of the markdown file
/// and the SVG plots (or prints the section with `--dry-run`).
pub async fn report(args: ReportArgs) -> anyhow::Result<()> {
    let estimate = 6 * 5 + 8;
    eprintln!(
        "nereid bench-report: about {estimate} scenarios of {} ms each (~{} s)",
        args.duration_ms + args.warmup_ms,
        estimate as u64 * (args.duration_ms + args.warmup_ms) / 1000
    );
    let data = measure(&args).await?;
    let same_dir = args
        .markdown
        .parent()
        .map(|p| p.as_os_str().is_empty() || p == args.svg_dir.as_path());
    let prefix = if same_dir.unwrap_or(true) {
        String::new()
    } else {
        format!("{}/", args.svg_dir.display())
    };
    let section = markdown::render(&data, &prefix);
    if args.dry_run {
        println!("{section}");
        return Ok(());
    }
    std::fs::create_dir_all(&args.svg_dir)
        .with_context(|| format!("cannot create {}", args.svg_dir.display()))?;
    for (name, svg) in svg::plots(&data) {
        let path = args.svg_dir.join(name);
        std::fs::write(&path, svg).with_context(|| format!("cannot write {}", path.display()))?;
        println!("Wrote {}", path.display());
    }
    markdown::splice_file(&args.markdown, &section)?;
    println!(
        "Wrote {} ({:.0} s of measurements)",
        args.markdown.display(),
        data.elapsed.as_secs_f64()
    );
    println!("{}", markdown::verdict_lines(&data).join("\n"));
    Ok(())
}
