//! `nereid serve`: start the engine, bind every port, serve until SIGINT/SIGTERM, then
//! drain in-flight work within the exit timeout.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use nereid_engine::{BackendRegistry, Engine, EngineOptions, ModelControlMode};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cli::{ControlMode, ServeArgs};
use crate::{demo, metrics_server};

/// Runs the server to completion.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let metrics = metrics_server::install()?;
    let repository = match &args.model_repository {
        Some(dir) => dir.clone(),
        None => demo::prepare(args.demo_models)?,
    };
    tracing::info!(repository = %repository.display(), "loading models");
    let options = EngineOptions {
        repository: Some(repository),
        control_mode: match args.model_control_mode {
            ControlMode::None => ModelControlMode::None,
            ControlMode::Explicit => ModelControlMode::Explicit,
            ControlMode::Poll => ModelControlMode::Poll,
        },
        startup_models: args.load_model.clone(),
        poll_interval: Duration::from_secs(args.repository_poll_secs),
        strict_readiness: args.strict_readiness,
    };
    let mut backends = BackendRegistry::with_builtins();
    nereid_models::register(&mut backends);
    // Models load on this thread, before the runtime exists: loading never blocks a Tokio worker.
    let engine = Engine::start(options, backends).context("cannot start the engine")?;
    for entry in engine.repository_index(false) {
        tracing::info!(model = %entry.name, version = %entry.version, state = %entry.state, reason = %entry.reason, "model");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(engine, args, metrics))
}

async fn serve(
    engine: Engine,
    args: ServeArgs,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    let bind = |port: u16| {
        let address = format!("{}:{port}", args.address);
        async move {
            TcpListener::bind(&address)
                .await
                .with_context(|| format!("cannot bind {address}"))
        }
    };
    let http = bind(args.http_port).await?;
    let grpc = bind(args.grpc_port).await?;
    let metrics_listener = bind(args.metrics_port).await?;
    let (http_addr, grpc_addr, metrics_addr) = (
        reachable(http.local_addr()?),
        reachable(grpc.local_addr()?),
        reachable(metrics_listener.local_addr()?),
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let rest_router = nereid_rest::router(engine.clone(), &args.rest)
        .merge(nereid_stream::router(engine.clone()));
    let rest_task = tokio::spawn({
        let (rest_args, stop) = (args.rest.clone(), stopped());
        async move { nereid_rest::serve(rest_router, http, &rest_args, stop).await }
    });
    let grpc_task = tokio::spawn(nereid_grpc::serve(
        engine.clone(),
        grpc,
        args.grpc.clone(),
        stopped(),
    ));
    let metrics_task = tokio::spawn({
        let stop = stopped();
        async move {
            axum::serve(metrics_listener, metrics_server::router(metrics))
                .with_graceful_shutdown(stop)
                .await
        }
    });

    tracing::info!(%http_addr, %grpc_addr, %metrics_addr, "serving");
    // Tests and scripts read the chosen ports from this line.
    println!("NEREID_READY http={http_addr} grpc={grpc_addr} metrics={metrics_addr}");
    let _ = std::io::stdout().flush();

    tokio::select! {
        _ = shutdown_signal() => {}
        r = &mut Box::pin(watch_task("http", rest_task)) => r?,
    }
    tracing::info!(
        exit_timeout_secs = args.exit_timeout_secs,
        "shutting down: finishing in-flight requests"
    );
    let _ = stop_tx.send(true);
    let drained = engine
        .shutdown(Duration::from_secs(args.exit_timeout_secs))
        .await;
    if !drained {
        tracing::warn!(
            left = engine.inflight(),
            "exit timeout passed with requests still in flight"
        );
    }
    let grace = Duration::from_secs(2);
    let _ = tokio::time::timeout(grace, grpc_task).await;
    let _ = tokio::time::timeout(grace, metrics_task).await;
    tracing::info!("stopped");
    Ok(())
}

async fn watch_task(
    name: &str,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    match task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.context(format!("{name} server failed"))),
        Err(e) => Err(anyhow::anyhow!("{name} server task failed: {e}")),
    }
}

/// The address to advertise: a wildcard bind is reachable on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
