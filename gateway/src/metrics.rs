//! The gateway's own Prometheus series, named in one place. Every series has the engine's
//! address as its `backend` label, so a dashboard can put the gateway's view of an engine
//! beside the engine's own metrics.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

/// Prefix of every gateway series (the latency histogram gets buckets under it).
pub const PREFIX: &str = "nereid_gateway_";

/// Forwarded attempts by backend and outcome: `ok`, the gRPC code's name (`Unavailable`,
/// `InvalidArgument`, ...) or `ClientGone`.
pub(crate) fn request(backend: &str, outcome: &str, latency: Duration) {
    counter!("nereid_gateway_requests_total", "backend" => backend.to_string(), "outcome" => outcome.to_string())
        .increment(1);
    histogram!("nereid_gateway_backend_latency_seconds", "backend" => backend.to_string())
        .record(latency.as_secs_f64());
}

/// A request sent again, to another backend, after a failure that left it unanswered.
pub(crate) fn retried() {
    counter!("nereid_gateway_retries_total").increment(1);
}

/// A backend taken out of rotation.
pub(crate) fn ejected(backend: &str) {
    counter!("nereid_gateway_ejections_total", "backend" => backend.to_string()).increment(1);
}

/// Whether a backend takes requests (1) or is ejected or gone (0).
pub(crate) fn set_healthy(backend: &str, healthy: bool) {
    gauge!("nereid_gateway_backend_healthy", "backend" => backend.to_string()).set(if healthy {
        1.0
    } else {
        0.0
    });
}

/// Requests this gateway has in flight on a backend: one more (`+1`) or one fewer (`-1`).
/// Moved, not set, so concurrent requests cannot leave a stale count behind.
pub(crate) fn add_inflight(backend: &str, delta: f64) {
    gauge!("nereid_gateway_backend_inflight", "backend" => backend.to_string()).increment(delta);
}

/// A backend gone from discovery has nothing in flight here any more.
pub(crate) fn clear_inflight(backend: &str) {
    gauge!("nereid_gateway_backend_inflight", "backend" => backend.to_string()).set(0.0);
}

/// Backends known (discovered), healthy or not.
pub(crate) fn set_backends(known: usize) {
    gauge!("nereid_gateway_backends").set(known as f64);
}
