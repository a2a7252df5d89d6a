//! The engine's trace and log settings, as both doors' trace and log APIs reach them.

use std::sync::Arc;

use super::Engine;
use crate::logs::{ApplyLogSettings, LogSettings, LogValue};
use crate::trace::{SpanExporter, TraceSettings, TraceUpdate};
use crate::{EngineError, Result};

impl Engine {
    /// Sends the spans of traced requests to `exporter` (until then nothing is traced).
    pub fn set_span_exporter(&self, exporter: Arc<dyn SpanExporter>) {
        self.inner.tracer.set_exporter(exporter);
    }

    /// The trace settings in force: the global ones, or those of a model (its own where
    /// it has them, the global ones for the rest).
    pub fn trace_settings(&self, model: Option<&str>) -> Result<TraceSettings> {
        if let Some(name) = model {
            self.require_known(name)?;
        }
        Ok(self.inner.tracer.settings(model))
    }

    /// Changes trace settings, globally or for one model (a setting given no value goes
    /// back to the global one), all of the update or none of it; returns the settings now
    /// in force.
    pub fn update_trace_settings(
        &self,
        model: Option<&str>,
        update: &TraceUpdate,
    ) -> Result<TraceSettings> {
        if let Some(name) = model {
            self.require_known(name)?;
        }
        self.inner.tracer.update(model, update)?;
        Ok(self.inner.tracer.settings(model))
    }

    /// Lets the log API show `settings` and change them through `apply`.
    pub fn set_log_control(&self, settings: LogSettings, apply: ApplyLogSettings) {
        self.inner.logs.install(settings, apply);
    }

    /// The log settings in force.
    pub fn log_settings(&self) -> Result<LogSettings> {
        self.inner.logs.get()
    }

    /// Changes log settings, all of the update or none of it; returns the settings now in
    /// force.
    pub fn update_log_settings(&self, update: &[(String, LogValue)]) -> Result<LogSettings> {
        self.inner.logs.update(update)
    }

    /// A model the repository (or an upstream) knows, whatever its state.
    fn require_known(&self, name: &str) -> Result<()> {
        if self.repository_index(false).iter().any(|e| e.name == name) {
            Ok(())
        } else {
            Err(EngineError::unknown_model(name))
        }
    }
}
