//! Progress of a job: a bar on a terminal, a log line every interval otherwise, and the
//! summary at the end.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What a finished job did.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Rows this shard owns, including those done by an earlier run.
    pub rows_total: u64,
    /// Rows scored and written by this run.
    pub rows_written: u64,
    /// Rows that failed in this run (in the errors files).
    pub rows_failed: u64,
    /// Rows skipped because an earlier run had committed their parts.
    pub rows_resumed: u64,
    /// Output parts committed by this run.
    pub parts_written: usize,
    /// Completion tokens generated (text generators only).
    pub tokens: u64,
    /// Wall time of this run.
    pub wall: Duration,
}

impl Summary {
    /// Rows (scored or failed) per second of wall time.
    pub fn rows_per_second(&self) -> f64 {
        (self.rows_written + self.rows_failed) as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Tokens generated per second of wall time.
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rows written, {} failed, {} resumed of {} in {:.1} s ({:.1} rows/s), {} parts",
            self.rows_written,
            self.rows_failed,
            self.rows_resumed,
            self.rows_total,
            self.wall.as_secs_f64(),
            self.rows_per_second(),
            self.parts_written
        )?;
        if self.tokens > 0 {
            write!(
                f,
                ", {} tokens ({:.1} tokens/s)",
                self.tokens,
                self.tokens_per_second()
            )?;
        }
        Ok(())
    }
}

/// Counts rows as parts are written and shows them.
pub(crate) struct Progress {
    summary: Summary,
    started: Instant,
    bar: Option<ProgressBar>,
    interval: Duration,
    last_line: Instant,
}

impl Progress {
    /// Starts counting: `total` rows for this shard, `resumed` of them already done.
    pub(crate) fn new(total: u64, resumed: u64, interval: Duration) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "[{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} rows {per_sec} eta {eta} {msg}",
                )
                .expect("static template"),
            );
            bar.set_position(resumed);
            bar.reset_eta();
            bar
        });
        Self {
            summary: Summary {
                rows_total: total,
                rows_written: 0,
                rows_failed: 0,
                rows_resumed: resumed,
                parts_written: 0,
                tokens: 0,
                wall: Duration::ZERO,
            },
            started: Instant::now(),
            bar,
            interval,
            last_line: Instant::now(),
        }
    }

    /// Counts rows written and failed, and tokens generated.
    pub(crate) fn rows(&mut self, written: u64, failed: u64, tokens: u64) {
        self.summary.rows_written += written;
        self.summary.rows_failed += failed;
        self.summary.tokens += tokens;
        let done = self.done();
        match &self.bar {
            Some(bar) => {
                bar.set_position(done);
                if self.summary.rows_failed > 0 {
                    bar.set_message(format!("{} errors", self.summary.rows_failed));
                }
            }
            None if self.last_line.elapsed() >= self.interval => {
                self.last_line = Instant::now();
                let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
                let rate = (self.summary.rows_written + self.summary.rows_failed) as f64 / elapsed;
                let left = self.summary.rows_total.saturating_sub(done) as f64;
                tracing::info!(
                    rows = done,
                    total = self.summary.rows_total,
                    errors = self.summary.rows_failed,
                    rows_per_second = format!("{rate:.1}"),
                    eta_seconds = format!("{:.0}", left / rate.max(1e-9)),
                    "progress"
                );
            }
            None => {}
        }
    }

    /// Counts a committed part.
    pub(crate) fn part(&mut self) {
        self.summary.parts_written += 1;
    }

    fn done(&self) -> u64 {
        self.summary.rows_resumed + self.summary.rows_written + self.summary.rows_failed
    }

    /// The summary, bar cleared.
    pub(crate) fn finish(mut self) -> Summary {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.summary.wall = self.started.elapsed();
        self.summary
    }
}
