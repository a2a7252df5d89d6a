//! How CPU threads split between model instances and intra-op parallelism.
//!
//! Every instance runs on its own engine worker thread. Within an instance, candle's CPU
//! kernels parallelise in two ways, each sized once per process:
//! - float matmuls (gemm) split into `RAYON_NUM_THREADS` tasks on the *current* rayon pool;
//! - quantized matmuls and large element-wise ops use candle's own spinning "barrier pool" of
//!   `CANDLE_NUM_THREADS` threads (one pool per process, shared by every instance, calls
//!   serialised).
//!
//! So each instance gets a dedicated rayon pool of `intra_op_threads` threads and runs its
//! forward passes inside it ([`IntraOp::run`]), which bounds gemm per instance to its own
//! pool; [`init_process`] sets `RAYON_NUM_THREADS` (how many tasks a gemm splits into) to the
//! machine's cores, so an instance given two threads uses both, while a one-thread instance
//! runs the tasks one after another at no measurable cost. `CANDLE_NUM_THREADS` (the
//! quantized kernels' shared pool) is set to the first model's `intra_op_threads`. Either
//! variable already set in the environment wins. With one thread per instance every kernel
//! runs on the instance's own thread and instances never wait on each other; use
//! `instance_group { count: N }` to spread requests over N cores, or `intra_op_threads` to
//! speed up one instance (the demo generator uses two: batched decoding is a GEMM).

use std::sync::OnceLock;

/// A per-instance pool for intra-op work.
pub struct IntraOp {
    pool: rayon::ThreadPool,
    threads: usize,
}

impl IntraOp {
    /// A pool of `threads` threads (at least one) named after the instance.
    pub fn new(threads: usize, name: &str) -> anyhow::Result<Self> {
        let threads = threads.max(1);
        let name = name.to_string();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |i| format!("{name}-op{i}"))
            .build()?;
        Ok(Self { pool, threads })
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` inside the pool, so rayon work it spawns stays on the pool's threads.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }
}

/// Fixes candle's process-wide thread counts once, unless the environment already sets
/// them: gemm tasks to the machine's cores, the quantized kernels' pool to `threads`. The
/// server calls it at startup, before any other thread exists; a model load calls it too
/// (for library users), and then changes nothing. Returns the count in force for candle's
/// barrier pool.
pub fn init_process(threads: usize) -> usize {
    static DONE: OnceLock<usize> = OnceLock::new();
    *DONE.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let counts = [
            ("RAYON_NUM_THREADS", cores.max(threads)),
            ("CANDLE_NUM_THREADS", threads.max(1)),
        ];
        for (var, count) in counts {
            if std::env::var_os(var).is_none() {
                // Set once, before candle first reads it; std serialises its own env access.
                std::env::set_var(var, count.to_string());
            }
        }
        let n = std::env::var("CANDLE_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        tracing::info!(
            rayon = std::env::var("RAYON_NUM_THREADS").unwrap_or_default(),
            candle = n,
            "candle CPU thread counts fixed for this process"
        );
        n
    })
}

/// Default `intra_op_threads`: one, measured fastest on 2-core machines (see the report in
/// `examples/bench.rs`); `NEREID_INTRA_OP_THREADS` overrides it.
pub fn default_threads() -> usize {
    std::env::var("NEREID_INTRA_OP_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_on_the_instance_pool() {
        let op = IntraOp::new(2, "t").unwrap();
        assert_eq!(op.threads(), 2);
        let (n, name) = op.run(|| {
            (
                rayon::current_num_threads(),
                std::thread::current().name().map(String::from),
            )
        });
        assert_eq!(n, 2);
        assert!(name.unwrap().starts_with("t-op"));
    }
}
