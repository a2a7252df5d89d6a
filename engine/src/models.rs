//! The set of models the engine serves: loading, unloading, polling the repository, and
//! finding the version a request goes to.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use crate::ensemble::Ensemble;
use crate::generation::GenerationIo;
use crate::scheduler::ModelRunner;
use crate::sequence::SequenceTable;
use crate::{
    BackendRegistry, EngineError, Instance, LoadedModel, ModelSpec, ModelStats, Repository, Result,
};

/// A loaded, running model version.
pub(crate) struct ModelVersion {
    pub spec: Arc<ModelSpec>,
    pub version: i64,
    pub stats: Arc<ModelStats>,
    /// The scheduler and instances; `None` for an ensemble, which has none of its own.
    pub runner: Option<ModelRunner>,
    /// The graph of an ensemble.
    pub ensemble: Option<Arc<Ensemble>>,
    /// The live sequences of a model with `sequence_batching`.
    pub sequences: Option<Arc<SequenceTable>>,
    /// Kept for its per-request check; `None` for an ensemble.
    pub loaded: Option<Arc<dyn LoadedModel>>,
}

impl ModelVersion {
    /// The internal error that stopped this version's scheduler, if one did.
    pub(crate) fn fault(&self) -> Option<&str> {
        self.runner.as_ref().and_then(ModelRunner::fault)
    }
}

/// What a frontend needs to know of a ready model version, typed: the version requests go
/// to and the validated spec the engine serves it by (inputs and outputs with their
/// datatypes, batching, whether it is decoupled). Cheap: the spec is shared, not copied.
#[derive(Debug, Clone)]
pub struct ModelFacts {
    /// The version.
    pub version: i64,
    /// The model's validated config.
    pub spec: Arc<ModelSpec>,
}

impl ModelFacts {
    /// The model's name.
    pub fn name(&self) -> &str {
        self.spec.name()
    }

    /// Whether requests carry a batch dimension (`max_batch_size` > 0).
    pub fn batches(&self) -> bool {
        self.spec.max_batch_size > 0
    }

    /// The model's tensors of the text generation contract, or why it is not a generator.
    pub fn generation(&self) -> Result<GenerationIo> {
        GenerationIo::from_spec(&self.spec)
    }
}

#[derive(Default)]
struct ModelEntry {
    versions: BTreeMap<i64, Arc<ModelVersion>>,
    /// Why the model as a whole is not serving (bad config, unloaded).
    reason: Option<String>,
    fingerprint: Option<u64>,
    /// Not serving because a client's load request failed: the client was answered with
    /// the error, and the server's readiness is not its to take away.
    refused_request: bool,
}

/// Who asked for a load: strict readiness counts a model the server itself could not load
/// (at startup, on a repository poll), not one a client's load request failed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoadCause {
    /// The server: startup or a repository poll.
    Server,
    /// A client's load request (explicit model control).
    Client,
}

impl ModelEntry {
    /// The newest version still serving (one whose scheduler failed is skipped).
    fn newest_ready(&self) -> Option<&Arc<ModelVersion>> {
        self.versions.values().rev().find(|m| m.fault().is_none())
    }
}

/// One row of the repository index (Triton's `RepositoryIndexResponse.ModelIndex`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepositoryEntry {
    /// Model name.
    pub name: String,
    /// Version, empty when the model has none loaded.
    pub version: String,
    /// READY, UNAVAILABLE or LOADING.
    pub state: String,
    /// Why it is not ready.
    pub reason: String,
}

/// Models by name, guarded for many readers (every request) and rare writers.
pub(crate) struct ModelTable {
    repository: Option<Repository>,
    backends: BackendRegistry,
    /// Whether the server has a response cache for the models that enable it.
    has_response_cache: bool,
    entries: RwLock<BTreeMap<String, ModelEntry>>,
    /// Serialises loads and unloads so two never race on one model.
    control: Mutex<()>,
}

impl ModelTable {
    pub(crate) fn new(
        repository: Option<Repository>,
        backends: BackendRegistry,
        has_response_cache: bool,
    ) -> Self {
        Self {
            repository,
            backends,
            has_response_cache,
            entries: RwLock::new(BTreeMap::new()),
            control: Mutex::new(()),
        }
    }

    pub(crate) fn repository(&self) -> Option<&Repository> {
        self.repository.as_ref()
    }

    /// The version a request for `name`/`version` goes to.
    pub(crate) fn resolve(&self, name: &str, version: Option<i64>) -> Result<Arc<ModelVersion>> {
        let entries = self.entries.read();
        let entry = entries
            .get(name)
            .ok_or_else(|| EngineError::unknown_model(name))?;
        match version {
            Some(v) => match entry.versions.get(&v) {
                Some(m) if m.fault().is_none() => Ok(m.clone()),
                Some(_) => Err(not_ready(name, entry)),
                None if entry.versions.is_empty() => Err(not_ready(name, entry)),
                None => Err(EngineError::unknown_version(name, v)),
            },
            None => entry
                .newest_ready()
                .cloned()
                .ok_or_else(|| not_ready(name, entry)),
        }
    }

    /// Every ready version, optionally of one model only.
    pub(crate) fn ready_versions(&self, name: Option<&str>) -> Vec<Arc<ModelVersion>> {
        let entries = self.entries.read();
        entries
            .iter()
            .filter(|(n, _)| name.is_none_or(|want| want == n.as_str()))
            .flat_map(|(_, e)| e.versions.values().cloned())
            .collect()
    }

    /// Whether every model the table knows of is serving, leaving out unloaded models and
    /// those only a client's failed load request named.
    pub(crate) fn all_ready(&self) -> bool {
        self.entries.read().values().all(|e| {
            e.reason.is_none() || e.reason.as_deref() == Some(UNLOADED) || e.refused_request
        })
    }

    /// Loads (or reloads) a model. On failure a model that was serving keeps serving its
    /// old versions; otherwise it is recorded UNAVAILABLE with the reason.
    pub(crate) fn load(
        &self,
        name: &str,
        config: Option<nereid_proto::inference::ModelConfig>,
        cause: LoadCause,
    ) -> Result<()> {
        let _control = self.control.lock();
        self.load_locked(name, config, cause, 0)
    }

    /// [`load`](Self::load) with the control lock held; `depth` counts the ensembles whose
    /// loading asked for this one.
    fn load_locked(
        &self,
        name: &str,
        config: Option<nereid_proto::inference::ModelConfig>,
        cause: LoadCause,
        depth: usize,
    ) -> Result<()> {
        let fingerprint = self.repository.as_ref().map(|r| r.fingerprint(name));
        match self.build(name, config, cause, depth) {
            Ok(loaded) => {
                let old = {
                    let mut entries = self.entries.write();
                    let entry = ModelEntry {
                        versions: loaded,
                        reason: None,
                        fingerprint,
                        refused_request: false,
                    };
                    entries.insert(name.to_string(), entry)
                };
                tracing::info!(model = name, "model loaded");
                stop_entry(old);
                Ok(())
            }
            Err(error) => {
                tracing::error!(model = name, "failed to load: {error}");
                let mut entries = self.entries.write();
                // A name the repository does not hold leaves no entry behind: a client
                // naming random models must not grow the table.
                if matches!(error, EngineError::NotFound(_)) && !entries.contains_key(name) {
                    return Err(error);
                }
                let entry = entries.entry(name.to_string()).or_default();
                entry.fingerprint = fingerprint;
                if entry.newest_ready().is_none() {
                    entry.versions.clear();
                    entry.reason = Some(error.to_string());
                    entry.refused_request = cause == LoadCause::Client;
                }
                Err(error)
            }
        }
    }

    /// The config with what its backend reads from the model's newest version filled in
    /// (a config naming no known backend is left for validation to refuse).
    fn complete(
        &self,
        repo: &Repository,
        name: &str,
        mut config: nereid_proto::inference::ModelConfig,
    ) -> Result<nereid_proto::inference::ModelConfig> {
        if config.platform == crate::config::ENSEMBLE_PLATFORM {
            return Ok(config);
        }
        let Ok(backend) = self.backends.resolve_config(&config) else {
            return Ok(config);
        };
        let versions = repo.version_dirs(name, &config)?;
        if let Some((_, newest)) = versions.iter().max_by_key(|(version, _)| *version) {
            backend.complete_config(&mut config, newest)?;
        }
        Ok(config)
    }

    fn build(
        &self,
        name: &str,
        config: Option<nereid_proto::inference::ModelConfig>,
        cause: LoadCause,
        depth: usize,
    ) -> Result<BTreeMap<i64, Arc<ModelVersion>>> {
        let repo = self.repository.as_ref().ok_or_else(|| {
            EngineError::unavailable("the server has no model repository to load from")
        })?;
        if !repo.contains(name) {
            return Err(EngineError::NotFound(format!(
                "model '{name}' is not in the repository {}",
                repo.root().display()
            )));
        }
        let config = match config {
            Some(mut c) => {
                if c.name.is_empty() {
                    c.name = name.to_string();
                }
                c
            }
            None => repo.read_config(name)?,
        };
        let config = self.complete(repo, name, config)?;
        let spec = Arc::new(ModelSpec::from_config(config)?);
        if spec.response_cache && !self.has_response_cache {
            return Err(EngineError::invalid(format!(
                "model '{name}': field 'response_cache' enables the response cache, but this server \
                 has none: start it with --cache-config local,size=BYTES"
            )));
        }
        if spec.ensemble.is_some() {
            return self.build_ensemble(repo, &spec, cause, depth);
        }
        let backend = self.backends.resolve(&spec)?;
        let samples = crate::warmup::samples(&spec, &repo.model_dir(name))?;
        let mut loaded = BTreeMap::new();
        for (version, dir) in repo.version_dirs(name, &spec.config)? {
            let model = backend
                .load(&spec, &dir)
                .map_err(|e| prefix(name, version, e))?;
            let mut instances = Vec::with_capacity(spec.instances.len());
            for (index, &device) in spec.instances.iter().enumerate() {
                let mut instance = model
                    .create_instance(device, index)
                    .map_err(|e| prefix(name, version, e))?;
                let decoupled = matches!(instance, Instance::Decoupled(_));
                if decoupled != spec.decoupled {
                    return Err(EngineError::invalid(format!(
                        "model '{name}': the backend's instances are {}decoupled but the config sets \
                         model_transaction_policy {{ decoupled: {} }}",
                        if decoupled { "" } else { "not " },
                        spec.decoupled
                    )));
                }
                crate::warmup::warm(&spec, &mut instance, &samples)
                    .map_err(|e| prefix(name, version, e))?;
                instances.push(instance);
            }
            let stats = Arc::new(ModelStats::new(name, version));
            let runner = ModelRunner::start(spec.clone(), stats.clone(), instances, model.clone())?;
            let sequences = match spec.sequence {
                Some(_) => Some(SequenceTable::start(
                    spec.clone(),
                    &repo.model_dir(name),
                    runner.submitter(),
                )?),
                None => None,
            };
            loaded.insert(
                version,
                Arc::new(ModelVersion {
                    spec: spec.clone(),
                    version,
                    stats,
                    runner: Some(runner),
                    sequences,
                    ensemble: None,
                    loaded: Some(model.clone()),
                }),
            );
        }
        Ok(loaded)
    }

    /// An ensemble's versions, after loading the models of its steps that are not serving
    /// (as Triton does) and checking the steps against them.
    fn build_ensemble(
        &self,
        repo: &Repository,
        spec: &Arc<ModelSpec>,
        cause: LoadCause,
        depth: usize,
    ) -> Result<BTreeMap<i64, Arc<ModelVersion>>> {
        let name = spec.name();
        let graph = spec.ensemble.as_ref().expect("an ensemble");
        for (i, step) in graph.steps.iter().enumerate() {
            if self.resolve(&step.model, None).is_ok() || !repo.contains(&step.model) {
                continue;
            }
            if depth >= MAX_ENSEMBLE_DEPTH {
                return Err(EngineError::invalid(format!(
                    "ensemble '{name}': ensembles nest more than {MAX_ENSEMBLE_DEPTH} deep (does \
                     one contain itself?)"
                )));
            }
            self.load_locked(&step.model, None, cause, depth + 1)
                .map_err(|e| e.in_context(&format!("ensemble '{name}' {}", step.label(i))))?;
        }
        let streams = crate::ensemble::check_steps(spec, |model, version| {
            Ok(self.resolve(model, version)?.spec.clone())
        })?;
        let ensemble = Arc::new(Ensemble::new(spec.clone(), streams));
        Ok(repo
            .version_dirs(name, &spec.config)?
            .into_iter()
            .map(|(version, _)| {
                let model = ModelVersion {
                    spec: spec.clone(),
                    version,
                    stats: Arc::new(ModelStats::new(name, version)),
                    runner: None,
                    ensemble: Some(ensemble.clone()),
                    sequences: None,
                    loaded: None,
                };
                (version, Arc::new(model))
            })
            .collect())
    }

    /// Unloads a model: it takes no new requests, finishes queued ones, then stops.
    pub(crate) fn unload(&self, name: &str) -> Result<()> {
        let _control = self.control.lock();
        let old = {
            let mut entries = self.entries.write();
            let Some(entry) = entries.get_mut(name) else {
                // Only the repository is asked: `entries` is write-locked right here.
                if self.repository.as_ref().is_some_and(|r| r.contains(name)) {
                    return Ok(());
                }
                return Err(EngineError::unknown_model(name));
            };
            let old = std::mem::take(entry);
            entry.reason = Some(UNLOADED.into());
            old
        };
        stop_entry(Some(old));
        tracing::info!(model = name, "model unloaded");
        Ok(())
    }

    /// Unloads every model (server shutdown).
    pub(crate) fn unload_all(&self) {
        let names: Vec<String> = self.entries.read().keys().cloned().collect();
        for name in names {
            let _ = self.unload(&name);
        }
    }

    /// Repository poll: loads new and changed models, unloads removed ones.
    pub(crate) fn poll(&self) {
        let Some(repo) = &self.repository else { return };
        let Ok(names) = repo.model_names() else {
            return;
        };
        for name in &names {
            let known = self.entries.read().get(name).map(|e| e.fingerprint);
            let current = repo.fingerprint(name);
            if known != Some(Some(current)) {
                let _ = self.load(name, None, LoadCause::Server);
            }
        }
        let gone: Vec<String> = self
            .entries
            .read()
            .iter()
            .filter(|(n, e)| !names.contains(n) && e.reason.as_deref() != Some(UNLOADED))
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            let _ = self.unload(&name);
        }
    }

    /// The repository index: every model in the repository or the table.
    pub(crate) fn index(&self, ready_only: bool) -> Vec<RepositoryEntry> {
        let mut names: Vec<String> = self
            .repository
            .as_ref()
            .and_then(|r| r.model_names().ok())
            .unwrap_or_default();
        let entries = self.entries.read();
        names.extend(entries.keys().cloned());
        names.sort();
        names.dedup();
        let mut rows = Vec::new();
        for name in names {
            let row = |version: String, state: &str, reason: String| RepositoryEntry {
                name: name.clone(),
                version,
                state: state.into(),
                reason,
            };
            match entries.get(&name) {
                None => rows.push(row(String::new(), "UNAVAILABLE", "unloaded".into())),
                Some(e) if e.versions.is_empty() => rows.push(row(
                    String::new(),
                    "UNAVAILABLE",
                    e.reason.clone().unwrap_or_default(),
                )),
                Some(e) => {
                    for v in e.versions.keys() {
                        rows.push(row(v.to_string(), "READY", String::new()));
                    }
                }
            }
        }
        if ready_only {
            rows.retain(|r| r.state == "READY");
        }
        rows
    }
}

const UNLOADED: &str = "unloaded";

fn not_ready(name: &str, entry: &ModelEntry) -> EngineError {
    let fault = entry.versions.values().find_map(|m| m.fault());
    let reason = entry
        .reason
        .as_deref()
        .or(fault)
        .unwrap_or("no version is loaded");
    EngineError::unavailable(format!("model '{name}' is not ready: {reason}"))
}

/// How deep ensembles may contain ensembles.
const MAX_ENSEMBLE_DEPTH: usize = 8;

fn prefix(name: &str, version: i64, e: EngineError) -> EngineError {
    let msg = format!("model '{name}' version {version}: {e}");
    match e {
        EngineError::InvalidArgument(_) => EngineError::InvalidArgument(msg),
        EngineError::NotFound(_) => EngineError::NotFound(msg),
        _ => EngineError::Unavailable(msg),
    }
}

fn stop_entry(entry: Option<ModelEntry>) {
    let Some(entry) = entry else { return };
    for m in entry.versions.into_values() {
        if let Some(sequences) = &m.sequences {
            sequences.close();
        }
        if let Some(runner) = &m.runner {
            runner.stop();
        }
    }
}
