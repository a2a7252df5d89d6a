//! The report runs end to end on a tiny budget against in-process servers and writes its
//! markdown section and well-formed SVGs.

use clap::Parser;
use nereid_bench::report::markdown::{END, START};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: nereid_bench::ReportArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_writes_section_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("BENCHMARKS.md");
    std::fs::write(&md, "# Benchmarks\n\nHand-written intro.\n").unwrap();
    let cli = Cli::parse_from([
        "report",
        "--markdown",
        md.to_str().unwrap(),
        "--svg-dir",
        dir.path().to_str().unwrap(),
        "--duration-ms",
        "120",
        "--warmup-ms",
        "40",
        "--large-elements",
        "4096",
        "--high-concurrency",
        "4",
        "--no-progress",
    ]);
    nereid_bench::report(cli.args).await.expect("report");
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(text.starts_with("# Benchmarks\n\nHand-written intro.\n"));
    assert!(text.contains(START) && text.contains(END));
    assert!(text.contains("### Bytes on the wire"));
    assert!(text.contains("| 768-d FP32 | REST-JSON h1 | 4 |"), "{text}");
    assert!(text.contains("Verdict on the seed article"));
    for svg in [
        "bench-wire-bytes.svg",
        "bench-latency.svg",
        "bench-throughput.svg",
    ] {
        let s = std::fs::read_to_string(dir.path().join(svg)).unwrap();
        assert!(
            s.starts_with("<svg") && s.trim_end().ends_with("</svg>"),
            "{svg}"
        );
    }
}
