//! Triton's log settings (`LogSettings`, `/v2/logging`): what the server logs, changed at
//! run time. The engine validates every update in one place; the binary, which owns the
//! log subscriber, installs how a valid one is applied.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::{EngineError, Result};

/// The log settings, as Triton's log API shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// `log_info`: info lines are written.
    pub info: bool,
    /// `log_warning`: warnings are written.
    pub warning: bool,
    /// `log_error`: errors are written.
    pub error: bool,
    /// `log_verbose_level`: 0 none, 1 debug lines, 2 and up trace lines too.
    pub verbose_level: u32,
    /// `log_format`: `default` (text lines) or `json` (one object a line).
    pub format: String,
}

impl Default for LogSettings {
    /// Everything but verbose lines, as text.
    fn default() -> Self {
        Self {
            info: true,
            warning: true,
            error: true,
            verbose_level: 0,
            format: "default".into(),
        }
    }
}

/// The log formats: Triton's `default` (text lines) and `json`.
pub const LOG_FORMATS: [&str; 2] = ["default", "json"];

/// One value of a log settings update, as a door received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogValue {
    /// A boolean.
    Bool(bool),
    /// A non-negative integer.
    Uint(u64),
    /// A negative integer.
    Int(i64),
    /// A string.
    Str(String),
}

impl LogSettings {
    /// The settings in Triton's order, as (name, value).
    pub fn entries(&self) -> Vec<(&'static str, LogValue)> {
        vec![
            ("log_file", LogValue::Str(String::new())),
            ("log_info", LogValue::Bool(self.info)),
            ("log_warning", LogValue::Bool(self.warning)),
            ("log_error", LogValue::Bool(self.error)),
            (
                "log_verbose_level",
                LogValue::Uint(u64::from(self.verbose_level)),
            ),
            ("log_format", LogValue::Str(self.format.clone())),
        ]
    }

    /// These settings with `update` applied, or the first setting at fault.
    pub fn updated(&self, update: &[(String, LogValue)]) -> Result<Self> {
        let mut next = self.clone();
        for (key, value) in update {
            let bad =
                |want: &str| EngineError::invalid(format!("log setting '{key}' must be {want}"));
            match (key.as_str(), value) {
                ("log_info", LogValue::Bool(b)) => next.info = *b,
                ("log_warning", LogValue::Bool(b)) => next.warning = *b,
                ("log_error", LogValue::Bool(b)) => next.error = *b,
                ("log_info" | "log_warning" | "log_error", _) => return Err(bad("a boolean")),
                ("log_verbose_level", LogValue::Uint(n)) => {
                    next.verbose_level =
                        u32::try_from(*n).map_err(|_| bad("a non-negative integer below 2^32"))?
                }
                ("log_verbose_level", _) => return Err(bad("a non-negative integer")),
                ("log_file", LogValue::Str(path)) if path.is_empty() => {}
                ("log_file", LogValue::Str(_)) => {
                    return Err(bad(
                        "\"\": logs go to standard error, where the container runtime or \
                         service manager collects them",
                    ))
                }
                ("log_file", _) => return Err(bad("a string")),
                ("log_format", LogValue::Str(format)) if LOG_FORMATS.contains(&format.as_str()) => {
                    next.format = format.clone()
                }
                ("log_format", _) => {
                    return Err(bad(
                        "\"default\" (text lines) or \"json\" (one object a line)",
                    ))
                }
                (other, _) => {
                    return Err(EngineError::invalid(format!(
                        "unknown log setting '{other}'; the settings are log_file, log_info, \
                         log_warning, log_error, log_verbose_level and log_format"
                    )))
                }
            }
        }
        Ok(next)
    }
}

/// Applies valid settings to the process's logger.
pub type ApplyLogSettings = Arc<dyn Fn(&LogSettings) + Send + Sync>;

/// The settings in force and how to apply new ones; without an applier (an engine not run
/// by the binary) the settings cannot change.
#[derive(Default)]
pub(crate) struct LogControl {
    state: Mutex<Option<(LogSettings, ApplyLogSettings)>>,
}

impl LogControl {
    pub(crate) fn install(&self, settings: LogSettings, apply: ApplyLogSettings) {
        *self.state.lock() = Some((settings, apply));
    }

    pub(crate) fn get(&self) -> Result<LogSettings> {
        self.state
            .lock()
            .as_ref()
            .map(|(settings, _)| settings.clone())
            .ok_or_else(not_installed)
    }

    pub(crate) fn update(&self, update: &[(String, LogValue)]) -> Result<LogSettings> {
        let mut state = self.state.lock();
        let (settings, apply) = state.as_mut().ok_or_else(not_installed)?;
        let next = settings.updated(update)?;
        apply(&next);
        *settings = next.clone();
        Ok(next)
    }
}

fn not_installed() -> EngineError {
    EngineError::Unimplemented("this process has no log settings to show or change".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_checked_setting_by_setting_and_applied_whole() {
        let control = LogControl::default();
        assert!(control.get().is_err());
        let applied = Arc::new(Mutex::new(Vec::new()));
        let seen = applied.clone();
        control.install(
            LogSettings::default(),
            Arc::new(move |s: &LogSettings| seen.lock().push(s.verbose_level)),
        );
        let next = control
            .update(&[
                ("log_verbose_level".into(), LogValue::Uint(1)),
                ("log_info".into(), LogValue::Bool(false)),
                ("log_format".into(), LogValue::Str("json".into())),
                ("log_file".into(), LogValue::Str(String::new())),
            ])
            .unwrap();
        assert_eq!((next.verbose_level, next.info), (1, false));
        assert_eq!(next.format, "json");
        assert_eq!(*applied.lock(), [1]);
        for (key, value, needle) in [
            ("log_verbose_level", LogValue::Int(-1), "non-negative"),
            (
                "log_verbose_level",
                LogValue::Str("1".into()),
                "non-negative",
            ),
            ("log_info", LogValue::Uint(1), "a boolean"),
            ("log_file", LogValue::Str("/tmp/x".into()), "standard error"),
            ("log_format", LogValue::Str("ISO8601".into()), "\"json\""),
            (
                "log_colour",
                LogValue::Bool(true),
                "unknown log setting 'log_colour'",
            ),
        ] {
            let update = [
                ("log_verbose_level".to_string(), LogValue::Uint(3)),
                (key.to_string(), value),
            ];
            let err = control.update(&update).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains(key), "{err}");
        }
        assert_eq!(
            control.get().unwrap(),
            next,
            "a refused update changes nothing"
        );
        assert_eq!(applied.lock().len(), 1);
    }
}
