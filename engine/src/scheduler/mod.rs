//! The dynamic batcher: requests enter a lock-free queue, one scheduler thread per model
//! version forms batches, and one OS thread per instance computes them.

mod ordering;
mod pending;
mod worker;

use std::sync::atomic::{
    AtomicBool, AtomicUsize,
    Ordering::{AcqRel, Acquire, Release},
};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::sync::{Parker, Unparker};

use crate::sink::{RequestContext, Sink};
use crate::{EngineError, InferRequest, Instance, ModelSpec, ModelStats, Result, TimeoutPolicy};
use ordering::Sequencer;
use pending::{Dropped, Pending};

/// How often an idle scheduler looks at timeouts and shutdown when nothing wakes it.
const POLL: Duration = Duration::from_millis(5);

/// A validated request waiting to be scheduled.
pub(crate) struct Queued {
    pub request: InferRequest,
    pub sink: Sink,
    pub ctx: RequestContext,
    pub batch_size: usize,
    pub level: usize,
    pub enqueued: Instant,
    pub queue_deadline: Option<Instant>,
    pub timeout_action: TimeoutPolicy,
}

impl Queued {
    /// Whether two requests can share a batch: the same inputs with the same shapes past
    /// the batch dimension.
    fn compatible(&self, other: &Queued) -> bool {
        let (a, b) = (&self.request.inputs, &other.request.inputs);
        a.len() == b.len()
            && a.iter().all(|t| {
                other
                    .request
                    .input(&t.name)
                    .is_some_and(|u| u.shape.get(1..) == t.shape.get(1..))
            })
    }
}

/// A batch on its way to an instance; `seq` orders responses under `preserve_ordering`.
pub(crate) struct Batch {
    seq: u64,
    requests: Vec<Queued>,
}

/// State shared by the submitting side, the scheduler thread and the workers.
pub(crate) struct Shared {
    spec: Arc<ModelSpec>,
    stats: Arc<ModelStats>,
    queue: ArrayQueue<Queued>,
    level_counts: Vec<AtomicUsize>,
    unparker: Unparker,
    accepting: AtomicBool,
    stopping: AtomicBool,
    submitting: AtomicUsize,
}

impl Shared {
    /// Bookkeeping for a request that left the queue.
    fn dequeued(&self, q: &Queued) {
        self.level_counts[q.level].fetch_sub(1, AcqRel);
        self.stats.add_pending(-1);
    }
}

/// The running scheduler and instances of one model version.
pub(crate) struct ModelRunner {
    shared: Arc<Shared>,
    threads: parking_lot::Mutex<Vec<JoinHandle<()>>>,
}

impl ModelRunner {
    /// Starts the scheduler thread and one worker thread per instance.
    pub(crate) fn start(
        spec: Arc<ModelSpec>,
        stats: Arc<ModelStats>,
        instances: Vec<Instance>,
    ) -> Result<Self> {
        let capacity: usize = spec.levels.iter().map(|l| l.max_queue_size).sum();
        let parker = Parker::new();
        let shared = Arc::new(Shared {
            queue: ArrayQueue::new(capacity.max(1)),
            level_counts: spec.levels.iter().map(|_| AtomicUsize::new(0)).collect(),
            unparker: parker.unparker().clone(),
            accepting: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            submitting: AtomicUsize::new(0),
            spec: spec.clone(),
            stats,
        });
        let slots = if spec.decoupled {
            spec.max_batch_size.max(1)
        } else {
            1
        };
        let (idle_tx, idle_rx) = crossbeam_channel::bounded(instances.len() * slots);
        let sequencer = spec
            .batching
            .as_ref()
            .filter(|b| b.preserve_ordering)
            .map(|_| Arc::new(Sequencer::new()));
        let mut threads = Vec::new();
        let mut work_txs = Vec::new();
        for (index, instance) in instances.into_iter().enumerate() {
            let (work_tx, work_rx) = crossbeam_channel::bounded::<Batch>(slots);
            work_txs.push(work_tx);
            let worker = worker::Worker {
                index,
                shared: shared.clone(),
                work_rx,
                idle_tx: idle_tx.clone(),
                sequencer: sequencer.clone(),
            };
            let name = format!("{}-inst{index}", spec.name());
            let spawned = std::thread::Builder::new()
                .name(name)
                .spawn(move || match instance {
                    Instance::Batched(inst) => worker.run_batched(inst),
                    Instance::Decoupled(inst) => worker.run_decoupled(inst, slots),
                });
            threads.push(
                spawned.map_err(|e| {
                    EngineError::internal(format!("cannot start worker thread: {e}"))
                })?,
            );
        }
        drop(idle_tx);
        let scheduler = SchedulerLoop {
            pending: Pending::new(spec.levels.len()),
            shared: shared.clone(),
            parker,
            idle_rx,
            work_txs,
            next_seq: 0,
        };
        let spawned = std::thread::Builder::new()
            .name(format!("{}-sched", spec.name()))
            .spawn(move || scheduler.run());
        threads.push(
            spawned.map_err(|e| {
                EngineError::internal(format!("cannot start scheduler thread: {e}"))
            })?,
        );
        Ok(Self {
            shared,
            threads: parking_lot::Mutex::new(threads),
        })
    }

    /// Puts a validated request on the queue; a full queue is an immediate UNAVAILABLE.
    pub(crate) fn submit(&self, q: Queued) -> Result<()> {
        let shared = &self.shared;
        if !shared.accepting.load(Acquire) {
            return Err(EngineError::unavailable(format!(
                "model '{}' is unloading and takes no new requests",
                shared.spec.name()
            )));
        }
        shared.submitting.fetch_add(1, AcqRel);
        let level = q.level;
        let max = shared.spec.levels[level].max_queue_size;
        let result = if shared.level_counts[level].fetch_add(1, AcqRel) >= max {
            shared.level_counts[level].fetch_sub(1, AcqRel);
            Err(EngineError::unavailable(format!(
                "queue of model '{}' is full ({max} requests waiting at priority level {})",
                shared.spec.name(),
                level + 1
            )))
        } else {
            // Counted before the push: the scheduler may dequeue it at once.
            shared.stats.add_pending(1);
            match shared.queue.push(q) {
                Ok(()) => Ok(()),
                Err(_) => {
                    shared.stats.add_pending(-1);
                    shared.level_counts[level].fetch_sub(1, AcqRel);
                    Err(EngineError::unavailable(format!(
                        "queue of model '{}' is full",
                        shared.spec.name()
                    )))
                }
            }
        };
        shared.submitting.fetch_sub(1, AcqRel);
        shared.unparker.unpark();
        result
    }

    /// Stops taking requests, lets everything queued finish, and joins the threads.
    /// Blocking: call it off the async runtime.
    pub(crate) fn stop(&self) {
        self.shared.accepting.store(false, Release);
        self.shared.stopping.store(true, Release);
        self.shared.unparker.unpark();
        let threads = std::mem::take(&mut *self.threads.lock());
        for t in threads {
            let _ = t.join();
        }
    }
}

struct SchedulerLoop {
    shared: Arc<Shared>,
    pending: Pending,
    parker: Parker,
    idle_rx: Receiver<usize>,
    work_txs: Vec<Sender<Batch>>,
    next_seq: u64,
}

impl SchedulerLoop {
    fn run(mut self) {
        loop {
            let worker = match self.idle_rx.recv_timeout(POLL) {
                Ok(w) => w,
                Err(RecvTimeoutError::Timeout) => {
                    self.collect();
                    if self.finished() {
                        return;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Every instance thread is gone: answer what waits instead of hanging.
                    self.shared.accepting.store(false, Release);
                    self.fail_all(EngineError::unavailable(format!(
                        "model '{}' has no running instance",
                        self.shared.spec.name()
                    )));
                    return;
                }
            };
            let Some(requests) = self.next_batch() else {
                return;
            };
            let batch = Batch {
                seq: self.next_seq,
                requests,
            };
            self.next_seq += 1;
            if let Err(e) = self.work_txs[worker].send(batch) {
                for q in e.into_inner().requests {
                    let error = EngineError::internal("model instance stopped");
                    q.sink.finish(&q.ctx, Err(error));
                }
            }
        }
    }

    fn finished(&self) -> bool {
        let s = &self.shared;
        s.stopping.load(Acquire)
            && s.submitting.load(Acquire) == 0
            && s.queue.is_empty()
            && self.pending.is_empty()
    }

    /// Moves newly submitted requests into the pending set and drops the dead ones.
    fn collect(&mut self) {
        while let Some(q) = self.shared.queue.pop() {
            self.pending.push(q);
        }
        let shared = &self.shared;
        self.pending.reap(Instant::now(), |q, why| {
            shared.dequeued(&q);
            match why {
                Dropped::Cancelled => {
                    let error = EngineError::Cancelled("the client went away".into());
                    q.sink.finish(&q.ctx, Err(error));
                }
                Dropped::Failed(error) => q.sink.finish(&q.ctx, Err(error)),
            }
        });
    }

    fn fail_all(&mut self, error: EngineError) {
        self.collect();
        while let Some(q) = self.pending.take_one() {
            self.shared.dequeued(&q);
            q.sink.finish(&q.ctx, Err(error.clone()));
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
                        self.parker.park_timeout(due - now);
                        continue;
                    }
                }
                _ => self.pending.take_one().into_iter().collect(),
            };
            for q in &batch {
                self.shared.dequeued(q);
            }
            return Some(batch);
        }
    }
}
