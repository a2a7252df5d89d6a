//! [`Turn`]: what a queued request of a sequence carries, so that answering it (or
//! dropping it) hands the sequence on to its next request.

use std::sync::Arc;

use super::{SequenceId, SequenceTable};
use crate::{EngineError, InferResponse, Result, Tensor};

/// A sequence's turn, carried by its queued request: when the request is answered (or
/// dropped) the sequence's next request gets its turn.
pub(crate) struct Turn {
    pub(super) table: Arc<SequenceTable>,
    pub(super) id: SequenceId,
    pub(super) end: bool,
    /// The state the request left, taken off its response.
    pub(super) state: Option<Vec<Tensor>>,
    /// Cleared when a caller advances the sequence itself.
    pub(super) armed: bool,
}

impl Turn {
    /// Takes the state outputs off a successful response (failing it if one is missing or
    /// misshapen); the state is kept for the sequence's next request.
    pub(crate) fn take_state(&mut self, outcome: &mut Result<InferResponse>) {
        let Ok(response) = outcome else { return };
        let spec = &self.table.spec;
        let mut state = Vec::new();
        for (s, initial) in self.table.sequence().states.iter().zip(&self.table.initial) {
            let Some(at) = response.outputs.iter().position(|t| t.name == s.output) else {
                *outcome = Err(EngineError::internal(format!(
                    "model '{}' returned no state output '{}'",
                    spec.name(),
                    s.output
                )));
                return;
            };
            let t = response.outputs.remove(at);
            if t.dtype != initial.dtype
                || t.shape != initial.shape
                || t.data.len() != initial.data.len()
            {
                *outcome = Err(EngineError::internal(format!(
                    "model '{}' returned state output '{}' as {} {:?}; the state is {} {:?}",
                    spec.name(),
                    s.output,
                    t.dtype,
                    t.shape,
                    initial.dtype,
                    initial.shape
                )));
                return;
            }
            state.push(Tensor::new(s.input.clone(), t.dtype, t.shape, t.data));
        }
        self.state = Some(state);
    }

    /// Disarms the turn, for a caller that advances the sequence itself.
    pub(super) fn defuse(mut self) -> (SequenceId, bool) {
        self.armed = false;
        (self.id.clone(), self.end)
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if self.armed {
            let id = std::mem::replace(&mut self.id, SequenceId::Number(0));
            self.table.advance(id, self.state.take(), self.end);
        }
    }
}
