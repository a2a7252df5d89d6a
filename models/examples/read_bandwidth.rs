//! This machine's memory read bandwidth: the ceiling of a lone decode stream, which reads
//! every weight once per token (docs/BENCHMARKS.md).
//!
//! ```text
//! cargo run --release -p nereid-models --example read_bandwidth
//! ```
//!
//! Sums a 1 GiB buffer of 64-bit words (far past every cache) with 1 thread and with every
//! core, five passes each, and prints the best pass's GB/s.

use std::time::Instant;

use rayon::prelude::*;

const BYTES: usize = 1 << 30;

fn main() {
    let words: Vec<u64> = (0..BYTES / 8).map(|i| i as u64).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for threads in [1, cores] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a rayon pool");
        let mut best = f64::MAX;
        let mut total = 0u64;
        for _ in 0..5 {
            let start = Instant::now();
            total = total.wrapping_add(pool.install(|| {
                words
                    .par_chunks(1 << 16)
                    .map(|c| c.iter().fold(0u64, |a, &w| a.wrapping_add(w)))
                    .reduce(|| 0, u64::wrapping_add)
            }));
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "read bandwidth, {threads} thread(s): {:.1} GB/s (checksum {total:x})",
            BYTES as f64 / best / 1e9
        );
    }
}
