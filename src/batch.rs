//! `nereid batch`: the engine a job runs on (in-process over a model repository, or a
//! gateway over `--server` engines), then the job.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use nereid_batch::BatchArgs;
use nereid_engine::{BackendRegistry, Engine, EngineOptions, ModelControlMode};
use nereid_gateway::{Gateway, GatewayOptions};

use crate::cli::DemoModels;
use crate::demo;

/// Runs a batch job to completion and prints its summary.
pub(crate) fn run(args: BatchArgs) -> anyhow::Result<()> {
    if !args.servers.is_empty() && args.model_repository.is_some() {
        bail!("--server and --model-repository exclude each other: a job scores in-process or against running engines");
    }
    // Models load on this thread, before the runtime exists; only the job's model.
    let local = if args.servers.is_empty() {
        let repository = match &args.model_repository {
            Some(dir) => dir.clone(),
            None => demo::prepare(DemoModels::All)?,
        };
        let options = EngineOptions {
            repository: Some(repository),
            control_mode: ModelControlMode::Explicit,
            startup_models: vec![args.model.clone()],
            ..Default::default()
        };
        let mut backends = BackendRegistry::with_builtins();
        nereid_models::register(&mut backends);
        Some(Engine::start(options, backends).context("cannot start the engine")?)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let engine = match local {
            Some(engine) => engine,
            None => {
                let options = GatewayOptions {
                    backends: args
                        .servers
                        .iter()
                        .map(|s| {
                            s.trim_start_matches("grpc://")
                                .trim_start_matches("http://")
                                .to_string()
                        })
                        .collect(),
                    client: nereid_grpc::client::ClientOptions {
                        api_key: args.api_key.clone(),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let gateway = Gateway::start(options)
                    .await
                    .map_err(anyhow::Error::msg)
                    .context("--server")?;
                let engine =
                    Engine::with_upstream(EngineOptions::default(), Arc::new(gateway.clone()));
                wait_for_model(&engine, &gateway, &args).await?;
                engine
            }
        };
        let result = nereid_batch::run(engine.clone(), &args).await;
        engine.shutdown(Duration::from_secs(5)).await;
        let summary = result?;
        eprintln!("{summary}");
        Ok(())
    })
}

/// Waits until a server serves the job's model; if none does in time, says whether the
/// servers were unreachable or do not have it.
async fn wait_for_model(
    engine: &Engine,
    gateway: &Gateway,
    args: &BatchArgs,
) -> anyhow::Result<()> {
    let wait = Duration::from_secs(args.server_wait_secs);
    let deadline = tokio::time::Instant::now() + wait;
    while engine.model(&args.model, args.model_version).is_err()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if engine.model(&args.model, args.model_version).is_ok() {
        return Ok(());
    }
    let backends = gateway.backends();
    if !backends.iter().any(|(_, healthy)| *healthy) {
        let addresses: Vec<&str> = backends.iter().map(|(a, _)| a.as_str()).collect();
        bail!(
            "--server: no server answered in {} s ({})",
            wait.as_secs(),
            addresses.join(", ")
        );
    }
    Ok(()) // A server is up without the model: the job's own check names it.
}
