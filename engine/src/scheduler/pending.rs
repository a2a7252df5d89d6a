//! The scheduler's private view of waiting requests: ordered by priority level, then by
//! arrival, with timed-out DELAY requests behind everything else.

use std::collections::VecDeque;
use std::time::Instant;

use super::Queued;
use crate::{EngineError, TimeoutPolicy};

/// Why a request left the queue without being computed.
pub(crate) enum Dropped {
    /// The client went away; nobody to answer.
    Cancelled,
    /// Answer with this error.
    Failed(EngineError),
}

pub(crate) struct Pending {
    levels: Vec<VecDeque<Queued>>,
    delayed: VecDeque<Queued>,
}

impl Pending {
    pub(crate) fn new(levels: usize) -> Self {
        Self {
            levels: (0..levels).map(|_| VecDeque::new()).collect(),
            delayed: VecDeque::new(),
        }
    }

    pub(crate) fn push(&mut self, q: Queued) {
        self.levels[q.level].push_back(q);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.levels.iter().all(VecDeque::is_empty) && self.delayed.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = &Queued> {
        self.levels.iter().flatten().chain(self.delayed.iter())
    }

    /// Arrival time of the request that has waited longest.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.levels
            .iter()
            .chain(std::iter::once(&self.delayed))
            .filter_map(|q| q.front())
            .map(|q| q.enqueued)
            .min()
    }

    /// Removes cancelled and expired requests, calling `on_drop` for each, and moves
    /// timed-out DELAY requests behind the rest.
    pub(crate) fn reap(&mut self, now: Instant, mut on_drop: impl FnMut(Queued, Dropped)) {
        for level in &mut self.levels {
            let mut kept = VecDeque::with_capacity(level.len());
            for q in level.drain(..) {
                match check(&q, now) {
                    Verdict::Keep => kept.push_back(q),
                    Verdict::Drop(d) => on_drop(q, d),
                    Verdict::Delay => self.delayed.push_back(q),
                }
            }
            *level = kept;
        }
        let mut kept = VecDeque::with_capacity(self.delayed.len());
        for q in self.delayed.drain(..) {
            match check(&q, now) {
                Verdict::Drop(d) => on_drop(q, d),
                Verdict::Keep | Verdict::Delay => kept.push_back(q),
            }
        }
        self.delayed = kept;
    }

    /// Batch elements of the requests that would form the next batch, capped at `max`.
    pub(crate) fn next_batch_size(&self, max: usize) -> usize {
        let mut iter = self.iter();
        let Some(head) = iter.next() else { return 0 };
        let mut total = head.batch_size;
        for q in iter {
            if total >= max {
                break;
            }
            if total + q.batch_size <= max && head.compatible(q) {
                total += q.batch_size;
            }
        }
        total
    }

    /// Takes the first request in order, alone.
    pub(crate) fn take_one(&mut self) -> Option<Queued> {
        self.levels
            .iter_mut()
            .chain(std::iter::once(&mut self.delayed))
            .find_map(VecDeque::pop_front)
    }

    /// Takes the next batch: the first request in order, then every compatible request
    /// that still fits in `max` batch elements.
    pub(crate) fn take_batch(&mut self, max: usize) -> Vec<Queued> {
        let mut batch: Vec<Queued> = Vec::new();
        let mut total = 0usize;
        for queue in self
            .levels
            .iter_mut()
            .chain(std::iter::once(&mut self.delayed))
        {
            let mut i = 0;
            while i < queue.len() && total < max {
                let q = &queue[i];
                let fits = total + q.batch_size <= max;
                if fits && batch.first().is_none_or(|head| head.compatible(q)) {
                    let q = queue.remove(i).expect("index checked");
                    total += q.batch_size;
                    batch.push(q);
                } else {
                    i += 1;
                }
            }
        }
        batch
    }
}

enum Verdict {
    Keep,
    Drop(Dropped),
    Delay,
}

fn check(q: &Queued, now: Instant) -> Verdict {
    if q.sink.is_closed() {
        return Verdict::Drop(Dropped::Cancelled);
    }
    if q.request.deadline.is_some_and(|d| now >= d) {
        return Verdict::Drop(Dropped::Failed(EngineError::DeadlineExceeded(format!(
            "request for model '{}' passed its deadline while queued",
            q.request.model_name
        ))));
    }
    match q.queue_deadline {
        Some(d) if now >= d => match q.timeout_action {
            TimeoutPolicy::Reject => {
                Verdict::Drop(Dropped::Failed(EngineError::Unavailable(format!(
                    "request for model '{}' timed out in the queue",
                    q.request.model_name
                ))))
            }
            TimeoutPolicy::Delay => Verdict::Delay,
        },
        _ => Verdict::Keep,
    }
}
