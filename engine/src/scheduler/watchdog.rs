//! Execution timeouts (`execution_timeout_ms`): a batch that computes past its bound fails
//! with an error naming the model, and its instance is replaced by a fresh one, because a
//! thread stuck in a model cannot be interrupted from outside. The stuck thread is left to
//! finish on its own; whatever it computes is dropped, and it then exits.
//!
//! The scheduler thread does the watching: in between forming batches it already wakes at
//! least every few milliseconds, so a timeout costs no thread of its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::worker::{self, Delivery, Worker};
use super::{Batch, Queued, Sequencer, Shared};
use crate::{EngineError, Instance, LoadedModel};

/// What one instance thread is computing, where the watchdog can take it back.
#[derive(Default)]
pub(crate) struct RunSlot {
    running: Mutex<Option<Running>>,
    /// Set when the watchdog answered this thread's batch: the thread must retire.
    abandoned: AtomicBool,
}

struct Running {
    seq: u64,
    deadline: Instant,
    requests: Vec<Queued>,
}

impl RunSlot {
    /// Parks a batch's requests here while its instance computes until `deadline`.
    pub(crate) fn begin(&self, seq: u64, deadline: Instant, requests: Vec<Queued>) {
        *self.running.lock() = Some(Running {
            seq,
            deadline,
            requests,
        });
    }

    /// Takes the requests back after computing; `None` when the watchdog already failed
    /// them, in which case the thread's instance has been replaced and it must exit.
    pub(crate) fn end(&self) -> Option<Vec<Queued>> {
        self.running.lock().take().map(|r| r.requests)
    }

    /// Whether the watchdog gave this thread's batch up.
    pub(crate) fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    /// The batch, if it has run past its deadline.
    fn expired(&self, now: Instant) -> Option<Running> {
        let mut running = self.running.lock();
        if running.as_ref().is_some_and(|r| now >= r.deadline) {
            self.abandoned.store(true, Ordering::Release);
            running.take()
        } else {
            None
        }
    }

    fn busy(&self) -> bool {
        self.running.lock().is_some()
    }
}

/// Watches every instance thread of one model version and replaces those that overrun.
pub(crate) struct Watchdog {
    timeout: Duration,
    model: Arc<dyn LoadedModel>,
    slots: Vec<Arc<RunSlot>>,
    work_rxs: Vec<Receiver<Batch>>,
    idle_tx: Sender<usize>,
    sequencer: Option<Arc<Sequencer<Delivery>>>,
    /// Threads started as replacements; joined when the scheduler ends.
    replacements: Vec<(JoinHandle<()>, Arc<RunSlot>)>,
}

impl Watchdog {
    pub(crate) fn new(
        timeout: Duration,
        model: Arc<dyn LoadedModel>,
        idle_tx: Sender<usize>,
        sequencer: Option<Arc<Sequencer<Delivery>>>,
    ) -> Self {
        Self {
            timeout,
            model,
            slots: Vec::new(),
            work_rxs: Vec::new(),
            idle_tx,
            sequencer,
            replacements: Vec::new(),
        }
    }

    /// The longest one batch may compute.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Registers instance thread `index` (in order) and returns the slot it must use.
    pub(crate) fn watch(&mut self, work_rx: Receiver<Batch>) -> Arc<RunSlot> {
        let slot = Arc::new(RunSlot::default());
        self.slots.push(slot.clone());
        self.work_rxs.push(work_rx);
        slot
    }

    /// Whether any instance is computing a batch.
    pub(crate) fn busy(&self) -> bool {
        self.slots.iter().any(|s| s.busy())
    }

    /// Fails every batch past its deadline and replaces its instance.
    pub(crate) fn check(&mut self, shared: &Arc<Shared>) {
        let now = Instant::now();
        for index in 0..self.slots.len() {
            let Some(overrun) = self.slots[index].expired(now) else {
                continue;
            };
            let spec = &shared.spec;
            tracing::error!(
                model = spec.name(),
                instance = index,
                timeout_ms = self.timeout.as_millis() as u64,
                "a batch computed past the execution timeout; replacing the instance"
            );
            let error = EngineError::internal(format!(
                "model '{}' did not finish within its execution timeout ({} ms, parameter \
                 '{}'); its instance was replaced",
                spec.name(),
                self.timeout.as_millis(),
                crate::config::EXECUTION_TIMEOUT_PARAMETER,
            ));
            let delivery: Delivery = overrun
                .requests
                .into_iter()
                .map(|q| (q, Err(error.clone())))
                .collect();
            match &self.sequencer {
                Some(seq) => seq.complete(overrun.seq, delivery, worker::deliver),
                None => worker::deliver(delivery),
            }
            if let Err(e) = self.replace(shared, index) {
                tracing::error!(model = spec.name(), instance = index, "{e}");
                let _ = shared.fault.set(e.to_string());
                shared.accepting.store(false, Ordering::Release);
            }
        }
    }

    /// A fresh instance on a fresh thread takes over thread `index`'s place: the same work
    /// channel and idle announcements, a new slot.
    fn replace(&mut self, shared: &Arc<Shared>, index: usize) -> crate::Result<()> {
        let spec = &shared.spec;
        let device = spec.instances[index];
        let instance = self.model.create_instance(device, index).map_err(|e| {
            EngineError::internal(format!(
                "model '{}': instance {index} overran its execution timeout and a new one \
                 could not be created: {e}",
                spec.name()
            ))
        })?;
        if !matches!(instance, Instance::Batched(_)) {
            return Err(EngineError::internal(format!(
                "model '{}': the replacement of instance {index} is decoupled",
                spec.name()
            )));
        }
        let slot = Arc::new(RunSlot::default());
        self.slots[index] = slot.clone();
        let worker = Worker {
            index,
            shared: shared.clone(),
            work_rx: self.work_rxs[index].clone(),
            idle_tx: self.idle_tx.clone(),
            sequencer: self.sequencer.clone(),
            watch: Some((slot.clone(), self.timeout)),
        };
        let handle = worker.spawn(instance, spec.max_sequences)?;
        self.replacements.push((handle, slot));
        Ok(())
    }

    /// Joins the replacement threads, except those stuck in turn (they exit on their own).
    pub(crate) fn join(self) {
        drop(self.work_rxs);
        for (handle, slot) in self.replacements {
            if !slot.abandoned() {
                let _ = handle.join();
            }
        }
    }
}
