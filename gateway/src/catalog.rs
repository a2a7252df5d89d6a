//! Which backend serves which model version, and what each model takes: rebuilt from the
//! repository indexes the backends report, with each version's config fetched once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use nereid_engine::{
    EngineError, ModelFacts, ModelSpec, ModelStats, RepositoryEntry, Result, UpstreamModel,
};
use parking_lot::{Mutex, RwLock};

use crate::backend::Backend;

/// A model version by name and number.
pub(crate) type VersionKey = (String, i64);

/// What one backend's repository index said.
pub(crate) struct Report {
    /// The backend.
    pub(crate) backend: Arc<Backend>,
    /// Its index, every state.
    pub(crate) index: Vec<RepositoryEntry>,
}

impl Report {
    /// The versions it serves ready.
    pub(crate) fn ready(&self) -> impl Iterator<Item = VersionKey> + '_ {
        self.index.iter().filter_map(|e| {
            let version = e.version.parse().ok()?;
            (e.state == "READY").then(|| (e.name.clone(), version))
        })
    }
}

/// The routing table and what the gateway keeps per model version.
#[derive(Default)]
pub(crate) struct Catalog {
    table: RwLock<Arc<Table>>,
    specs: Mutex<HashMap<VersionKey, Arc<ModelSpec>>>,
    stats: Mutex<HashMap<VersionKey, Arc<ModelStats>>>,
}

#[derive(Default)]
struct Table {
    models: BTreeMap<String, Entry>,
}

#[derive(Default)]
struct Entry {
    versions: BTreeMap<i64, Route>,
    /// Why no backend serves it, as one of them put it.
    reason: String,
}

struct Route {
    model: UpstreamModel,
    backends: Vec<Arc<Backend>>,
}

impl Catalog {
    /// Ready versions the reports name whose config has not been fetched yet, each with a
    /// backend to ask.
    pub(crate) fn missing_specs(&self, reports: &[Report]) -> Vec<(VersionKey, Arc<Backend>)> {
        let specs = self.specs.lock();
        let mut seen = HashSet::new();
        let mut missing = Vec::new();
        for report in reports {
            for key in report.ready() {
                if !specs.contains_key(&key) && seen.insert(key.clone()) {
                    missing.push((key, report.backend.clone()));
                }
            }
        }
        missing
    }

    /// Records a version's config, as its engine completed it.
    pub(crate) fn add_spec(&self, key: VersionKey, spec: ModelSpec) {
        self.specs.lock().insert(key, Arc::new(spec));
    }

    /// Replaces the routing table with what the reports say. A version whose config could
    /// not be fetched is left out until it can; a config no backend serves any more is
    /// forgotten, so a reloaded model's new config is fetched again.
    pub(crate) fn rebuild(&self, reports: &[Report]) {
        let mut specs = self.specs.lock();
        let mut stats = self.stats.lock();
        let mut table = Table::default();
        for report in reports {
            for row in &report.index {
                let entry = table.models.entry(row.name.clone()).or_default();
                if row.state != "READY" && entry.reason.is_empty() {
                    entry.reason = row.reason.clone();
                }
            }
            for key in report.ready() {
                let Some(spec) = specs.get(&key) else {
                    continue;
                };
                let entry = table.models.entry(key.0.clone()).or_default();
                let route = entry.versions.entry(key.1).or_insert_with(|| Route {
                    model: UpstreamModel {
                        facts: ModelFacts {
                            version: key.1,
                            spec: spec.clone(),
                        },
                        stats: stats
                            .entry(key.clone())
                            .or_insert_with(|| Arc::new(ModelStats::new(&key.0, key.1)))
                            .clone(),
                    },
                    backends: Vec::new(),
                });
                route.backends.push(report.backend.clone());
            }
        }
        let served: HashSet<VersionKey> = reports.iter().flat_map(Report::ready).collect();
        specs.retain(|key, _| served.contains(key));
        *self.table.write() = Arc::new(table);
    }

    /// The version a request goes to, or the error an engine gives for it.
    pub(crate) fn resolve(&self, name: &str, version: Option<i64>) -> Result<UpstreamModel> {
        let table = self.table.read().clone();
        let route = find(&table, name, version)?;
        Ok(route.model.clone())
    }

    /// Where a request for a version (the newest when none is named) goes: whether the
    /// model is decoupled, and the backends serving it, healthy or not.
    pub(crate) fn route(&self, name: &str, version: Option<i64>) -> (bool, Vec<Arc<Backend>>) {
        let table = self.table.read().clone();
        find(&table, name, version).map_or((false, Vec::new()), |route| {
            (route.model.facts.spec.decoupled, route.backends.clone())
        })
    }

    /// Every routable version, optionally of one model.
    pub(crate) fn ready_versions(&self, name: Option<&str>) -> Vec<UpstreamModel> {
        let table = self.table.read().clone();
        table
            .models
            .iter()
            .filter(|(n, _)| name.is_none_or(|want| want == n.as_str()))
            .flat_map(|(_, e)| e.versions.values().map(|r| r.model.clone()))
            .collect()
    }

    /// The fleet's repository index: each model's routable versions READY, a model no
    /// backend serves UNAVAILABLE with a backend's reason.
    pub(crate) fn index(&self, ready_only: bool) -> Vec<RepositoryEntry> {
        let table = self.table.read().clone();
        let mut rows = Vec::new();
        for (name, entry) in &table.models {
            for version in entry.versions.keys() {
                rows.push(RepositoryEntry {
                    name: name.clone(),
                    version: version.to_string(),
                    state: "READY".into(),
                    reason: String::new(),
                });
            }
            if entry.versions.is_empty() && !ready_only {
                rows.push(RepositoryEntry {
                    name: name.clone(),
                    version: String::new(),
                    state: "UNAVAILABLE".into(),
                    reason: entry.reason.clone(),
                });
            }
        }
        rows
    }
}

/// The same errors as an engine's model table, so clients cannot tell the two apart.
fn find<'t>(table: &'t Table, name: &str, version: Option<i64>) -> Result<&'t Route> {
    let entry = table
        .models
        .get(name)
        .ok_or_else(|| EngineError::unknown_model(name))?;
    let not_ready = || {
        let reason = if entry.reason.is_empty() {
            "no version is loaded"
        } else {
            &entry.reason
        };
        EngineError::unavailable(format!("model '{name}' is not ready: {reason}"))
    };
    match version {
        None => entry.versions.values().next_back().ok_or_else(not_ready),
        Some(v) => match entry.versions.get(&v) {
            Some(route) => Ok(route),
            None if entry.versions.is_empty() => Err(not_ready()),
            None => Err(EngineError::unknown_version(name, v)),
        },
    }
}

#[cfg(test)]
mod tests {
    use nereid_engine::ModelConfig;
    use nereid_proto::inference::{DataType, ModelOutput};

    use super::*;
    use crate::backend::tests::backend;

    fn spec(name: &str) -> ModelSpec {
        let config = ModelConfig {
            name: name.into(),
            backend: "identity".into(),
            output: vec![ModelOutput {
                name: "Y".into(),
                data_type: DataType::TypeFp32 as i32,
                dims: vec![1],
                ..ModelOutput::default()
            }],
            ..ModelConfig::default()
        };
        ModelSpec::from_config(config).unwrap()
    }

    fn row(name: &str, version: &str, state: &str) -> RepositoryEntry {
        RepositoryEntry {
            name: name.into(),
            version: version.into(),
            state: state.into(),
            reason: if state == "READY" {
                ""
            } else {
                "broken config"
            }
            .into(),
        }
    }

    #[test]
    fn routes_each_version_to_the_backends_serving_it() {
        let (a, b) = (backend("10.0.0.1:8001"), backend("10.0.0.2:8001"));
        let reports = vec![
            Report {
                backend: a.clone(),
                index: vec![row("m", "1", "READY"), row("m", "2", "READY")],
            },
            Report {
                backend: b.clone(),
                index: vec![row("m", "1", "READY"), row("bad", "", "UNAVAILABLE")],
            },
        ];
        let catalog = Catalog::default();
        let missing = catalog.missing_specs(&reports);
        assert_eq!(missing.len(), 2, "each version's config is fetched once");
        for (key, _) in missing {
            catalog.add_spec(key, spec("m"));
        }
        catalog.rebuild(&reports);
        assert!(catalog.missing_specs(&reports).is_empty());

        assert_eq!(catalog.resolve("m", None).unwrap().facts.version, 2);
        let (_, newest) = catalog.route("m", None);
        assert_eq!(newest.len(), 1);
        assert_eq!(newest[0].address, a.address);
        assert_eq!(catalog.route("m", Some(1)).1.len(), 2);

        let unknown = catalog.resolve("nope", None).unwrap_err();
        assert!(matches!(unknown, EngineError::NotFound(_)), "{unknown}");
        let missing_version = catalog.resolve("m", Some(7)).unwrap_err();
        assert!(matches!(missing_version, EngineError::NotFound(_)));
        let not_ready = catalog.resolve("bad", None).unwrap_err();
        assert!(
            matches!(&not_ready, EngineError::Unavailable(m) if m.contains("broken config")),
            "{not_ready}"
        );

        let index = catalog.index(false);
        assert_eq!(index.len(), 3);
        assert_eq!(catalog.index(true).len(), 2);
    }

    #[test]
    fn forgets_configs_no_backend_serves_and_keeps_statistics() {
        let a = backend("10.0.0.1:8001");
        let reports = vec![Report {
            backend: a.clone(),
            index: vec![row("m", "1", "READY")],
        }];
        let catalog = Catalog::default();
        catalog.add_spec(("m".into(), 1), spec("m"));
        catalog.rebuild(&reports);
        let stats = catalog.resolve("m", None).unwrap().stats;
        catalog.rebuild(&[]);
        assert!(catalog.resolve("m", None).is_err());
        assert_eq!(catalog.missing_specs(&reports).len(), 1, "fetched again");
        catalog.add_spec(("m".into(), 1), spec("m"));
        catalog.rebuild(&reports);
        let again = catalog.resolve("m", None).unwrap().stats;
        assert!(Arc::ptr_eq(&stats, &again), "statistics outlive a reload");
    }
}
