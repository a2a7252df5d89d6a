//! The engine handle frontends hold: server and model state, and the two ways in for a
//! request (unary and streamed). Its trace and log settings are in [`settings`].

mod metadata;
mod settings;

pub use metadata::{ModelMetadata, ServerMetadata, TensorMetadata};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nereid_proto::inference::ModelConfig;
use tokio::sync::{mpsc, oneshot};

use crate::cache::{CacheSettings, ResponseCache};
use crate::logs::LogControl;
use crate::models::{LoadCause, ModelFacts, ModelTable, RepositoryEntry};
use crate::scheduler::Queued;
use crate::sink::{InflightCounter, InflightGuard, RequestContext, Sink, STREAM_BUFFER};
use crate::trace::{TraceSettings, Tracer};
use crate::upstream::{Reply, Upstream};
use crate::validate::validate;
use crate::{
    BackendRegistry, EngineError, InferRequest, InferResponse, ModelStats, ModelStatsSnapshot,
    Repository, ResponseStream, Result, SharedMemory,
};

/// How models get loaded, as Triton's `--model-control-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelControlMode {
    /// Load everything at start; no load/unload API.
    #[default]
    None,
    /// Load only what is named at start or through the load API.
    Explicit,
    /// Load everything and re-scan the repository periodically.
    Poll,
}

/// What the engine needs to start.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// The model repository; `None` serves nothing until models are registered.
    pub repository: Option<PathBuf>,
    /// Model control mode.
    pub control_mode: ModelControlMode,
    /// Models to load at start in explicit mode (`--load-model`); `*` loads all.
    pub startup_models: Vec<String>,
    /// Interval of repository polls in poll mode.
    pub poll_interval: Duration,
    /// Server readiness requires every model to be ready (Triton's `--strict-readiness`).
    pub strict_readiness: bool,
    /// Requests in flight across every model and door at most (`--max-inflight`); past it
    /// a request is refused with [`EngineError::ResourceExhausted`] before it costs
    /// anything. `None`: no server-wide limit (each model's queue is still bounded).
    pub max_inflight: Option<usize>,
    /// Which requests are traced at start (Triton's `--trace-config`); the trace API
    /// changes them at run time.
    pub trace: TraceSettings,
    /// The server's response cache (Triton's `--cache-config local,size=BYTES`), used by
    /// models whose config enables it; `None`: no cache, and such models fail to load.
    pub response_cache: Option<CacheSettings>,
}

struct Inner {
    options: EngineOptions,
    models: Models,
    draining: AtomicBool,
    inflight: Arc<InflightCounter>,
    tracer: Tracer,
    logs: LogControl,
    cache: Option<Arc<ResponseCache>>,
    shared_memory: SharedMemory,
}

impl Inner {
    /// The local model table; model control is refused earlier for an upstream engine.
    fn local(&self) -> Result<&ModelTable> {
        match &self.models {
            Models::Local(models) => Ok(models),
            Models::Remote(_) => Err(EngineError::internal("this engine has no local models")),
        }
    }
}

/// Where the models are: in this process, or behind an [`Upstream`] (a gateway).
enum Models {
    Local(ModelTable),
    Remote(Arc<dyn Upstream>),
}

/// The model version a request goes to.
enum Target {
    Local(Arc<crate::models::ModelVersion>),
    Remote(crate::UpstreamModel),
}

impl Target {
    fn spec(&self) -> &Arc<crate::ModelSpec> {
        match self {
            Self::Local(m) => &m.spec,
            Self::Remote(m) => &m.facts.spec,
        }
    }

    fn version(&self) -> i64 {
        match self {
            Self::Local(m) => m.version,
            Self::Remote(m) => m.facts.version,
        }
    }

    fn stats(&self) -> &Arc<ModelStats> {
        match self {
            Self::Local(m) => &m.stats,
            Self::Remote(m) => &m.stats,
        }
    }
}

/// Who a request comes from: a client, subject to draining and `--max-inflight`, or a
/// request already accepted (an ensemble's step), which is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    Client,
    Step,
}

/// The engine: cheap to clone, shared by every frontend.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Starts the engine and loads the models the control mode asks for. Blocking (models
    /// load here): call it before serving or from a blocking thread. A model that fails to
    /// load is recorded UNAVAILABLE with its reason; the others serve.
    pub fn start(options: EngineOptions, backends: BackendRegistry) -> Result<Self> {
        let repository = options
            .repository
            .as_ref()
            .map(Repository::open)
            .transpose()?;
        let engine = Self {
            inner: Arc::new(Inner {
                models: Models::Local(ModelTable::new(
                    repository,
                    backends,
                    options.response_cache.is_some(),
                )),
                tracer: Tracer::new(options.trace.clone(), "engine"),
                cache: options
                    .response_cache
                    .map(|settings| Arc::new(ResponseCache::new(settings))),
                shared_memory: SharedMemory::default(),
                options,
                draining: AtomicBool::new(false),
                inflight: Arc::default(),
                logs: LogControl::default(),
            }),
        };
        let Models::Local(models) = &engine.inner.models else {
            unreachable!("built local above")
        };
        let to_load: Vec<String> = match engine.inner.options.control_mode {
            ModelControlMode::None | ModelControlMode::Poll => models
                .repository()
                .map(|r| r.model_names())
                .transpose()?
                .unwrap_or_default(),
            ModelControlMode::Explicit => {
                let named = &engine.inner.options.startup_models;
                if named.iter().any(|n| n == "*") {
                    models
                        .repository()
                        .map(|r| r.model_names())
                        .transpose()?
                        .unwrap_or_default()
                } else {
                    named.clone()
                }
            }
        };
        for name in to_load {
            let _ = models.load(&name, None, LoadCause::Server);
        }
        if engine.inner.options.control_mode == ModelControlMode::Poll {
            let weak = Arc::downgrade(&engine.inner);
            let interval = engine
                .inner
                .options
                .poll_interval
                .max(Duration::from_millis(100));
            std::thread::Builder::new()
                .name("repository-poll".into())
                .spawn(move || loop {
                    std::thread::sleep(interval);
                    let Some(inner) = weak.upgrade() else { return };
                    if inner.draining.load(Ordering::Acquire) {
                        return;
                    }
                    if let Models::Local(models) = &inner.models {
                        models.poll();
                    }
                })
                .map_err(|e| EngineError::internal(format!("cannot start poll thread: {e}")))?;
        }
        Ok(engine)
    }

    /// An engine whose models are served elsewhere (a gateway's): requests are validated,
    /// counted and drained here, and computed wherever `upstream` forwards them. Only
    /// `strict_readiness`, `max_inflight` and `trace` of the options apply.
    pub fn with_upstream(options: EngineOptions, upstream: Arc<dyn Upstream>) -> Self {
        Self {
            inner: Arc::new(Inner {
                models: Models::Remote(upstream),
                tracer: Tracer::new(options.trace.clone(), "gateway"),
                options,
                draining: AtomicBool::new(false),
                inflight: Arc::default(),
                logs: LogControl::default(),
                cache: None,
                shared_memory: SharedMemory::default(),
            }),
        }
    }

    /// Server name and version.
    pub fn server_metadata(&self) -> ServerMetadata {
        ServerMetadata {
            name: "nereid".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// The control mode in force.
    pub fn control_mode(&self) -> ModelControlMode {
        self.inner.options.control_mode
    }

    /// Live until shutdown starts.
    pub fn is_live(&self) -> bool {
        !self.inner.draining.load(Ordering::Acquire)
    }

    /// Ready: live, and (under strict readiness) every model ready.
    pub fn is_ready(&self) -> bool {
        self.is_live()
            && match &self.inner.models {
                Models::Local(models) => !self.inner.options.strict_readiness || models.all_ready(),
                Models::Remote(upstream) => upstream.is_ready(),
            }
    }

    fn resolve(&self, name: &str, version: Option<i64>) -> Result<Target> {
        Ok(match &self.inner.models {
            Models::Local(models) => Target::Local(models.resolve(name, version)?),
            Models::Remote(upstream) => Target::Remote(upstream.resolve(name, version)?),
        })
    }

    /// Ready versions (of one model, or all) and their statistics.
    fn ready_versions(&self, name: Option<&str>) -> Vec<(i64, Arc<ModelStats>)> {
        match &self.inner.models {
            Models::Local(models) => models
                .ready_versions(name)
                .iter()
                .map(|m| (m.version, m.stats.clone()))
                .collect(),
            Models::Remote(upstream) => upstream
                .ready_versions(name)
                .into_iter()
                .map(|m| (m.facts.version, m.stats))
                .collect(),
        }
    }

    /// Whether the model (newest or given version) is ready. Unknown models are not ready.
    pub fn model_ready(&self, name: &str, version: Option<i64>) -> bool {
        self.resolve(name, version).is_ok()
    }

    /// What a ready model (newest or given version) takes and gives, typed; the metadata
    /// endpoints' answers are derived from the same spec.
    pub fn model(&self, name: &str, version: Option<i64>) -> Result<ModelFacts> {
        let target = self.resolve(name, version)?;
        Ok(ModelFacts {
            version: target.version(),
            spec: target.spec().clone(),
        })
    }

    /// The tokenizer of a ready model (newest or given version). Models behind a gateway
    /// are reached through KServe, which has no call for it: `Unimplemented` there, as for
    /// a model without one.
    pub fn text_codec(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Arc<dyn crate::TextCodec>> {
        match self.resolve(name, version)? {
            Target::Local(model) => model
                .loaded
                .as_ref()
                .and_then(|loaded| loaded.text_codec())
                .ok_or_else(|| {
                    EngineError::Unimplemented(format!("model '{name}' has no tokenizer"))
                }),
            Target::Remote(_) => Err(EngineError::Unimplemented(format!(
                "model '{name}': tokenizers are not reachable through a gateway (KServe has no \
                 call for them); ask an engine"
            ))),
        }
    }

    /// Metadata of a ready model.
    pub fn model_metadata(&self, name: &str, version: Option<i64>) -> Result<ModelMetadata> {
        let spec = self.model(name, version)?.spec;
        let versions = match version {
            Some(v) => vec![v.to_string()],
            None => self
                .ready_versions(Some(name))
                .iter()
                .map(|(v, _)| v.to_string())
                .collect(),
        };
        Ok(ModelMetadata::of(name, versions, &spec))
    }

    /// The config of a ready model, as loaded and completed.
    pub fn model_config(&self, name: &str, version: Option<i64>) -> Result<ModelConfig> {
        Ok(self.model(name, version)?.spec.config.clone())
    }

    /// Statistics of every ready version, or of one model (and version).
    pub fn model_statistics(
        &self,
        name: Option<&str>,
        version: Option<i64>,
    ) -> Result<Vec<ModelStatsSnapshot>> {
        if let Some(n) = name {
            self.resolve(n, version)?;
        }
        Ok(self
            .ready_versions(name)
            .iter()
            .filter(|(v, _)| version.is_none_or(|want| want == *v))
            .map(|(_, stats)| stats.snapshot())
            .collect())
    }

    /// The repository index.
    pub fn repository_index(&self, ready_only: bool) -> Vec<RepositoryEntry> {
        match &self.inner.models {
            Models::Local(models) => models.index(ready_only),
            Models::Remote(upstream) => upstream.index(ready_only),
        }
    }

    /// Loads or reloads a model (optionally with a config given by the client).
    /// Only in explicit mode, as in Triton; an upstream engine passes the call on to the
    /// engines behind it, whose own mode decides.
    pub async fn load_model(&self, name: &str, config: Option<ModelConfig>) -> Result<()> {
        if let Models::Remote(upstream) = &self.inner.models {
            return upstream.load(name, config).await;
        }
        self.require_explicit("load")?;
        let inner = self.inner.clone();
        let name = name.to_string();
        tokio::task::spawn_blocking(move || inner.local()?.load(&name, config, LoadCause::Client))
            .await
            .map_err(|e| EngineError::internal(format!("model load task failed: {e}")))?
    }

    /// Unloads a model after its queued requests finish. Only in explicit mode (an
    /// upstream engine passes the call on).
    pub async fn unload_model(&self, name: &str) -> Result<()> {
        if let Models::Remote(upstream) = &self.inner.models {
            return upstream.unload(name).await;
        }
        self.require_explicit("unload")?;
        let inner = self.inner.clone();
        let name = name.to_string();
        tokio::task::spawn_blocking(move || inner.local()?.unload(&name))
            .await
            .map_err(|e| EngineError::internal(format!("model unload task failed: {e}")))?
    }

    fn require_explicit(&self, what: &str) -> Result<()> {
        if self.inner.options.control_mode != ModelControlMode::Explicit {
            return Err(EngineError::Unavailable(format!(
                "explicit model {what} is not allowed: start the server with --model-control-mode=explicit"
            )));
        }
        Ok(())
    }

    /// Runs a request and waits for its one response. Dropping the future cancels the
    /// request if it has not started computing.
    pub async fn infer(&self, request: InferRequest) -> Result<InferResponse> {
        self.unary(request, Admit::Client).await
    }

    /// Runs a request whose responses stream back: many for decoupled models, exactly one
    /// (final) otherwise; the stream says which. Dropping the stream cancels the request.
    pub fn infer_stream(&self, request: InferRequest) -> Result<ResponseStream> {
        self.streamed(request, Admit::Client)
    }

    /// [`infer`](Self::infer) for a step of a request already accepted (an ensemble's):
    /// taken while the server drains and past `--max-inflight`, as its request was, so an
    /// accepted request is finished.
    pub(crate) async fn infer_step(&self, request: InferRequest) -> Result<InferResponse> {
        self.unary(request, Admit::Step).await
    }

    /// [`infer_stream`](Self::infer_stream) for a step of a request already accepted.
    pub(crate) fn stream_step(&self, request: InferRequest) -> Result<ResponseStream> {
        self.streamed(request, Admit::Step)
    }

    async fn unary(&self, request: InferRequest, admit: Admit) -> Result<InferResponse> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(request, Sink::Unary(tx), admit)?;
        rx.await.unwrap_or_else(|_| {
            Err(EngineError::internal(
                "the request was dropped without a response",
            ))
        })
    }

    fn streamed(&self, request: InferRequest, admit: Admit) -> Result<ResponseStream> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let decoupled = self.enqueue(request, Sink::Stream(tx), admit)?;
        Ok(ResponseStream::new(rx, decoupled))
    }

    /// Validates and queues a request; returns whether its model is decoupled.
    fn enqueue(&self, request: InferRequest, sink: Sink, admit: Admit) -> Result<bool> {
        let received = Instant::now();
        if admit == Admit::Client && self.inner.draining.load(Ordering::Acquire) {
            return Err(EngineError::unavailable(
                "the server is shutting down and takes no new requests",
            ));
        }
        // Counted from here, so a request refused later is uncounted by the guard's drop.
        let limit = match admit {
            Admit::Client => self.inner.options.max_inflight,
            Admit::Step => None,
        };
        let inflight = InflightGuard::admit(&self.inner.inflight, limit)?;
        let target = self.resolve(&request.model_name, request.model_version)?;
        let spec = target.spec().clone();
        let stats = target.stats();
        if spec.decoupled && matches!(sink, Sink::Unary(_)) {
            return Err(EngineError::Unimplemented(format!(
                "model '{}' is decoupled and streams its responses: use ModelStreamInfer (gRPC) or \
                 generate_stream (HTTP)",
                spec.name()
            )));
        }
        let checked = validate(&spec, &request).and_then(|admission| match &target {
            Target::Local(model) => match &model.loaded {
                Some(loaded) => loaded.check_request(&request).map(|()| admission),
                None => Ok(admission),
            },
            Target::Remote(_) => Ok(admission),
        });
        let admission = match checked {
            Ok(a) => a,
            Err(e) => {
                stats.record_failure(received.elapsed(), e.failure_reason());
                return Err(e);
            }
        };
        let model_name: Arc<str> = Arc::from(spec.name());
        let trace =
            self.inner
                .tracer
                .begin(&request.origin, received, &model_name, target.version());
        let mut ctx = RequestContext {
            model_name,
            model_version: target.version(),
            id: request.id.clone(),
            requested: request.outputs.iter().map(|o| o.name.clone()).collect(),
            stats: stats.clone(),
            received,
            inflight,
            trace,
            responded: false,
            cache_fill: None,
            turn: None,
        };
        let model = match (target, &self.inner.models) {
            (Target::Local(model), _) => model,
            (Target::Remote(_), Models::Remote(upstream)) => {
                // Queue policies and timeouts are the serving engine's: the request's own
                // parameters travel with it.
                upstream.forward(request, Reply::new(sink, ctx));
                return Ok(spec.decoupled);
            }
            (Target::Remote(_), Models::Local(_)) => unreachable!("resolved by this engine"),
        };
        if let Some(cache) = self.inner.cache.as_ref().filter(|_| spec.response_cache) {
            if let Some(response) = cache.lookup(&request, &mut ctx) {
                sink.finish(&mut ctx, Ok(response));
                return Ok(spec.decoupled);
            }
        }
        if let Some(ensemble) = &model.ensemble {
            return ensemble
                .submit(self.clone(), request, sink, ctx)
                .map(|()| spec.decoupled);
        }
        let policy = &spec.levels[admission.level];
        let timeout = match admission.timeout {
            Some(t) if policy.allow_timeout_override || policy.default_timeout.is_none() => Some(t),
            _ => policy.default_timeout,
        }
        .filter(|t| !t.is_zero());
        let enqueued = Instant::now();
        if let Some(trace) = &mut ctx.trace {
            trace.enqueued(enqueued);
        }
        let queued = Queued {
            request,
            sink,
            ctx,
            batch_size: admission.batch_size,
            level: admission.level,
            enqueued,
            queue_deadline: timeout.map(|t| received + t),
            timeout_action: policy.timeout_action,
        };
        let submitted = match &model.sequences {
            Some(table) => table.submit(queued),
            None => match &model.runner {
                Some(runner) => runner.submit(queued),
                None => Err(EngineError::internal("a model without a scheduler")),
            },
        };
        submitted.inspect_err(|e| {
            model
                .stats
                .record_failure(received.elapsed(), e.failure_reason());
        })?;
        Ok(spec.decoupled)
    }

    /// The system shared-memory regions clients registered: the doors read inputs from
    /// them and write outputs into them (a gateway's regions are on its own host).
    pub fn shared_memory(&self) -> &SharedMemory {
        &self.inner.shared_memory
    }

    /// The most client requests in flight at once (`--max-inflight`), when bounded.
    pub fn max_inflight(&self) -> Option<usize> {
        self.inner.options.max_inflight
    }

    /// Requests accepted and not yet answered.
    pub fn inflight(&self) -> usize {
        self.inner.inflight.get()
    }

    /// Starts a graceful shutdown: not live or ready any more, new requests are refused,
    /// accepted ones go on. Returns once they are all answered or `timeout` passed (then
    /// false), and stops every model.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        let drained = self.drain(timeout).await;
        self.stop_models().await;
        drained
    }

    /// The first half of [`shutdown`](Self::shutdown): refuses new requests and waits up
    /// to `timeout` for the accepted ones; true when none is left.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.inner.draining.store(true, Ordering::Release);
        let deadline = Instant::now() + timeout;
        while self.inflight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inflight() == 0
    }

    /// The second half of [`shutdown`](Self::shutdown): stops every model, finishing what
    /// is queued (on a blocking thread: it joins the models' threads).
    pub async fn stop_models(&self) {
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Models::Local(models) = &inner.models {
                models.unload_all();
            }
        })
        .await;
    }

    /// Requests answered so far by every ready model version: (succeeded, failed).
    pub fn request_totals(&self) -> (u64, u64) {
        self.ready_versions(None)
            .iter()
            .map(|(_, stats)| stats.snapshot().inference_stats)
            .fold((0, 0), |(ok, failed), s| {
                (ok + s.success.count, failed + s.fail.count)
            })
    }
}
