//! The dynamic batcher: requests enter a lock-free queue, one scheduler thread per model
//! version forms batches, and instances compute them: a lone batched instance on the
//! scheduler thread itself (one thread hop less per request), several instances, a
//! decoupled model, or a model whose queue policy times requests out (someone must watch
//! the queue while the instance computes) on one OS thread each.

mod batcher;
mod ordering;
mod pending;
mod watchdog;
mod worker;

use std::sync::atomic::{
    AtomicBool, AtomicUsize,
    Ordering::{AcqRel, Acquire, Release},
};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::sync::{Parker, Unparker};

use crate::sink::{RequestContext, Sink};
use crate::{
    EngineError, InferRequest, Instance, LoadedModel, ModelSpec, ModelStats, Result, TimeoutPolicy,
};
use batcher::{Batcher, Dispatch, SchedulerLoop};
use ordering::Sequencer;
use pending::Pending;
use watchdog::{RunSlot, Watchdog};

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
    /// Set when the scheduler thread failed; every request since is answered with it.
    fault: OnceLock<String>,
}

impl Shared {
    /// Why a model that stopped accepting refuses a request.
    fn refusal(&self) -> EngineError {
        match self.fault.get() {
            Some(fault) => EngineError::unavailable(format!(
                "model '{}' stopped after an internal error ({fault}); load it again",
                self.spec.name()
            )),
            None => EngineError::unavailable(format!(
                "model '{}' is unloading and takes no new requests",
                self.spec.name()
            )),
        }
    }

    /// Bookkeeping for a request that left the queue.
    fn dequeued(&self, q: &Queued) {
        self.level_counts[q.level].fetch_sub(1, AcqRel);
        self.stats.add_pending(-1);
    }
}

/// A request the queue refused, with the reason, to be answered by the caller.
pub(crate) type Refused = Box<(EngineError, Queued)>;

/// Queues requests for one model version.
#[derive(Clone)]
pub(crate) struct Submitter(Arc<Shared>);

impl Submitter {
    /// Puts a validated request on the queue; a full queue (or a model that stopped) is an
    /// immediate UNAVAILABLE, and the request comes back to be answered.
    pub(crate) fn submit(&self, q: Queued) -> std::result::Result<(), Refused> {
        let shared = &self.0;
        if !shared.accepting.load(Acquire) {
            return Err(Box::new((shared.refusal(), q)));
        }
        shared.submitting.fetch_add(1, AcqRel);
        let level = q.level;
        let max = shared.spec.levels[level].max_queue_size;
        let result = if shared.level_counts[level].fetch_add(1, AcqRel) >= max {
            shared.level_counts[level].fetch_sub(1, AcqRel);
            Err(Box::new((
                EngineError::unavailable(format!(
                    "queue of model '{}' is full ({max} requests waiting at priority level {})",
                    shared.spec.name(),
                    level + 1
                )),
                q,
            )))
        } else {
            // Counted before the push: the scheduler may dequeue it at once.
            shared.stats.add_pending(1);
            match shared.queue.push(q) {
                Ok(()) => Ok(()),
                Err(q) => {
                    shared.stats.add_pending(-1);
                    shared.level_counts[level].fetch_sub(1, AcqRel);
                    Err(Box::new((
                        EngineError::unavailable(format!(
                            "queue of model '{}' is full",
                            shared.spec.name()
                        )),
                        q,
                    )))
                }
            }
        };
        shared.submitting.fetch_sub(1, AcqRel);
        shared.unparker.unpark();
        result
    }
}

/// The running scheduler and instances of one model version.
pub(crate) struct ModelRunner {
    shared: Arc<Shared>,
    threads: parking_lot::Mutex<Vec<Thread>>,
}

/// A thread of a model, with the slot the watchdog sees it by when it has one.
struct Thread {
    handle: JoinHandle<()>,
    slot: Option<Arc<RunSlot>>,
}

impl ModelRunner {
    /// Starts the scheduler thread and one worker thread per instance; `model` makes
    /// replacement instances when one overruns its execution timeout.
    pub(crate) fn start(
        spec: Arc<ModelSpec>,
        stats: Arc<ModelStats>,
        instances: Vec<Instance>,
        model: Arc<dyn LoadedModel>,
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
            fault: OnceLock::new(),
            spec: spec.clone(),
            stats,
        });
        let mut threads = Vec::new();
        // Queue timeouts must be enforced while the instance computes, which only a
        // scheduler that is not itself computing can do; so must execution timeouts.
        let times_out = spec.execution_timeout.is_some()
            || spec
                .levels
                .iter()
                .any(|l| l.default_timeout.is_some() || l.allow_timeout_override);
        let mut watchdog = None;
        let dispatch = match <[Instance; 1]>::try_from(instances) {
            Ok([Instance::Batched(instance)]) if !spec.decoupled && !times_out => {
                Dispatch::Inline(instance)
            }
            Ok(one) => Self::start_workers(
                &spec,
                &shared,
                Vec::from(one),
                model,
                &mut threads,
                &mut watchdog,
            )?,
            Err(many) => {
                Self::start_workers(&spec, &shared, many, model, &mut threads, &mut watchdog)?
            }
        };
        let scheduler = SchedulerLoop {
            batcher: Batcher {
                pending: Pending::new(spec.levels.len()),
                shared: shared.clone(),
                parker,
                watchdog,
            },
            dispatch,
            next_seq: 0,
        };
        let spawned = std::thread::Builder::new()
            .name(format!("{}-sched", spec.name()))
            .spawn(move || scheduler.run());
        threads.push(Thread {
            handle: spawned.map_err(|e| {
                EngineError::internal(format!("cannot start scheduler thread: {e}"))
            })?,
            slot: None,
        });
        Ok(Self {
            shared,
            threads: parking_lot::Mutex::new(threads),
        })
    }

    /// One thread per instance, fed batches by the scheduler as instances report idle;
    /// watched under an execution timeout.
    fn start_workers(
        spec: &Arc<ModelSpec>,
        shared: &Arc<Shared>,
        instances: Vec<Instance>,
        model: Arc<dyn LoadedModel>,
        threads: &mut Vec<Thread>,
        watchdog: &mut Option<Watchdog>,
    ) -> Result<Dispatch> {
        let slots = spec.max_sequences;
        let (idle_tx, idle_rx) = crossbeam_channel::bounded(instances.len() * slots);
        let sequencer = spec
            .batching
            .as_ref()
            .filter(|b| b.preserve_ordering)
            .map(|_| Arc::new(Sequencer::new()));
        *watchdog = spec
            .execution_timeout
            .map(|timeout| Watchdog::new(timeout, model, idle_tx.clone(), sequencer.clone()));
        let mut work_txs = Vec::new();
        let announced = instances.len() * slots;
        let first_thread = threads.len();
        for (index, instance) in instances.into_iter().enumerate() {
            let (work_tx, work_rx) = crossbeam_channel::bounded::<Batch>(slots);
            work_txs.push(work_tx);
            let watch = watchdog
                .as_mut()
                .map(|w| (w.watch(work_rx.clone()), w.timeout()));
            let slot = watch.as_ref().map(|(slot, _)| slot.clone());
            let worker = worker::Worker {
                index,
                shared: shared.clone(),
                work_rx,
                idle_tx: idle_tx.clone(),
                sequencer: sequencer.clone(),
                watch,
            };
            threads.push(Thread {
                handle: worker.spawn(instance, slots)?,
                slot,
            });
        }
        // Ready means running: wait until every instance thread has announced its slots,
        // so the first requests find every instance (not only those the OS started first).
        while idle_rx.len() < announced
            && !threads[first_thread..]
                .iter()
                .any(|t| t.handle.is_finished())
        {
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(Dispatch::Workers { idle_rx, work_txs })
    }

    /// Puts a validated request on the queue; a full queue is an immediate UNAVAILABLE.
    pub(crate) fn submit(&self, q: Queued) -> Result<()> {
        self.submitter().submit(q).map_err(|refused| refused.0)
    }

    /// A handle that queues requests for this model from elsewhere (the sequence batcher
    /// releasing a sequence's next request).
    pub(crate) fn submitter(&self) -> Submitter {
        Submitter(self.shared.clone())
    }

    /// The internal error that stopped this model's scheduler, if one did.
    pub(crate) fn fault(&self) -> Option<&str> {
        self.shared.fault.get().map(String::as_str)
    }

    /// Stops taking requests, lets everything queued finish, and joins the threads.
    /// Blocking: call it off the async runtime.
    pub(crate) fn stop(&self) {
        self.shared.accepting.store(false, Release);
        self.shared.stopping.store(true, Release);
        self.shared.unparker.unpark();
        let threads = std::mem::take(&mut *self.threads.lock());
        // The scheduler (pushed last) first: it keeps watching until no batch computes, so
        // by the time the instance threads are joined, every stuck one is marked abandoned.
        for t in threads.into_iter().rev() {
            // A thread the watchdog gave up on is still inside the model; it exits on its own.
            if !t.slot.is_some_and(|s| s.abandoned()) {
                let _ = t.handle.join();
            }
        }
    }
}
