//! The scheduler thread of one model version: it forms batches from the queue and either
//! runs them itself (one batched instance) or hands them to idle instance threads.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use crossbeam_utils::sync::Parker;

use super::pending::{Dropped, Pending};
use super::watchdog::Watchdog;
use super::{worker, Batch, Queued, Shared, POLL};
use crate::{BatchedInstance, EngineError};

/// Where formed batches go.
pub(super) enum Dispatch {
    /// The only instance, batched: the scheduler thread computes on it directly, so a
    /// request costs one wake-up of one thread instead of two.
    Inline(Box<dyn BatchedInstance>),
    /// Instance threads, each announcing on `idle_rx` when it can take a batch.
    Workers {
        idle_rx: Receiver<usize>,
        work_txs: Vec<Sender<Batch>>,
    },
}

/// The waiting requests and how to wait for more.
pub(super) struct Batcher {
    pub shared: Arc<Shared>,
    pub pending: Pending,
    pub parker: Parker,
    /// Present under an execution timeout: checked whenever the scheduler looks at the queue.
    pub watchdog: Option<Watchdog>,
}

pub(super) struct SchedulerLoop {
    pub batcher: Batcher,
    pub dispatch: Dispatch,
    pub next_seq: u64,
}

impl SchedulerLoop {
    /// Runs until the model stops. A panic here (a bug, not a model's: those are caught
    /// around each execution) fails every waiting request and every later one, so no client
    /// hangs on a dead thread.
    pub(super) fn run(mut self) {
        let panic = match catch_unwind(AssertUnwindSafe(|| self.schedule())) {
            Ok(()) => return self.retire_watchdog(),
            Err(panic) => panic,
        };
        let what = worker::panic_message(panic.as_ref());
        let shared = self.batcher.shared.clone();
        tracing::error!(model = shared.spec.name(), "scheduler panicked: {what}");
        let _ = shared.fault.set(format!("scheduler panicked: {what}"));
        shared.accepting.store(false, Release);
        // Requests that passed the accepting check just before it flipped still arrive.
        loop {
            self.batcher.fail_all(shared.refusal());
            if self.batcher.finished() {
                return;
            }
            self.batcher.parker.park_timeout(POLL);
        }
    }

    /// Once no batch is left to form: keeps watching the batches still computing (a stuck
    /// one would otherwise hold up the model's stop), then lets the instance threads go.
    fn retire_watchdog(&mut self) {
        let Some(mut watchdog) = self.batcher.watchdog.take() else {
            return;
        };
        while watchdog.busy() {
            watchdog.check(&self.batcher.shared);
            std::thread::sleep(POLL);
        }
        // Closing the work channels ends the instance threads, replacements included.
        self.dispatch = Dispatch::Workers {
            idle_rx: crossbeam_channel::never(),
            work_txs: Vec::new(),
        };
        watchdog.join();
    }

    fn schedule(&mut self) {
        match &mut self.dispatch {
            Dispatch::Inline(instance) => {
                while let Some(requests) = self.batcher.next_batch() {
                    let delivery =
                        worker::execute(&self.batcher.shared, instance.as_mut(), requests, None)
                            .expect("an unwatched batch always comes back");
                    worker::deliver(delivery);
                }
            }
            Dispatch::Workers { idle_rx, work_txs } => loop {
                let worker = match idle_rx.recv_timeout(POLL) {
                    Ok(w) => w,
                    Err(RecvTimeoutError::Timeout) => {
                        self.batcher.collect();
                        if self.batcher.finished() {
                            return;
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        // Every instance thread is gone: answer what waits instead of hanging.
                        let shared = &self.batcher.shared;
                        shared.accepting.store(false, Release);
                        let error = EngineError::unavailable(format!(
                            "model '{}' has no running instance",
                            shared.spec.name()
                        ));
                        self.batcher.fail_all(error);
                        return;
                    }
                };
                let Some(requests) = self.batcher.next_batch() else {
                    return;
                };
                let batch = Batch {
                    seq: self.next_seq,
                    requests,
                };
                self.next_seq += 1;
                if let Err(e) = work_txs[worker].send(batch) {
                    for mut q in e.into_inner().requests {
                        let error = EngineError::internal("model instance stopped");
                        q.sink.finish(&mut q.ctx, Err(error));
                    }
                }
            },
        }
    }
}

impl Batcher {
    /// Stopping, and nothing left to answer.
    fn finished(&self) -> bool {
        let s = &self.shared;
        s.stopping.load(Acquire)
            && s.submitting.load(Acquire) == 0
            && s.queue.is_empty()
            && self.pending.is_empty()
    }

    /// Moves newly submitted requests into the pending set and drops the dead ones.
    fn collect(&mut self) {
        if let Some(watchdog) = &mut self.watchdog {
            watchdog.check(&self.shared);
        }
        while let Some(q) = self.shared.queue.pop() {
            self.pending.push(q);
        }
        let shared = &self.shared;
        self.pending.reap(Instant::now(), |mut q, why| {
            shared.dequeued(&q);
            match why {
                Dropped::Cancelled => {
                    let error = EngineError::Cancelled("the client went away".into());
                    q.sink.finish(&mut q.ctx, Err(error));
                }
                Dropped::Failed(error) => q.sink.finish(&mut q.ctx, Err(error)),
            }
        });
    }

    /// Answers everything waiting with `error`.
    fn fail_all(&mut self, error: EngineError) {
        self.collect();
        while let Some(mut q) = self.pending.take_one() {
            self.shared.dequeued(&q);
            q.sink.finish(&mut q.ctx, Err(error.clone()));
        }
    }

    /// Waits for and forms the next batch; `None` once stopping with nothing left.
    fn next_batch(&mut self) -> Option<Vec<Queued>> {
        loop {
            self.collect();
            if self.pending.is_empty() {
                if self.finished() {
                    return None;
                }
                self.parker.park_timeout(POLL);
                continue;
            }
            let spec = self.shared.spec.clone();
            let batch = match (&spec.batching, spec.decoupled) {
                (Some(policy), false) => {
                    let max = spec.max_batch_size;
                    let ready = self.pending.next_batch_size(max);
                    let largest_preferred = policy.preferred_batch_sizes.last().copied();
                    let due = self.pending.oldest().expect("not empty") + policy.max_queue_delay;
                    let now = Instant::now();
                    if ready >= max || self.shared.stopping.load(Acquire) || now >= due {
                        self.pending.take_batch(max)
                    } else if let Some(p) = largest_preferred.filter(|&p| ready >= p) {
                        self.pending.take_batch(p)
                    } else {
                        let wait = due - now;
                        // A watched model's scheduler looks at its instances every POLL.
                        let wait = match self.watchdog {
                            Some(_) => wait.min(POLL),
                            None => wait,
                        };
                        self.parker.park_timeout(wait);
                        continue;
                    }
                }
                _ => self.pending.take_one().into_iter().collect(),
            };
            #[cfg(test)]
            if batch.iter().any(|q| q.request.id == tests::PANIC_ID) {
                panic!("scheduler fault injected by a test");
            }
            for q in &batch {
                self.shared.dequeued(q);
            }
            return Some(batch);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use crate::builtin::demo::{write_repository, SIMPLE};
    use crate::{BackendRegistry, DataType, Engine, EngineError, EngineOptions, InferRequest};
    use crate::{Result, Tensor};

    /// A request with this id makes the scheduler panic (test builds only).
    pub(crate) const PANIC_ID: &str = "nereid-test-panic-scheduler";

    fn simple_request(id: &str) -> InferRequest {
        let input = |name: &str| Tensor::from_vec(name, DataType::Int32, vec![1, 16], vec![2; 16]);
        let mut request = InferRequest::new("simple", vec![input("INPUT0"), input("INPUT1")]);
        request.id = id.into();
        request
    }

    /// The one response of a request sent through the streamed entry point.
    fn answer(engine: &Engine, id: &str) -> Result<crate::InferResponse> {
        let mut stream = engine.infer_stream(simple_request(id))?;
        stream
            .blocking_recv()
            .unwrap_or_else(|| Err(EngineError::internal("request dropped")))
    }

    #[test]
    fn scheduler_panic_fails_requests_and_marks_the_model_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        write_repository(dir.path(), [("simple", SIMPLE)]).unwrap();
        let mut registry = BackendRegistry::new();
        crate::builtin::register(&mut registry);
        let options = EngineOptions {
            repository: Some(dir.path().into()),
            ..Default::default()
        };
        let engine = Engine::start(options, registry).unwrap();
        assert!(answer(&engine, "before").is_ok());

        assert!(answer(&engine, PANIC_ID).is_err());
        let after = answer(&engine, "after").expect_err("a faulted model must refuse");
        assert!(matches!(after, EngineError::Unavailable(_)), "{after:?}");
        assert!(after.to_string().contains("scheduler panicked"), "{after}");
        assert!(!engine.model_ready("simple", None));
        assert!(!engine.model_ready("simple", Some(1)));
    }
}
