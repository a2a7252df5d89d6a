//! The inference service's door: the API keys and the restricted API groups
//! (`--grpc-restricted-protocol`), checked on the method's path before tonic decodes
//! anything. A tower service rather than a tonic interceptor, which cannot see the method.

use std::task::{Context, Poll};

use nereid_engine::trace::{Access, REQUEST_ID, TRACEPARENT};
use nereid_engine::Origin;
use nereid_kserve::{ApiGroup, ApiKeys, Restrictions, UNAUTHORIZED};
use tonic::body::Body;
use tonic::codegen::http::{HeaderValue, Request, Response};
use tonic::server::NamedService;
use tower::Service;

/// The path prefix of the inference service's methods.
const SERVICE_PREFIX: &str = "/inference.GRPCInferenceService/";

/// The KServe v2 method of a path under `inference.GRPCInferenceService`, by group.
pub(crate) fn api_group(path: &str) -> Option<ApiGroup> {
    let method = path.strip_prefix(SERVICE_PREFIX)?;
    Some(match method {
        "ServerLive" | "ServerReady" | "ModelReady" => ApiGroup::Health,
        "ServerMetadata" | "ModelMetadata" => ApiGroup::Metadata,
        "ModelInfer" | "ModelStreamInfer" => ApiGroup::Inference,
        "ModelConfig" => ApiGroup::ModelConfig,
        "ModelStatistics" => ApiGroup::Statistics,
        "RepositoryIndex" | "RepositoryModelLoad" | "RepositoryModelUnload" => {
            ApiGroup::ModelRepository
        }
        "TraceSetting" => ApiGroup::Trace,
        "LogSettings" => ApiGroup::Logging,
        "SystemSharedMemoryStatus"
        | "SystemSharedMemoryRegister"
        | "SystemSharedMemoryUnregister"
        | "CudaSharedMemoryStatus"
        | "CudaSharedMemoryRegister"
        | "CudaSharedMemoryUnregister" => ApiGroup::SharedMemory,
        _ => return None,
    })
}

/// The inference service's answer, or the guard's own refusal.
type Guard<F, E> = futures::future::Either<F, std::future::Ready<Result<Response<Body>, E>>>;

/// Wraps the inference service: a call without an accepted API key is UNAUTHENTICATED,
/// one to a restricted group without its header PERMISSION_DENIED, one to a method the
/// service does not have UNIMPLEMENTED naming it (tonic's own answer has no message).
#[derive(Clone)]
pub(crate) struct Guarded<S> {
    pub(crate) inner: S,
    pub(crate) keys: ApiKeys,
    pub(crate) restrictions: Restrictions,
    pub(crate) access_log: bool,
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<Request<B>> for Guarded<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Echo<Guard<S::Future, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    /// Also tags the call with its [`Origin`] (request id, trace context) for the service,
    /// and its answer's headers with the request id.
    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let headers = request.headers();
        let origin = Origin::received(
            headers.get(REQUEST_ID).map(|v| v.as_bytes()),
            headers.get(TRACEPARENT).map(|v| v.as_bytes()),
        );
        let request_id = HeaderValue::from_str(&origin.request_id).ok();
        let access = self.access_log.then(|| AccessStart {
            started: std::time::Instant::now(),
            rpc: request.uri().path().to_string(),
            origin: origin.clone(),
        });
        request.extensions_mut().insert(origin);
        Echo {
            inner: self.guard(request),
            request_id,
            access,
        }
    }
}

impl<S> Guarded<S> {
    fn guard<B>(&mut self, request: Request<B>) -> Guard<S::Future, S::Error>
    where
        S: Service<Request<B>, Response = Response<Body>>,
    {
        let headers = request.headers();
        let refusal = if !self.keys.allows(
            headers
                .get(tonic::codegen::http::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        ) {
            Some(tonic::Status::unauthenticated(UNAUTHORIZED))
        } else {
            let path = request.uri().path();
            match api_group(path) {
                Some(group) => self
                    .restrictions
                    .check(group, |name| headers.get(name).map(|v| v.as_bytes()))
                    .err()
                    .map(tonic::Status::permission_denied),
                None => Some(tonic::Status::unimplemented(format!(
                    "unknown method '{}' of service 'inference.GRPCInferenceService'",
                    path.strip_prefix(SERVICE_PREFIX).unwrap_or(path)
                ))),
            }
        };
        match refusal {
            Some(status) => {
                futures::future::Either::Right(std::future::ready(Ok(status.into_http())))
            }
            None => futures::future::Either::Left(self.inner.call(request)),
        }
    }
}

pin_project_lite::pin_project! {
    /// An answer, with the request id it answers in its headers.
    pub(crate) struct Echo<F> {
        #[pin]
        inner: F,
        request_id: Option<HeaderValue>,
        access: Option<AccessStart>,
    }
}

/// What the access log line of a call needs from its arrival.
pub(crate) struct AccessStart {
    started: std::time::Instant,
    rpc: String,
    origin: Origin,
}

/// A gRPC code's canonical name (`OK`, `INVALID_ARGUMENT`, ...).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The model a call named, set by the service on its answer for the access log.
#[derive(Debug, Clone)]
pub(crate) struct CalledModel(pub(crate) String);

impl<F, E> std::future::Future for Echo<F>
where
    F: std::future::Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        if let Some(id) = this.request_id.take() {
            response.headers_mut().insert(REQUEST_ID, id);
        }
        if let Some(a) = this.access.take() {
            // A call that failed before its answer began carries its status in the head;
            // otherwise the status comes in the trailers, after this line: the head says OK.
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(tonic::Code::Ok, tonic::Code::from);
            let model = response.extensions().get::<CalledModel>();
            Access {
                door: "grpc",
                route: a.rpc.rsplit('/').next().unwrap_or(&a.rpc),
                model: model.map(|m| m.0.as_str()),
                status: code_name(code),
                duration: a.started.elapsed(),
                bytes_in: None,
                bytes_out: None,
                origin: &a.origin,
            }
            .log();
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_of_the_service_has_its_group() {
        for (method, group) in [
            ("ServerLive", ApiGroup::Health),
            ("ModelMetadata", ApiGroup::Metadata),
            ("ModelStreamInfer", ApiGroup::Inference),
            ("ModelConfig", ApiGroup::ModelConfig),
            ("ModelStatistics", ApiGroup::Statistics),
            ("RepositoryModelLoad", ApiGroup::ModelRepository),
            ("CudaSharedMemoryRegister", ApiGroup::SharedMemory),
            ("TraceSetting", ApiGroup::Trace),
            ("LogSettings", ApiGroup::Logging),
        ] {
            assert_eq!(
                api_group(&format!("/inference.GRPCInferenceService/{method}")),
                Some(group)
            );
        }
        assert_eq!(api_group("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            api_group("/inference.GRPCInferenceService/NoSharedMemory"),
            None
        );
    }
}
