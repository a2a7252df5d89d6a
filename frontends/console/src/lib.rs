//! Nereid's web console: an operator's page served at `/console` by `nereid serve` and
//! `nereid gateway` on their HTTP port.
//!
//! The page is static (HTML, CSS and plain ES modules from `assets/`, embedded in the
//! binary at build time) and talks to the server through its public APIs: KServe REST
//! for models, statistics and JSON or binary inference, the OpenAI routes for chat and
//! embeddings, and gRPC-Web on the gRPC port for the same inference from the browser with
//! no proxy. Besides the files, [`router`] serves two small documents the page cannot get
//! elsewhere: `settings.json` (where the gRPC-Web door is, whether a key is needed, the
//! model control mode) and `metrics` (the Prometheus text of the metrics port, so the
//! live charts need no second origin).
//!
//! Every answer carries a Content-Security-Policy that allows the page's own files and
//! connections to this server's two ports only.
//!
//! ```
//! use std::sync::Arc;
//! use nereid_console::{ConsoleSettings, Role};
//!
//! let console = nereid_console::router(ConsoleSettings {
//!     role: Role::Engine,
//!     grpc_port: 8001,
//!     grpc_tls: false,
//!     api_key_required: false,
//!     model_control_mode: "none",
//!     metrics: Arc::new(String::new),
//! });
//! # let _: axum::Router = console;
//! ```

mod assets;
mod page;

use std::sync::Arc;

pub use page::router;

/// The path every console route is under.
pub const PREFIX: &str = "/console";

/// Which kind of server the console is served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `nereid serve`: models in this process.
    Engine,
    /// `nereid gateway`: models on the engines behind it.
    Gateway,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Self::Engine => "engine",
            Self::Gateway => "gateway",
        }
    }
}

/// What the page needs to know about the server serving it.
#[derive(Clone)]
pub struct ConsoleSettings {
    /// Engine or gateway.
    pub role: Role,
    /// The gRPC port, where gRPC-Web is answered (with CORS for the page's origin).
    pub grpc_port: u16,
    /// Whether the gRPC port speaks TLS.
    pub grpc_tls: bool,
    /// Whether the APIs need a key (the page asks for it once).
    pub api_key_required: bool,
    /// `none`, `poll` or `explicit` (load and unload buttons only in `explicit`).
    pub model_control_mode: &'static str,
    /// The Prometheus text exposition of the server's metrics.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
}

/// Whether `path` is served without an API key: the page's files and `settings.json`,
/// which hold nothing of the server's data (the page needs them to ask for the key).
pub fn is_public(path: &str) -> bool {
    match path.strip_prefix(PREFIX) {
        Some("") => true,
        Some(rest) => rest.starts_with('/') && rest != "/metrics",
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pages_files_are_public() {
        for path in [
            "/console",
            "/console/",
            "/console/app.js",
            "/console/settings.json",
        ] {
            assert!(is_public(path), "{path}");
        }
        for path in ["/console/metrics", "/consoles", "/v2/models/stats", "/"] {
            assert!(!is_public(path), "{path}");
        }
    }
}
