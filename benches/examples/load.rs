//! `cargo run --release -p nereid-bench --example load -- [--in-process] [bench flags]`:
//! `nereid bench` without the server binary. With `--in-process` (and no `-u`) it first
//! starts Nereid with the built-in demo models in this process, on a runtime of its own.
//! (The bare comparison servers answer only ModelInfer, so `nereid bench-report` drives
//! them, not this tool.)

use clap::Parser;
use nereid_bench::args::Protocol;
use nereid_bench::server;

/// `nereid bench` flags, plus a server to start.
#[derive(Parser)]
#[command(name = "load")]
struct Cli {
    /// Start Nereid in-process and point the load at it.
    #[arg(long)]
    in_process: bool,
    /// Worker threads of the in-process server's runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    #[command(flatten)]
    args: nereid_bench::BenchArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    let threads = cli.server_threads;
    let running = if cli.in_process {
        Some(tokio::task::spawn_blocking(move || server::nereid_in_process(threads)).await??)
    } else {
        None
    };
    if let (Some(s), None) = (&running, &cli.args.url) {
        cli.args.url = Some(match cli.args.protocol {
            Protocol::Grpc => s.grpc_url()?,
            Protocol::Http => s.http_url()?,
        });
    }
    nereid_bench::run(cli.args).await
}
