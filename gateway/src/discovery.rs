//! Keeping the fleet's picture current: which engines exist (a static list and a DNS name
//! re-resolved), whether each is healthy (grpc.health.v1, actively), and which models
//! each serves (its repository index, with each new version's config).

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::join_all;
use nereid_engine::{ModelSpec, RepositoryEntry};
use nereid_proto::inference::RepositoryIndexRequest;

use crate::backend::Backend;
use crate::catalog::Report;
use crate::{metrics, Shared};

/// Runs the health and discovery loops until the gateway is dropped.
pub(crate) fn spawn_loops(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    tokio::spawn(health_loop(weak.clone()));
    tokio::spawn(discovery_loop(weak));
}

async fn health_loop(shared: Weak<Shared>) {
    loop {
        let Some(gateway) = shared.upgrade() else {
            return;
        };
        let interval = gateway.options.health_interval;
        check_health(&gateway).await;
        drop(gateway);
        tokio::time::sleep(interval).await;
    }
}

async fn discovery_loop(shared: Weak<Shared>) {
    loop {
        let Some(gateway) = shared.upgrade() else {
            return;
        };
        let interval = gateway.options.discovery_interval;
        let refresh = gateway.refresh.clone();
        drop(gateway);
        // Woken early when a backend is admitted, so it serves as soon as it is healthy.
        let _ = tokio::time::timeout(interval, refresh.notified()).await;
        let Some(gateway) = shared.upgrade() else {
            return;
        };
        discover(&gateway).await;
        refresh_catalog(&gateway).await;
    }
}

/// One round of everything, for the start: the gateway begins with what it can learn.
pub(crate) async fn first_round(shared: &Shared) {
    discover(shared).await;
    check_health(shared).await;
    refresh_catalog(shared).await;
}

/// Re-resolves the backend addresses: new ones are added (ejected until healthy), those
/// gone are dropped (requests in flight there finish).
async fn discover(shared: &Shared) {
    let mut addresses: BTreeSet<String> = shared.options.backends.iter().cloned().collect();
    if let Some(name) = &shared.options.backend_dns {
        match tokio::net::lookup_host(name.as_str()).await {
            Ok(found) => addresses.extend(found.map(|a| a.to_string())),
            // No engine up yet (a headless Service with no ready pods has no records):
            // the next round tries again.
            Err(e) => tracing::debug!(name = %name, error = %e, "backend name does not resolve"),
        }
    }
    let mut backends = shared.backends.write();
    backends.retain(|b| {
        let keep = addresses.contains(&b.address);
        if !keep {
            tracing::info!(backend = %b.address, "backend gone from discovery");
            metrics::set_healthy(&b.address, false);
            metrics::clear_inflight(&b.address);
        }
        keep
    });
    for address in addresses {
        if backends.iter().any(|b| b.address == address) {
            continue;
        }
        match Backend::new(&address, &shared.options.client) {
            Ok(backend) => {
                tracing::info!(backend = %address, "backend discovered");
                backends.push(backend);
            }
            Err(e) => tracing::warn!(error = %e, "backend skipped"),
        }
    }
    metrics::set_backends(backends.len());
}

/// Asks every backend whether it serves: a yes admits it, a no or no answer ejects it.
async fn check_health(shared: &Shared) {
    let backends = shared.backends.read().clone();
    // At least a second: a busy engine (or a busy gateway) answering late is not a dead
    // one, and ejecting healthy engines is an outage of its own.
    let timeout = shared
        .options
        .health_interval
        .clamp(Duration::from_secs(1), Duration::from_secs(5));
    let checks = backends
        .iter()
        .map(|b| async move { (b, b.check(timeout).await) });
    let mut admitted = false;
    for (backend, result) in join_all(checks).await {
        match result {
            Ok(()) => admitted |= backend.admit(),
            Err(why) => backend.eject(&why),
        }
    }
    if admitted {
        shared.refresh.notify_one();
    }
}

/// Reads every healthy backend's repository index, fetches the configs of versions new
/// to the gateway, and rebuilds the routing table.
///
/// An ejected backend keeps its last index: its models stay known (a request for them is
/// UNAVAILABLE while no engine is healthy, not an unknown model) but no request goes there.
pub(crate) async fn refresh_catalog(shared: &Shared) {
    let all = shared.backends.read().clone();
    let (backends, ejected): (Vec<Arc<Backend>>, Vec<Arc<Backend>>) =
        all.into_iter().partition(|b| b.is_healthy());
    let timeout = shared
        .options
        .discovery_interval
        .max(Duration::from_secs(2));
    let indexes = backends.iter().map(|b| async move {
        let mut raw = b.client().raw();
        let call = raw.repository_index(b.client().request(RepositoryIndexRequest {
            repository_name: String::new(),
            ready: false,
        }));
        let result = tokio::time::timeout(timeout, call).await;
        (b.clone(), result)
    });
    let mut reports: Vec<Report> = ejected
        .into_iter()
        .filter_map(|backend| {
            let index = backend.last_index()?;
            Some(Report { backend, index })
        })
        .collect();
    for (backend, result) in join_all(indexes).await {
        match result {
            Ok(Ok(index)) => {
                let index: Vec<RepositoryEntry> = index
                    .into_inner()
                    .models
                    .into_iter()
                    .map(|m| RepositoryEntry {
                        name: m.name,
                        version: m.version,
                        state: m.state,
                        reason: m.reason,
                    })
                    .collect();
                backend.set_last_index(index.clone());
                reports.push(Report { backend, index });
            }
            Ok(Err(status)) => backend.record_failure(shared.options.eject_after, status.message()),
            Err(_) => backend.eject("no repository index within the discovery interval"),
        }
    }
    let fetches = shared.catalog.missing_specs(&reports).into_iter().map(
        |((name, version), backend)| async move {
            let config = backend.client().model_config(&name, Some(version)).await;
            (name, version, config)
        },
    );
    for (name, version, config) in join_all(fetches).await {
        let spec = config
            .map_err(|e| e.to_string())
            .and_then(|c| ModelSpec::from_config(c).map_err(|e| e.to_string()));
        match spec {
            Ok(spec) => shared.catalog.add_spec((name, version), spec),
            Err(e) => {
                tracing::warn!(model = %name, version, error = %e, "cannot learn the model's config; not routed until it can")
            }
        }
    }
    shared.catalog.rebuild(&reports);
}
