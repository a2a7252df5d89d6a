//! One request's way through the gateway: pick a backend, send it there over KServe v2
//! gRPC (a stream for decoupled models), and try another backend when the first could not
//! answer and nothing has reached the client yet.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use nereid_engine::{EngineError, InferRequest, InferResponse, ParamValue, Reply};
use nereid_grpc::client::ClientError;
use tonic::Code;

use crate::backend::{pick_by_key, pick_two, Backend};
use crate::{metrics, Shared};

/// How one attempt on one backend ended.
enum Attempt {
    /// The engine answered (success or its own error): pass it on.
    Answered(Result<InferResponse, EngineError>),
    /// The engine could not be reached or refused before answering; nothing was sent to
    /// the client, so another backend may take the request.
    Unanswered(tonic::Status),
    /// The client went away; dropping the call cancelled the engine's work.
    ClientGone,
}

/// Forwards a request on a task of its own and answers `reply` with the outcome.
/// Requests of one sequence are forwarded one after the other, in the order they came:
/// the engine must see them in that order.
pub(crate) fn spawn(shared: Arc<Shared>, request: InferRequest, reply: Reply) {
    let turn = request
        .sequence_key()
        .map(|key| shared.sequences.lock().next(key, request.ends_sequence()));
    tokio::spawn(async move {
        let done = match turn {
            Some((after, done)) => {
                if let Some(previous) = after {
                    let _ = previous.await;
                }
                Some(done)
            }
            None => None,
        };
        forward(shared, request, reply).await;
        drop(done);
    });
}

async fn forward(shared: Arc<Shared>, request: InferRequest, mut reply: Reply) {
    let mut tried: Vec<Arc<Backend>> = Vec::new();
    // The last engine's own refusal (a full queue, say): what the client gets when no
    // other engine is left to try.
    let mut refused: Option<tonic::Status> = None;
    loop {
        let (decoupled, serving) = shared
            .catalog
            .route(&request.model_name, request.model_version);
        let untried: Vec<&Arc<Backend>> = serving
            .iter()
            .filter(|b| !tried.iter().any(|t| Arc::ptr_eq(t, b)))
            .collect();
        let healthy: Vec<&Arc<Backend>> =
            untried.iter().copied().filter(|b| b.is_healthy()).collect();
        // With every engine of the model ejected, try them anyway (Envoy's panic routing):
        // ejection can be wrong (checks late on a busy machine), and a request sent to an
        // engine that is really gone fails as it would have failed here.
        let candidates = if healthy.is_empty() && tried.is_empty() {
            untried
        } else {
            healthy
        };
        // A sequence's engine holds its state: all its requests go there.
        let picked = match request.sequence_key() {
            Some(key) => pick_by_key(&candidates, &key),
            None => pick_two(&candidates),
        };
        let Some(backend) = picked.cloned() else {
            if let Some(status) = refused {
                reply
                    .finish(Err(nereid_grpc::status::from_status(&status)))
                    .await;
                return;
            }
            let error = EngineError::unavailable(format!(
                "no healthy engine serves model '{}' now ({} serve it, {} tried)",
                request.model_name,
                serving.len(),
                tried.len()
            ));
            reply.finish(Err(error)).await;
            return;
        };
        let ticket = backend.begin();
        let started = Instant::now();
        let mut sent = request.clone();
        sent.origin.trace_parent = reply.begin_attempt(&backend.address, &request);
        let attempt = if decoupled {
            stream(&backend, sent, &mut reply).await
        } else {
            unary(&backend, sent, &mut reply).await
        };
        reply.end_attempt(match &attempt {
            Attempt::Answered(Ok(_)) => None,
            Attempt::Answered(Err(e)) => Some(e.to_string()),
            Attempt::Unanswered(status) => Some(status.message().to_string()),
            Attempt::ClientGone => Some("the client went away".into()),
        });
        drop(ticket);
        let elapsed = started.elapsed();
        match attempt {
            Attempt::Answered(outcome) => {
                backend.record_success();
                let label = match &outcome {
                    Ok(_) => "ok".to_string(),
                    Err(e) => format!("{:?}", nereid_grpc::status::code(e)),
                };
                metrics::request(&backend.address, &label, elapsed);
                reply.finish(outcome).await;
                return;
            }
            Attempt::ClientGone => {
                metrics::request(&backend.address, "ClientGone", elapsed);
                return;
            }
            Attempt::Unanswered(status) => {
                metrics::request(&backend.address, &format!("{:?}", status.code()), elapsed);
                if broken_connection(&status) {
                    // The engine went away: no point offering it the next request before a
                    // health check has seen it back.
                    backend.eject(status.message());
                } else {
                    // The engine answered: it is alive, only unable to take this request
                    // (a full queue, draining); its health checks say when it is gone.
                    refused = Some(status.clone());
                }
                if tried.len() as u32 >= shared.options.retries {
                    reply
                        .finish(Err(nereid_grpc::status::from_status(&status)))
                        .await;
                    return;
                }
                tracing::debug!(backend = %backend.address, error = %status.message(), "retrying on another engine");
                metrics::retried();
                tried.push(backend);
            }
        }
    }
}

/// A failure that leaves the request unanswered, so another engine may take it: the
/// engine said UNAVAILABLE (it is shutting down, say), or the failure is the connection's
/// own (refused, reset, a body cut short), which tonic reports with the transport error as
/// its source whatever the code, while a status the engine sent has none. Running an
/// inference twice has no effect beyond its cost, so a request the engine may have
/// computed but never answered is safe to send again.
fn unanswered(status: &tonic::Status) -> bool {
    status.code() == Code::Unavailable || broken_connection(status)
}

/// Whether the connection failed (rather than the engine answering with an error).
fn broken_connection(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

async fn unary(backend: &Backend, request: InferRequest, reply: &mut Reply) -> Attempt {
    let call = backend.client().infer(request);
    tokio::select! {
        result = call => match result {
            Ok(response) => Attempt::Answered(Ok(response)),
            Err(ClientError::Status(status)) if unanswered(&status) => Attempt::Unanswered(status),
            Err(e) => Attempt::Answered(Err(e.to_engine_error())),
        },
        () = reply.closed() => Attempt::ClientGone,
    }
}

/// A decoupled model's responses, passed on as they come. Once one has reached the
/// client the request can no longer move to another engine.
async fn stream(backend: &Backend, mut request: InferRequest, reply: &mut Reply) -> Attempt {
    // The engine always marks the end, so a stream cut short is told apart from one that
    // ended; whether the client sees an empty final response is its own door's choice.
    request.parameters.insert(
        nereid_grpc::convert::ENABLE_EMPTY_FINAL.into(),
        ParamValue::Bool(true),
    );
    let (model_name, id, origin) = (
        request.model_name.clone(),
        request.id.clone(),
        request.origin.clone(),
    );
    let call = backend
        .client()
        .stream_infer(&origin, futures::stream::once(async move { request }));
    let opened = tokio::select! {
        opened = call => opened,
        () = reply.closed() => return Attempt::ClientGone,
    };
    let mut responses = match opened {
        Ok(responses) => Box::pin(responses),
        Err(ClientError::Status(status)) if unanswered(&status) => {
            return Attempt::Unanswered(status)
        }
        Err(e) => return Attempt::Answered(Err(e.to_engine_error())),
    };
    let mut sent = false;
    loop {
        let next = tokio::select! {
            next = responses.next() => next,
            () = reply.closed() => return Attempt::ClientGone,
        };
        match next {
            Some(Ok(response)) if response.is_final => return Attempt::Answered(Ok(response)),
            Some(Ok(response)) => {
                sent = true;
                if !reply.send(response).await {
                    return Attempt::ClientGone;
                }
            }
            Some(Err(ClientError::Status(status))) if !sent && unanswered(&status) => {
                return Attempt::Unanswered(status)
            }
            Some(Err(e)) => return Attempt::Answered(Err(e.to_engine_error())),
            // An engine that sends no empty final response (Triton without the request
            // parameter) ends the stream instead.
            None => {
                return Attempt::Answered(Ok(InferResponse {
                    model_name,
                    id,
                    is_final: true,
                    ..InferResponse::default()
                }))
            }
        }
    }
}
