//! `nereid gateway`: the doors of `nereid serve` over a fleet of engines.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nereid_engine::{Engine, EngineOptions};
use nereid_gateway::{BackendTls, Gateway, GatewayOptions};

use crate::cli::GatewayArgs;
use crate::logging::Logging;
use crate::{metrics_server, serve};

/// Runs the gateway to completion.
pub(crate) fn run(args: GatewayArgs, logging: &Logging) -> anyhow::Result<()> {
    let metrics = metrics_server::install(&args.doors.metrics_config)?;
    let trace = args.doors.trace_config()?;
    let tls = args
        .backend_ca_cert
        .as_ref()
        .map(|ca| {
            BackendTls {
                ca_cert: ca.clone(),
                identity: args
                    .backend_client_cert
                    .clone()
                    .zip(args.backend_client_key.clone()),
                domain: args.backend_tls_domain.clone(),
            }
            .client_config()
        })
        .transpose()
        .map_err(anyhow::Error::msg)
        .context("--backend-ca-cert")?;
    let options = GatewayOptions {
        backends: args.backends.clone(),
        backend_dns: args.backend_dns.clone(),
        discovery_interval: Duration::from_millis(args.discovery_interval_ms.max(100)),
        health_interval: Duration::from_millis(args.health_interval_ms.max(100)),
        eject_after: args.eject_after,
        retries: args.retries,
        client: nereid_grpc::client::ClientOptions {
            max_message_size: args.doors.grpc.grpc_max_message_size,
            tls,
            api_key: args.backend_api_key.clone(),
            ..Default::default()
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let gateway = Gateway::start(options)
            .await
            .map_err(anyhow::Error::msg)
            .context("cannot start the gateway")?;
        for (backend, healthy) in gateway.backends() {
            tracing::info!(%backend, healthy, "engine");
        }
        let engine = Engine::with_upstream(
            EngineOptions {
                max_inflight: args.doors.max_inflight(),
                trace: trace.settings,
                ..Default::default()
            },
            Arc::new(gateway),
        );
        let (settings, apply) = logging.control();
        engine.set_log_control(settings, apply);
        serve::serve(
            engine,
            args.doors,
            trace.exporter,
            metrics,
            nereid_console::Role::Gateway,
        )
        .await
    })
}
