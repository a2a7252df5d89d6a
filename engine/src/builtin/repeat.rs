//! A decoupled model after Triton's `repeat_int32`: for each element of `IN` it sends one
//! response `OUT` = [element], `IDX` = [index], waiting `DELAY[i]` microseconds (if given)
//! before each; the last response is final. An empty `IN` gets one final empty response.

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
    responder: Responder,
}

/// Streams its input back one element per response, stepping every live request together.
pub(super) struct Repeat {
    names: RepeatNames,
    live: Vec<Live>,
}

struct RepeatNames {
    input: String,
    delay: Option<String>,
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
        if values.is_empty() {
            return seq.responder.finish(Vec::new());
        }
        let first_delay = Duration::from_micros(delays.first().copied().unwrap_or(0) as u64);
        self.live.push(Live {
            values,
            delays,
            next: 0,
            due: Instant::now() + first_delay,
            responder: seq.responder,
        });
    }

    fn step(&mut self) -> Result<()> {
        let now = Instant::now();
        if let Some(earliest) = self.live.iter().map(|l| l.due).min() {
            if earliest > now {
                // Nothing is due: wait a little (bounded so new requests are admitted soon).
                std::thread::sleep((earliest - now).min(Duration::from_millis(2)));
            }
        }
        let now = Instant::now();
        for l in &mut self.live {
            if l.due > now {
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
        self.live
            .retain(|l| !l.responder.is_done() && !l.responder.is_cancelled());
        Ok(())
    }

    fn live(&self) -> usize {
        self.live.len()
    }

    fn abort_all(&mut self, error: EngineError) {
        for mut l in self.live.drain(..) {
            l.responder.fail(error.clone());
        }
    }
}
