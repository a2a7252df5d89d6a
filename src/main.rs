//! `nereid`: serve models over gRPC, REST and streaming from one dynamic-batching engine.

mod batch;
mod cli;
mod demo;
mod gateway;
mod logging;
mod metrics_server;
mod serve;

use clap::Parser;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match run(cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, the cause chain joined, for whoever reads the exit of a server.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::Serve(args) => {
            let candle = size_candle_pools();
            let logging = logging::init(args.doors.log_format, args.doors.log_verbose);
            tracing::info!(set = ?candle, "candle CPU thread counts (the environment's own win)");
            serve::run(*args, &logging)
        }
        cli::Command::Gateway(args) => {
            let logging = logging::init(args.doors.log_format, args.doors.log_verbose);
            gateway::run(*args, &logging)
        }
        cli::Command::Batch(args) => {
            size_candle_pools();
            logging::init(cli::LogFormat::Text, 0);
            batch::run(*args)
        }
        cli::Command::Bench(args) => runtime()?.block_on(nereid_bench::run(*args)),
        cli::Command::BenchReport(args) => {
            logging::init(cli::LogFormat::Text, 0);
            runtime()?.block_on(nereid_bench::report(*args))
        }
        cli::Command::Models(cmd) => {
            logging::init(cli::LogFormat::Text, 0);
            match cmd {
                cli::ModelsCommand::Pull { models } => {
                    nereid_models::pull(&models)?;
                    let repository = demo::prepare(cli::DemoModels::All)?;
                    println!("demo repository: {}", repository.display());
                    Ok(())
                }
            }
        }
    }
}

/// candle sizes its CPU pools from the environment (see `nereid_models::threads`), so the
/// server writes the variables it wants there, once, at the very start of `main`. Returns
/// what it set.
fn size_candle_pools() -> Vec<(&'static str, String)> {
    let threads = nereid_models::threads::default_threads();
    let wanted = nereid_models::threads::candle_env(threads);
    for (var, value) in &wanted {
        // SAFETY: writing the environment races with any other thread reading it (getenv is
        // not synchronised with setenv in libc). Nothing has started a thread yet: this
        // runs first in `main`, before the log subscriber, the engine's model threads and
        // the Tokio runtime exist, so this thread is the only one that can read it.
        std::env::set_var(var, value);
    }
    wanted
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
