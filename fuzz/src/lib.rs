//! A small mutation fuzzer on stable Rust for the parsers that read what clients send:
//! each crate runs its targets from a `#[test]` beside the code, so `cargo test` fuzzes
//! every target for a bounded time, and `scripts/fuzz.sh` runs the same targets for
//! longer.
//!
//! There is no coverage feedback (that needs an instrumented build of the whole tree);
//! instead the pool grows with the inputs a target *accepted*, which are the ones that
//! reached past the first validation, and mutations are structure-aware enough to keep
//! text formats mostly well-formed: dictionary tokens, numbers at the edges of their
//! types, spliced fragments of other inputs.
//!
//! A target that panics fails the test; the input is saved under `fuzz/artifacts/<name>/`
//! and the message says how to replay it (`NEREID_FUZZ_REPLAY=path`).
//!
//! Knobs (environment): `NEREID_FUZZ_SECS` (seconds per target, default 1),
//! `NEREID_FUZZ_SEED` (the random seed, printed in every report), `NEREID_FUZZ_REPLAY`
//! (run one file and nothing else).
//!
//! ```
//! let report = nereid_fuzz::Target::new("doc_example")
//!     .seed(b"[1, 2, 3]")
//!     .token(b"null")
//!     .run(|bytes| std::str::from_utf8(bytes).is_ok());
//! assert!(report.executions > 0);
//! ```

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Where committed seed inputs live: `fuzz/corpus/<target>/`.
pub fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name)
}

/// Where inputs that made a target panic are written: `fuzz/artifacts/<target>/`.
pub fn artifact_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("artifacts")
        .join(name)
}

/// Largest input the mutator builds.
const MAX_INPUT: usize = 64 << 10;

/// Accepted inputs kept for further mutation.
const MAX_POOL: usize = 512;

/// Numbers at the edges of the types the parsers read.
const EDGE_NUMBERS: &[&[u8]] = &[
    b"0",
    b"-1",
    b"1",
    b"255",
    b"256",
    b"65535",
    b"2147483647",
    b"-2147483648",
    b"4294967295",
    b"4294967296",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
    b"1e309",
    b"-0.0",
    b"NaN",
    b"1.5",
];

/// What one fuzzing run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The target's name.
    pub name: String,
    /// Inputs run.
    pub executions: u64,
    /// Inputs the target accepted.
    pub accepted: u64,
    /// The random seed, to replay the same sequence.
    pub seed: u64,
}

/// A fuzz target: its name, seed inputs and dictionary.
#[derive(Debug, Clone)]
pub struct Target {
    name: String,
    seeds: Vec<Vec<u8>>,
    tokens: Vec<Vec<u8>>,
}

impl Target {
    /// A target named `name`; committed seeds are read from [`corpus_dir`].
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            seeds: Vec::new(),
            tokens: EDGE_NUMBERS.iter().map(|t| t.to_vec()).collect(),
        }
    }

    /// Adds a seed input.
    pub fn seed(mut self, input: &[u8]) -> Self {
        self.seeds.push(input.to_vec());
        self
    }

    /// Adds a dictionary token the mutator inserts and substitutes.
    pub fn token(mut self, token: &[u8]) -> Self {
        self.tokens.push(token.to_vec());
        self
    }

    /// Runs `target` on the seeds, then on mutations of them, for the time budget; the
    /// closure returns whether it accepted the input. Panics (failing the calling test)
    /// when the target panics, after saving the input.
    pub fn run(mut self, target: impl Fn(&[u8]) -> bool) -> Report {
        let seed = std::env::var("NEREID_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(time_seed);
        if let Ok(path) = std::env::var("NEREID_FUZZ_REPLAY") {
            let input = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let accepted = self.execute(&target, &input, seed);
            return Report {
                name: self.name,
                executions: 1,
                accepted: u64::from(accepted),
                seed,
            };
        }
        self.seeds.extend(read_corpus(&corpus_dir(&self.name)));
        if self.seeds.is_empty() {
            self.seeds.push(Vec::new());
        }
        let budget = std::env::var("NEREID_FUZZ_SECS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .map_or(Duration::from_secs(1), Duration::from_secs_f64);
        let mut rng = Rng(seed | 1);
        let mut pool: Vec<Vec<u8>> = Vec::new();
        let mut report = Report {
            name: self.name.clone(),
            executions: 0,
            accepted: 0,
            seed,
        };
        for input in self.seeds.clone() {
            report.executions += 1;
            if self.execute(&target, &input, seed) {
                report.accepted += 1;
                pool.push(input);
            }
        }
        let started = Instant::now();
        while started.elapsed() < budget {
            // A batch between clock reads: the targets take microseconds.
            for _ in 0..64 {
                let parent = if !pool.is_empty() && rng.below(4) != 0 {
                    &pool[rng.below(pool.len())]
                } else {
                    &self.seeds[rng.below(self.seeds.len())]
                };
                let mut input = parent.clone();
                for _ in 0..=rng.below(4) {
                    self.mutate(&mut input, &pool, &mut rng);
                }
                report.executions += 1;
                if self.execute(&target, &input, seed) {
                    report.accepted += 1;
                    if pool.len() < MAX_POOL {
                        pool.push(input);
                    } else {
                        let slot = rng.below(MAX_POOL);
                        pool[slot] = input;
                    }
                }
            }
        }
        eprintln!(
            "fuzz {}: {} executions ({} accepted) in {:.1} s, seed {}",
            report.name,
            report.executions,
            report.accepted,
            started.elapsed().as_secs_f64(),
            report.seed
        );
        report
    }

    fn execute(&self, target: &impl Fn(&[u8]) -> bool, input: &[u8], seed: u64) -> bool {
        match catch_unwind(AssertUnwindSafe(|| target(input))) {
            Ok(accepted) => accepted,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                let dir = artifact_dir(&self.name);
                let path = dir.join(format!("crash-{:016x}", fnv1a(input)));
                let saved =
                    std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input));
                panic!(
                    "fuzz target {} panicked ({what}) on a {}-byte input {}; seed {seed}; replay with \
                     NEREID_FUZZ_REPLAY={}",
                    self.name,
                    input.len(),
                    match saved {
                        Ok(()) => "saved".to_string(),
                        Err(e) => format!("that could not be saved ({e})"),
                    },
                    path.display()
                );
            }
        }
    }

    fn mutate(&self, input: &mut Vec<u8>, pool: &[Vec<u8>], rng: &mut Rng) {
        let len = input.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = [0, 0xff, 0x7f, 0x80, b'"', b'{', b'[', b'\\', b'\n'][rng.below(9)];
            }
            2 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(16)).min(len);
                input.drain(start..end);
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(32)).min(len);
                let copy = input[start..end].to_vec();
                let at = rng.below(input.len() + 1);
                input.splice(at..at, copy);
            }
            4 | 5 => {
                let token = &self.tokens[rng.below(self.tokens.len())];
                let at = rng.below(len + 1);
                if rng.below(2) == 0 || len == 0 {
                    input.splice(at..at, token.iter().copied());
                } else {
                    // Replace a run of digits, or the bytes at `at`, with the token.
                    let end = input[at..]
                        .iter()
                        .position(|b| !b.is_ascii_digit() && *b != b'-' && *b != b'.')
                        .map_or(len, |p| at + p.max(1).min(len - at));
                    input.splice(at..end, token.iter().copied());
                }
            }
            6 => {
                let other = if pool.is_empty() || rng.below(2) == 0 {
                    &self.seeds[rng.below(self.seeds.len())]
                } else {
                    &pool[rng.below(pool.len())]
                };
                if !other.is_empty() {
                    let start = rng.below(other.len());
                    let end = (start + 1 + rng.below(64)).min(other.len());
                    let at = rng.below(len + 1);
                    input.splice(at..at, other[start..end].iter().copied());
                }
            }
            7 if len > 0 => input.truncate(rng.below(len)),
            8 if len >= 4 => {
                // A little-endian length field set to an edge value.
                let at = rng.below(len - 3);
                let value: u32 =
                    [0, 1, 0x7fff_ffff, 0xffff_ffff, len as u32, len as u32 + 1][rng.below(6)];
                input[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
            _ => {
                let at = rng.below(len + 1);
                input.insert(at, rng.below(256) as u8);
            }
        }
        input.truncate(MAX_INPUT);
    }
}

fn read_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    paths
        .into_iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

fn time_seed() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// xorshift64*: fast, and reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_target_fails_with_its_input_saved() {
        let outcome = catch_unwind(|| {
            Target::new("self_test_panics").seed(b"ok").run(|bytes| {
                assert!(!bytes.starts_with(b"ok"), "found it");
                true
            })
        });
        let message = *outcome.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("found it"), "{message}");
        let path = message.rsplit("NEREID_FUZZ_REPLAY=").next().unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"ok");
        std::fs::remove_dir_all(artifact_dir("self_test_panics")).unwrap();
    }

    #[test]
    fn mutations_stay_bounded_and_vary() {
        let target = Target::new("self_test_mutations").seed(b"{\"shape\": [1, 2]}");
        let mut rng = Rng(7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let mut input = target.seeds[0].clone();
            target.mutate(&mut input, &[], &mut rng);
            assert!(input.len() <= MAX_INPUT);
            seen.insert(input);
        }
        assert!(seen.len() > 500, "only {} distinct mutants", seen.len());
    }
}
