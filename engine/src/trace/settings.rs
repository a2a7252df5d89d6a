//! Triton's trace settings: which requests are traced, globally and per model, changed at
//! run time through the trace API (`TraceSetting`, `/v2/trace/setting`) and decided per
//! request by [`TraceTable::sample`].

use std::collections::HashMap;

use crate::{EngineError, Result};

/// Triton's `trace_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceLevel {
    /// Nothing is traced.
    Off,
    /// Traced requests record their timestamps as spans.
    Timestamps,
}

impl TraceLevel {
    fn parse(text: &str) -> Result<Self> {
        match text {
            "OFF" => Ok(Self::Off),
            "TIMESTAMPS" => Ok(Self::Timestamps),
            "TENSORS" => Err(EngineError::invalid(
                "trace setting 'trace_level': TENSORS (tensor contents in traces) is not \
                 supported; use TIMESTAMPS or OFF",
            )),
            other => Err(EngineError::invalid(format!(
                "trace setting 'trace_level': '{other}' is not OFF or TIMESTAMPS"
            ))),
        }
    }

    /// The name Triton uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "OFF",
            Self::Timestamps => "TIMESTAMPS",
        }
    }
}

/// One complete set of trace settings, as the trace API shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSettings {
    /// `trace_level`.
    pub level: TraceLevel,
    /// `trace_rate`: one request in this many is traced.
    pub rate: u32,
    /// `trace_count`: traces left to take; -1 without end.
    pub count: i64,
    /// `log_frequency`: Triton's file mode only; always 0 here.
    pub log_frequency: u32,
}

impl Default for TraceSettings {
    /// Triton's defaults: off, 1 in 1000, no count.
    fn default() -> Self {
        Self {
            level: TraceLevel::Off,
            rate: 1000,
            count: -1,
            log_frequency: 0,
        }
    }
}

impl TraceSettings {
    /// The settings as Triton's trace API answers them: each a list of strings.
    pub fn to_strings(&self) -> Vec<(&'static str, Vec<String>)> {
        vec![
            ("trace_level", vec![self.level.as_str().to_string()]),
            ("trace_rate", vec![self.rate.to_string()]),
            ("trace_count", vec![self.count.to_string()]),
            ("log_frequency", vec![self.log_frequency.to_string()]),
            ("trace_mode", vec![TRACE_MODE.to_string()]),
            ("trace_file", vec![String::new()]),
        ]
    }

    /// Applies `--trace-config`-style values (`level`, `rate`, `count`, `log_frequency`).
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let mut overrides = Overrides::default();
        overrides.set(key, Some(&[value.to_string()]))?;
        overrides.apply_to(self);
        Ok(())
    }
}

/// The only trace mode: OpenTelemetry spans (Triton's other, `triton`, writes JSON files).
pub const TRACE_MODE: &str = "opentelemetry";

/// Settings a model overrides; the rest follow the global ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Overrides {
    level: Option<TraceLevel>,
    rate: Option<u32>,
    count: Option<i64>,
    log_frequency: Option<u32>,
}

impl Overrides {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Sets one setting from its Triton name; `None` (or no value) clears it.
    fn set(&mut self, key: &str, values: Option<&[String]>) -> Result<()> {
        let value = match values {
            None | Some([]) => None,
            Some([one]) => Some(one.as_str()),
            Some(_) if key == "trace_level" || key == "level" => {
                return Err(EngineError::invalid(
                    "trace setting 'trace_level': give one level, OFF or TIMESTAMPS",
                ))
            }
            Some(_) => {
                return Err(EngineError::invalid(format!(
                    "trace setting '{key}' takes one value"
                )))
            }
        };
        let number = |name: &str, text: &str| -> Result<i64> {
            text.trim().parse::<i64>().map_err(|_| {
                EngineError::invalid(format!(
                    "trace setting '{name}': '{text}' is not an integer"
                ))
            })
        };
        match key {
            "trace_level" | "level" => self.level = value.map(TraceLevel::parse).transpose()?,
            "trace_rate" | "rate" => {
                self.rate = value
                    .map(|v| match number("trace_rate", v)? {
                        n @ 1..=0xffff_ffff => Ok(n as u32),
                        _ => Err(EngineError::invalid(format!(
                            "trace setting 'trace_rate': '{v}' is not a positive 32-bit integer"
                        ))),
                    })
                    .transpose()?
            }
            "trace_count" | "count" => {
                self.count = value
                    .map(|v| match number("trace_count", v)? {
                        n if n >= -1 => Ok(n),
                        _ => Err(EngineError::invalid(format!(
                            "trace setting 'trace_count': '{v}' is below -1 (no limit)"
                        ))),
                    })
                    .transpose()?
            }
            "log_frequency" => {
                self.log_frequency = value
                    .map(|v| match number("log_frequency", v)? {
                        0 => Ok(0),
                        _ => Err(EngineError::invalid(
                            "trace setting 'log_frequency': only 0; it applies to Triton's \
                             trace files, and traces here are OpenTelemetry spans",
                        )),
                    })
                    .transpose()?
            }
            "trace_mode" | "mode" => match value {
                None | Some(TRACE_MODE) => {}
                Some(other) => {
                    return Err(EngineError::invalid(format!(
                        "trace setting 'trace_mode': '{other}' is not supported; the only mode \
                         is {TRACE_MODE}"
                    )))
                }
            },
            "trace_file" | "file" => {
                if value.is_some_and(|v| !v.is_empty()) {
                    return Err(EngineError::invalid(
                        "trace setting 'trace_file': traces are exported as OpenTelemetry \
                         spans (--trace-config opentelemetry,url=...), not written to files",
                    ));
                }
            }
            other => {
                return Err(EngineError::invalid(format!(
                    "unknown trace setting '{other}'; the settings are trace_level, trace_rate, \
                     trace_count, log_frequency, trace_mode and trace_file"
                )))
            }
        }
        Ok(())
    }

    fn apply_to(&self, settings: &mut TraceSettings) {
        if let Some(level) = self.level {
            settings.level = level;
        }
        if let Some(rate) = self.rate {
            settings.rate = rate;
        }
        if let Some(count) = self.count {
            settings.count = count;
        }
        if let Some(log_frequency) = self.log_frequency {
            settings.log_frequency = log_frequency;
        }
    }
}

/// The global settings, each model's overrides, and the counters sampling keeps: requests
/// seen per rate and traces left per count, each where its setting is defined.
#[derive(Debug, Default)]
pub(crate) struct TraceTable {
    global: TraceSettings,
    global_seen: u64,
    models: HashMap<String, ModelTrace>,
}

#[derive(Debug, Default)]
struct ModelTrace {
    overrides: Overrides,
    seen: u64,
}

/// One update of the trace API: each named setting's new values (`None`: back to the
/// global value, for a model).
pub type TraceUpdate = Vec<(String, Option<Vec<String>>)>;

impl TraceTable {
    pub(crate) fn new(global: TraceSettings) -> Self {
        Self {
            global,
            ..Self::default()
        }
    }

    /// Whether any setting has tracing on: when none has, sampling costs one atomic load.
    pub(crate) fn any_on(&self) -> bool {
        self.global.level != TraceLevel::Off
            || self
                .models
                .values()
                .any(|m| m.overrides.level == Some(TraceLevel::Timestamps))
    }

    /// The settings in force for `model` (the global ones for `None`).
    pub(crate) fn get(&self, model: Option<&str>) -> TraceSettings {
        let mut settings = self.global.clone();
        if let Some(m) = model.and_then(|m| self.models.get(m)) {
            m.overrides.apply_to(&mut settings);
        }
        settings
    }

    /// Applies an update, all of it or (on any bad value) none of it.
    pub(crate) fn update(&mut self, model: Option<&str>, update: &TraceUpdate) -> Result<()> {
        match model {
            None => {
                let mut overrides = Overrides::default();
                for (key, values) in update {
                    if values.as_deref().is_none_or(<[String]>::is_empty) {
                        return Err(EngineError::invalid(format!(
                            "trace setting '{key}': the global settings cannot be cleared, only \
                             changed"
                        )));
                    }
                    overrides.set(key, values.as_deref())?;
                }
                overrides.apply_to(&mut self.global);
                if overrides.rate.is_some() {
                    self.global_seen = 0;
                }
            }
            Some(name) => {
                let entry = self.models.entry(name.to_string()).or_default();
                let mut overrides = entry.overrides;
                for (key, values) in update {
                    overrides.set(key, values.as_deref())?;
                }
                if overrides.rate != entry.overrides.rate {
                    entry.seen = 0;
                }
                entry.overrides = overrides;
                if entry.overrides.is_empty() {
                    self.models.remove(name);
                }
            }
        }
        Ok(())
    }

    /// Whether a request to `model` is traced. One whose caller sampled it (its
    /// `traceparent`) is, unless the model's own level is OFF: the caller decided, as
    /// OpenTelemetry's parent-based sampling has it, so engines behind a sampling gateway
    /// follow it. Any other is when its level is on, its count not spent and the rate
    /// picks it, and it takes one from that count.
    pub(crate) fn sample(&mut self, model: &str, caller_sampled: bool) -> bool {
        let model_trace = self.models.get_mut(model);
        let overrides = model_trace
            .as_ref()
            .map(|m| m.overrides)
            .unwrap_or_default();
        if caller_sampled {
            return overrides.level != Some(TraceLevel::Off);
        }
        if overrides.level.unwrap_or(self.global.level) == TraceLevel::Off {
            return false;
        }
        let (rate, seen) = match (overrides.rate, model_trace) {
            (Some(rate), Some(m)) => (rate, &mut m.seen),
            _ => (self.global.rate, &mut self.global_seen),
        };
        let picked = *seen % u64::from(rate) == 0;
        *seen += 1;
        if !picked {
            return false;
        }
        let left = match overrides.count {
            Some(_) => self
                .models
                .get_mut(model)
                .and_then(|m| m.overrides.count.as_mut()),
            None => Some(&mut self.global.count),
        };
        match left {
            Some(n) if *n == 0 => false,
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(values: &[&str]) -> Option<Vec<String>> {
        Some(values.iter().map(|v| v.to_string()).collect())
    }

    #[test]
    fn rate_count_and_model_overrides_decide_sampling() {
        let mut table = TraceTable::new(TraceSettings::default());
        assert!(!table.any_on() && !table.sample("m", false));
        assert!(
            table.sample("m", true),
            "a sampled caller is traced even when off"
        );
        table
            .update(
                None,
                &vec![
                    ("trace_level".into(), set(&["TIMESTAMPS"])),
                    ("trace_rate".into(), set(&["3"])),
                ],
            )
            .unwrap();
        let picked: Vec<bool> = (0..6).map(|_| table.sample("m", false)).collect();
        assert_eq!(picked, [true, false, false, true, false, false]);
        assert!(table.sample("m", true), "a sampled caller is always traced");

        table
            .update(Some("quiet"), &vec![("trace_level".into(), set(&["OFF"]))])
            .unwrap();
        assert!(!table.sample("quiet", true));
        assert_eq!(table.get(Some("quiet")).level, TraceLevel::Off);
        assert_eq!(
            table.get(Some("quiet")).rate,
            3,
            "the rest follow the global"
        );
        table
            .update(Some("quiet"), &vec![("trace_level".into(), None)])
            .unwrap();
        assert_eq!(table.get(Some("quiet")), table.get(None));

        table
            .update(
                Some("few"),
                &vec![
                    ("trace_rate".into(), set(&["1"])),
                    ("trace_count".into(), set(&["2"])),
                ],
            )
            .unwrap();
        let picked: Vec<bool> = (0..4).map(|_| table.sample("few", false)).collect();
        assert_eq!(picked, [true, true, false, false]);
        assert_eq!(table.get(Some("few")).count, 0);
        assert_eq!(table.get(None).count, -1, "the global count is untouched");
    }

    #[test]
    fn bad_updates_name_the_setting_and_change_nothing() {
        let mut table = TraceTable::new(TraceSettings::default());
        for (key, value, needle) in [
            ("trace_rate", set(&["x"]), "'trace_rate': 'x'"),
            ("trace_rate", set(&["0"]), "positive"),
            ("trace_level", set(&["LOUD"]), "'LOUD'"),
            ("trace_level", set(&["TENSORS"]), "TENSORS"),
            ("trace_count", set(&["-2"]), "below -1"),
            ("log_frequency", set(&["5"]), "only 0"),
            ("trace_mode", set(&["triton"]), "'triton'"),
            ("trace_file", set(&["/tmp/t.json"]), "not written to files"),
            ("nope", set(&["1"]), "unknown trace setting 'nope'"),
            ("trace_rate", None, "cannot be cleared"),
        ] {
            let update = vec![
                ("trace_level".to_string(), set(&["TIMESTAMPS"])),
                (key.to_string(), value),
            ];
            let err = table.update(None, &update).unwrap_err().to_string();
            assert!(err.contains(needle), "{key}: {err}");
            assert_eq!(table.get(None), TraceSettings::default());
        }
    }
}
