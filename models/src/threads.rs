//! How CPU threads split between model instances and intra-op parallelism.
//!
//! Every instance runs on its own engine worker thread. Within an instance, candle's CPU
//! kernels parallelise in two ways, each sized from the environment:
//! - float matmuls (gemm) split into `RAYON_NUM_THREADS` tasks on the *current* rayon pool;
//! - quantized matmuls and large element-wise ops use candle's own spinning "barrier pool" of
//!   `CANDLE_NUM_THREADS` threads (one pool per process, shared by every instance, calls
//!   serialised).
//!
//! So each instance gets a dedicated rayon pool of `intra_op_threads` threads and runs its
//! forward passes inside it ([`IntraOp::run`]), which bounds gemm per instance to its own
//! pool. [`candle_env`] says what the server wants in the environment: `RAYON_NUM_THREADS`
//! (how many tasks a gemm splits into) at the machine's cores, so an instance given two
//! threads uses both, while a one-thread instance runs the tasks one after another at no
//! measurable cost; `CANDLE_NUM_THREADS` (the quantized kernels' shared pool) at the
//! default `intra_op_threads`. Either variable already set in the environment wins. With one
//! thread per instance every kernel runs on the instance's own thread and instances never
//! wait on each other; use `instance_group { count: N }` to spread requests over N cores,
//! or `intra_op_threads` to speed up one instance (the demo generator uses two: batched
//! decoding is a GEMM).
//!
//! Writing the environment is only sound while no other thread can read it, so this library
//! never does: the server's `main` sets these variables before it starts any thread, and a
//! process that does not (tests, other embedders) gets candle's defaults (physical cores
//! for both).

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

/// The environment variables candle sizes its CPU parallelism by, with the values the
/// server wants for instances of `threads` intra-op threads: gemm tasks at the machine's
/// cores, the quantized kernels' pool at `threads`. Variables the environment already sets
/// are left out, so the operator's choice wins. Only reads the environment; setting the
/// variables is up to the caller, before any other thread exists.
pub fn candle_env(threads: usize) -> Vec<(&'static str, String)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    [
        ("RAYON_NUM_THREADS", cores.max(threads)),
        ("CANDLE_NUM_THREADS", threads.max(1)),
    ]
    .into_iter()
    .filter(|(var, _)| std::env::var_os(var).is_none())
    .map(|(var, count)| (var, count.to_string()))
    .collect()
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
    fn candle_env_sizes_both_pools_unless_already_set() {
        let wanted = candle_env(3);
        for (var, value) in &wanted {
            let count: usize = value.parse().unwrap();
            match *var {
                "RAYON_NUM_THREADS" => assert!(count >= 3),
                "CANDLE_NUM_THREADS" => assert_eq!(count, 3),
                other => panic!("unexpected variable {other}"),
            }
        }
        for var in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
            let set = std::env::var_os(var).is_some();
            assert_eq!(wanted.iter().any(|(v, _)| *v == var), !set, "{var}");
        }
    }

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
