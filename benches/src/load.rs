//! Load generation: closed loop (N concurrent requests, each worker sending its next request
//! when the last one answered) and open loop (requests started on a schedule at a rate,
//! whatever the answers do), measured in windows until stable or for a fixed time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use parking_lot::Mutex;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::args::Distribution;
use crate::clients::grpc::GrpcStream;
use crate::clients::{CallTiming, Client};
use crate::inputs::{InputSet, ModelInfo, SplitMix};
use crate::progress::Progress;
use crate::server_stats::ServerStats;
use crate::stats::{is_stable, summarize, Recorder, Summary, Window};

/// What to send where.
pub struct Target {
    /// The client (clones share connections).
    pub client: Client,
    /// The model addressed.
    pub model: ModelInfo,
    /// Input sets, sent in turn.
    pub inputs: Vec<InputSet>,
    /// Send over gRPC ModelStreamInfer, one stream per worker.
    pub streaming: bool,
    /// Batch size of each request (for inferences per second).
    pub batch: usize,
    /// Read the server's statistics around each window.
    pub server_stats: bool,
    /// A request with no answer after this long fails (so a lost request cannot hang a run).
    pub request_timeout: Duration,
}

/// The default of [`Target::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

async fn timed<T>(
    limit: Duration,
    call: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r,
        Err(_) => bail!("no response within {limit:?}"),
    }
}

/// One load level.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Level {
    /// Closed loop with this many requests in flight.
    Concurrency(usize),
    /// Open loop at this many requests per second.
    RequestRate {
        /// Requests per second.
        rate: f64,
        /// Spacing of start times.
        distribution: Distribution,
        /// Most requests in flight; the schedule waits (and counts delays) beyond it.
        max_inflight: usize,
    },
}

impl Level {
    /// The number that names the level (concurrency or rate).
    pub fn value(&self) -> f64 {
        match self {
            Self::Concurrency(n) => *n as f64,
            Self::RequestRate { rate, .. } => *rate,
        }
    }

    /// `concurrency 8` or `request rate 200/s`.
    pub fn label(&self) -> String {
        match self {
            Self::Concurrency(n) => format!("concurrency {n}"),
            Self::RequestRate { rate, .. } => format!("request rate {rate}/s"),
        }
    }
}

/// How long to measure a level.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Plan {
    /// perf_analyzer's way: windows until the last three agree, or `max_trials` windows.
    Stable {
        /// Window length.
        interval: Duration,
        /// Agreement needed, in percent.
        percentage: f64,
        /// Most windows.
        max_trials: usize,
        /// Latency percentile compared for stability (mean when `None`).
        percentile: Option<u8>,
    },
    /// An unmeasured warm-up, then one window (the report's way: one fixed time budget).
    Fixed {
        /// Warm-up time.
        warmup: Duration,
        /// Measured time.
        duration: Duration,
    },
}

/// The outcome of one level.
#[derive(Clone, Debug)]
pub struct LevelResult {
    /// The level.
    pub level: Level,
    /// The measured windows, merged.
    pub summary: Summary,
    /// Whether the windows were stable (always true for a fixed plan).
    pub stable: bool,
    /// Windows measured.
    pub windows: usize,
    /// Every successful request the client completed, warm-up and tail included.
    pub total_success: u64,
    /// Every failed request.
    pub total_errors: u64,
    /// The server's statistics delta from before the first request to after the last.
    pub server_total: Option<ServerStats>,
}

struct Shared {
    recorders: Vec<Mutex<Recorder>>,
    success: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn new(n: usize) -> Self {
        Self {
            recorders: (0..n.max(1))
                .map(|_| Mutex::new(Recorder::default()))
                .collect(),
            success: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    fn record(&self, slot: usize, latency: Duration, result: &anyhow::Result<CallTiming>) {
        let mut recorder = self.recorders[slot % self.recorders.len()].lock();
        match result {
            Ok(timing) => {
                recorder.success(latency, *timing);
                self.success.fetch_add(1, Relaxed);
            }
            Err(e) => {
                recorder.failure(e);
                self.errors.fetch_add(1, Relaxed);
            }
        }
    }

    fn drain(&self) -> Recorder {
        let mut all = Recorder::default();
        for r in &self.recorders {
            all.merge(&std::mem::take(&mut *r.lock()));
        }
        all
    }
}

enum Session {
    Unary(Client),
    Stream(Box<GrpcStream>),
}

impl Session {
    async fn open(target: &Target) -> anyhow::Result<Self> {
        match (&target.client, target.streaming) {
            (client, false) => Ok(Self::Unary(client.clone())),
            (Client::Grpc(grpc), true) => Ok(Self::Stream(Box::new(grpc.stream().await?))),
            (Client::Http(_), true) => bail!("streaming needs gRPC"),
        }
    }

    async fn infer(
        &mut self,
        model: &ModelInfo,
        inputs: &InputSet,
        limit: Duration,
    ) -> anyhow::Result<CallTiming> {
        match self {
            Self::Unary(client) => timed(limit, client.infer(model, inputs)).await,
            Self::Stream(stream) => timed(limit, stream.infer(model, inputs))
                .await
                .map(|(timing, _)| timing),
        }
    }
}

async fn closed_worker(slot: usize, target: Arc<Target>, shared: Arc<Shared>) {
    let mut session = match Session::open(&target).await {
        Ok(s) => s,
        Err(e) => {
            shared.record(slot, Duration::ZERO, &Err(e));
            return;
        }
    };
    let mut turn = slot;
    while !shared.stop.load(Relaxed) {
        let inputs = &target.inputs[turn % target.inputs.len()];
        turn += 1;
        let start = Instant::now();
        let result = session
            .infer(&target.model, inputs, target.request_timeout)
            .await;
        shared.record(slot, start.elapsed(), &result);
        if result.is_err() {
            // Do not spin on a failing server; a stream that failed is reopened.
            tokio::time::sleep(Duration::from_millis(5)).await;
            if target.streaming {
                match Session::open(&target).await {
                    Ok(s) => session = s,
                    Err(_) => return,
                }
            }
        }
    }
}

async fn open_scheduler(
    target: Arc<Target>,
    shared: Arc<Shared>,
    rate: f64,
    distribution: Distribution,
    max_inflight: usize,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(max_inflight.max(1)));
    let mut rng = SplitMix::new(0x5eed);
    let mut next = tokio::time::Instant::now();
    let mut turn = 0usize;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                shared.recorders[turn % shared.recorders.len()]
                    .lock()
                    .delayed += 1;
                match permits.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break,
                }
            }
        };
        let (target, shared) = (target.clone(), shared.clone());
        let slot = turn;
        tokio::spawn(async move {
            let inputs = &target.inputs[slot % target.inputs.len()];
            let start = Instant::now();
            let result = timed(
                target.request_timeout,
                target.client.infer(&target.model, inputs),
            )
            .await;
            shared.record(slot, start.elapsed(), &result);
            drop(permit);
        });
        turn += 1;
        let gap = match distribution {
            Distribution::Constant => 1.0 / rate,
            Distribution::Poisson => -(1.0 - rng.next_f64()).ln() / rate,
        };
        next += Duration::from_secs_f64(gap);
    }
    // Wait for what is in flight, so every request sent is counted.
    let _ = permits.acquire_many(max_inflight.max(1) as u32).await;
}

async fn read_stats(target: &Target) -> Option<ServerStats> {
    if !target.server_stats {
        return None;
    }
    timed(
        Duration::from_secs(10),
        target
            .client
            .statistics(&target.model.name, &target.model.version),
    )
    .await
    .ok()
}

/// Sleeps `length` in small steps, updating the progress display.
async fn watch_window(length: Duration, shared: &Shared, progress: &Progress, what: &str) {
    let start = Instant::now();
    let base = shared.success.load(Relaxed);
    while start.elapsed() < length {
        let step = (length - start.elapsed()).min(Duration::from_millis(200));
        tokio::time::sleep(step).await;
        let done = shared.success.load(Relaxed) - base;
        let rate = done as f64 / start.elapsed().as_secs_f64().max(1e-9);
        progress.tick(&format!(
            "{what}: {done} ok, {rate:.0} req/s, {} errors",
            shared.errors.load(Relaxed)
        ));
    }
}

/// Measures one level and returns its summary.
pub async fn measure(
    target: Arc<Target>,
    level: Level,
    plan: Plan,
    progress: &Progress,
) -> anyhow::Result<LevelResult> {
    let slots = match level {
        Level::Concurrency(n) => n,
        Level::RequestRate { .. } => 16,
    };
    let shared = Arc::new(Shared::new(slots));
    let before = read_stats(&target).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    match level {
        Level::Concurrency(n) => {
            for slot in 0..n {
                tasks.spawn(closed_worker(slot, target.clone(), shared.clone()));
            }
        }
        Level::RequestRate {
            rate,
            distribution,
            max_inflight,
        } => {
            if rate <= 0.0 {
                bail!("request rate must be positive");
            }
            tasks.spawn(open_scheduler(
                target.clone(),
                shared.clone(),
                rate,
                distribution,
                max_inflight,
                stop_rx,
            ));
        }
    }
    progress.start(&level.label());

    let mut windows = Vec::new();
    let mut stable = true;
    let mut last = read_stats(&target).await;
    let measure_window = |length: Duration, trial: String| {
        let (shared, target) = (shared.clone(), target.clone());
        async move {
            let start = Instant::now();
            watch_window(length, &shared, progress, &trial).await;
            let client = shared.drain();
            let elapsed = start.elapsed();
            let now = read_stats(&target).await;
            (client, elapsed, now)
        }
    };
    match plan {
        Plan::Fixed { warmup, duration } => {
            let (_, _, now) = measure_window(warmup, "warm-up".into()).await;
            last = now;
            let (client, elapsed, now) = measure_window(duration, "measuring".into()).await;
            let server = last.zip(now).map(|(a, b)| b.since(&a));
            windows.push(Window {
                elapsed,
                client,
                server,
            });
        }
        Plan::Stable {
            interval,
            percentage,
            max_trials,
            percentile,
        } => {
            stable = false;
            for trial in 1..=max_trials.max(1) {
                let (client, elapsed, now) =
                    measure_window(interval, format!("window {trial}/{max_trials}")).await;
                let server = last.zip(now).map(|(a, b)| b.since(&a));
                last = now;
                let failing = client.count == 0 && client.errors > 0;
                windows.push(Window {
                    elapsed,
                    client,
                    server,
                });
                if failing {
                    break;
                }
                if is_stable(&windows, percentage, percentile) {
                    stable = true;
                    break;
                }
            }
        }
    }

    shared.stop.store(true, Relaxed);
    let _ = stop_tx.send(true);
    // Workers finish their request in flight; the timeout bounds it, the grace covers the rest.
    let drained = tokio::time::timeout(target.request_timeout + Duration::from_secs(2), async {
        while tasks.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        tasks.abort_all();
    }
    let after = read_stats(&target).await;
    let measured = &windows[windows.len().saturating_sub(3)..];
    let summary = summarize(measured, target.batch);
    let total_success = shared.success.load(Relaxed);
    let total_errors = shared.errors.load(Relaxed);
    if total_success == 0 {
        let error = summary
            .first_error
            .clone()
            .unwrap_or_else(|| "no request completed".into());
        progress.finish(&format!("{}: failed", level.label()));
        bail!("{} of {}: {error}", level.label(), target.model.name);
    }
    progress.finish(&format!(
        "{}: {:.1} infer/s, p50 {:.0} us, p99 {:.0} us{}",
        level.label(),
        summary.infer_per_sec,
        summary.p50_us,
        summary.p99_us,
        if stable { "" } else { " (unstable)" }
    ));
    Ok(LevelResult {
        level,
        summary,
        stable,
        windows: windows.len(),
        total_success,
        total_errors,
        server_total: before.zip(after).map(|(a, b)| b.since(&a)),
    })
}
