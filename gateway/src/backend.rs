//! One engine the gateway forwards to: its connection, the requests it has in flight, and
//! its health (the circuit breaker).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nereid_engine::RepositoryEntry;
use nereid_grpc::client::{ClientOptions, GrpcClient};
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::metrics;

/// An engine's gRPC address and the state the router reads on every request.
#[derive(Debug)]
pub(crate) struct Backend {
    /// `host:port`, also the `backend` label of the gateway's metrics.
    pub(crate) address: String,
    client: GrpcClient,
    health: HealthClient<Channel>,
    inflight: AtomicUsize,
    /// Failures since the last success; at the threshold the backend is ejected.
    failures: AtomicU32,
    healthy: AtomicBool,
    /// The repository index it last reported.
    last_index: Mutex<Option<Vec<RepositoryEntry>>>,
}

impl Backend {
    /// A backend over a connection made on first use (and remade after a failure). Starts
    /// ejected: the first successful health check admits it.
    pub(crate) fn new(address: &str, options: &ClientOptions) -> Result<Arc<Self>, String> {
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| format!("bad backend address '{address}': {e}"))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            // A partitioned engine answers nothing, not even a reset: HTTP/2 pings find it,
            // so calls already sent there fail (and are retried) within seconds instead of
            // waiting for TCP to give up.
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true);
        if let Some(tls) = &options.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("backend '{address}': bad TLS configuration: {e}"))?;
        }
        let channel = endpoint.connect_lazy();
        metrics::set_healthy(address, false);
        Ok(Arc::new(Self {
            address: address.to_string(),
            client: GrpcClient::from_channel(channel.clone(), options),
            health: HealthClient::new(channel),
            inflight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            healthy: AtomicBool::new(false),
            last_index: Mutex::new(None),
        }))
    }

    /// The KServe client of this engine.
    pub(crate) fn client(&self) -> &GrpcClient {
        &self.client
    }

    /// Requests this gateway has in flight there: the load the balancer compares.
    pub(crate) fn load(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Counts a request in until the ticket drops.
    pub(crate) fn begin(self: &Arc<Self>) -> Ticket {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        metrics::add_inflight(&self.address, 1.0);
        Ticket {
            backend: self.clone(),
        }
    }

    /// The repository index it last reported, if any.
    pub(crate) fn last_index(&self) -> Option<Vec<RepositoryEntry>> {
        self.last_index.lock().clone()
    }

    /// Remembers the index it reported.
    pub(crate) fn set_last_index(&self, index: Vec<RepositoryEntry>) {
        *self.last_index.lock() = Some(index);
    }

    /// Whether requests may go there.
    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// An answer came back: the failure streak ends.
    pub(crate) fn record_success(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// A connection-level failure; ejects the backend once `eject_after` come in a row.
    pub(crate) fn record_failure(&self, eject_after: u32, why: &str) {
        let streak = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if streak >= eject_after.max(1) {
            self.eject(why);
        }
    }

    /// Stops routing there until a health check passes (the breaker opens).
    pub(crate) fn eject(&self, why: &str) {
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(backend = %self.address, reason = why, "backend ejected");
            metrics::ejected(&self.address);
            metrics::set_healthy(&self.address, false);
        }
    }

    /// Routes there again (the breaker closes). True when it was ejected.
    pub(crate) fn admit(&self) -> bool {
        self.failures.store(0, Ordering::Relaxed);
        let was = self.healthy.swap(true, Ordering::AcqRel);
        if !was {
            tracing::info!(backend = %self.address, "backend admitted");
            metrics::set_healthy(&self.address, true);
        }
        !was
    }

    /// Asks the engine's grpc.health.v1 service whether it serves (it stops serving while
    /// it drains); no answer within `timeout` is a no.
    pub(crate) async fn check(&self, timeout: Duration) -> Result<(), String> {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        request.set_timeout(timeout);
        let mut health = self.health.clone();
        let answer = tokio::time::timeout(timeout, health.check(request))
            .await
            .map_err(|_| format!("no health answer within {timeout:?}"))?
            .map_err(|status| format!("health check failed: {}", status.message()))?;
        match answer.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(format!("the engine reports {}", other.as_str_name())),
        }
    }
}

/// A request in flight on a backend.
pub(crate) struct Ticket {
    backend: Arc<Backend>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.backend.inflight.fetch_sub(1, Ordering::Relaxed);
        metrics::add_inflight(&self.backend.address, -1.0);
    }
}

/// Power of two choices: of two distinct backends drawn at random, the one with fewer
/// requests in flight. Near the best of a full scan at the cost of two reads, and two
/// gateways never herd onto the same least-loaded engine.
pub(crate) fn pick_two<'a>(candidates: &'a [&'a Arc<Backend>]) -> Option<&'a Arc<Backend>> {
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0]),
        n => {
            let first = fastrand::usize(..n);
            let second = (first + 1 + fastrand::usize(..n - 1)) % n;
            let (a, b) = (candidates[first], candidates[second]);
            Some(if b.load() < a.load() { b } else { a })
        }
    }
}

/// Rendezvous hashing: the backend whose hash with `key` is highest. The same key goes to
/// the same backend while that backend is a candidate, and only the keys of a backend that
/// leaves move. A sequence's requests must all reach the engine that holds its state.
pub(crate) fn pick_by_key<'a>(
    candidates: &'a [&'a Arc<Backend>],
    key: &str,
) -> Option<&'a Arc<Backend>> {
    use std::hash::{Hash, Hasher};
    candidates.iter().copied().max_by_key(|b| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (b.address.as_str(), key).hash(&mut hasher);
        hasher.finish()
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A backend for unit tests (never dialled: its connection is lazy).
    pub(crate) fn backend(address: &str) -> Arc<Backend> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        Backend::new(address, &ClientOptions::default()).unwrap()
    }

    #[test]
    fn a_key_stays_on_its_backend_until_that_backend_leaves() {
        let all: Vec<Arc<Backend>> = (1..=4)
            .map(|port| backend(&format!("127.0.0.1:{port}")))
            .collect();
        let refs: Vec<&Arc<Backend>> = all.iter().collect();
        let keys: Vec<String> = (0..64).map(|k| format!("seq-{k}")).collect();
        let first: Vec<String> = keys
            .iter()
            .map(|k| pick_by_key(&refs, k).unwrap().address.clone())
            .collect();
        // Every backend gets some of the keys, and asking again gives the same answer.
        for b in &all {
            assert!(first.contains(&b.address), "{} got no key", b.address);
        }
        for (k, chosen) in keys.iter().zip(&first) {
            assert_eq!(&pick_by_key(&refs, k).unwrap().address, chosen);
        }
        // Without the first backend, only its keys move.
        let rest: Vec<&Arc<Backend>> = all[1..].iter().collect();
        for (k, chosen) in keys.iter().zip(&first) {
            let now = &pick_by_key(&rest, k).unwrap().address;
            if chosen != &all[0].address {
                assert_eq!(now, chosen);
            } else {
                assert_ne!(now, chosen);
            }
        }
    }

    #[test]
    fn starts_ejected_and_ejects_after_a_streak_of_failures() {
        let b = backend("127.0.0.1:1");
        assert!(!b.is_healthy());
        assert!(b.admit());
        assert!(!b.admit(), "admitting twice reports no change");
        b.record_failure(3, "x");
        b.record_failure(3, "x");
        assert!(b.is_healthy());
        b.record_success();
        b.record_failure(3, "x");
        b.record_failure(3, "x");
        assert!(b.is_healthy(), "a success ends the streak");
        b.record_failure(3, "x");
        assert!(!b.is_healthy());
    }

    #[test]
    fn two_choices_prefer_the_less_loaded() {
        let (idle, busy) = (backend("127.0.0.1:1"), backend("127.0.0.1:2"));
        let _tickets: Vec<_> = (0..5).map(|_| busy.begin()).collect();
        assert_eq!(busy.load(), 5);
        for _ in 0..50 {
            let candidates = [&idle, &busy];
            assert_eq!(pick_two(&candidates).unwrap().address, idle.address);
        }
        drop(_tickets);
        assert_eq!(busy.load(), 0);
        assert!(pick_two(&[]).is_none());
    }
}
