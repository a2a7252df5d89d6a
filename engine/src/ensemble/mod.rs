//! Ensembles: a request to an ensemble runs its steps as a graph, each step as soon as
//! its inputs exist, each through its model's own queue and batcher (so the steps'
//! statistics count it and its batches share with direct requests). Orchestration only:
//! it runs on the async runtime, the steps' models compute on their own threads.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

mod stream;

use stream::Answer;

use crate::sink::{RequestContext, Sink};
use crate::{
    Engine, EngineError, EnsembleSpec, InferRequest, ModelSpec, RequestedOutput, Result, Tensor,
};

/// A loaded ensemble version: its graph, which of its steps stream, and its in-flight
/// bound.
pub(crate) struct Ensemble {
    spec: Arc<ModelSpec>,
    /// By step: its model is decoupled (as loaded when the ensemble was).
    streams: Vec<bool>,
    inflight: Option<Arc<Semaphore>>,
}

impl Ensemble {
    pub(crate) fn new(spec: Arc<ModelSpec>, streams: Vec<bool>) -> Self {
        let inflight = spec
            .ensemble
            .as_ref()
            .and_then(|e| e.max_inflight)
            .map(|n| Arc::new(Semaphore::new(n)));
        Self {
            spec,
            streams,
            inflight,
        }
    }

    fn graph(&self) -> &EnsembleSpec {
        self.spec
            .ensemble
            .as_ref()
            .expect("an ensemble's spec has its graph")
    }

    /// Runs a validated request through the steps on a task of its own and answers `sink`;
    /// a client that goes away cancels the steps still queued.
    pub(crate) fn submit(
        self: &Arc<Self>,
        engine: Engine,
        request: InferRequest,
        mut sink: Sink,
        mut ctx: RequestContext,
    ) -> Result<()> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| EngineError::internal("ensembles run on the server's async runtime"))?;
        let ensemble = self.clone();
        if self.spec.decoupled {
            let Sink::Stream(answers) = sink else {
                return Err(EngineError::internal("a decoupled ensemble needs a stream"));
            };
            runtime.spawn(async move {
                let outcome = tokio::select! {
                    outcome = ensemble.stream(&engine, &request, &mut ctx, &answers) => outcome,
                    () = answers.closed() => return,
                };
                let last = outcome.map(|()| ctx.response(Vec::new(), true));
                ctx.record(&last);
                let _ = answers.send(last).await;
            });
            return Ok(());
        }
        runtime.spawn(async move {
            let outcome = tokio::select! {
                outcome = ensemble.run(&engine, request) => outcome,
                () = sink.closed() => return,
            };
            let outcome = outcome.map(|outputs| ctx.response(outputs, true));
            sink.finish(&mut ctx, outcome);
        });
        Ok(())
    }

    /// A decoupled ensemble's responses, one per branch that makes its outputs.
    async fn stream(
        &self,
        engine: &Engine,
        request: &InferRequest,
        ctx: &mut RequestContext,
        answers: &tokio::sync::mpsc::Sender<Result<crate::InferResponse>>,
    ) -> Result<()> {
        let _permit = self.permit().await?;
        self.walk(engine, request, &mut Respond { ctx, answers })
            .await
    }

    /// A place among the requests computing at once, when the ensemble bounds them.
    async fn permit(&self) -> Result<Option<tokio::sync::SemaphorePermit<'_>>> {
        match &self.inflight {
            Some(s) => Ok(Some(s.acquire().await.map_err(|_| {
                EngineError::unavailable(format!("ensemble '{}' is unloading", self.spec.name()))
            })?)),
            None => Ok(None),
        }
    }

    /// The ensemble's outputs, in config order: its one branch's answer.
    async fn run(&self, engine: &Engine, request: InferRequest) -> Result<Vec<Tensor>> {
        let _permit = self.permit().await?;
        let mut outputs = Keep(None);
        self.walk(engine, &request, &mut outputs).await?;
        outputs.0.ok_or_else(|| {
            EngineError::internal(format!(
                "ensemble '{}': its steps never made all its outputs",
                self.spec.name()
            ))
        })
    }

    /// Step `i`'s request: its inputs renamed from the ensemble's tensors, its mapped
    /// outputs asked for, the ensemble request's parameters, deadline and origin.
    fn step_request(
        &self,
        i: usize,
        request: &InferRequest,
        tensors: &HashMap<String, Tensor>,
    ) -> InferRequest {
        let step = &self.graph().steps[i];
        InferRequest {
            model_name: step.model.clone(),
            model_version: step.version,
            id: request.id.clone(),
            inputs: step
                .inputs
                .iter()
                .map(|(input, tensor)| {
                    let mut t = tensors[tensor].clone();
                    t.name = input.clone();
                    t
                })
                .collect(),
            outputs: step
                .outputs
                .iter()
                .map(|(output, _)| RequestedOutput {
                    name: output.clone(),
                    parameters: Default::default(),
                })
                .collect(),
            parameters: request.parameters.clone(),
            deadline: request.deadline,
            origin: request.origin.clone(),
        }
    }

    /// A step's error, of the same kind, naming the ensemble and the step.
    fn step_error(&self, i: usize, error: EngineError) -> EngineError {
        let context = format!(
            "ensemble '{}' {}",
            self.spec.name(),
            self.graph().steps[i].label(i)
        );
        error.in_context(&context)
    }
}

/// A decoupled ensemble's answer: one response per branch, to the client's stream.
struct Respond<'a> {
    ctx: &'a mut RequestContext,
    answers: &'a tokio::sync::mpsc::Sender<Result<crate::InferResponse>>,
}

impl Answer for Respond<'_> {
    fn answer(&mut self, outputs: Vec<Tensor>) -> impl std::future::Future<Output = bool> + Send {
        self.ctx.responding();
        let response = self.ctx.response(outputs, false);
        let answers = self.answers;
        async move { answers.send(Ok(response)).await.is_ok() }
    }
}

/// A one-response ensemble's answer: its one branch's outputs, kept.
struct Keep(Option<Vec<Tensor>>);

impl Answer for Keep {
    fn answer(&mut self, outputs: Vec<Tensor>) -> impl std::future::Future<Output = bool> + Send {
        self.0 = Some(outputs);
        std::future::ready(true)
    }
}

/// Validates an ensemble against the models it is made of, as loaded now: each step's
/// inputs and outputs exist with the ensemble tensors' datatypes.
pub(crate) fn check_steps(
    spec: &ModelSpec,
    step_spec: impl Fn(&str, Option<i64>) -> Result<Arc<ModelSpec>>,
) -> Result<Vec<bool>> {
    let mut streams = Vec::new();
    let graph = spec.ensemble.as_ref().expect("an ensemble");
    let mut dtypes: HashMap<&str, crate::DataType> = spec
        .inputs
        .iter()
        .chain(&spec.outputs)
        .map(|t| (t.name.as_str(), t.dtype))
        .collect();
    let bad = |msg: String| EngineError::invalid(format!("ensemble '{}': {msg}", spec.name()));
    for (i, step) in graph.steps.iter().enumerate() {
        let model = step_spec(&step.model, step.version)
            .map_err(|e| bad(format!("{}: {e}", step.label(i))))?;
        if model.decoupled && !spec.decoupled {
            return Err(bad(format!(
                "{}: the model is decoupled, so the ensemble must be too \
                 (model_transaction_policy {{ decoupled: true }}): it answers once per response",
                step.label(i)
            )));
        }
        streams.push(model.decoupled);
        let pairs = step
            .inputs
            .iter()
            .map(|(name, tensor)| (name, tensor, model.input(name), "input"))
            .chain(
                step.outputs
                    .iter()
                    .map(|(name, tensor)| (name, tensor, model.output(name), "output")),
            );
        for (name, tensor, found, what) in pairs {
            let found = found.ok_or_else(|| {
                bad(format!(
                    "{}: the model has no {what} '{name}'",
                    step.label(i)
                ))
            })?;
            match dtypes.insert(tensor.as_str(), found.dtype) {
                Some(d) if d != found.dtype => {
                    return Err(bad(format!(
                        "{}: {what} '{name}' is {}, but ensemble tensor '{tensor}' is {d}",
                        step.label(i),
                        found.dtype
                    )))
                }
                _ => {}
            }
        }
    }
    Ok(streams)
}
