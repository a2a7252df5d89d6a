//! The sequence batcher: the requests of one sequence (same correlation id) run in order,
//! one at a time, each with the control tensors that say where it stands in its sequence
//! and with the state the previous request left; requests of different sequences batch
//! together in the model's dynamic batcher. Sequences beyond the live bound wait in a
//! backlog until one ends or idles out.
//!
//! A request of a sequence that is computing waits here, not in the model's queue; when
//! its turn comes it is queued like any other request. The [`Turn`] a queued request
//! carries takes the state outputs off its response and, once the response is out (or the
//! request dropped), releases the sequence's next request.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

mod position;
mod turn;

use position::correlation_element;
pub(crate) use position::{SequenceId, SequencePosition};
pub(crate) use turn::Turn;

use crate::scheduler::{Queued, Submitter};
use crate::tensor::element_count;
use crate::{ControlKind, EngineError, ModelSpec, Result, SequenceSpec, Tensor};

/// The folder, beside a model's versions, that `initial_state { data_file }` names are in.
pub const INITIAL_STATE_FOLDER: &str = "initial_state";

/// A finished turn: the sequence, the state its request left (if any), whether it ended.
type Done = (SequenceId, Option<Vec<Tensor>>, bool);

/// A request waiting for its sequence's turn (or for a live slot).
struct Waiting {
    queued: Queued,
    position: SequencePosition,
}

/// A live sequence.
struct Live {
    /// The state its next request gets; empty: the initial state.
    state: Vec<Tensor>,
    pending: VecDeque<Waiting>,
    /// One of its requests is queued or computing.
    busy: bool,
    /// Its last request so far carried `sequence_end`.
    ended: bool,
    last_seen: Instant,
}

impl Live {
    /// A sequence that has just started, with nothing computing yet.
    fn new(now: Instant) -> Self {
        Self {
            state: Vec::new(),
            pending: VecDeque::new(),
            busy: false,
            ended: false,
            last_seen: now,
        }
    }
}

#[derive(Default)]
struct Sequences {
    live: HashMap<SequenceId, Live>,
    /// Starts of new sequences waiting for a live slot, oldest first.
    backlog: VecDeque<Waiting>,
    /// Requests waiting here (behind their sequence, or in the backlog).
    waiting: usize,
    closed: bool,
}

/// What a change of the table leaves to do once its lock is released: requests to queue
/// and requests to answer with an error.
#[derive(Default)]
struct Actions {
    submit: Vec<Queued>,
    fail: Vec<(Queued, EngineError)>,
}

/// The live sequences of one model version.
pub(crate) struct SequenceTable {
    spec: Arc<ModelSpec>,
    submitter: Submitter,
    /// Each state's initial value, shaped as one request's input.
    initial: Vec<Tensor>,
    sequences: Mutex<Sequences>,
}

impl SequenceTable {
    /// The table of a model with `sequence_batching`, reading initial states from the
    /// model's folder; starts the thread that releases idle sequences.
    pub(crate) fn start(
        spec: Arc<ModelSpec>,
        model_dir: &Path,
        submitter: Submitter,
    ) -> Result<Arc<Self>> {
        let sequence = spec
            .sequence
            .as_ref()
            .ok_or_else(|| EngineError::internal("a sequence table for a model without one"))?;
        let mut initial = Vec::new();
        for state in &sequence.states {
            let count = element_count(&state.dims)?;
            let size = count * state.dtype.element_size().unwrap_or(0);
            let data = match &state.initial_file {
                None => Bytes::from(vec![0u8; size]),
                Some(file) => {
                    let path = model_dir.join(INITIAL_STATE_FOLDER).join(file);
                    let data = std::fs::read(&path).map_err(|e| {
                        EngineError::invalid(format!(
                            "model '{}': initial_state of '{}': cannot read {}: {e}",
                            spec.name(),
                            state.input,
                            path.display()
                        ))
                    })?;
                    if data.len() != size {
                        return Err(EngineError::invalid(format!(
                            "model '{}': initial_state of '{}': {} holds {} bytes, the state \
                             needs {size}",
                            spec.name(),
                            state.input,
                            path.display(),
                            data.len()
                        )));
                    }
                    Bytes::from(data)
                }
            };
            let shape = request_shape(&spec, &state.dims);
            initial.push(Tensor::new(state.input.clone(), state.dtype, shape, data));
        }
        let idle = sequence.max_idle;
        let table = Arc::new(Self {
            spec: spec.clone(),
            submitter,
            initial,
            sequences: Mutex::default(),
        });
        let weak = Arc::downgrade(&table);
        std::thread::Builder::new()
            .name(format!("{}-seqidle", spec.name()))
            .spawn(move || release_idle(weak, idle))
            .map_err(|e| EngineError::internal(format!("cannot start sequence thread: {e}")))?;
        Ok(table)
    }

    fn sequence(&self) -> &SequenceSpec {
        self.spec.sequence.as_ref().expect("checked at start")
    }

    /// Takes a validated request of this model: queues it if its sequence is idle, keeps it
    /// behind the sequence's running request otherwise, or in the backlog when it starts a
    /// sequence and every live slot is taken.
    pub(crate) fn submit(self: &Arc<Self>, queued: Queued) -> Result<()> {
        let sequence = self.sequence();
        let position = SequencePosition::of(&self.spec, sequence, &queued.request.parameters)?;
        if self.spec.max_batch_size > 0 && queued.batch_size != 1 {
            return Err(EngineError::invalid(format!(
                "inference request to model '{}' must specify batch-size 1 due to requirements \
                 of sequence batcher",
                self.spec.name()
            )));
        }
        let now = Instant::now();
        let mut actions = Actions::default();
        {
            let mut seqs = self.sequences.lock();
            if seqs.closed {
                return Err(self.unloading());
            }
            let bound = self.spec.levels[0].max_queue_size;
            let waiting = Waiting { queued, position };
            let id = waiting.position.id.clone();
            let seqs = &mut *seqs;
            let live_count = seqs.live.len();
            match seqs.live.get_mut(&id) {
                Some(live) if live.busy || !live.pending.is_empty() => {
                    if seqs.waiting >= bound {
                        return Err(self.full(bound));
                    }
                    live.last_seen = now;
                    live.pending.push_back(waiting);
                    seqs.waiting += 1;
                }
                Some(live) => {
                    live.last_seen = now;
                    self.dispatch(&id, live, waiting, &mut actions)?;
                }
                None if !waiting.position.start => return Err(self.not_started(&id)),
                None if live_count >= sequence.max_live => {
                    if seqs.waiting >= bound {
                        return Err(self.full(bound));
                    }
                    seqs.backlog.push_back(waiting);
                    seqs.waiting += 1;
                }
                None => {
                    let live = seqs.live.entry(id.clone()).or_insert(Live::new(now));
                    self.dispatch(&id, live, waiting, &mut actions)?;
                }
            }
        }
        // The request's own refusal (a full model queue) goes back to its caller.
        let first = actions.submit.pop().map(|q| self.submitter.submit(q));
        self.run(actions);
        match first {
            Some(Err(refused)) => {
                let (e, q) = *refused;
                drop(q); // its turn passes to the sequence's next request
                Err(e)
            }
            _ => Ok(()),
        }
    }

    /// Stops taking requests and answers every waiting one; called before the model stops.
    pub(crate) fn close(self: &Arc<Self>) {
        let mut actions = Actions::default();
        {
            let mut seqs = self.sequences.lock();
            seqs.closed = true;
            let backlog = std::mem::take(&mut seqs.backlog);
            for w in backlog {
                actions.fail.push((w.queued, self.unloading()));
            }
            for live in seqs.live.values_mut() {
                for w in live.pending.drain(..) {
                    actions.fail.push((w.queued, self.unloading()));
                }
            }
            seqs.waiting = 0;
        }
        self.run(actions);
    }

    fn unloading(&self) -> EngineError {
        EngineError::unavailable(format!(
            "model '{}' is unloading and takes no new requests",
            self.spec.name()
        ))
    }

    fn full(&self, bound: usize) -> EngineError {
        EngineError::unavailable(format!(
            "queue of model '{}' is full ({bound} requests waiting for their sequences)",
            self.spec.name()
        ))
    }

    fn not_started(&self, id: &SequenceId) -> EngineError {
        EngineError::invalid(format!(
            "inference request for sequence {id} to model '{}' must specify the START flag on \
             the first request of the sequence",
            self.spec.name()
        ))
    }

    /// Gives `waiting` its sequence's turn: adds the controls and the state, and marks the
    /// sequence busy. A request that continues a sequence that ended fails instead.
    fn dispatch(
        self: &Arc<Self>,
        id: &SequenceId,
        live: &mut Live,
        waiting: Waiting,
        actions: &mut Actions,
    ) -> Result<()> {
        let Waiting {
            mut queued,
            position,
        } = waiting;
        if live.ended && !position.start {
            actions.fail.push((queued, self.not_started(id)));
            return Ok(());
        }
        let sequence = self.sequence();
        let inputs = &mut queued.request.inputs;
        for control in &sequence.controls {
            let element = match (control.kind, &control.false_true) {
                (ControlKind::Start, Some(ft)) => ft[position.start as usize].clone(),
                (ControlKind::End, Some(ft)) => ft[position.end as usize].clone(),
                (ControlKind::Ready, Some(ft)) => ft[1].clone(),
                (ControlKind::CorrelationId, _) => correlation_element(control.dtype, id)?,
                (_, None) => unreachable!("flag controls have their values"),
            };
            inputs.push(Tensor::new(
                control.input.clone(),
                control.dtype,
                request_shape(&self.spec, &[1]),
                element,
            ));
        }
        if position.start {
            live.state.clear();
            live.ended = false;
        }
        if live.state.is_empty() {
            inputs.extend(self.initial.iter().cloned());
        } else {
            inputs.extend(live.state.iter().cloned());
        }
        if !queued.ctx.requested.is_empty() {
            let outputs = sequence.states.iter().map(|s| s.output.clone());
            queued.ctx.requested.extend(outputs);
        }
        queued.ctx.turn = Some(Turn {
            table: self.clone(),
            id: id.clone(),
            end: position.end,
            state: None,
            armed: true,
        });
        live.busy = true;
        actions.submit.push(queued);
        Ok(())
    }

    /// A request of sequence `id` is done (`state`: the state it left, if it succeeded):
    /// the sequence's next request gets its turn; an ended sequence frees its slot for the
    /// backlog.
    fn advance(self: &Arc<Self>, id: SequenceId, state: Option<Vec<Tensor>>, end: bool) {
        self.advance_all(vec![(id, state, end)]);
    }

    /// [`advance`](Self::advance) for several, and for the turns of requests the model's
    /// queue refused on the way: a loop, so a long run of refusals does not recurse.
    fn advance_all(self: &Arc<Self>, mut done: Vec<Done>) {
        while !done.is_empty() {
            let mut actions = Actions::default();
            {
                let mut seqs = self.sequences.lock();
                for (id, state, end) in done.drain(..) {
                    self.next_turn(&mut seqs, &id, state, end, &mut actions);
                }
            }
            done = self.carry_out(actions);
        }
    }

    fn next_turn(
        self: &Arc<Self>,
        seqs: &mut Sequences,
        id: &SequenceId,
        state: Option<Vec<Tensor>>,
        end: bool,
        actions: &mut Actions,
    ) {
        let Some(live) = seqs.live.get_mut(id) else {
            return;
        };
        live.busy = false;
        live.last_seen = Instant::now();
        if let Some(state) = state {
            live.state = state;
        }
        if end {
            live.ended = true;
            live.state.clear();
        }
        while let Some(w) = live.pending.pop_front() {
            seqs.waiting -= 1;
            let _ = self.dispatch(id, live, w, actions).map_err(|e| {
                // Only a correlation id the control cannot hold fails here, and that is
                // checked when the request arrives.
                tracing::error!(model = self.spec.name(), "sequence {id}: {e}");
            });
            if live.busy {
                break;
            }
        }
        if live.ended && !live.busy {
            seqs.live.remove(id);
            self.admit_backlog(seqs, actions);
        }
    }

    /// Starts backlogged sequences while live slots are free.
    fn admit_backlog(self: &Arc<Self>, seqs: &mut Sequences, actions: &mut Actions) {
        let max_live = self.sequence().max_live;
        while seqs.live.len() < max_live {
            let Some(w) = seqs.backlog.pop_front() else {
                return;
            };
            seqs.waiting -= 1;
            let id = w.position.id.clone();
            if let Some(live) = seqs.live.get_mut(&id) {
                // The same sequence started twice while waiting: it runs behind itself.
                live.pending.push_back(w);
                seqs.waiting += 1;
                continue;
            }
            let live = seqs
                .live
                .entry(id.clone())
                .or_insert(Live::new(Instant::now()));
            let _ = self.dispatch(&id, live, w, actions);
        }
    }

    /// Releases the sequences idle for longer than the model allows.
    fn release_idle(self: &Arc<Self>) -> bool {
        let max_idle = self.sequence().max_idle;
        let mut actions = Actions::default();
        let closed = {
            let mut seqs = self.sequences.lock();
            let before = seqs.live.len();
            seqs.live.retain(|id, live| {
                let keep =
                    live.busy || !live.pending.is_empty() || live.last_seen.elapsed() < max_idle;
                if !keep {
                    tracing::debug!(model = self.spec.name(), "sequence {id} idled out");
                }
                keep
            });
            if seqs.live.len() < before {
                self.admit_backlog(&mut seqs, &mut actions);
            }
            seqs.closed
        };
        self.run(actions);
        closed
    }

    /// Carries out what a change of the table left to do, outside its lock, and then
    /// what that leads to.
    fn run(self: &Arc<Self>, actions: Actions) {
        let done = self.carry_out(actions);
        self.advance_all(done);
    }

    /// Answers the failed requests and queues the others; a request the model's queue
    /// refuses is answered here and its turn, disarmed, is returned to be advanced.
    fn carry_out(self: &Arc<Self>, actions: Actions) -> Vec<Done> {
        for (mut q, error) in actions.fail {
            q.sink.finish(&mut q.ctx, Err(error));
        }
        let mut done = Vec::new();
        for q in actions.submit {
            if let Err(refused) = self.submitter.submit(q) {
                let (e, mut q) = *refused;
                let turn = q.ctx.turn.take().map(Turn::defuse);
                q.sink.finish(&mut q.ctx, Err(e));
                done.extend(turn.map(|(id, end)| (id, None, end)));
            }
        }
        done
    }
}

/// The idle-release thread: wakes a few times per idle period until the table is gone or
/// closed.
fn release_idle(table: Weak<SequenceTable>, idle: Duration) {
    let period = (idle / 4).clamp(Duration::from_millis(1), Duration::from_millis(100));
    loop {
        std::thread::sleep(period);
        let Some(table) = table.upgrade() else { return };
        if table.release_idle() {
            return;
        }
    }
}

/// The shape one request's control or state input takes: with the batch dimension of 1
/// when the model batches.
fn request_shape(spec: &ModelSpec, dims: &[i64]) -> Vec<i64> {
    if spec.max_batch_size > 0 {
        std::iter::once(1).chain(dims.iter().copied()).collect()
    } else {
        dims.to_vec()
    }
}
