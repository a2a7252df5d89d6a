//! The trace and log settings RPCs' messages to and from the engine's types.

use std::collections::HashMap;

use nereid_engine::{LogSettings, LogValue, TraceSettings};
use nereid_proto::inference::log_settings_request::setting_value::ParameterChoice as LogIn;
use nereid_proto::inference::log_settings_response::setting_value::ParameterChoice as LogOut;
use nereid_proto::inference::{
    log_settings_request, log_settings_response, trace_setting_request, trace_setting_response,
    LogSettingsResponse, TraceSettingResponse,
};
use tonic::Status;

/// A `TraceSetting` update: each setting's values; an empty list clears a model's own
/// setting (Triton's rule).
pub fn trace_update_from_wire(
    settings: HashMap<String, trace_setting_request::SettingValue>,
) -> nereid_engine::trace::TraceUpdate {
    let mut update: Vec<_> = settings
        .into_iter()
        .map(|(key, value)| (key, Some(value.value).filter(|v| !v.is_empty())))
        .collect();
    // A map has no order; errors should not depend on the hasher.
    update.sort_by(|a, b| a.0.cmp(&b.0));
    update
}

/// The settings in force, as `TraceSettingResponse`.
pub fn trace_settings_to_wire(settings: &TraceSettings) -> TraceSettingResponse {
    TraceSettingResponse {
        settings: settings
            .to_strings()
            .into_iter()
            .map(|(key, value)| {
                (
                    key.to_string(),
                    trace_setting_response::SettingValue { value },
                )
            })
            .collect(),
    }
}

/// A `LogSettings` update; a setting without a value is INVALID_ARGUMENT naming it.
pub fn log_update_from_wire(
    settings: HashMap<String, log_settings_request::SettingValue>,
) -> Result<Vec<(String, LogValue)>, Status> {
    let mut update = settings
        .into_iter()
        .map(|(key, value)| {
            let value = match value.parameter_choice {
                Some(LogIn::BoolParam(b)) => LogValue::Bool(b),
                Some(LogIn::Uint32Param(n)) => LogValue::Uint(u64::from(n)),
                Some(LogIn::StringParam(s)) => LogValue::Str(s),
                None => {
                    return Err(Status::invalid_argument(format!(
                        "log setting '{key}' has no value"
                    )))
                }
            };
            Ok((key, value))
        })
        .collect::<Result<Vec<_>, Status>>()?;
    update.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(update)
}

/// The settings in force, as `LogSettingsResponse`.
pub fn log_settings_to_wire(settings: &LogSettings) -> LogSettingsResponse {
    LogSettingsResponse {
        settings: settings
            .entries()
            .into_iter()
            .map(|(key, value)| {
                let choice = match value {
                    LogValue::Bool(b) => LogOut::BoolParam(b),
                    LogValue::Uint(n) => LogOut::Uint32Param(u32::try_from(n).unwrap_or(u32::MAX)),
                    LogValue::Int(n) => LogOut::StringParam(n.to_string()),
                    LogValue::Str(s) => LogOut::StringParam(s),
                };
                (
                    key.to_string(),
                    log_settings_response::SettingValue {
                        parameter_choice: Some(choice),
                    },
                )
            })
            .collect(),
    }
}
