//! What every handler shares, and the reading of `{version}` path segments.

use nereid_engine::Engine;

use crate::error::ApiResult;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The engine.
    pub engine: Engine,
    /// `--http-max-input-size`, for the handlers that read bodies themselves.
    pub max_input_size: usize,
}

/// A `{version}` path segment, read as every door reads a version string.
pub(crate) fn path_version(text: &str) -> ApiResult<Option<i64>> {
    Ok(nereid_kserve::parse_version(text)?)
}
