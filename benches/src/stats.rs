//! Client-side measurements: HDR latency histograms and send/receive time per window, and
//! the summary of a measured level (throughput, percentiles, server breakdown).

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::clients::CallTiming;
use crate::server_stats::ServerStats;

/// Highest latency recorded, in nanoseconds (larger values are clamped): 60 s.
const MAX_NS: u64 = 60_000_000_000;

/// A fresh nanosecond histogram with 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("static histogram bounds")
}

/// What one worker (or all of them, merged) saw during a window.
#[derive(Clone, Debug)]
pub struct Recorder {
    /// Request latency, send to last response byte decoded, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Successful requests.
    pub count: u64,
    /// Failed requests.
    pub errors: u64,
    /// The first error's message.
    pub first_error: Option<String>,
    /// Total client send time.
    pub send: Duration,
    /// Total client receive time.
    pub recv: Duration,
    /// Open loop: requests that started later than scheduled because too many were out.
    pub delayed: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            latency: histogram(),
            count: 0,
            errors: 0,
            first_error: None,
            send: Duration::ZERO,
            recv: Duration::ZERO,
            delayed: 0,
        }
    }
}

impl Recorder {
    /// Records a successful request.
    pub fn success(&mut self, latency: Duration, timing: CallTiming) {
        self.latency
            .saturating_record((latency.as_nanos() as u64).clamp(1, MAX_NS));
        self.count += 1;
        self.send += timing.send;
        self.recv += timing.recv;
    }

    /// Records a failed request.
    pub fn failure(&mut self, error: &anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{error:#}"));
        }
    }

    /// Adds another recorder's measurements.
    pub fn merge(&mut self, other: &Recorder) {
        self.latency
            .add(&other.latency)
            .expect("histograms share bounds");
        self.count += other.count;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.send += other.send;
        self.recv += other.recv;
        self.delayed += other.delayed;
    }
}

/// One measurement window: what the client saw and, when readable, the server's statistics
/// over the same time.
#[derive(Clone, Debug)]
pub struct Window {
    /// Wall time of the window.
    pub elapsed: Duration,
    /// Client measurements.
    pub client: Recorder,
    /// Server statistics delta over the window.
    pub server: Option<ServerStats>,
}

impl Window {
    /// Requests completed per second.
    pub fn throughput(&self) -> f64 {
        self.client.count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency used for stability: a percentile or the mean, in microseconds.
    pub fn stability_latency(&self, percentile: Option<u8>) -> f64 {
        match percentile {
            Some(p) => self.client.latency.value_at_quantile(p as f64 / 100.0) as f64 / 1e3,
            None => self.client.latency.mean() / 1e3,
        }
    }
}

/// What a level reports: perf_analyzer's numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Requests completed per second.
    pub requests_per_sec: f64,
    /// Inferences per second (requests times batch size).
    pub infer_per_sec: f64,
    /// Successful requests measured.
    pub count: u64,
    /// Failed requests measured.
    pub errors: u64,
    /// The first error, if any.
    pub first_error: Option<String>,
    /// Latency percentiles and mean, in microseconds.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 95th percentile.
    pub p95_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Mean.
    pub avg_us: f64,
    /// Mean client send time (build and serialize).
    pub client_send_us: f64,
    /// Mean client receive time (deserialize).
    pub client_recv_us: f64,
    /// Server-side means when the statistics API answered.
    pub server: Option<ServerBreakdown>,
    /// Open loop: requests started late.
    pub delayed: u64,
    /// The server's CPU time per request, in microseconds, where it was read (see
    /// [`crate::cpu`]).
    pub server_cpu_us: Option<f64>,
}

/// Server-side averages per request over the measured windows, in microseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerBreakdown {
    /// Requests the server counted as successful.
    pub success: u64,
    /// Mean request time inside the server.
    pub request_us: f64,
    /// Mean queue time.
    pub queue_us: f64,
    /// Mean input assembly time.
    pub compute_input_us: f64,
    /// Mean model time.
    pub compute_infer_us: f64,
    /// Mean output split time.
    pub compute_output_us: f64,
    /// Mean batch size executed.
    pub average_batch: f64,
}

impl ServerBreakdown {
    /// Means of a statistics delta.
    pub fn from_delta(d: &ServerStats) -> Self {
        let us = |c: crate::server_stats::CountNs| c.average().as_nanos() as f64 / 1e3;
        Self {
            success: d.success.count,
            request_us: us(d.success),
            queue_us: us(d.queue),
            compute_input_us: us(d.compute_input),
            compute_infer_us: us(d.compute_infer),
            compute_output_us: us(d.compute_output),
            average_batch: d.average_batch(),
        }
    }
}

/// Merges windows into one summary; `batch` multiplies requests into inferences.
pub fn summarize(windows: &[Window], batch: usize) -> Summary {
    let mut client = Recorder::default();
    let mut elapsed = Duration::ZERO;
    let mut server: Option<ServerStats> = Some(ServerStats::default());
    for w in windows {
        client.merge(&w.client);
        elapsed += w.elapsed;
        server = match (server, &w.server) {
            (Some(mut total), Some(d)) => {
                total.add(d);
                Some(total)
            }
            _ => None,
        };
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    let n = client.count.max(1) as f64;
    let q = |p: f64| client.latency.value_at_quantile(p) as f64 / 1e3;
    let empty = client.count == 0;
    Summary {
        requests_per_sec: client.count as f64 / secs,
        infer_per_sec: (client.count as usize * batch) as f64 / secs,
        count: client.count,
        errors: client.errors,
        first_error: client.first_error.clone(),
        p50_us: if empty { 0.0 } else { q(0.50) },
        p90_us: if empty { 0.0 } else { q(0.90) },
        p95_us: if empty { 0.0 } else { q(0.95) },
        p99_us: if empty { 0.0 } else { q(0.99) },
        avg_us: if empty {
            0.0
        } else {
            client.latency.mean() / 1e3
        },
        client_send_us: client.send.as_nanos() as f64 / 1e3 / n,
        client_recv_us: client.recv.as_nanos() as f64 / 1e3 / n,
        server: server
            .filter(|_| !windows.is_empty())
            .map(|d| ServerBreakdown::from_delta(&d)),
        delayed: client.delayed,
        server_cpu_us: None,
    }
}

/// Whether the last three windows agree within `percentage` on throughput and latency.
pub fn is_stable(windows: &[Window], percentage: f64, percentile: Option<u8>) -> bool {
    if windows.len() < 3 {
        return false;
    }
    let last = &windows[windows.len() - 3..];
    let within = |values: [f64; 3]| {
        let mean = values.iter().sum::<f64>() / 3.0;
        mean > 0.0
            && values
                .iter()
                .all(|v| ((v - mean) / mean).abs() * 100.0 <= percentage)
    };
    within([
        last[0].throughput(),
        last[1].throughput(),
        last[2].throughput(),
    ]) && within([
        last[0].stability_latency(percentile),
        last[1].stability_latency(percentile),
        last[2].stability_latency(percentile),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(latencies_us: &[u64], secs: f64) -> Window {
        let mut client = Recorder::default();
        for &l in latencies_us {
            client.success(
                Duration::from_micros(l),
                CallTiming {
                    send: Duration::from_micros(1),
                    recv: Duration::ZERO,
                },
            );
        }
        Window {
            elapsed: Duration::from_secs_f64(secs),
            client,
            server: None,
        }
    }

    #[test]
    fn summary_percentiles_and_rates() {
        let lat: Vec<u64> = (1..=100).collect();
        let s = summarize(&[window(&lat, 1.0), window(&lat, 1.0)], 2);
        assert_eq!(s.count, 200);
        assert!((s.requests_per_sec - 100.0).abs() < 1e-6);
        assert!((s.infer_per_sec - 200.0).abs() < 1e-6);
        assert!((s.p50_us - 50.0).abs() < 0.1, "{}", s.p50_us);
        assert!((s.p99_us - 99.0).abs() < 0.1, "{}", s.p99_us);
        assert!((s.client_send_us - 1.0).abs() < 1e-6);
        assert!(s.server.is_none());
    }

    #[test]
    fn stability_needs_three_close_windows() {
        let w = |n: usize| window(&vec![100; n], 1.0);
        assert!(!is_stable(&[w(100), w(100)], 10.0, None));
        assert!(is_stable(&[w(10), w(100), w(101), w(99)], 10.0, Some(50)));
        assert!(!is_stable(&[w(100), w(150), w(100)], 10.0, None));
    }
}
