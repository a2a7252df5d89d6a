//! Per model-version statistics in Triton's ModelStatistics shape, mirrored into Prometheus
//! metrics with Triton's names.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use parking_lot::Mutex;
use serde::Serialize;

/// A count and a cumulative duration in nanoseconds (Triton's `StatisticDuration`).
#[derive(Debug, Default)]
pub(crate) struct DurationStat {
    count: AtomicU64,
    ns: AtomicU64,
}

impl DurationStat {
    fn add(&self, n: u64, d: Duration) {
        self.count.fetch_add(n, Relaxed);
        self.ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    fn snapshot(&self) -> DurationSnapshot {
        DurationSnapshot {
            count: self.count.load(Relaxed),
            ns: self.ns.load(Relaxed),
        }
    }
}

/// A read-out of a count and cumulative duration (Triton's `StatisticDuration`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DurationSnapshot {
    /// How many times.
    pub count: u64,
    /// Total nanoseconds.
    pub ns: u64,
}

/// Request-level statistics (Triton's `InferStatistics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InferStatsSnapshot {
    /// Successful requests, received to response.
    pub success: DurationSnapshot,
    /// Failed requests.
    pub fail: DurationSnapshot,
    /// Time in queue.
    pub queue: DurationSnapshot,
    /// Time assembling inputs.
    pub compute_input: DurationSnapshot,
    /// Time in the model.
    pub compute_infer: DurationSnapshot,
    /// Time splitting outputs.
    pub compute_output: DurationSnapshot,
    /// Response cache hits, with the time spent looking the response up.
    pub cache_hit: DurationSnapshot,
    /// Response cache misses, with the time spent looking up and then inserting the
    /// computed response.
    pub cache_miss: DurationSnapshot,
}

/// Statistics of executions at one batch size (Triton's `InferBatchStatistics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchStatsSnapshot {
    /// The batch size.
    pub batch_size: u64,
    /// Input assembly.
    pub compute_input: DurationSnapshot,
    /// Model execution.
    pub compute_infer: DurationSnapshot,
    /// Output splitting.
    pub compute_output: DurationSnapshot,
}

/// One model version's statistics (Triton's `ModelStatistics`, JSON keys as Triton's REST).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ModelStatsSnapshot {
    /// Model name.
    pub name: String,
    /// Version, as a string like Triton.
    pub version: String,
    /// Milliseconds since the epoch of the last inference, 0 if none.
    pub last_inference: u64,
    /// Inferences performed (batch elements, not requests).
    pub inference_count: u64,
    /// Model executions (one per batch).
    pub execution_count: u64,
    /// Request statistics.
    pub inference_stats: InferStatsSnapshot,
    /// Per batch size execution statistics.
    pub batch_stats: Vec<BatchStatsSnapshot>,
}

#[derive(Default)]
struct BatchStat {
    compute_input: DurationSnapshot,
    compute_infer: DurationSnapshot,
    compute_output: DurationSnapshot,
}

struct Metrics {
    success: Counter,
    failure_rejected: Counter,
    failure_canceled: Counter,
    failure_backend: Counter,
    inference_count: Counter,
    exec_count: Counter,
    request_duration_us: Counter,
    queue_duration_us: Counter,
    compute_input_us: Counter,
    compute_infer_us: Counter,
    compute_output_us: Counter,
    pending: Gauge,
    running: Gauge,
    kv_cache: Gauge,
    request_seconds: Histogram,
    queue_seconds: Histogram,
    compute_seconds: Histogram,
    first_response_ms: Histogram,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_hit_us: Counter,
    cache_miss_us: Counter,
}

/// Histogram of a request's time from arrival to its final answer, in seconds.
pub const REQUEST_DURATION: &str = "nereid_inference_request_duration_seconds";

/// Histogram of a request's time in its model's queue, in seconds.
pub const QUEUE_DURATION: &str = "nereid_inference_queue_duration_seconds";

/// Histogram of the compute time (input, infer, output) of the batch a request was in, in
/// seconds.
pub const COMPUTE_DURATION: &str = "nereid_inference_compute_duration_seconds";

/// Histogram of a decoupled model's time to its first response, in milliseconds
/// (Triton's name and unit).
pub const FIRST_RESPONSE: &str = "nv_inference_first_response_histogram_ms";

/// Default buckets of the three duration histograms, in seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets of the first-response histogram, in milliseconds.
pub const FIRST_RESPONSE_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// Gauge of the sequences a decoupled model is generating now (the model server
/// protocol's TotalRunningRequests; its TotalQueuedRequests is
/// `nv_inference_pending_request_count`).
pub const RUNNING_SEQUENCES: &str = "nereid_running_sequences";

/// Gauge of the fraction (0 to 1) of a generation model's KV-cache budget in use: positions
/// cached by its live sequences over context length times the sequences it may run at
/// once (the model server protocol's KVCacheUtilization).
pub const KV_CACHE_USAGE: &str = "nereid_kv_cache_usage_ratio";

#[derive(Debug, Clone, Copy, Default)]
struct DecoupledLoad {
    running: usize,
    held: usize,
    capacity: usize,
}

/// Live statistics of one model version.
pub struct ModelStats {
    name: String,
    version: i64,
    success: DurationStat,
    fail: DurationStat,
    queue: DurationStat,
    compute_input: DurationStat,
    compute_infer: DurationStat,
    compute_output: DurationStat,
    cache_hit: DurationStat,
    cache_miss: DurationStat,
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    last_inference_ms: AtomicU64,
    pending: AtomicI64,
    /// Per instance of a decoupled model: live sequences, KV positions held and the most
    /// it could hold.
    decoupled: Mutex<Vec<DecoupledLoad>>,
    batches: Mutex<BTreeMap<u64, BatchStat>>,
    metrics: Metrics,
}

impl ModelStats {
    /// Statistics for `name` version `version`, registering its metrics with the installed
    /// `metrics` recorder (a no-op where none is installed).
    pub fn new(name: &str, version: i64) -> Self {
        let labels = [
            ("model", name.to_string()),
            ("version", version.to_string()),
        ];
        let failure = |reason: &'static str| {
            let mut l = labels.to_vec();
            l.push(("reason", reason.to_string()));
            counter!("nv_inference_request_failure", &l)
        };
        let metrics = Metrics {
            success: counter!("nv_inference_request_success", &labels),
            failure_rejected: failure("REJECTED"),
            failure_canceled: failure("CANCELED"),
            failure_backend: failure("BACKEND"),
            inference_count: counter!("nv_inference_count", &labels),
            exec_count: counter!("nv_inference_exec_count", &labels),
            request_duration_us: counter!("nv_inference_request_duration_us", &labels),
            queue_duration_us: counter!("nv_inference_queue_duration_us", &labels),
            compute_input_us: counter!("nv_inference_compute_input_duration_us", &labels),
            compute_infer_us: counter!("nv_inference_compute_infer_duration_us", &labels),
            compute_output_us: counter!("nv_inference_compute_output_duration_us", &labels),
            pending: gauge!("nv_inference_pending_request_count", &labels),
            running: gauge!(RUNNING_SEQUENCES, &labels),
            kv_cache: gauge!(KV_CACHE_USAGE, &labels),
            request_seconds: histogram!(REQUEST_DURATION, &labels),
            queue_seconds: histogram!(QUEUE_DURATION, &labels),
            compute_seconds: histogram!(COMPUTE_DURATION, &labels),
            first_response_ms: histogram!(FIRST_RESPONSE, &labels),
            cache_hits: counter!("nv_cache_num_hits_per_model", &labels),
            cache_misses: counter!("nv_cache_num_misses_per_model", &labels),
            cache_hit_us: counter!("nv_cache_hit_duration_per_model", &labels),
            cache_miss_us: counter!("nv_cache_miss_duration_per_model", &labels),
        };
        Self {
            name: name.to_string(),
            version,
            success: DurationStat::default(),
            fail: DurationStat::default(),
            queue: DurationStat::default(),
            compute_input: DurationStat::default(),
            compute_infer: DurationStat::default(),
            compute_output: DurationStat::default(),
            cache_hit: DurationStat::default(),
            cache_miss: DurationStat::default(),
            inference_count: AtomicU64::default(),
            execution_count: AtomicU64::default(),
            last_inference_ms: AtomicU64::default(),
            pending: AtomicI64::default(),
            decoupled: Mutex::new(Vec::new()),
            batches: Mutex::new(BTreeMap::new()),
            metrics,
        }
    }

    /// A request finished successfully after `total` since it was received.
    pub fn record_success(&self, total: Duration) {
        self.success.add(1, total);
        self.metrics.success.increment(1);
        self.metrics
            .request_duration_us
            .increment(total.as_micros() as u64);
        self.metrics.request_seconds.record(total.as_secs_f64());
    }

    /// A decoupled model sent a request's first response `after` its arrival.
    pub fn record_first_response(&self, after: Duration) {
        self.metrics
            .first_response_ms
            .record(after.as_secs_f64() * 1e3);
    }

    /// A request failed after `total`, for `reason` (Triton's failure reason label).
    pub fn record_failure(&self, total: Duration, reason: &str) {
        self.fail.add(1, total);
        match reason {
            "CANCELED" => self.metrics.failure_canceled.increment(1),
            "BACKEND" => self.metrics.failure_backend.increment(1),
            _ => self.metrics.failure_rejected.increment(1),
        }
        self.metrics
            .request_duration_us
            .increment(total.as_micros() as u64);
        self.metrics.request_seconds.record(total.as_secs_f64());
    }

    /// A request was answered from the response cache after `lookup`.
    pub fn record_cache_hit(&self, lookup: Duration) {
        self.cache_hit.add(1, lookup);
        self.metrics.cache_hits.increment(1);
        self.metrics
            .cache_hit_us
            .increment(lookup.as_micros() as u64);
    }

    /// Time `spent` on a request that was not in the response cache: looking it up
    /// (`misses` is 1), or later keeping its response (`misses` is 0: one miss, counted
    /// once).
    pub fn record_cache_miss(&self, misses: u64, spent: Duration) {
        self.cache_miss.add(misses, spent);
        self.metrics.cache_misses.increment(misses);
        self.metrics
            .cache_miss_us
            .increment(spent.as_micros() as u64);
    }

    /// A request left the queue after waiting `waited`.
    pub fn record_queue(&self, waited: Duration) {
        self.queue.add(1, waited);
        self.metrics
            .queue_duration_us
            .increment(waited.as_micros() as u64);
        self.metrics.queue_seconds.record(waited.as_secs_f64());
    }

    /// One model execution over `requests` requests holding `batch_size` inferences.
    pub fn record_execution(
        &self,
        requests: u64,
        batch_size: u64,
        input: Duration,
        infer: Duration,
        output: Duration,
    ) {
        self.compute_input.add(requests, input * requests as u32);
        self.compute_infer.add(requests, infer * requests as u32);
        self.compute_output.add(requests, output * requests as u32);
        self.inference_count.fetch_add(batch_size, Relaxed);
        self.execution_count.fetch_add(1, Relaxed);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        self.last_inference_ms.store(now_ms as u64, Relaxed);
        {
            let mut batches = self.batches.lock();
            let b = batches.entry(batch_size).or_default();
            for (stat, d) in [
                (&mut b.compute_input, input),
                (&mut b.compute_infer, infer),
                (&mut b.compute_output, output),
            ] {
                stat.count += 1;
                stat.ns += d.as_nanos() as u64;
            }
        }
        let m = &self.metrics;
        m.inference_count.increment(batch_size);
        m.exec_count.increment(1);
        m.compute_input_us
            .increment((input * requests as u32).as_micros() as u64);
        m.compute_infer_us
            .increment((infer * requests as u32).as_micros() as u64);
        m.compute_output_us
            .increment((output * requests as u32).as_micros() as u64);
        m.compute_seconds
            .record_many((input + infer + output).as_secs_f64(), requests as usize);
    }

    /// Records what one instance of a decoupled model holds now: its live sequences and,
    /// for a model with a KV cache, the positions cached and the most it could cache. The
    /// model's gauges are the sums over its instances (the load signals the Gateway API
    /// Inference Extension's model server protocol asks of LLM servers).
    pub fn record_decoupled(
        &self,
        instance: usize,
        running: usize,
        kv_cache: Option<(usize, usize)>,
    ) {
        let mut loads = self.decoupled.lock();
        if loads.len() <= instance {
            loads.resize(instance + 1, DecoupledLoad::default());
        }
        let (held, capacity) = kv_cache.unwrap_or_default();
        loads[instance] = DecoupledLoad {
            running,
            held,
            capacity,
        };
        let running: usize = loads.iter().map(|l| l.running).sum();
        let held: usize = loads.iter().map(|l| l.held).sum();
        let capacity: usize = loads.iter().map(|l| l.capacity).sum();
        self.metrics.running.set(running as f64);
        if capacity > 0 {
            self.metrics.kv_cache.set(held as f64 / capacity as f64);
        }
    }

    /// Adjusts the number of requests waiting in the queue.
    pub fn add_pending(&self, delta: i64) {
        let now = self.pending.fetch_add(delta, Relaxed) + delta;
        self.metrics.pending.set(now.max(0) as f64);
    }

    /// Requests waiting in the queue now.
    pub fn pending(&self) -> u64 {
        self.pending.load(Relaxed).max(0) as u64
    }

    /// A consistent-enough read-out for the statistics APIs.
    pub fn snapshot(&self) -> ModelStatsSnapshot {
        let batch_stats = self
            .batches
            .lock()
            .iter()
            .map(|(&size, b)| BatchStatsSnapshot {
                batch_size: size,
                compute_input: b.compute_input,
                compute_infer: b.compute_infer,
                compute_output: b.compute_output,
            })
            .collect();
        ModelStatsSnapshot {
            name: self.name.clone(),
            version: self.version.to_string(),
            last_inference: self.last_inference_ms.load(Relaxed),
            inference_count: self.inference_count.load(Relaxed),
            execution_count: self.execution_count.load(Relaxed),
            inference_stats: InferStatsSnapshot {
                success: self.success.snapshot(),
                fail: self.fail.snapshot(),
                queue: self.queue.snapshot(),
                compute_input: self.compute_input.snapshot(),
                compute_infer: self.compute_infer.snapshot(),
                compute_output: self.compute_output.snapshot(),
                cache_hit: self.cache_hit.snapshot(),
                cache_miss: self.cache_miss.snapshot(),
            },
            batch_stats,
        }
    }
}
