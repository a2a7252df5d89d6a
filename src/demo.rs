//! The demo repository served when no `--model-repository` is given: written into the
//! cache folder so a first `nereid serve` shows real models.

use std::path::PathBuf;

use anyhow::Context;
use nereid_engine::builtin::demo::{write_repository, BUILTIN_MODELS};

use crate::cli::DemoModels;

/// Writes the demo repository (configs only; weights are fetched on first use) and
/// returns its folder.
pub(crate) fn prepare(which: DemoModels) -> anyhow::Result<PathBuf> {
    let folder = match which {
        DemoModels::All => "demo-repository",
        DemoModels::Builtin => "demo-repository-builtin",
    };
    let dir = nereid_models::cache_dir().join(folder);
    let mut models: Vec<(&str, &str)> = BUILTIN_MODELS.to_vec();
    if which == DemoModels::All {
        models.extend(nereid_models::demo::DEMO_MODELS);
    }
    write_repository(&dir, models)
        .with_context(|| format!("cannot write demo repository {}", dir.display()))?;
    Ok(dir)
}
