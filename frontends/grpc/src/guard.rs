//! The inference service's door: the API keys and the restricted API groups
//! (`--grpc-restricted-protocol`), checked on the method's path before tonic decodes
//! anything. A tower service rather than a tonic interceptor, which cannot see the method.

use std::task::{Context, Poll};

use nereid_kserve::{ApiGroup, ApiKeys, Restrictions, UNAUTHORIZED};
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::server::NamedService;
use tower::Service;

/// The KServe v2 method of a path under `inference.GRPCInferenceService`, by group.
pub(crate) fn api_group(path: &str) -> Option<ApiGroup> {
    let method = path.strip_prefix("/inference.GRPCInferenceService/")?;
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
        m if m.contains("SharedMemory") => ApiGroup::SharedMemory,
        _ => return None,
    })
}

/// Wraps the inference service: a call without an accepted API key is UNAUTHENTICATED,
/// one to a restricted group without its header PERMISSION_DENIED.
#[derive(Clone)]
pub(crate) struct Guarded<S> {
    pub(crate) inner: S,
    pub(crate) keys: ApiKeys,
    pub(crate) restrictions: Restrictions,
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
    type Future =
        futures::future::Either<S::Future, std::future::Ready<Result<Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let headers = request.headers();
        let refusal = if !self.keys.allows(
            headers
                .get(tonic::codegen::http::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        ) {
            Some(tonic::Status::unauthenticated(UNAUTHORIZED))
        } else if let Some(group) = api_group(request.uri().path()) {
            self.restrictions
                .check(group, |name| headers.get(name).map(|v| v.as_bytes()))
                .err()
                .map(tonic::Status::permission_denied)
        } else {
            None
        };
        match refusal {
            Some(status) => {
                futures::future::Either::Right(std::future::ready(Ok(status.into_http())))
            }
            None => futures::future::Either::Left(self.inner.call(request)),
        }
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
    }
}
