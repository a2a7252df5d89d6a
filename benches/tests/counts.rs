//! The tool counts right: against the real server (engine and frontends in this process,
//! or the built `nereid` binary when `NEREID_BIN` names it), every request the load
//! generator counts is one the server's statistics count, per protocol and loop.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use nereid_bench::args::{Distribution, HttpVersion, ShapeArg, TensorFormat};
use nereid_bench::clients::{Client, Endpoint};
use nereid_bench::inputs::{build_inputs, ModelInfo};
use nereid_bench::load::{measure, Level, LevelResult, Plan, Target};
use nereid_bench::progress::Progress;
use nereid_bench::server::{self, RunningServer};

async fn start_server() -> RunningServer {
    match std::env::var_os("NEREID_BIN") {
        Some(bin) => {
            server::spawn_binary(bin.as_ref(), Duration::from_secs(60)).expect("spawn nereid")
        }
        None => tokio::task::spawn_blocking(|| server::nereid_in_process(2))
            .await
            .unwrap()
            .expect("in-process nereid"),
    }
}

const PLAN: Plan = Plan::Stable {
    interval: Duration::from_millis(250),
    percentage: 50.0,
    max_trials: 3,
    percentile: None,
};

async fn bench(
    endpoint: Endpoint,
    model: &str,
    shape: &[ShapeArg],
    level: Level,
    streaming: bool,
) -> (LevelResult, ModelInfo) {
    let client = Client::connect(&endpoint, Arc::default())
        .await
        .expect("connect");
    let info = client.model_info(model, "").await.expect("model info");
    let inputs = build_inputs(&info, &"random".parse().unwrap(), shape, 1).expect("inputs");
    let target = Arc::new(Target {
        client,
        model: info.clone(),
        inputs,
        streaming,
        batch: 1,
        server_stats: true,
        request_timeout: Duration::from_secs(10),
    });
    let result = measure(target, level, PLAN, &Progress::hidden())
        .await
        .expect("measure");
    (result, info)
}

fn assert_counts_match(what: &str, r: &LevelResult) {
    let server = r.server_total.expect("server statistics");
    assert!(r.total_success > 0, "{what}: no request completed");
    assert_eq!(
        r.total_errors, 0,
        "{what}: errors: {:?}",
        r.summary.first_error
    );
    assert_eq!(
        r.total_success, server.success.count,
        "{what}: the client counted {} successes, the server {}",
        r.total_success, server.success.count
    );
    assert_eq!(server.fail.count, 0, "{what}: server failures");
    assert!(
        r.summary.count <= r.total_success,
        "{what}: windows count more than the total"
    );
    let s = &r.summary;
    assert!(
        s.p50_us > 0.0 && s.p50_us <= s.p90_us && s.p90_us <= s.p95_us && s.p95_us <= s.p99_us,
        "{what}: {s:?}"
    );
    assert!(s.server.is_some(), "{what}: no server breakdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_counts_match_server_statistics() {
    let server = start_server().await;
    let grpc = server.grpc_url().unwrap();
    let http = server.http_url().unwrap();
    let vector = [ShapeArg {
        name: "INPUT0".into(),
        dims: vec![768],
    }];

    let (r, info) = bench(
        Endpoint::grpc(&grpc),
        "simple",
        &[],
        Level::Concurrency(4),
        false,
    )
    .await;
    assert_eq!(info, ModelInfo::simple());
    assert_counts_match("gRPC simple c=4", &r);

    let (r, _) = bench(
        Endpoint::grpc(&grpc),
        "simple",
        &[],
        Level::Concurrency(2),
        true,
    )
    .await;
    assert_counts_match("gRPC streaming simple c=2", &r);

    let endpoint = Endpoint::http(&http, HttpVersion::Http1, TensorFormat::Json);
    let (r, info) = bench(
        endpoint,
        "identity_fp32",
        &vector,
        Level::Concurrency(3),
        false,
    )
    .await;
    assert_eq!(info, ModelInfo::identity_fp32());
    assert_counts_match("REST-JSON h1 identity c=3", &r);

    let endpoint = Endpoint::http(&http, HttpVersion::Http2, TensorFormat::Binary);
    let (r, _) = bench(
        endpoint,
        "identity_fp32",
        &vector,
        Level::Concurrency(3),
        false,
    )
    .await;
    assert_counts_match("REST-binary h2 identity c=3", &r);

    let rate = Level::RequestRate {
        rate: 200.0,
        distribution: Distribution::Poisson,
        max_inflight: 32,
    };
    let (r, _) = bench(Endpoint::grpc(&grpc), "simple", &[], rate, false).await;
    assert_counts_match("gRPC simple open loop 200/s", &r);
    let per_sec = r.summary.requests_per_sec;
    assert!(
        (100.0..300.0).contains(&per_sec),
        "open loop ran at {per_sec}/s, not about 200/s"
    );
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: nereid_bench::BenchArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_command_writes_perf_analyzer_csv() {
    let server = start_server().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("results.csv");
    let url = server.http_url().unwrap();
    let cli = Cli::parse_from([
        "bench",
        "-m",
        "identity_fp32",
        "-u",
        &url,
        "-i",
        "http",
        "--shape",
        "INPUT0:16",
        "--concurrency-range",
        "1:3:2",
        "-p",
        "200",
        "-r",
        "3",
        "-s",
        "50",
        "--input-tensor-format",
        "json",
        "--http-version",
        "2",
        "-f",
        csv.to_str().unwrap(),
        "--no-progress",
    ]);
    nereid_bench::run(cli.args).await.expect("bench run");
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with(
        "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue"
    ));
    assert!(
        lines[1].starts_with("1,") && lines[2].starts_with("3,"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoupled_model_streams_to_the_final_response() {
    let server = start_server().await;
    let client = Client::connect(&Endpoint::grpc(&server.grpc_url().unwrap()), Arc::default())
        .await
        .unwrap();
    let info = client.model_info("repeat_int32", "").await.unwrap();
    assert!(info.decoupled);
    let shape = [ShapeArg {
        name: "IN".into(),
        dims: vec![3],
    }];
    let mut info_in_only = info.clone();
    info_in_only.inputs.retain(|t| t.name == "IN");
    let inputs = build_inputs(&info_in_only, &"zero".parse().unwrap(), &shape, 1).unwrap();
    let Client::Grpc(grpc) = client else {
        unreachable!()
    };
    let mut stream = grpc.stream().await.unwrap();
    let (_, responses) = stream.infer(&info_in_only, &inputs[0]).await.unwrap();
    assert!(
        responses >= 3,
        "three elements give three responses (and maybe an empty final one), got {responses}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_servers_answer_simple() {
    let grpc = tokio::task::spawn_blocking(|| server::bare_grpc(1))
        .await
        .unwrap()
        .expect("bare gRPC");
    let rest = tokio::task::spawn_blocking(|| server::bare_rest(1))
        .await
        .unwrap()
        .expect("bare REST");
    let model = ModelInfo::simple();
    let inputs = build_inputs(&model, &"random".parse().unwrap(), &[], 1).unwrap();
    for endpoint in [
        Endpoint::grpc(&grpc.grpc_url().unwrap()),
        Endpoint::http(
            &rest.http_url().unwrap(),
            HttpVersion::Http1,
            TensorFormat::Json,
        ),
        Endpoint::http(
            &rest.http_url().unwrap(),
            HttpVersion::Http2,
            TensorFormat::Binary,
        ),
    ] {
        let client = Client::connect(&endpoint, Arc::default()).await.unwrap();
        client
            .infer(&model, &inputs[0])
            .await
            .unwrap_or_else(|e| panic!("{}: {e:#}", endpoint.label()));
    }
}
