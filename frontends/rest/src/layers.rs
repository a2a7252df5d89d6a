//! The one layer stack every HTTP route runs under, whichever door it belongs to (KServe,
//! OpenAI, WebSocket): API keys, restricted API groups, event streams per client, the body
//! limit, request decompression, response compression, and the wording of errors the stack
//! itself produces. Routes are merged first, then layered
//! once, so no door escapes a limit or gets a differently shaped error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use pin_project_lite::pin_project;
use tower::util::MapRequestLayer;
use tower::{Layer, Service};
use tower_http::compression::CompressionLayer;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;

use nereid_engine::trace::{Access, REQUEST_ID, TRACEPARENT};
use nereid_engine::Origin;
use nereid_kserve::{ApiKeys, Restrictions, UNAUTHORIZED};

use crate::error::{ApiError, RETRY_AFTER_SECS};
use crate::streams::{self, ClientAddr, StreamLimit};
use crate::RestArgs;

/// How a door words an error: its status and message, as that door's clients expect them.
pub type ErrorShape = fn(StatusCode, String) -> Response;

/// Routes whose errors are worded their own way: every path under `prefix`.
#[derive(Debug, Clone, Copy)]
pub struct Door {
    /// Path prefix, e.g. `/v1/`.
    pub prefix: &'static str,
    /// How the door words an error.
    pub shape: ErrorShape,
    /// Which of its paths are served without an API key (a page's static files).
    pub public: fn(&str) -> bool,
}

impl Door {
    /// Paths of a door that all need the key when keys are set.
    pub fn no_public_paths(_: &str) -> bool {
        false
    }
}

/// How much of a plain-text error body is kept as the message.
const MAX_ERROR_TEXT: usize = 4096;

#[derive(Clone)]
struct Shaping {
    doors: Arc<[Door]>,
    limit: usize,
    keys: ApiKeys,
    restrictions: Restrictions,
    streams: Option<StreamLimit>,
    access_log: bool,
}

/// Routes open without an API key: the probes' (KServe's, and TEI's `/health`).
const OPEN_PATHS: [&str; 3] = ["/v2/health/live", "/v2/health/ready", "/health"];

/// Puts the one layer stack over `routes`: bodies over `--http-max-input-size` (after
/// decompression, so a small gzip bomb is refused too) are 413, gzip/deflate bodies are
/// decompressed and responses compressed when the client accepts it, and any error the
/// stack or an extractor answers in plain text is reworded as JSON, in the shape of the
/// [`Door`] whose prefix the path has, else KServe's `{"error": "..."}`.
pub fn app(routes: Router, args: &RestArgs, doors: &[Door]) -> Router {
    let shaping = Shaping {
        doors: doors.into(),
        limit: args.http_max_input_size,
        keys: args.api_keys.clone(),
        restrictions: args.http_restricted_api.iter().cloned().collect(),
        streams: StreamLimit::new(args.http_max_streams_per_client),
        access_log: args.access_log,
    };
    routes
        // The limit below is the only one: axum's own 2 MiB default for extractors is off.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(args.http_max_input_size))
        .layer(RequestDecompressionLayer::new())
        .layer(ShapeErrorsLayer { shaping })
        .layer(CompressionLayer::new())
        .layer(MapRequestLayer::new(compress_only_where_triton_does))
}

/// Triton compresses inference responses, when asked, and nothing else of its API: a
/// client such as `tritonclient.http.aio`, which turns automatic decompression off, reads
/// every other `/v2` answer as plain JSON. So the other `/v2` routes are answered
/// uncompressed whatever the request accepts; the routes of other doors (OpenAI, TEI) are
/// compressed when asked, as their clients expect.
fn compress_only_where_triton_does(mut request: Request) -> Request {
    let path = request.uri().path();
    let triton_uncompressed = (path == "/v2" || path.starts_with("/v2/"))
        && !(path.starts_with("/v2/models/") && path.ends_with("/infer"));
    if triton_uncompressed {
        request.headers_mut().remove(header::ACCEPT_ENCODING);
    }
    request
}

/// The door's edge: refuses a request without an accepted API key (when keys are set),
/// and rewords plain-text errors. A hand-written service rather than `from_fn`: a successful
/// response passes through its future untouched, with no boxed future or cloned router
/// per request (only an error to reword takes the slow path).
#[derive(Clone)]
struct ShapeErrorsLayer {
    shaping: Shaping,
}

impl<S> Layer<S> for ShapeErrorsLayer {
    type Service = ShapeErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ShapeErrors {
            inner,
            shaping: self.shaping.clone(),
        }
    }
}

#[derive(Clone)]
struct ShapeErrors<S> {
    inner: S,
    shaping: Shaping,
}

impl<S> Service<Request> for ShapeErrors<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Echo<ShapeFuture<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    /// Tags the request with its [`Origin`] (request id, trace context) for the routes,
    /// and its answer with the request id.
    fn call(&mut self, mut request: Request) -> Self::Future {
        let headers = request.headers();
        let origin = Origin::received(
            headers.get(REQUEST_ID).map(HeaderValue::as_bytes),
            headers.get(TRACEPARENT).map(HeaderValue::as_bytes),
        );
        let request_id = HeaderValue::from_str(&origin.request_id).ok();
        let access = self.shaping.access_log.then(|| AccessStart {
            started: std::time::Instant::now(),
            route: request.uri().path().to_string(),
            // An incoming body's exact size is its Content-Length.
            bytes_in: http_body::Body::size_hint(request.body()).exact(),
            origin: origin.clone(),
        });
        request.extensions_mut().insert(origin);
        Echo {
            inner: self.shape(request),
            request_id,
            access,
        }
    }
}

impl<S> ShapeErrors<S>
where
    S: Service<Request, Response = Response>,
{
    fn shape(&mut self, request: Request) -> ShapeFuture<S::Future> {
        let path = request.uri().path();
        let door = self
            .shaping
            .doors
            .iter()
            .find(|d| path.starts_with(d.prefix))
            .copied();
        let keys = &self.shaping.keys;
        if keys.required()
            && request.method() != Method::OPTIONS
            && !OPEN_PATHS.contains(&path)
            && !door.is_some_and(|door| (door.public)(path))
            && !keys.allows(
                request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .map(HeaderValue::as_bytes),
            )
        {
            let refusal = (StatusCode::UNAUTHORIZED, UNAUTHORIZED).into_response();
            return ShapeFuture::Reword {
                reword: Box::pin(reword(refusal, door, self.shaping.limit)),
            };
        }
        let restrictions = &self.shaping.restrictions;
        if restrictions.any() && request.method() != Method::OPTIONS {
            let headers = request.headers();
            let denied = crate::groups::api_group(path).and_then(|group| {
                restrictions
                    .check(group, |name| headers.get(name).map(HeaderValue::as_bytes))
                    .err()
            });
            if let Some(message) = denied {
                let refusal = (StatusCode::FORBIDDEN, message).into_response();
                return ShapeFuture::Reword {
                    reword: Box::pin(reword(refusal, door, self.shaping.limit)),
                };
            }
        }
        let streams = self.shaping.streams.as_ref().and_then(|limit| {
            let client = request.extensions().get::<ClientAddr>()?;
            Some((limit.clone(), client.0))
        });
        ShapeFuture::Route {
            route: self.inner.call(request),
            door,
            limit: self.shaping.limit,
            streams,
        }
    }
}

pin_project! {
    /// The answer, with the request id it answers.
    pub(crate) struct Echo<F> {
        #[pin]
        inner: F,
        request_id: Option<HeaderValue>,
        access: Option<AccessStart>,
    }
}

/// What the access log line of a request needs from its arrival.
struct AccessStart {
    started: std::time::Instant,
    route: String,
    bytes_in: Option<u64>,
    origin: Origin,
}

/// The model a KServe path names (`/v2/models/{model}/...`).
fn model_of(path: &str) -> Option<&str> {
    path.strip_prefix("/v2/models/")?
        .split('/')
        .next()
        .filter(|m| !m.is_empty() && *m != "stats")
}

impl<F, E> Future for Echo<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if let Some(id) = this.request_id.take() {
            response.headers_mut().insert(REQUEST_ID, id);
        }
        if let Some(a) = this.access.take() {
            Access {
                door: "http",
                route: &a.route,
                model: model_of(&a.route),
                status: response.status().as_str(),
                duration: a.started.elapsed(),
                bytes_in: a.bytes_in,
                bytes_out: http_body::Body::size_hint(response.body()).exact(),
                origin: &a.origin,
            }
            .log();
        }
        Poll::Ready(Ok(response))
    }
}

pin_project! {
    /// The route's response, or (for a plain-text error) its rewording.
    #[project = ShapeState]
    enum ShapeFuture<F> {
        Route {
            #[pin] route: F,
            door: Option<Door>,
            limit: usize,
            // The client's stream limit, when one is set and the peer is known.
            streams: Option<(StreamLimit, std::net::IpAddr)>,
        },
        Reword { reword: Pin<Box<dyn Future<Output = Response> + Send>> },
    }
}

impl<F, E> Future for ShapeFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                ShapeState::Route {
                    route,
                    door,
                    limit,
                    streams,
                } => {
                    let response = ready!(route.poll(cx))?;
                    let status = response.status();
                    if let Some((streams, client)) = streams.take() {
                        if status.is_success() && streams::is_event_stream(&response) {
                            let response = match streams.admit(client) {
                                Some(slot) => streams::hold(response, slot),
                                // Dropping the stream cancels what it started in the engine.
                                None => {
                                    let refusal = (
                                        StatusCode::TOO_MANY_REQUESTS,
                                        format!(
                                            "this client address has {} event streams open, the \
                                             most --http-max-streams-per-client allows; close one \
                                             or retry later",
                                            streams.max()
                                        ),
                                    )
                                        .into_response();
                                    let reword = Box::pin(reword(refusal, *door, *limit));
                                    self.set(ShapeFuture::Reword { reword });
                                    continue;
                                }
                            };
                            return Poll::Ready(Ok(response));
                        }
                    }
                    if !(status.is_client_error() || status.is_server_error()) || is_json(&response)
                    {
                        return Poll::Ready(Ok(response));
                    }
                    let reword = Box::pin(reword(response, *door, *limit));
                    self.set(ShapeFuture::Reword { reword });
                }
                ShapeState::Reword { reword } => return reword.as_mut().poll(cx).map(Ok),
            }
        }
    }
}

/// A plain-text (or empty) error as JSON, in its door's shape.
async fn reword(response: Response, door: Option<Door>, limit: usize) -> Response {
    let status = response.status();
    let accept_encoding = response.headers().get(header::ACCEPT_ENCODING).cloned();
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(limit).message,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            "unsupported Content-Encoding; send gzip, deflate or an uncompressed body".into()
        }
        _ => text_of(response.into_body(), status).await,
    };
    let shape = door.map_or(crate::error::kserve_shape as ErrorShape, |door| door.shape);
    let mut shaped = shape(status, message);
    if let Some(accepted) = accept_encoding {
        shaped
            .headers_mut()
            .insert(header::ACCEPT_ENCODING, accepted);
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        shaped
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    if status == StatusCode::UNAUTHORIZED {
        shaped
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    shaped
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The text of a plain error body, or the status's reason when it has none.
async fn text_of(body: Body, status: StatusCode) -> String {
    let text = axum::body::to_bytes(body, MAX_ERROR_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    }
}
