//! `nereid serve`: start the engine, bind every port, serve until SIGINT/SIGTERM, then
//! drain in-flight work within the exit timeout. `nereid gateway` serves its doors here too.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nereid_engine::{BackendRegistry, CacheSettings, Engine, EngineOptions, ModelControlMode};
use nereid_otlp::{ExporterConfig, OtlpExporter, TraceConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cli::{ControlMode, DoorArgs, ServeArgs};
use crate::logging::Logging;
use crate::{demo, metrics_server};

/// Runs the server to completion.
pub(crate) fn run(mut args: ServeArgs, logging: &Logging) -> anyhow::Result<()> {
    if args.model_repository.is_none()
        && args.demo_models == crate::cli::DemoModels::All
        && args.doors.stream.tei_model.is_empty()
    {
        // The demo has two embedders (minilm and its ensemble): TEI's routes take minilm.
        args.doors.stream.tei_model = vec![nereid_models::demo::TEI_DEFAULT.to_string()];
    }
    let metrics = metrics_server::install(&args.doors.metrics_config)?;
    let trace = args.doors.trace_config()?;
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
        max_inflight: args.doors.max_inflight(),
        trace: trace.settings,
        response_cache: CacheSettings::parse(&args.cache_config).map_err(anyhow::Error::msg)?,
    };
    let mut backends = BackendRegistry::with_builtins();
    nereid_models::register(&mut backends);
    // Models load on this thread, before the runtime exists: loading never blocks a Tokio worker.
    let engine = Engine::start(options, backends).context("cannot start the engine")?;
    let (settings, apply) = logging.control();
    engine.set_log_control(settings, apply);
    for entry in engine.repository_index(false) {
        tracing::info!(model = %entry.name, version = %entry.version, state = %entry.state, reason = %entry.reason, "model");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served = runtime.block_on(serve(
        engine,
        args.doors,
        trace.exporter,
        metrics,
        nereid_console::Role::Engine,
    ));
    // A model thread still computing past the exit timeout must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    served
}

impl DoorArgs {
    /// `--trace-config` and the `OTEL_*` variables, read; an error names the setting.
    pub(crate) fn trace_config(&self) -> anyhow::Result<TraceConfig> {
        TraceConfig::parse(&self.trace_config, |key| std::env::var(key).ok())
            .map_err(anyhow::Error::msg)
    }

    /// `--max-inflight` as the engine takes it (0: no limit).
    pub(crate) fn max_inflight(&self) -> Option<usize> {
        (self.max_inflight > 0).then_some(self.max_inflight)
    }

    /// The metrics port's TLS: its own files, else the HTTP door's; `None` when off.
    fn metrics_tls(&self) -> anyhow::Result<Option<nereid_tls::ServerTls>> {
        if !self.metrics_use_ssl {
            return Ok(None);
        }
        let files = match (&self.metrics_server_cert, &self.metrics_server_key) {
            (Some(cert), Some(key)) => (cert, key),
            _ => match (&self.rest.http_server_cert, &self.rest.http_server_key) {
                (Some(cert), Some(key)) => (cert, key),
                _ => anyhow::bail!(
                    "--metrics-use-ssl needs --metrics-server-cert and --metrics-server-key \
                     (or the HTTP door's --http-server-cert and --http-server-key)"
                ),
            },
        };
        let files = nereid_tls::TlsFiles::new(files.0, files.1);
        nereid_tls::ServerTls::load("metrics", files, nereid_tls::ALPN_H2_HTTP1)
            .context("the metrics port's TLS")
            .map(Some)
    }
}

/// Serves every door of `engine` (a local one, or a gateway's) until SIGINT/SIGTERM, then
/// drains it.
pub(crate) async fn serve(
    engine: Engine,
    mut args: DoorArgs,
    exporter: Option<ExporterConfig>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    role: nereid_console::Role,
) -> anyhow::Result<()> {
    // Running once a collector is named (or tracing is on), so tracing turned on later
    // through the trace API has somewhere to go; idle while nothing is traced.
    if let Some(config) = exporter {
        let exporter = OtlpExporter::start(config)
            .map_err(anyhow::Error::msg)
            .context("--trace-config")?;
        engine.set_span_exporter(Arc::new(exporter));
    }
    args.rest.access_log = args.access_log;
    args.grpc.access_log = args.access_log;
    let mut keys = args.api_keys.clone();
    if let Some(path) = &args.api_key_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--api-key-file: cannot read {}", path.display()))?;
        let before = keys.len();
        keys.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
        anyhow::ensure!(
            keys.len() > before,
            "--api-key-file: {} holds no key",
            path.display()
        );
    }
    let keys = nereid_kserve::ApiKeys::new(&keys);
    let api_key_required = keys.required();
    args.rest.api_keys = keys.clone();
    args.grpc.api_keys = keys;
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

    // Every door is built (TLS files read, routes assembled) before the server announces
    // itself: a configuration that cannot serve fails here, with nothing announced.
    let console = nereid_console::router(nereid_console::ConsoleSettings {
        role,
        grpc_port: grpc_addr.port(),
        grpc_tls: args.grpc.tls_enabled(),
        api_key_required,
        model_control_mode: match (role, engine.control_mode()) {
            // A gateway passes load and unload on; each engine decides (and a refusal is
            // shown as its error).
            (nereid_console::Role::Gateway, _) | (_, ModelControlMode::Explicit) => "explicit",
            (_, ModelControlMode::None) => "none",
            (_, ModelControlMode::Poll) => "poll",
        },
        metrics: {
            let metrics = metrics.clone();
            Arc::new(move || metrics.render())
        },
    });
    let http_app = nereid_rest::app(
        nereid_rest::routes(engine.clone(), &args.rest)
            .merge(nereid_stream::router(engine.clone(), &args.stream))
            .merge(console),
        &args.rest,
        &[
            nereid_rest::Door {
                prefix: "/v1/",
                shape: nereid_stream::error::shape,
                public: nereid_rest::Door::no_public_paths,
            },
            nereid_rest::Door {
                prefix: nereid_console::PREFIX,
                shape: nereid_rest::error::kserve_shape,
                public: nereid_console::is_public,
            },
        ],
    );
    let http_server = nereid_rest::server(http_app, http, &args.rest, stopped())
        .context("cannot start the HTTP server")?;
    let grpc_server = nereid_grpc::server(engine.clone(), grpc, args.grpc.clone(), stopped())
        .context("cannot start the gRPC server")?;
    let metrics_server = nereid_rest::listen(
        metrics_server::router(metrics),
        metrics_listener,
        args.metrics_tls()?,
        stopped(),
    );

    let mut servers = JoinSet::new();
    servers.spawn(async move { ("HTTP", http_server.await) });
    servers.spawn(async move { ("gRPC", grpc_server.await) });
    servers.spawn(async move {
        let result = metrics_server.await.context("the metrics server failed");
        ("metrics", result)
    });

    tracing::info!(%http_addr, %grpc_addr, %metrics_addr, "serving");
    // Tests and scripts read the chosen ports from this line.
    println!("NEREID_READY http={http_addr} grpc={grpc_addr} metrics={metrics_addr}");
    let _ = std::io::stdout().flush();

    // Every server runs until shutdown; one that ends before it, for whatever reason, takes
    // the process down rather than leaving the other doors serving alone.
    tokio::select! {
        _ = shutdown_signal() => {}
        ended = servers.join_next() => {
            let _ = stop_tx.send(true);
            return Err(match ended {
                Some(Ok((name, Ok(())))) => anyhow::anyhow!("the {name} server stopped on its own"),
                Some(Ok((name, Err(e)))) => e.context(format!("the {name} server failed")),
                Some(Err(e)) => anyhow::anyhow!("a server task failed: {e}"),
                None => anyhow::anyhow!("no server is running"),
            });
        }
    }
    tracing::info!(
        exit_timeout_secs = args.exit_timeout_secs,
        "shutting down: finishing in-flight requests"
    );
    let _ = stop_tx.send(true);
    let exit_timeout = Duration::from_secs(args.exit_timeout_secs);
    let deadline = tokio::time::Instant::now() + exit_timeout;
    let drained = engine.drain(exit_timeout).await;
    if !drained {
        tracing::warn!(
            left = engine.inflight(),
            "exit timeout passed with requests still in flight"
        );
    }
    // What the server answered, read before the models stop (their statistics go with
    // them): a drain can be checked against what clients counted.
    let (succeeded, failed) = engine.request_totals();
    // Stopping finishes what is queued; past the exit timeout the process leaves without
    // it (a model still computing is not waited for).
    let stop_by = deadline.max(tokio::time::Instant::now() + Duration::from_secs(1));
    if tokio::time::timeout_at(stop_by, engine.stop_models())
        .await
        .is_err()
    {
        tracing::warn!("models still computing at the exit timeout; leaving without them");
    }
    let grace = Duration::from_secs(2);
    let _ = tokio::time::timeout(grace, async {
        while let Some(ended) = servers.join_next().await {
            if let Ok((name, Err(e))) = ended {
                tracing::warn!(server = name, error = %format!("{e:#}"), "server ended with an error during shutdown");
            }
        }
    })
    .await;
    tracing::info!(succeeded, failed, "stopped");
    Ok(())
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
