//! Bidirectional streaming inference over WebSocket: many KServe v2 requests in flight per
//! socket, each answered frame by frame as its responses come, tagged with its `id` and a
//! `final` flag. Frames are JSON text or binary (a JSON header plus raw tensor bytes);
//! [`frame`]'s documentation and `frontends/stream/README.md` describe them.
//!
//! One task reads the socket and submits requests; every request gets a task forwarding
//! its engine stream into one bounded outgoing queue that a writer drains into the socket.
//! A socket that closes (or a failed write) ends the connection: every forwarding task is
//! aborted, which drops its engine stream and cancels the request in the engine.
//! Backpressure is bounded at each step: the outgoing queue, each engine stream's own
//! buffer (a request whose frames wait stops advancing), and the number of requests in
//! flight (at the limit the reader stops reading, so TCP slows the client). A slow socket
//! only slows its own requests.

mod frame;
#[cfg(test)]
mod fuzz;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use futures::{SinkExt, StreamExt};
use nereid_engine::{Engine, EngineError, Origin, ResponseStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::{AbortHandle, JoinSet};

use frame::{Defaults, Encoding, Incoming, Submission};

/// Frames waiting for the socket, across every request of one connection.
const OUT_BUFFER: usize = 64;
/// How long a closing connection may take to send its close frame.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
/// Requests in flight on one connection; past it the reader waits for one to finish.
pub const MAX_INFLIGHT: usize = 1024;
/// Largest message a client may send (a frame of video or a second of audio fits easily).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The WebSocket routes: `GET /v2/ws` (every frame names its model),
/// `GET /v2/models/{model}/infer/ws` and `GET /v2/models/{model}/versions/{version}/infer/ws`
/// (frames may leave the model out).
pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/v2/ws", get(any_model))
        .route("/v2/models/{model}/infer/ws", get(one_model))
        .route(
            "/v2/models/{model}/versions/{version}/infer/ws",
            get(one_version),
        )
        .with_state(engine)
}

async fn any_model(
    State(engine): State<Engine>,
    origin: Option<Extension<Origin>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    accept(upgrade, engine, None, None, origin)
}

async fn one_model(
    State(engine): State<Engine>,
    Path(model): Path<String>,
    origin: Option<Extension<Origin>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    accept(upgrade, engine, Some(model), None, origin)
}

async fn one_version(
    State(engine): State<Engine>,
    Path((model, version)): Path<(String, String)>,
    origin: Option<Extension<Origin>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    accept(upgrade, engine, Some(model), Some(version), origin)
}

/// Upgrades to a WebSocket whose frames go to `model` (and `version`) unless they name
/// one, with the upgrade request's origin.
fn accept(
    upgrade: WebSocketUpgrade,
    engine: Engine,
    model: Option<String>,
    version: Option<String>,
    origin: Option<Extension<Origin>>,
) -> Response {
    let defaults = Defaults {
        model,
        version,
        origin: origin.map(|o| o.0).unwrap_or_default(),
    };
    upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve(socket, engine, defaults))
}

/// Serves one connection until the client closes it or it breaks.
async fn serve(socket: WebSocket, engine: Engine, defaults: Defaults) {
    let (mut sink, source) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(OUT_BUFFER);
    // Dropped by the reader when it ends: the writer then answers the close handshake.
    let (reading_tx, mut reading_rx) = oneshot::channel::<()>();
    let writer = async move {
        loop {
            tokio::select! {
                biased;
                _ = &mut reading_rx => break,
                message = out_rx.recv() => match message {
                    Some(message) => {
                        if sink.send(message).await.is_err() {
                            return;
                        }
                    }
                    None => break,
                },
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    };
    let reader = Reader {
        engine,
        defaults,
        out: out_tx,
        tasks: JoinSet::new(),
        inflight: HashMap::new(),
        next: 0,
        _reading: reading_tx,
    };
    tokio::pin!(writer);
    // A failed write ends the connection at once. When the read side ends, the reader and
    // its JoinSet are dropped, which aborts every forwarding task, drops the engine streams
    // and cancels the requests; the writer then only says goodbye.
    tokio::select! {
        () = &mut writer => {
            tracing::debug!("websocket write side closed");
            return;
        }
        () = reader.run(source) => tracing::debug!("websocket read side closed"),
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, writer).await;
}

/// The read side of a connection and the requests it has in flight.
struct Reader {
    engine: Engine,
    defaults: Defaults,
    out: mpsc::Sender<Message>,
    /// Forwarding tasks; each returns its request's id and sequence number when done.
    tasks: JoinSet<(String, u64)>,
    /// In-flight requests by id, with a sequence number so a finished task never removes a
    /// newer request that reused its id.
    inflight: HashMap<String, (u64, AbortHandle)>,
    next: u64,
    /// Held while reading; its drop tells the writer the read side is over.
    _reading: oneshot::Sender<()>,
}

impl Reader {
    async fn run(mut self, mut source: futures::stream::SplitStream<WebSocket>) {
        let permits = Arc::new(Semaphore::new(MAX_INFLIGHT));
        loop {
            tokio::select! {
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Ok((id, seq)) = done {
                        if self.inflight.get(&id).is_some_and(|(s, _)| *s == seq) {
                            self.inflight.remove(&id);
                        }
                    }
                }
                message = source.next() => {
                    let incoming = match message {
                        Some(Ok(Message::Text(text))) => frame::parse_text(text, &self.defaults),
                        Some(Ok(Message::Binary(data))) => frame::parse_binary(data, &self.defaults),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    };
                    let sent = match incoming {
                        Err(rejected) => self.send(frame::error(rejected.id.as_deref(), &rejected.error)).await,
                        Ok(Incoming::Cancel(id)) => self.cancel(id).await,
                        Ok(Incoming::Infer(submission)) => {
                            // At the limit, wait here: the socket is not read meanwhile.
                            let Ok(permit) = permits.clone().acquire_owned().await else { return };
                            self.submit(*submission, permit).await
                        }
                    };
                    if !sent {
                        return;
                    }
                }
            }
        }
    }

    /// Queues a frame for the socket; false when the connection is gone.
    async fn send(&self, message: Message) -> bool {
        self.out.send(message).await.is_ok()
    }

    async fn cancel(&mut self, id: String) -> bool {
        match self.inflight.remove(&id) {
            Some((_, handle)) => {
                handle.abort();
                self.send(frame::error(
                    Some(&id),
                    &EngineError::Cancelled("cancelled by the client".into()),
                ))
                .await
            }
            None => {
                let error = EngineError::invalid(format!(
                    "no request '{id}' is in flight on this connection"
                ));
                self.send(frame::error(Some(&id), &error)).await
            }
        }
    }

    async fn submit(&mut self, mut submission: Submission, permit: OwnedSemaphorePermit) -> bool {
        if submission.id.is_empty() {
            // Responses must say which request they answer: name the anonymous ones.
            submission.id = format!("ws-{}", self.next);
            submission.request.id = submission.id.clone();
        }
        let id = submission.id;
        if self.inflight.contains_key(&id) {
            let error = EngineError::invalid(format!(
                "a request with id '{id}' is already in flight on this connection"
            ));
            return self.send(frame::error(Some(&id), &error)).await;
        }
        let stream = match self.engine.infer_stream(submission.request) {
            Ok(stream) => stream,
            Err(e) => return self.send(frame::error(Some(&id), &e)).await,
        };
        let seq = self.next;
        self.next += 1;
        let handle = self.tasks.spawn(forward(
            id.clone(),
            seq,
            stream,
            submission.encoding,
            self.out.clone(),
            permit,
        ));
        self.inflight.insert(id, (seq, handle));
        true
    }
}

/// Sends every response of one request as it comes (encoding on this task, so requests
/// encode in parallel), then returns its id.
async fn forward(
    id: String,
    seq: u64,
    mut stream: ResponseStream,
    encoding: Encoding,
    out: mpsc::Sender<Message>,
    _permit: OwnedSemaphorePermit,
) -> (String, u64) {
    loop {
        let (message, last) = match stream.recv().await {
            Some(Ok(response)) => (
                frame::response(&id, &response, &encoding),
                response.is_final,
            ),
            Some(Err(e)) => (frame::error(Some(&id), &e), true),
            None => (
                frame::error(
                    Some(&id),
                    &EngineError::internal("the request ended without a final response"),
                ),
                true,
            ),
        };
        if out.send(message).await.is_err() || last {
            return (id, seq);
        }
    }
}
