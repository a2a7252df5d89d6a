//! Running an ensemble's graph. A step whose model is decoupled streams, and each of its
//! responses carries the request on down the graph as a branch of its own, so a decoupled
//! ensemble answers once per branch that makes its outputs (then ends with an empty final
//! response). Without such a step there is one branch, answered once.
//!
//! A branch holds the tensors made so far and which steps it started. A decoupled step's
//! response forks a child branch (a copy of its parent plus the response's outputs); a
//! one-response step's outputs go to the branch that started it and to every branch forked
//! from it since, which copied its start but not its outputs.

use std::collections::HashMap;
use std::future::Future;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::Ensemble;
use crate::{Engine, EngineError, InferRequest, InferResponse, Result, Tensor};

/// Where a branch's outputs go.
pub(super) trait Answer {
    /// Takes one branch's outputs; false when the client is gone (the walk stops).
    fn answer(&mut self, outputs: Vec<Tensor>) -> impl Future<Output = bool> + Send;
}

/// Events step tasks send: a response of `step` started by `branch` (`None`: the step is
/// done).
struct StepEvent {
    branch: usize,
    step: usize,
    outcome: Result<Option<InferResponse>>,
}

struct Branch {
    tensors: HashMap<String, Tensor>,
    started: Vec<bool>,
    children: Vec<usize>,
    answered: bool,
}

/// Room for step events not yet handled; a step's task waits when it is full.
const EVENTS: usize = 64;

impl Ensemble {
    /// Runs the graph, handing the ensemble's outputs to `answer` once per branch that
    /// makes them all (false from it: the client is gone, stop). Returns when every step is
    /// done, or at the first error.
    pub(super) async fn walk(
        &self,
        engine: &Engine,
        request: &InferRequest,
        answer: &mut impl Answer,
    ) -> Result<()> {
        let graph = self.graph();
        let steps = graph.steps.len();
        let mut branches = vec![Branch {
            tensors: request
                .inputs
                .iter()
                .map(|t| (t.name.clone(), t.clone()))
                .collect(),
            started: vec![false; steps],
            children: Vec::new(),
            answered: false,
        }];
        let (events_tx, mut events) = mpsc::channel::<StepEvent>(EVENTS);
        // Aborted when dropped at return (an error, the client gone): the steps still
        // running drop their requests, which cancels them.
        let mut tasks = JoinSet::new();
        let mut running = 0usize;
        let mut ready = vec![0usize];
        loop {
            while let Some(b) = ready.pop() {
                running +=
                    self.launch(engine, request, &mut branches[b], b, &events_tx, &mut tasks);
                if let Some(outputs) = self.complete(&mut branches[b]) {
                    if !answer.answer(outputs).await {
                        return Ok(());
                    }
                }
            }
            if running == 0 {
                return Ok(());
            }
            let Some(event) = events.recv().await else {
                return Ok(());
            };
            let response = match event.outcome.map_err(|e| self.step_error(event.step, e))? {
                Some(response) => response,
                None => {
                    running -= 1;
                    continue;
                }
            };
            let outputs = self.step_outputs(event.step, &response)?;
            if self.streams[event.step] {
                let parent = &branches[event.branch];
                let mut tensors = parent.tensors.clone();
                tensors.extend(outputs);
                let child = Branch {
                    tensors,
                    started: parent.started.clone(),
                    children: Vec::new(),
                    answered: false,
                };
                branches.push(child);
                let id = branches.len() - 1;
                branches[event.branch].children.push(id);
                ready.push(id);
            } else {
                // The branch that started it and every branch forked from it since.
                let mut reach = vec![event.branch];
                while let Some(b) = reach.pop() {
                    branches[b].tensors.extend(outputs.iter().cloned());
                    reach.extend(branches[b].children.iter().copied());
                    ready.push(b);
                }
            }
        }
    }

    /// Starts the steps of `branch` whose inputs it now has; returns how many.
    fn launch(
        &self,
        engine: &Engine,
        request: &InferRequest,
        branch: &mut Branch,
        id: usize,
        events: &mpsc::Sender<StepEvent>,
        tasks: &mut JoinSet<()>,
    ) -> usize {
        let graph = self.graph();
        let mut launched = 0;
        for (i, step) in graph.steps.iter().enumerate() {
            if branch.started[i]
                || !step
                    .inputs
                    .iter()
                    .all(|(_, t)| branch.tensors.contains_key(t))
            {
                continue;
            }
            branch.started[i] = true;
            launched += 1;
            let step_request = self.step_request(i, request, &branch.tensors);
            let (engine, events, streams) = (engine.clone(), events.clone(), self.streams[i]);
            tasks.spawn(async move {
                let send = |outcome| {
                    events.send(StepEvent {
                        branch: id,
                        step: i,
                        outcome,
                    })
                };
                if !streams {
                    let outcome = engine.infer_step(step_request).await;
                    let failed = outcome.is_err();
                    if send(outcome.map(Some)).await.is_ok() && !failed {
                        let _ = send(Ok(None)).await;
                    }
                    return;
                }
                let mut responses = match engine.stream_step(step_request) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = send(Err(e)).await;
                        return;
                    }
                };
                while let Some(outcome) = responses.recv().await {
                    let outcome = match outcome {
                        // A final response without outputs only ends the stream.
                        Ok(r) if r.is_final && r.outputs.is_empty() => break,
                        other => other,
                    };
                    let stop = outcome.as_ref().map_or(true, |r| r.is_final);
                    if send(outcome.map(Some)).await.is_err() || stop {
                        break;
                    }
                }
                let _ = send(Ok(None)).await;
            });
        }
        launched
    }

    /// The branch's outputs, once, when it has them all.
    fn complete(&self, branch: &mut Branch) -> Option<Vec<Tensor>> {
        if branch.answered
            || !self
                .spec
                .outputs
                .iter()
                .all(|o| branch.tensors.contains_key(&o.name))
        {
            return None;
        }
        branch.answered = true;
        Some(
            self.spec
                .outputs
                .iter()
                .map(|o| branch.tensors[&o.name].clone())
                .collect(),
        )
    }

    /// A step's mapped outputs, renamed to their ensemble tensors.
    pub(super) fn step_outputs(
        &self,
        i: usize,
        response: &InferResponse,
    ) -> Result<Vec<(String, Tensor)>> {
        let step = &self.graph().steps[i];
        step.outputs
            .iter()
            .map(|(output, tensor)| {
                let mut t = response.output(output).cloned().ok_or_else(|| {
                    EngineError::internal(format!(
                        "ensemble '{}' {}: no output '{output}' in its response",
                        self.spec.name(),
                        step.label(i)
                    ))
                })?;
                t.name = tensor.clone();
                Ok((tensor.clone(), t))
            })
            .collect()
    }
}
