//! The client's `grpc-timeout` as an engine deadline.
//!
//! tonic's server already ends a call when its `grpc-timeout` passes, but it answers
//! CANCELLED ("Timeout expired"). [`DeadlineLayer`], inside tonic's timer, races every call
//! against its own timer set slightly *before* tonic's, so the client gets
//! DEADLINE_EXCEEDED, whether the call was still receiving its body or waiting in the
//! engine's queue; dropping the losing call takes its request out of the queue. The layer
//! also stamps the arrival time into the request, from which handlers compute the engine
//! deadline (`InferRequest.deadline`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use nereid_engine::EngineError;
use tonic::codegen::http;
use tonic::Request;

use crate::status::to_status;

/// How much earlier than tonic's own timer the layer gives up, so its DEADLINE_EXCEEDED
/// always wins the race (tokio timers tick in milliseconds, and the two timers start a few
/// microseconds apart).
const MARGIN: Duration = Duration::from_millis(1);

/// When a call arrived, stamped by [`DeadlineLayer`] into the request's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival(pub Instant);

/// A call's deadline, if its client set one.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Deadline {
    at: Option<Instant>,
}

impl Deadline {
    /// The deadline of a call: arrival plus its `grpc-timeout`.
    pub(crate) fn of<T>(req: &Request<T>) -> Self {
        let arrived = req
            .extensions()
            .get::<Arrival>()
            .map_or_else(Instant::now, |a| a.0);
        let timeout = req
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_timeout);
        Self {
            at: timeout.and_then(|t| arrived.checked_add(t)),
        }
    }

    /// The instant to hand the engine as `InferRequest.deadline`.
    pub(crate) fn instant(&self) -> Option<Instant> {
        self.at
    }

    /// Waits until the deadline passes (forever without one).
    pub(crate) async fn expired(&self) {
        match self.at {
            Some(at) => tokio::time::sleep_until(give_up(at).into()).await,
            None => std::future::pending().await,
        }
    }
}

/// When to stop waiting for a call due at `at`.
fn give_up(at: Instant) -> Instant {
    at.checked_sub(MARGIN).unwrap_or(at)
}

/// Tower layer answering DEADLINE_EXCEEDED when a call's `grpc-timeout` passes before its
/// response (headers) is ready, and stamping each call's [`Arrival`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService { inner }
    }
}

/// The service [`DeadlineLayer`] makes.
#[derive(Debug, Clone)]
pub(crate) struct DeadlineService<S> {
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

impl<S, B> tower::Service<http::Request<B>> for DeadlineService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let arrived = Instant::now();
        req.extensions_mut().insert(Arrival(arrived));
        let timeout = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_timeout);
        let call = self.inner.call(req);
        let Some(at) = timeout.and_then(|t| arrived.checked_add(t)) else {
            return Box::pin(call);
        };
        Box::pin(async move {
            tokio::select! {
                biased;
                response = call => response,
                () = tokio::time::sleep_until(give_up(at).into()) => Ok(to_status(expired()).into_http()),
            }
        })
    }
}

/// The error of a call whose deadline passed.
pub(crate) fn expired() -> EngineError {
    EngineError::DeadlineExceeded(
        "the call's deadline (grpc-timeout) passed before the response was ready".into(),
    )
}

/// Parses a `grpc-timeout` value: at most 8 digits and a unit (H, M, S, m, u, n), as the
/// gRPC over HTTP/2 specification writes it.
pub(crate) fn parse_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_rejects_junk() {
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_timeout("1n"), Some(Duration::from_nanos(1)));
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn a_passed_deadline_is_deadline_exceeded() {
        use tower::{Service, ServiceExt};
        let never = tower::service_fn(|_: http::Request<()>| {
            std::future::pending::<
                Result<http::Response<tonic::body::Body>, std::convert::Infallible>,
            >()
        });
        let mut svc = tower::Layer::layer(&DeadlineLayer, never);
        let req = http::Request::builder()
            .header("grpc-timeout", "1n")
            .body(())
            .unwrap();
        let resp = svc.ready().await.unwrap().call(req).await.unwrap();
        let status = tonic::Status::from_header_map(resp.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);

        let mut req = Request::new(());
        req.metadata_mut()
            .insert("grpc-timeout", "5S".parse().unwrap());
        assert!(Deadline::of(&req).instant().is_some());
        assert!(Deadline::of(&Request::new(())).instant().is_none());
    }
}
