//! The server's side of a measurement: cumulative model statistics read from the
//! statistics API (gRPC `ModelStatistics` or `GET /v2/models/{m}/stats`), and the
//! difference of two readings as average queue and compute time per request.

use std::time::Duration;

use anyhow::anyhow;
use nereid_proto::inference::{ModelStatistics, StatisticDuration};
use serde::Deserialize;

/// A count and total nanoseconds (Triton's `StatisticDuration`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct CountNs {
    /// How many.
    #[serde(default)]
    pub count: u64,
    /// Total nanoseconds.
    #[serde(default)]
    pub ns: u64,
}

impl CountNs {
    fn minus(self, earlier: Self) -> Self {
        Self {
            count: self.count.saturating_sub(earlier.count),
            ns: self.ns.saturating_sub(earlier.ns),
        }
    }

    /// Average duration, zero when the count is.
    pub fn average(self) -> Duration {
        Duration::from_nanos(self.ns.checked_div(self.count).unwrap_or(0))
    }
}

impl From<Option<&StatisticDuration>> for CountNs {
    fn from(d: Option<&StatisticDuration>) -> Self {
        d.map(|d| Self {
            count: d.count,
            ns: d.ns,
        })
        .unwrap_or_default()
    }
}

/// One model version's cumulative statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Successful requests, received to response.
    pub success: CountNs,
    /// Failed requests.
    pub fail: CountNs,
    /// Time in the queue.
    pub queue: CountNs,
    /// Input assembly.
    pub compute_input: CountNs,
    /// Model execution.
    pub compute_infer: CountNs,
    /// Output splitting.
    pub compute_output: CountNs,
    /// Inferences (batch elements).
    pub inference_count: u64,
    /// Model executions (batches).
    pub execution_count: u64,
}

impl ServerStats {
    /// What happened between `earlier` and this reading.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            success: self.success.minus(earlier.success),
            fail: self.fail.minus(earlier.fail),
            queue: self.queue.minus(earlier.queue),
            compute_input: self.compute_input.minus(earlier.compute_input),
            compute_infer: self.compute_infer.minus(earlier.compute_infer),
            compute_output: self.compute_output.minus(earlier.compute_output),
            inference_count: self.inference_count.saturating_sub(earlier.inference_count),
            execution_count: self.execution_count.saturating_sub(earlier.execution_count),
        }
    }

    /// Adds another reading or delta (to sum windows).
    pub fn add(&mut self, other: &Self) {
        let add = |a: &mut CountNs, b: CountNs| {
            a.count += b.count;
            a.ns += b.ns;
        };
        add(&mut self.success, other.success);
        add(&mut self.fail, other.fail);
        add(&mut self.queue, other.queue);
        add(&mut self.compute_input, other.compute_input);
        add(&mut self.compute_infer, other.compute_infer);
        add(&mut self.compute_output, other.compute_output);
        self.inference_count += other.inference_count;
        self.execution_count += other.execution_count;
    }

    /// Average batch size the server ran (inferences per execution).
    pub fn average_batch(&self) -> f64 {
        if self.execution_count == 0 {
            0.0
        } else {
            self.inference_count as f64 / self.execution_count as f64
        }
    }

    /// Reads the gRPC statistics of one model version.
    pub fn from_proto(stats: &ModelStatistics) -> Self {
        let infer = stats.inference_stats.as_ref();
        Self {
            success: infer.and_then(|s| s.success.as_ref()).into(),
            fail: infer.and_then(|s| s.fail.as_ref()).into(),
            queue: infer.and_then(|s| s.queue.as_ref()).into(),
            compute_input: infer.and_then(|s| s.compute_input.as_ref()).into(),
            compute_infer: infer.and_then(|s| s.compute_infer.as_ref()).into(),
            compute_output: infer.and_then(|s| s.compute_output.as_ref()).into(),
            inference_count: stats.inference_count,
            execution_count: stats.execution_count,
        }
    }

    /// Sums the versions of a gRPC statistics response.
    pub fn sum_proto<'a>(all: impl IntoIterator<Item = &'a ModelStatistics>) -> Self {
        let mut total = Self::default();
        for s in all {
            total.add(&Self::from_proto(s));
        }
        total
    }

    /// Reads `{"model_stats": [...]}` from the REST statistics route, summing versions.
    pub fn from_json(body: &[u8]) -> anyhow::Result<Self> {
        #[derive(Deserialize, Default)]
        struct Infer {
            #[serde(default)]
            success: CountNs,
            #[serde(default)]
            fail: CountNs,
            #[serde(default)]
            queue: CountNs,
            #[serde(default)]
            compute_input: CountNs,
            #[serde(default)]
            compute_infer: CountNs,
            #[serde(default)]
            compute_output: CountNs,
        }
        #[derive(Deserialize)]
        struct Model {
            #[serde(default)]
            inference_count: u64,
            #[serde(default)]
            execution_count: u64,
            #[serde(default)]
            inference_stats: Infer,
        }
        #[derive(Deserialize)]
        struct Response {
            model_stats: Vec<Model>,
        }
        let response: Response = serde_json::from_slice(body)
            .map_err(|e| anyhow!("statistics are not Triton's JSON: {e}"))?;
        let mut total = Self::default();
        for m in response.model_stats {
            let s = m.inference_stats;
            total.add(&Self {
                success: s.success,
                fail: s.fail,
                queue: s.queue,
                compute_input: s.compute_input,
                compute_infer: s.compute_infer,
                compute_output: s.compute_output,
                inference_count: m.inference_count,
                execution_count: m.execution_count,
            });
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_statistics_parse_and_subtract() {
        let body = br#"{"model_stats":[{"name":"simple","version":"1","last_inference":1,"inference_count":10,
            "execution_count":4,"inference_stats":{"success":{"count":10,"ns":1000},"fail":{"count":0,"ns":0},
            "queue":{"count":10,"ns":200},"compute_input":{"count":4,"ns":40},"compute_infer":{"count":4,"ns":400},
            "compute_output":{"count":4,"ns":40}},"batch_stats":[]}]}"#;
        let later = ServerStats::from_json(body).unwrap();
        assert_eq!(
            later.success,
            CountNs {
                count: 10,
                ns: 1000
            }
        );
        assert_eq!(later.average_batch(), 2.5);
        let earlier = ServerStats {
            success: CountNs { count: 4, ns: 400 },
            ..Default::default()
        };
        let delta = later.since(&earlier);
        assert_eq!(delta.success.count, 6);
        assert_eq!(delta.success.average(), Duration::from_nanos(100));
    }
}
