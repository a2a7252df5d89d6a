//! Nereid's gateway: REST outside, gRPC inside.
//!
//! A [`Gateway`] is an [`Upstream`]: an engine built over it with
//! [`Engine::with_upstream`](nereid_engine::Engine::with_upstream) serves the same doors as
//! `nereid serve` (the frontends are the same code), validates every request against the
//! model configs the engines report, and forwards it over KServe v2 gRPC to one of the
//! engines that serve its model:
//!
//! - **Discovery**: a static list of engines, or a DNS name re-resolved periodically (a
//!   Kubernetes headless Service), or both. Each engine's repository index says which
//!   models and versions it serves; requests go only there.
//! - **Balancing**: power of two choices on the requests this gateway has in flight on
//!   each engine.
//! - **Health**: grpc.health.v1 checks eject an engine that stops serving (it drains, or
//!   the network to it is cut) and readmit it once it answers; a streak of failed calls
//!   ejects it between checks (a circuit breaker). When every engine of a model is
//!   ejected, requests try them anyway rather than fail unsent.
//! - **Retries**: a request that an engine could not answer (UNAVAILABLE: unreachable,
//!   connection broken, shutting down) moves to another engine, as long as nothing has
//!   reached the client; a stream already answering is never retried.
//! - **Model control**: a load or unload goes to every healthy engine.
//! - **Cancellation**: a client that goes away drops the call, which cancels the engine's
//!   work; a deadline travels as `grpc-timeout`.

mod backend;
mod catalog;
mod control;
mod discovery;
mod forward;
mod metrics;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nereid_engine::{
    ControlFuture, InferRequest, ModelConfig, Reply, RepositoryEntry, Result, Upstream,
    UpstreamModel,
};
use nereid_grpc::client::ClientOptions;
use parking_lot::RwLock;
use tokio::sync::Notify;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::backend::Backend;
use crate::catalog::Catalog;

pub use crate::metrics::PREFIX as METRICS_PREFIX;

/// How the gateway finds and treats its engines.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Engines' gRPC addresses (`host:port`).
    pub backends: Vec<String>,
    /// A DNS name (`name:port`) whose every address is an engine, re-resolved each
    /// discovery interval.
    pub backend_dns: Option<String>,
    /// How often the DNS name is re-resolved and the engines' repository indexes re-read.
    pub discovery_interval: Duration,
    /// How often every engine's health is checked (also the check's timeout, within
    /// 1 s and 5 s).
    pub health_interval: Duration,
    /// Failed calls in a row that eject an engine until its next good health check.
    pub eject_after: u32,
    /// Further engines a request may be sent to after one could not answer it.
    pub retries: u32,
    /// How to reach the engines (message size, TLS).
    pub client: ClientOptions,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            backends: Vec::new(),
            backend_dns: None,
            discovery_interval: Duration::from_secs(2),
            health_interval: Duration::from_secs(1),
            eject_after: 3,
            retries: 2,
            client: ClientOptions::default(),
        }
    }
}

/// TLS to the engines (their `--grpc-use-ssl`), optionally with a client certificate for
/// engines that require one (`--grpc-use-ssl-mutual`).
#[derive(Debug, Clone, Default)]
pub struct BackendTls {
    /// PEM file of the CA the engines' certificates chain to.
    pub ca_cert: PathBuf,
    /// PEM files of this gateway's certificate and key, for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name the engines' certificates carry, when it is not the address dialled (a
    /// DNS-discovered engine is dialled by IP; its certificate names the Service).
    pub domain: Option<String>,
}

impl BackendTls {
    /// The client configuration, files read; an unreadable file is an error naming it.
    pub fn client_config(&self) -> std::result::Result<ClientTlsConfig, String> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&self.ca_cert)?));
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        Ok(config)
    }
}

/// State shared by the request path and the background loops.
pub(crate) struct Shared {
    options: GatewayOptions,
    backends: RwLock<Vec<Arc<Backend>>>,
    catalog: Catalog,
    /// Wakes the discovery loop (a backend was admitted).
    refresh: Arc<Notify>,
    /// Keeps each sequence's requests in their order on the way to its engine.
    sequences: parking_lot::Mutex<nereid_engine::SequenceOrder>,
}

/// The gateway: forwards an engine's requests to a fleet of engines. Its loops run on the
/// Tokio runtime it was started on, until it is dropped.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

impl Gateway {
    /// Checks the options, learns what it can of the fleet in one round (engines that are
    /// up are routable when this returns), and starts the health and discovery loops.
    pub async fn start(options: GatewayOptions) -> std::result::Result<Self, String> {
        if options.backends.is_empty() && options.backend_dns.is_none() {
            return Err("no engines to forward to: give --backend or --backend-dns".into());
        }
        for address in options.backends.iter().chain(&options.backend_dns) {
            if address
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return Err(format!("engine address '{address}' is not host:port"));
            }
        }
        let shared = Arc::new(Shared {
            options,
            backends: RwLock::default(),
            catalog: Catalog::default(),
            refresh: Arc::default(),
            sequences: Default::default(),
        });
        discovery::first_round(&shared).await;
        discovery::spawn_loops(&shared);
        Ok(Self { shared })
    }

    /// Engines known now, each with whether it takes requests.
    pub fn backends(&self) -> Vec<(String, bool)> {
        self.shared
            .backends
            .read()
            .iter()
            .map(|b| (b.address.clone(), b.is_healthy()))
            .collect()
    }
}

impl Upstream for Gateway {
    fn is_ready(&self) -> bool {
        self.shared.backends.read().iter().any(|b| b.is_healthy())
    }

    fn resolve(&self, name: &str, version: Option<i64>) -> Result<UpstreamModel> {
        self.shared.catalog.resolve(name, version)
    }

    fn ready_versions(&self, name: Option<&str>) -> Vec<UpstreamModel> {
        self.shared.catalog.ready_versions(name)
    }

    fn index(&self, ready_only: bool) -> Vec<RepositoryEntry> {
        self.shared.catalog.index(ready_only)
    }

    fn load(&self, name: &str, config: Option<ModelConfig>) -> ControlFuture {
        let (shared, name) = (self.shared.clone(), name.to_string());
        Box::pin(async move { control::load(&shared, &name, config).await })
    }

    fn unload(&self, name: &str) -> ControlFuture {
        let (shared, name) = (self.shared.clone(), name.to_string());
        Box::pin(async move { control::unload(&shared, &name).await })
    }

    fn forward(&self, request: InferRequest, reply: Reply) {
        forward::spawn(self.shared.clone(), request, reply);
    }
}
