//! The ONNX Runtime library, loaded once per process: from `$NEREID_ONNXRUNTIME` (a
//! `libonnxruntime.so` path) when set, else from the `onnxruntime` wheel on PyPI, which
//! ships the C library beside its Python bindings; the wheel is fetched into the cache
//! like model weights.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use ort::environment::Environment;

use crate::fetch::PypiSource;

/// The ONNX Runtime release whose C API `ort` is built against (API 31).
pub(crate) const RUNTIME_VERSION: &str = "1.31.1";

/// Environment variable naming a `libonnxruntime.so` to use instead of the wheel's.
pub(crate) const LIBRARY_VARIABLE: &str = "NEREID_ONNXRUNTIME";

/// The process's ONNX Runtime environment, created on first use.
pub(crate) fn environment() -> Result<Environment> {
    static ENVIRONMENT: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();
    ENVIRONMENT
        .get_or_init(|| start().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("ONNX Runtime is not available: {e}"))
}

fn start() -> Result<Environment> {
    let library = library()?;
    tracing::info!(library = %library.display(), "loading ONNX Runtime");
    let builder =
        ort::init_from(&library).map_err(|e| anyhow!("cannot load {}: {e}", library.display()))?;
    builder
        .with_name("nereid")
        .build()
        .map_err(|e| anyhow!("cannot create the ONNX Runtime environment: {e}"))
}

fn library() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(LIBRARY_VARIABLE).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "${LIBRARY_VARIABLE} names {}, which is not a file",
            path.display()
        );
        return Ok(path);
    }
    let source = PypiSource {
        package: "onnxruntime".into(),
        version: RUNTIME_VERSION.into(),
        path: format!("onnxruntime/capi/libonnxruntime.so.{RUNTIME_VERSION}"),
        sha256: None,
        platform: Some(linux_wheel_tag()),
    };
    source.fetch().with_context(|| {
        format!(
            "cannot fetch onnxruntime=={RUNTIME_VERSION} from PyPI for its C library \
             (or set ${LIBRARY_VARIABLE} to a libonnxruntime.so)"
        )
    })
}

/// The part of a wheel's file name that says it runs here (`manylinux_2_28_x86_64`).
fn linux_wheel_tag() -> String {
    format!("manylinux*{}", std::env::consts::ARCH)
}
