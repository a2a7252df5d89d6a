//! `grpc.health.v1.Health` answered live from the engine, so Kubernetes gRPC probes and
//! `grpc_health_probe` see the same readiness as `ServerReady` and `ModelReady`.
//!
//! Service names: `""` (and `inference.GRPCInferenceService`) is the server's readiness;
//! any other name is a model's (its newest version). A name that is neither is unknown:
//! NOT_FOUND for `Check` and SERVICE_UNKNOWN for `Watch`, as the health protocol says.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use nereid_engine::Engine;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::stop::Stop;

/// How often a `Watch` re-reads readiness. Readiness changes rarely (model loads, shutdown)
/// and the engine has no change notification, so a cheap poll is enough.
const WATCH_POLL: Duration = Duration::from_millis(250);

/// The health service over an engine.
#[derive(Clone)]
pub struct HealthService {
    engine: Engine,
    stop: Stop,
}

impl HealthService {
    /// A health service answering from `engine`.
    pub fn new(engine: Engine) -> Self {
        Self::with_stop(engine, Stop::never())
    }

    pub(crate) fn with_stop(engine: Engine, stop: Stop) -> Self {
        Self { engine, stop }
    }

    /// The status of `service`, or `None` when it names neither the server nor a model.
    fn status(&self, service: &str) -> Option<ServingStatus> {
        let serving = |ok: bool| {
            if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        if self.stop.is_set() {
            return Some(ServingStatus::NotServing);
        }
        if service.is_empty() || service == nereid_proto::SERVICE_NAME {
            return Some(serving(self.engine.is_ready()));
        }
        if self.engine.model_ready(service, None) {
            return Some(ServingStatus::Serving);
        }
        // Known but not ready (loading, failed, unloaded) is NOT_SERVING, not unknown.
        let known = self
            .engine
            .repository_index(false)
            .iter()
            .any(|e| e.name == service);
        known.then_some(ServingStatus::NotServing)
    }
}

fn reply(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

/// The response stream of `Watch`.
pub(crate) type WatchStream =
    Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = req.into_inner().service;
        match self.status(&service) {
            Some(status) => Ok(Response::new(reply(status))),
            None => Err(Status::not_found(format!(
                "unknown service '{service}': ask for \"\" (the server) or a model name"
            ))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = req.into_inner().service;
        let this = self.clone();
        let mut stop = self.stop.clone();
        Ok(Response::new(Box::pin(async_stream::stream! {
            let mut last = None;
            let mut poll = tokio::time::interval(WATCH_POLL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let status = this.status(&service).unwrap_or(ServingStatus::ServiceUnknown);
                if last != Some(status) {
                    last = Some(status);
                    yield Ok(reply(status));
                }
                // At shutdown the watcher has been told NOT_SERVING: end the call so
                // tonic's graceful shutdown is not held up by it.
                if this.stop.is_set() || !this.engine.is_live() {
                    break;
                }
                tokio::select! {
                    _ = poll.tick() => {}
                    () = stop.wait() => {}
                }
            }
        })))
    }
}
