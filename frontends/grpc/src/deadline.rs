//! The client's `grpc-timeout` as an engine deadline.
//!
//! tonic's server already cancels a unary call when its `grpc-timeout` passes, but it
//! answers CANCELLED ("Timeout expired"). To answer DEADLINE_EXCEEDED (and count the
//! request as timed out, not cancelled) each handler races its own timer set slightly
//! *before* tonic's. Both timers must start from the same instant, so an interceptor stamps
//! the arrival time before the body is decoded (decoding a large body takes a while).

use std::future::Future;
use std::time::{Duration, Instant};

use nereid_engine::EngineError;
use tonic::{Request, Status};

use crate::status::to_status;

/// How much earlier than tonic's own timer the handler gives up, so its
/// DEADLINE_EXCEEDED always wins the race (tokio timers tick in milliseconds).
const MARGIN: Duration = Duration::from_millis(1);

/// When a call arrived, stamped by [`stamp_arrival`] into the request's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival(pub Instant);

/// Interceptor recording the arrival time of every call.
pub(crate) fn stamp_arrival(mut req: Request<()>) -> Result<Request<()>, Status> {
    req.extensions_mut().insert(Arrival(Instant::now()));
    Ok(req)
}

/// A call's deadline, if its client set one.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Deadline {
    at: Option<Instant>,
}

impl Deadline {
    /// The deadline of a call: arrival plus its `grpc-timeout`.
    pub(crate) fn of<T>(req: &Request<T>) -> Self {
        let arrived = req.extensions().get::<Arrival>().map_or_else(Instant::now, |a| a.0);
        let timeout = req.metadata().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_timeout);
        Self { at: timeout.and_then(|t| arrived.checked_add(t)) }
    }

    /// The instant to hand the engine as `InferRequest.deadline`.
    pub(crate) fn instant(&self) -> Option<Instant> {
        self.at
    }

    /// Runs an engine call, answering DEADLINE_EXCEEDED when the deadline passes first.
    /// The engine future is dropped then, which takes its request out of the queue.
    pub(crate) async fn run<T>(&self, call: impl Future<Output = Result<T, EngineError>>) -> Result<T, Status> {
        let Some(at) = self.at else { return call.await.map_err(to_status) };
        let give_up = at.checked_sub(MARGIN).unwrap_or(at);
        match tokio::time::timeout_at(give_up.into(), call).await {
            Ok(result) => result.map_err(to_status),
            Err(_) => Err(to_status(expired())),
        }
    }

    /// Waits until the deadline passes (forever without one).
    pub(crate) async fn expired(&self) {
        match self.at {
            Some(at) => tokio::time::sleep_until(at.checked_sub(MARGIN).unwrap_or(at).into()).await,
            None => std::future::pending().await,
        }
    }
}

/// The error of a call whose deadline passed.
pub(crate) fn expired() -> EngineError {
    EngineError::DeadlineExceeded("the call's deadline (grpc-timeout) passed before the response was ready".into())
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
        assert_eq!(parse_timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse_timeout("1n"), Some(Duration::from_nanos(1)));
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn a_passed_deadline_is_deadline_exceeded() {
        let mut req = Request::new(());
        req.metadata_mut().insert("grpc-timeout", "1n".parse().unwrap());
        let d = Deadline::of(&req);
        assert!(d.instant().is_some());
        let status = d.run(std::future::pending::<Result<(), EngineError>>()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        let none = Deadline::of(&Request::new(()));
        assert_eq!(none.run(async { Ok::<_, EngineError>(5) }).await.unwrap(), 5);
    }
}
