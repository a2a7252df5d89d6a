//! `nereid`: serve models over gRPC, REST and streaming from one dynamic-batching engine.

mod cli;
mod demo;
mod logging;
mod metrics_server;
mod serve;

use clap::Parser;

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
            logging::init(args.log_format, args.log_verbose);
            // candle sizes its CPU pools from the environment, which is only safe to set
            // while this is the process's only thread (before the runtime and any model).
            nereid_models::threads::init_process(nereid_models::threads::default_threads());
            serve::run(*args)
        }
        cli::Command::Bench(args) => runtime()?.block_on(nereid_bench::run(*args)),
        cli::Command::BenchReport(args) => {
            logging::init(cli::LogFormat::Text, 0);
            runtime()?.block_on(nereid_bench::report(*args))
        }
        cli::Command::Models(cmd) => {
            logging::init(cli::LogFormat::Text, 0);
            match cmd {
                cli::ModelsCommand::Pull { models } => nereid_models::pull(&models),
            }
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
