//! The interface between the engine and model implementations.
//!
//! A [`Backend`] loads a model version once (weights, tokenizer); the loaded model then
//! creates one [`Instance`] per configured instance, each driven by its own OS thread.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use nereid_proto::inference::ModelConfig;

use crate::{Device, EngineError, InferRequest, ModelSpec, Parameters, Responder, Result, Tensor};

/// Loads models of one kind, named by the config's `backend` (or `platform`) field.
pub trait Backend: Send + Sync {
    /// Loads one version of a model from its version folder. Heavy, blocking work is fine
    /// here: it never runs on a Tokio worker.
    fn load(&self, spec: &ModelSpec, version_dir: &Path) -> Result<Arc<dyn LoadedModel>>;

    /// Fills in what the config leaves out and the model's own file says (Triton's
    /// auto-complete: inputs, outputs), before the config is validated. `version_dir` is
    /// the newest version to be loaded. By default the config must say everything.
    fn complete_config(&self, _config: &mut ModelConfig, _version_dir: &Path) -> Result<()> {
        Ok(())
    }
}

/// A loaded model version, shared by its instances.
pub trait LoadedModel: Send + Sync {
    /// Creates the instance numbered `index` on `device`.
    fn create_instance(&self, device: Device, index: usize) -> Result<Instance>;

    /// Checks what the config cannot say about one request (text that must be UTF-8, say)
    /// before it is queued, so a bad request fails alone with its own error instead of
    /// failing the batch it would have joined. Runs on the submitting (async) thread after
    /// the engine's own validation: keep it cheap. The error should name the input.
    fn check_request(&self, _request: &InferRequest) -> Result<()> {
        Ok(())
    }

    /// The model's tokenizer, when it has one, for routes that tokenise without computing
    /// (TEI's `/tokenize` and `/decode`).
    fn text_codec(&self) -> Option<Arc<dyn TextCodec>> {
        None
    }
}

/// A model's tokenizer. Its calls are blocking CPU work: run them off the async workers.
pub trait TextCodec: Send + Sync {
    /// The tokens of `text` (with the model's special tokens when `add_special_tokens`).
    fn tokenize(&self, text: &str, add_special_tokens: bool) -> Result<Vec<TextToken>>;
    /// The text of token `ids` (leaving special tokens out when `skip_special_tokens`).
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String>;
}

/// One token of a tokenised text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextToken {
    /// Its id in the vocabulary.
    pub id: u32,
    /// Its text: the slice of the input it covers, or the special token's own text.
    pub text: String,
    /// Whether it is a special token the tokenizer added (`[CLS]`, `</s>`).
    pub special: bool,
    /// Byte offsets `(start, stop)` in the input; `None` for an added special token.
    pub span: Option<(usize, usize)>,
}

/// An instance, of the kind matching the model's transaction policy.
pub enum Instance {
    /// One response per request; requests arrive batched.
    Batched(Box<dyn BatchedInstance>),
    /// Any number of responses per request; sequences are admitted between steps.
    Decoupled(Box<dyn DecoupledInstance>),
}

/// A batch handed to a [`BatchedInstance`]: each input concatenated along the batch
/// dimension (or, for a non-batching model, one request's inputs as they came).
pub struct ExecBatch {
    /// Inputs present in the batch, in the requests' order.
    pub inputs: Vec<Tensor>,
    /// Sum of the requests' batch dimensions (1 for a non-batching model).
    pub batch_size: usize,
    /// Each request's share of the batch, in the requests' order: its rows and its
    /// parameters (a model that honours per-request options, `normalize` say, reads them
    /// here).
    pub shares: Vec<BatchShare>,
}

/// One request's part of an [`ExecBatch`].
#[derive(Debug, Clone, Default)]
pub struct BatchShare {
    /// Its rows of the batch (its batch dimension; 1 for a non-batching model).
    pub rows: usize,
    /// The request's parameters.
    pub parameters: Parameters,
    /// The outputs it asked for; empty means every output.
    pub outputs: Vec<crate::RequestedOutput>,
}

impl ExecBatch {
    /// A batch of one request with no parameters (warmup samples, tests).
    pub fn whole(inputs: Vec<Tensor>, batch_size: usize) -> Self {
        Self {
            inputs,
            batch_size,
            shares: vec![BatchShare {
                rows: batch_size,
                ..Default::default()
            }],
        }
    }

    /// Whether any request of the batch wants output `name` (a request that names no
    /// output wants them all): a model may skip computing an output nobody reads.
    pub fn wants(&self, name: &str) -> bool {
        self.shares
            .iter()
            .any(|s| s.outputs.is_empty() || s.outputs.iter().any(|o| o.name == name))
    }

    /// The parameters of each row of the batch, in order (a request of several rows
    /// repeats its own).
    pub fn row_parameters(&self) -> impl Iterator<Item = &Parameters> {
        self.shares
            .iter()
            .flat_map(|s| std::iter::repeat_n(&s.parameters, s.rows))
    }

    /// Finds an input by name.
    pub fn input(&self, name: &str) -> Option<&Tensor> {
        self.inputs.iter().find(|t| t.name == name)
    }

    /// Finds a required input by name, or fails with a message naming it.
    pub fn require(&self, name: &str) -> Result<&Tensor> {
        self.input(name)
            .ok_or_else(|| EngineError::internal(format!("batch has no input '{name}'")))
    }
}

/// An instance that computes whole batches.
pub trait BatchedInstance: Send {
    /// Computes every output. Outputs of a batching model carry the batch dimension first,
    /// equal to `batch.batch_size`, so the engine can split them per request.
    fn execute(&mut self, batch: &ExecBatch) -> Result<Vec<Tensor>>;
}

/// A request admitted into a decoupled instance.
pub struct Sequence {
    /// The request's inputs.
    pub inputs: Vec<Tensor>,
    /// The request's parameters.
    pub parameters: Parameters,
    /// Where this sequence's responses go.
    pub responder: Responder,
}

impl Sequence {
    /// Finds an input by name.
    pub fn input(&self, name: &str) -> Option<&Tensor> {
        self.inputs.iter().find(|t| t.name == name)
    }
}

/// An instance that steps many live sequences together (continuous batching). The engine
/// admits a new sequence between steps whenever fewer than [`ModelSpec::max_sequences`] are
/// live.
///
/// [`ModelSpec::max_sequences`]: crate::ModelSpec::max_sequences
pub trait DecoupledInstance: Send {
    /// Takes a new sequence. Bad input is answered through `sequence.responder.fail`.
    fn admit(&mut self, sequence: Sequence);
    /// Advances every live sequence by one step, sending what it produced. A sequence
    /// advances only with a [`ResponsePermit`](crate::ResponsePermit) in hand (from
    /// `Responder::try_reserve`), so what it computes always has room. Sequences that
    /// finish (or whose client went away) are dropped from the live set.
    fn step(&mut self) -> Result<()>;
    /// Number of live sequences: [`step`](Self::step) is called while there are any.
    fn live(&self) -> usize;
    /// How many of the instance's places (of [`ModelSpec::max_sequences`]) its sequences
    /// hold: a new sequence is admitted when one is given up. By default every live
    /// sequence holds one until it ends; a model may give a place up earlier (and go on
    /// answering) or keep it after the sequence ended.
    ///
    /// [`ModelSpec::max_sequences`]: crate::ModelSpec::max_sequences
    fn held(&self) -> usize {
        self.live()
    }
    /// For a model with a KV cache: the positions its live sequences hold in it, and the
    /// most one sequence may hold (the context length). The engine reports held over
    /// context times the sequences the instance may run as its KV-cache utilisation.
    fn kv_cache(&self) -> Option<(usize, usize)> {
        None
    }
    /// Fails and drops every live sequence (after a failed or panicked step).
    fn abort_all(&mut self, error: EngineError);
}

/// Backends by name.
#[derive(Clone, Default)]
pub struct BackendRegistry {
    backends: HashMap<String, Arc<dyn Backend>>,
}

impl BackendRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding the engine's built-in backends (`add_sub`, `identity`, `repeat`).
    pub fn with_builtins() -> Self {
        let mut registry = Self::new();
        crate::builtin::register(&mut registry);
        registry
    }

    /// Registers (or replaces) a backend under `name`.
    pub fn register(&mut self, name: impl Into<String>, backend: Arc<dyn Backend>) {
        self.backends.insert(name.into(), backend);
    }

    /// Finds the backend a model's config names in `backend`, else in `platform`.
    pub fn resolve(&self, spec: &ModelSpec) -> Result<Arc<dyn Backend>> {
        self.resolve_config(&spec.config)
    }

    /// [`resolve`](Self::resolve) for a config not validated yet.
    pub fn resolve_config(&self, cfg: &ModelConfig) -> Result<Arc<dyn Backend>> {
        let key = if cfg.backend.is_empty() {
            &cfg.platform
        } else {
            &cfg.backend
        };
        if key.is_empty() {
            return Err(EngineError::invalid(format!(
                "model '{}': config names no backend; set backend to one of {:?}",
                cfg.name,
                self.names()
            )));
        }
        self.backends.get(key).cloned().ok_or_else(|| {
            EngineError::invalid(format!(
                "model '{}': unknown backend '{key}'; this server has {:?}",
                cfg.name,
                self.names()
            ))
        })
    }

    /// Registered backend names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.backends.keys().cloned().collect();
        names.sort();
        names
    }
}
