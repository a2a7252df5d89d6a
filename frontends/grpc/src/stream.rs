//! `ModelStreamInfer`: many requests in flight per stream, each answered as soon as it is
//! done.
//!
//! One task reads the client's requests and submits each to the engine with
//! `infer_stream` (decoupled models answer many times, the others exactly once); every
//! accepted request gets its own task forwarding its responses into one bounded outgoing
//! channel, so a slow request never holds up the others. A request that fails is answered
//! with `error_message` and the stream stays open. Requests of one sequence (same
//! `sequence_id`) are answered in the order they came: each one's task waits for the task
//! of the one before. When the client goes away the outgoing
//! channel closes, every task returns, and dropping their engine streams takes the
//! requests out of the queue.

use std::pin::Pin;

use futures::Stream;
use nereid_engine::{Engine, EngineError, Origin, ResponseStream, SequenceOrder, REGION_PARAMETER};
use nereid_proto::{ModelInferRequest, ModelInferResponse, ModelStreamInferResponse};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::convert::{self, params};
use crate::deadline::{self, Deadline};
use crate::status::to_status;
use crate::stop::Stop;

/// The response stream of `ModelStreamInfer`.
pub type OutStream =
    Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send + 'static>>;

/// Responses waiting for the client, across every request of one stream. When the client
/// reads slower than the model answers, forwarding tasks wait here and the engine's own
/// per-request buffer then slows each sequence down.
const OUT_BUFFER: usize = 64;

type Sender = mpsc::Sender<Result<ModelStreamInferResponse, Status>>;

/// Starts serving one stream and returns its responses.
pub(crate) fn start(
    engine: Engine,
    inbound: Streaming<ModelInferRequest>,
    deadline: Deadline,
    origin: Origin,
    stop: Stop,
) -> OutStream {
    let (tx, mut rx) = mpsc::channel(OUT_BUFFER);
    tokio::spawn(read_requests(engine, inbound, deadline, origin, stop, tx));
    Box::pin(async_stream::stream! {
        // The call's grpc-timeout bounds the whole stream, as gRPC clients expect; tonic
        // only enforces it until the response headers leave.
        let expired = deadline.expired();
        tokio::pin!(expired);
        loop {
            tokio::select! {
                biased;
                item = rx.recv() => match item {
                    Some(item) => yield item,
                    None => break,
                },
                () = &mut expired => {
                    yield Err(to_status(deadline::expired()));
                    break;
                }
            }
        }
    })
}

/// What a request's responses need to carry besides the engine's response.
struct RequestInfo {
    model_name: String,
    model_version: String,
    id: String,
    /// Whether a final response without outputs goes to the client. Triton sends those for
    /// decoupled models only when the request sets `triton_enable_empty_final_response`:
    /// clients that did not ask would see a response with no outputs.
    send_empty_final: bool,
}

impl RequestInfo {
    /// The stream message of a failed request: its error, and its id so the client knows
    /// which request it was.
    fn error(&self, error: &EngineError) -> ModelStreamInferResponse {
        let mut parameters = std::collections::HashMap::new();
        parameters.insert(
            params::FINAL_RESPONSE.to_string(),
            params::param_to_wire(&nereid_engine::ParamValue::Bool(true)),
        );
        ModelStreamInferResponse {
            error_message: error.to_string(),
            infer_response: Some(ModelInferResponse {
                model_name: self.model_name.clone(),
                model_version: self.model_version.clone(),
                id: self.id.clone(),
                parameters,
                ..Default::default()
            }),
        }
    }
}

async fn read_requests(
    engine: Engine,
    mut inbound: Streaming<ModelInferRequest>,
    deadline: Deadline,
    origin: Origin,
    mut stop: Stop,
    tx: Sender,
) {
    let mut order = SequenceOrder::default();
    loop {
        let next = tokio::select! {
            next = inbound.message() => next,
            () = tx.closed() => return,
            // Shutdown: take no new requests; the stream closes once those in flight answer.
            () = stop.wait() => return,
        };
        match next {
            Ok(Some(msg)) => {
                if !submit(&engine, msg, deadline, &origin, &tx, &mut order).await {
                    return;
                }
            }
            // The client has sent everything; requests in flight still answer.
            Ok(None) => return,
            // A broken frame or a reset: the stream cannot go on.
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        }
    }
}

/// Submits one request; returns false when the client is gone.
async fn submit(
    engine: &Engine,
    msg: ModelInferRequest,
    deadline: Deadline,
    origin: &Origin,
    tx: &Sender,
    order: &mut SequenceOrder,
) -> bool {
    let mut info = RequestInfo {
        model_name: msg.model_name.clone(),
        model_version: msg.model_version.clone(),
        id: msg.id.clone(),
        send_empty_final: params::wire_bool(&msg.parameters, params::ENABLE_EMPTY_FINAL)
            .unwrap_or(false),
    };
    let submitted = convert::request_from_wire(msg, deadline.instant(), engine.shared_memory())
        .and_then(|mut r| {
            if let Some(o) = r
                .outputs
                .iter()
                .find(|o| o.parameters.contains_key(REGION_PARAMETER))
            {
                return Err(EngineError::Unimplemented(format!(
                    "output '{}' asks for shared memory, which ModelStreamInfer does not write; \
                     use ModelInfer, or receive the output in the stream",
                    o.name
                )));
            }
            r.origin = origin.clone();
            let sequence = r.sequence_key().map(|key| (key, r.ends_sequence()));
            engine
                .infer_stream(r)
                .map(|responses| (responses, sequence))
        });
    match submitted {
        Ok((responses, sequence)) => {
            info.send_empty_final |= !responses.is_decoupled();
            let (after, done) = match sequence {
                Some((key, ends)) => {
                    let (after, done) = order.next(key, ends);
                    (after, Some(done))
                }
                None => (None, None),
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(previous) = after {
                    tokio::select! {
                        _ = previous => {}
                        () = tx.closed() => return,
                    }
                }
                forward(responses, info, tx).await;
                drop(done);
            });
            true
        }
        Err(error) => tx.send(Ok(info.error(&error))).await.is_ok(),
    }
}

/// Forwards one request's responses until its final one, or until the client leaves.
async fn forward(mut responses: ResponseStream, info: RequestInfo, tx: Sender) {
    loop {
        let next = tokio::select! {
            next = responses.recv() => next,
            // Returning drops `responses`, which cancels the request in the engine.
            () = tx.closed() => return,
        };
        let Some(outcome) = next else { return };
        let message = match outcome {
            Ok(resp) if resp.is_final && resp.outputs.is_empty() && !info.send_empty_final => {
                return
            }
            Ok(resp) => {
                let is_final = resp.is_final;
                let message = ModelStreamInferResponse {
                    error_message: String::new(),
                    infer_response: Some(convert::response_to_wire(resp, true, &[])),
                };
                if is_final {
                    let _ = tx.send(Ok(message)).await;
                    return;
                }
                message
            }
            Err(error) => {
                let _ = tx.send(Ok(info.error(&error))).await;
                return;
            }
        };
        if tx.send(Ok(message)).await.is_err() {
            return;
        }
    }
}
