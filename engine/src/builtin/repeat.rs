//! A decoupled model after Triton's `repeat_int32`: for each element of `IN` it sends one
//! response `OUT` = [element], `IDX` = [index], waiting `DELAY[i]` microseconds (if given)
//! before each; the last response is final. An empty `IN` gets one final empty response.
//! `WAIT` (if given) is how long the request holds its place in the instance, whatever its
//! responses do: shorter than the delays lets the next request in while this one still
//! streams (their responses intermix), longer keeps the next one out after this one is
//! done. Without it a request holds its place until its last response. Triton's backend
//! reads DELAY and WAIT in milliseconds; here they are microseconds, so tests run fast.

use std::time::{Duration, Instant};

use crate::{
    DataType, DecoupledInstance, EngineError, Instance, ModelSpec, Responder, Result, Sequence,
    Tensor,
};

struct Live {
    values: Vec<i32>,
    delays: Vec<u32>,
    next: usize,
    due: Instant,
    /// When the request gives up its place in the instance (`WAIT`); `None`: at its end.
    release: Option<Instant>,
    responder: Responder,
}

impl Live {
    fn finished(&self) -> bool {
        self.responder.is_done() || self.responder.is_cancelled()
    }

    /// Whether it still holds its place in the instance at `now`.
    fn holds(&self, now: Instant) -> bool {
        match self.release {
            // A client that leaves before the end gives the place up; after its last
            // response it has left anyway.
            Some(at) => at > now && (self.responder.is_done() || !self.responder.is_cancelled()),
            None => !self.finished(),
        }
    }
}

/// Streams its input back one element per response, stepping every live request together.
pub(super) struct Repeat {
    names: RepeatNames,
    live: Vec<Live>,
}

struct RepeatNames {
    input: String,
    delay: Option<String>,
    wait: Option<String>,
    out: String,
    idx: Option<String>,
}

pub(super) fn instance(spec: &ModelSpec) -> Result<Instance> {
    let bad = |msg: &str| {
        EngineError::invalid(format!("model '{}' (backend repeat): {msg}", spec.name()))
    };
    if !spec.decoupled {
        return Err(bad("needs model_transaction_policy { decoupled: true }"));
    }
    let input = spec
        .inputs
        .first()
        .filter(|t| t.dtype == DataType::Int32)
        .ok_or_else(|| bad("first input must be INT32"))?;
    let out = spec
        .outputs
        .first()
        .filter(|t| t.dtype == DataType::Int32)
        .ok_or_else(|| bad("first output must be INT32"))?;
    let names = RepeatNames {
        input: input.name.clone(),
        delay: spec.inputs.get(1).map(|t| t.name.clone()),
        wait: spec.inputs.get(2).map(|t| t.name.clone()),
        out: out.name.clone(),
        idx: spec.outputs.get(1).map(|t| t.name.clone()),
    };
    Ok(Instance::Decoupled(Box::new(Repeat {
        names,
        live: Vec::new(),
    })))
}

impl DecoupledInstance for Repeat {
    fn admit(&mut self, mut seq: Sequence) {
        let values = match seq.input(&self.names.input).map(|t| t.to_vec::<i32>()) {
            Some(Ok(v)) => v,
            Some(Err(e)) => return seq.responder.fail(e),
            None => {
                return seq.responder.fail(EngineError::invalid(format!(
                    "missing input '{}'",
                    self.names.input
                )))
            }
        };
        let delays = match self.names.delay.as_ref().and_then(|n| seq.input(n)) {
            Some(t) => match t.to_vec::<u32>() {
                Ok(d) => d,
                Err(e) => return seq.responder.fail(e),
            },
            None => Vec::new(),
        };
        let wait = match self.names.wait.as_ref().and_then(|n| seq.input(n)) {
            Some(t) => match t.to_vec::<u32>().map(|w| w.first().copied()) {
                Ok(Some(w)) => Some(Duration::from_micros(u64::from(w))),
                Ok(None) => None,
                Err(e) => return seq.responder.fail(e),
            },
            None => None,
        };
        let now = Instant::now();
        let release = wait.map(|w| now + w);
        if values.is_empty() {
            seq.responder.finish(Vec::new());
            if release.is_none() {
                return;
            }
        }
        let first_delay = Duration::from_micros(delays.first().copied().unwrap_or(0) as u64);
        self.live.push(Live {
            values,
            delays,
            next: 0,
            due: now + first_delay,
            release,
            responder: seq.responder,
        });
    }

    fn step(&mut self) -> Result<()> {
        let now = Instant::now();
        let next_event = |l: &Live| if l.finished() { l.release } else { Some(l.due) };
        if let Some(earliest) = self.live.iter().filter_map(next_event).min() {
            if earliest > now {
                // Nothing is due: wait a little (bounded so new requests are admitted soon).
                std::thread::sleep((earliest - now).min(Duration::from_millis(2)));
            }
        }
        let now = Instant::now();
        for l in &mut self.live {
            if l.due > now || l.finished() {
                continue;
            }
            // A reader that is behind (or gone) holds its sequence back.
            let Some(permit) = l.responder.try_reserve() else {
                continue;
            };
            let i = l.next;
            let mut outputs = vec![Tensor::from_vec(
                self.names.out.clone(),
                DataType::Int32,
                vec![1],
                vec![l.values[i]],
            )];
            if let Some(idx) = &self.names.idx {
                outputs.push(Tensor::from_vec(
                    idx.clone(),
                    DataType::Uint32,
                    vec![1],
                    vec![i as u32],
                ));
            }
            l.next += 1;
            let last = l.next == l.values.len();
            permit.send(outputs, last);
            let delay = l.delays.get(l.next).copied().unwrap_or(0);
            l.due = now + Duration::from_micros(delay as u64);
        }
        let now = Instant::now();
        self.live.retain(|l| !l.finished() || l.holds(now));
        Ok(())
    }

    fn live(&self) -> usize {
        self.live.len()
    }

    fn held(&self) -> usize {
        let now = Instant::now();
        self.live.iter().filter(|l| l.holds(now)).count()
    }

    fn abort_all(&mut self, error: EngineError) {
        for mut l in self.live.drain(..) {
            l.responder.fail(error.clone());
        }
    }
}
