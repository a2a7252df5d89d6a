//! Triton's model repository layout: `<repo>/<model>/config.pbtxt` and numeric version
//! folders `<repo>/<model>/<version>/`.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use nereid_proto::inference::{model_version_policy::PolicyChoice, ModelConfig};

use crate::{EngineError, Result};

/// File name of a model's configuration.
pub const CONFIG_FILE: &str = "config.pbtxt";

/// A model repository on disk.
#[derive(Debug, Clone)]
pub struct Repository {
    root: PathBuf,
}

impl Repository {
    /// A repository rooted at `root`, which must be a readable directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.is_dir() {
            return Err(EngineError::invalid(format!(
                "model repository '{}' is not a directory",
                root.display()
            )));
        }
        Ok(Self { root })
    }

    /// The repository's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Names of the model folders, sorted.
    pub fn model_names(&self) -> Result<Vec<String>> {
        let entries = std::fs::read_dir(&self.root).map_err(|e| {
            EngineError::unavailable(format!(
                "cannot read model repository '{}': {e}",
                self.root.display()
            ))
        })?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Folder of model `name`.
    pub fn model_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Whether `name` is a model folder of this repository: one plain path component
    /// (no separator, not `.` or `..`, not absolute), so a name a client sends can never
    /// reach a folder outside the repository.
    pub fn contains(&self, name: &str) -> bool {
        let plain = !matches!(name, "" | "." | "..") && !name.contains(['/', '\\', '\0']);
        plain && self.model_dir(name).is_dir()
    }

    /// Reads and parses `<model>/config.pbtxt`; the folder name fills in a missing `name`
    /// and must agree with a given one.
    pub fn read_config(&self, name: &str) -> Result<ModelConfig> {
        let path = self.model_dir(name).join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            EngineError::invalid(format!(
                "model '{name}': cannot read {}: {e}",
                path.display()
            ))
        })?;
        let mut config = nereid_proto::parse_model_config(&text).map_err(|e| {
            EngineError::invalid(format!("model '{name}': {}: {e}", path.display()))
        })?;
        if config.name.is_empty() {
            config.name = name.to_string();
        } else if config.name != name {
            return Err(EngineError::invalid(format!(
                "model folder '{name}' holds a config named '{}'; they must agree",
                config.name
            )));
        }
        Ok(config)
    }

    /// The version folders to serve under the config's `version_policy` (default: the
    /// newest one), ascending.
    pub fn version_dirs(&self, name: &str, config: &ModelConfig) -> Result<Vec<(i64, PathBuf)>> {
        let dir = self.model_dir(name);
        let mut available: Vec<(i64, PathBuf)> = std::fs::read_dir(&dir)
            .map_err(|e| {
                EngineError::invalid(format!(
                    "model '{name}': cannot read {}: {e}",
                    dir.display()
                ))
            })?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| {
                let v: i64 = e.file_name().to_str()?.parse().ok()?;
                (v >= 0).then(|| (v, e.path()))
            })
            .collect();
        available.sort();
        let policy = config
            .version_policy
            .as_ref()
            .and_then(|p| p.policy_choice.clone());
        let chosen: Vec<(i64, PathBuf)> = match policy {
            None => available.last().cloned().into_iter().collect(),
            Some(PolicyChoice::Latest(l)) => {
                let n = (l.num_versions as usize).max(1);
                available[available.len().saturating_sub(n)..].to_vec()
            }
            Some(PolicyChoice::All(_)) => available.clone(),
            Some(PolicyChoice::Specific(s)) => {
                let mut chosen = Vec::new();
                for v in s.versions {
                    let found = available.iter().find(|(a, _)| *a == v).cloned().ok_or_else(|| {
                        EngineError::invalid(format!(
                            "model '{name}': version_policy names version {v}, which has no folder in {}",
                            dir.display()
                        ))
                    })?;
                    chosen.push(found);
                }
                chosen.sort();
                chosen
            }
        };
        if chosen.is_empty() {
            return Err(EngineError::invalid(format!(
                "model '{name}': no version folder (like {}/1) to serve",
                dir.display()
            )));
        }
        Ok(chosen)
    }

    /// A hash of every file's path, size and modification time under the model's folder,
    /// so polling can tell a changed model from an unchanged one.
    pub fn fingerprint(&self, name: &str) -> u64 {
        let mut hasher = DefaultHasher::new();
        let mut stack = vec![self.model_dir(name)];
        let mut files = 0usize;
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                files += 1;
                if files > 10_000 {
                    return hasher.finish();
                }
                let path = e.path();
                path.hash(&mut hasher);
                if let Ok(meta) = e.metadata() {
                    if meta.is_dir() {
                        stack.push(path);
                    } else {
                        meta.len().hash(&mut hasher);
                        meta.modified().ok().hash(&mut hasher);
                    }
                }
            }
        }
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_with(versions: &[&str], config: &str) -> (tempfile::TempDir, Repository) {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m");
        std::fs::create_dir_all(&m).unwrap();
        for v in versions {
            std::fs::create_dir_all(m.join(v)).unwrap();
        }
        std::fs::write(m.join(CONFIG_FILE), config).unwrap();
        let repo = Repository::open(dir.path()).unwrap();
        (dir, repo)
    }

    const OUT: &str = r#"output { name: "Y" data_type: TYPE_FP32 dims: [1] }"#;

    #[test]
    fn version_policies() {
        let (_d, repo) = repo_with(&["1", "2", "10", "notaversion"], OUT);
        let cfg = repo.read_config("m").unwrap();
        assert_eq!(cfg.name, "m");
        let versions = |cfg| {
            repo.version_dirs("m", &cfg)
                .unwrap()
                .into_iter()
                .map(|(v, _)| v)
                .collect::<Vec<_>>()
        };
        assert_eq!(versions(cfg.clone()), vec![10]);
        let all = nereid_proto::parse_model_config(&format!("{OUT} version_policy {{ all {{}} }}"))
            .unwrap();
        assert_eq!(versions(all), vec![1, 2, 10]);
        let latest = nereid_proto::parse_model_config(&format!(
            "{OUT} version_policy {{ latest {{ num_versions: 2 }} }}"
        ))
        .unwrap();
        assert_eq!(versions(latest), vec![2, 10]);
        let specific = nereid_proto::parse_model_config(&format!(
            "{OUT} version_policy {{ specific {{ versions: [2, 1] }} }}"
        ))
        .unwrap();
        assert_eq!(versions(specific), vec![1, 2]);
        let missing = nereid_proto::parse_model_config(&format!(
            "{OUT} version_policy {{ specific {{ versions: [3] }} }}"
        ))
        .unwrap();
        assert!(repo
            .version_dirs("m", &missing)
            .unwrap_err()
            .to_string()
            .contains("version 3"));
    }

    #[test]
    fn config_errors_name_the_file_and_problem() {
        let (_d, repo) = repo_with(&["1"], "name: \"other\"");
        assert!(repo
            .read_config("m")
            .unwrap_err()
            .to_string()
            .contains("'other'"));
        let (_d, repo) = repo_with(&["1"], "max_batch_size: [");
        let err = repo.read_config("m").unwrap_err().to_string();
        assert!(err.contains("config.pbtxt"), "{err}");
        let (_d, repo) = repo_with(&[], OUT);
        let cfg = repo.read_config("m").unwrap();
        assert!(repo
            .version_dirs("m", &cfg)
            .unwrap_err()
            .to_string()
            .contains("no version folder"));
        assert!(repo
            .read_config("nope")
            .unwrap_err()
            .to_string()
            .contains("cannot read"));
    }

    #[test]
    fn fingerprint_changes_with_files() {
        let (d, repo) = repo_with(&["1"], OUT);
        let before = repo.fingerprint("m");
        assert_eq!(before, repo.fingerprint("m"));
        std::fs::write(d.path().join("m/1/weights.bin"), b"abc").unwrap();
        assert_ne!(before, repo.fingerprint("m"));
    }
}
