//! `cargo run --release -p nereid-bench --example report -- [flags]`: the same report as
//! `nereid bench-report`, without building the whole server binary (no candle).

use clap::Parser;

/// `nereid bench-report` flags.
#[derive(Parser)]
#[command(name = "report")]
struct Cli {
    #[command(flatten)]
    args: nereid_bench::ReportArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    nereid_bench::report(Cli::parse().args).await
}
