//! The CPU time a server spends, read from `/proc`: a spawned server's whole process, or
//! the threads of a server hosted in the bench process (picked by thread name, so the load
//! generator's own threads are not counted). Divided by the requests served, it is the
//! server's CPU per request: the cost that decides throughput when cores are shared.

use std::path::Path;
use std::time::Duration;

/// Longest thread name Linux keeps (`comm`, without the terminating NUL).
const COMM_LEN: usize = 15;

/// Where a server's CPU time is read.
#[derive(Clone, Debug)]
pub enum CpuSource {
    /// A process of its own.
    Process(u32),
    /// Threads of this process whose names start with one of these prefixes.
    Threads(Vec<String>),
}

impl CpuSource {
    /// Both sources' threads together, when both are threads of this process.
    pub fn with(&self, other: &Self) -> Option<Self> {
        match (self, other) {
            (Self::Threads(a), Self::Threads(b)) => {
                Some(Self::Threads(a.iter().chain(b).cloned().collect()))
            }
            _ => None,
        }
    }

    /// User plus system CPU time so far; `None` where `/proc` cannot say (not Linux).
    pub fn read(&self) -> Option<Duration> {
        match self {
            Self::Process(pid) => stat_cpu(&Path::new("/proc").join(pid.to_string()).join("stat")),
            Self::Threads(prefixes) => {
                let mut total = Duration::ZERO;
                for task in std::fs::read_dir("/proc/self/task").ok()? {
                    let dir = task.ok()?.path();
                    let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
                    let comm = comm.trim_end();
                    let ours = prefixes
                        .iter()
                        .any(|p| comm.starts_with(&p[..p.len().min(COMM_LEN)]));
                    if ours {
                        // A thread that ended between the listing and the read is skipped.
                        total += stat_cpu(&dir.join("stat")).unwrap_or_default();
                    }
                }
                Some(total)
            }
        }
    }
}

/// utime + stime of a `stat` file.
fn stat_cpu(path: &Path) -> Option<Duration> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(
        ticks as f64 / clock_ticks_per_second(),
    ))
}

/// `/proc` counts CPU time in USER_HZ ticks, which Linux fixes at 100 per second for
/// user space whatever the kernel's own tick rate.
fn clock_ticks_per_second() -> f64 {
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_named_thread_is_counted_and_others_are_not() {
        let spin = |name: &str| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(|| {
                    let started = std::time::Instant::now();
                    let mut x = 0u64;
                    while started.elapsed() < Duration::from_millis(300) {
                        x = x.wrapping_mul(31).wrapping_add(1);
                    }
                    std::hint::black_box(x);
                    std::thread::sleep(Duration::from_millis(300));
                })
                .unwrap()
        };
        let ours = CpuSource::Threads(vec!["cpu-probe-test-spinner".into()]);
        let before = ours.read().unwrap();
        let thread = spin("cpu-probe-test-spinner");
        std::thread::sleep(Duration::from_millis(400));
        let spent = ours.read().unwrap() - before;
        thread.join().unwrap();
        assert!(spent >= Duration::from_millis(150), "{spent:?}");
        let nobody = CpuSource::Threads(vec!["no-such-thread".into()]);
        assert_eq!(nobody.read().unwrap(), Duration::ZERO);
        let me = CpuSource::Process(std::process::id());
        assert!(me.read().unwrap() >= spent);
    }
}
