//! Triton's `--trace-config` (repeatable `KEY=VALUE`, or `opentelemetry,KEY=VALUE` for the
//! exporter) and OpenTelemetry's standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`); flags win over variables.

use std::time::Duration;

use nereid_engine::TraceSettings;

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`, Triton's).
    HttpProtobuf,
    /// OTLP/gRPC.
    Grpc,
}

/// Where and how the exporter sends spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExporterConfig {
    /// The collector's URL: for HTTP the full path (`.../v1/traces`), for gRPC its origin.
    pub endpoint: String,
    /// The protocol.
    pub protocol: Protocol,
    /// Resource attributes, `service.name` first.
    pub resource: Vec<(String, String)>,
    /// How long spans wait to be sent with others (`bsp_schedule_delay`, milliseconds).
    pub schedule_delay: Duration,
    /// Most spans per export (`bsp_max_export_batch_size`).
    pub max_export_batch_size: usize,
    /// Most spans waiting; past it spans are dropped and counted (`bsp_max_queue_size`).
    pub max_queue_size: usize,
}

/// Everything `--trace-config` and the environment say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceConfig {
    /// Which requests are traced at start.
    pub settings: TraceSettings,
    /// The exporter; `None` when nothing names a collector and tracing is off (then no
    /// request is traced, whatever trace context it carries).
    pub exporter: Option<ExporterConfig>,
}

impl TraceConfig {
    /// Reads `--trace-config` values and the environment (`env` looks a variable up); an
    /// error names the setting at fault.
    pub fn parse(flags: &[String], env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut settings = TraceSettings::default();
        let mut url = None;
        let mut protocol = None;
        let mut resource = Vec::new();
        let mut schedule_delay = Duration::from_millis(5000);
        let mut max_export_batch_size = 512;
        let mut max_queue_size = 2048;
        for flag in flags {
            let (section, setting) = match flag.split_once(',') {
                Some((section, setting)) if !section.contains('=') => (section, setting),
                _ => ("", flag.as_str()),
            };
            let (key, value) = setting
                .split_once('=')
                .ok_or_else(|| format!("--trace-config {flag}: expected KEY=VALUE"))?;
            let bad = |why: &str| format!("--trace-config {flag}: '{key}' {why}");
            let count = |min: u64| {
                value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= min)
                    .ok_or_else(|| bad(&format!("must be an integer of at least {min}")))
            };
            match (section, key) {
                ("" | "triton", "level" | "rate" | "count" | "log_frequency" | "mode") => settings
                    .set(key, value)
                    .map_err(|e| format!("--trace-config {flag}: {e}"))?,
                ("" | "triton", "file") => {
                    return Err(bad(
                        "is Triton's trace file; traces here are OpenTelemetry spans \
                         (--trace-config opentelemetry,url=...)",
                    ))
                }
                ("opentelemetry", "url") => url = Some(with_scheme(value)),
                ("opentelemetry", "protocol") => {
                    protocol = Some(parse_protocol(value).map_err(|e| bad(&e))?)
                }
                ("opentelemetry", "resource") => {
                    let (k, v) = value
                        .split_once('=')
                        .ok_or_else(|| bad("must be KEY=VALUE"))?;
                    resource.push((k.to_string(), v.to_string()));
                }
                ("opentelemetry", "bsp_schedule_delay") => {
                    schedule_delay = Duration::from_millis(count(1)?)
                }
                ("opentelemetry", "bsp_max_export_batch_size") => {
                    max_export_batch_size = count(1)? as usize
                }
                ("opentelemetry", "bsp_max_queue_size") => max_queue_size = count(1)? as usize,
                _ => {
                    return Err(format!(
                        "--trace-config {flag}: unknown setting; the settings are level, rate, \
                         count, log_frequency, mode and opentelemetry,{{url, protocol, resource, \
                         bsp_schedule_delay, bsp_max_export_batch_size, bsp_max_queue_size}}"
                    ))
                }
            }
        }
        let protocol = match protocol {
            Some(p) => p,
            None => match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            {
                Some(value) => parse_protocol(&value)
                    .map_err(|e| format!("OTEL_EXPORTER_OTLP_PROTOCOL: {e}"))?,
                None => Protocol::HttpProtobuf,
            },
        };
        let configured = url.is_some()
            || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || settings.level != nereid_engine::trace::TraceLevel::Off;
        let endpoint = url
            .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").map(|v| with_scheme(&v)))
            .or_else(|| {
                env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| {
                    let base = with_scheme(&base);
                    match protocol {
                        Protocol::HttpProtobuf => {
                            format!("{}/v1/traces", base.trim_end_matches('/'))
                        }
                        Protocol::Grpc => base,
                    }
                })
            })
            .unwrap_or_else(|| match protocol {
                Protocol::HttpProtobuf => "http://localhost:4318/v1/traces".into(),
                Protocol::Grpc => "http://localhost:4317".into(),
            });
        if protocol == Protocol::HttpProtobuf && !endpoint.starts_with("http://") {
            return Err(format!(
                "OTLP endpoint '{endpoint}': OTLP/HTTP is sent in clear (http://); for TLS use \
                 protocol=grpc with an https:// endpoint, or a collector next to the server"
            ));
        }
        let mut attributes = vec![(
            "service.name".to_string(),
            env("OTEL_SERVICE_NAME")
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "nereid".into()),
        )];
        for pair in env("OTEL_RESOURCE_ATTRIBUTES")
            .unwrap_or_default()
            .split(',')
            .filter(|p| !p.trim().is_empty())
        {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("OTEL_RESOURCE_ATTRIBUTES: '{pair}' is not KEY=VALUE"))?;
            set(&mut attributes, k.trim(), v.trim());
        }
        for (k, v) in resource {
            set(&mut attributes, &k, &v);
        }
        Ok(Self {
            settings,
            exporter: configured.then(|| ExporterConfig {
                endpoint,
                protocol,
                resource: attributes,
                schedule_delay,
                max_export_batch_size,
                max_queue_size: max_queue_size.max(max_export_batch_size),
            }),
        })
    }
}

fn set(attributes: &mut Vec<(String, String)>, key: &str, value: &str) {
    match attributes.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_string(),
        None => attributes.push((key.to_string(), value.to_string())),
    }
}

fn parse_protocol(value: &str) -> Result<Protocol, String> {
    match value {
        "http/protobuf" | "http" => Ok(Protocol::HttpProtobuf),
        "grpc" => Ok(Protocol::Grpc),
        other => Err(format!(
            "'{other}' is not a supported protocol: http/protobuf or grpc"
        )),
    }
}

/// Triton's examples leave the scheme out (`localhost:4318/v1/traces`).
fn with_scheme(url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

#[cfg(test)]
mod tests {
    use nereid_engine::trace::TraceLevel;

    use super::*;

    fn parse(flags: &[&str], env: &[(&str, &str)]) -> Result<TraceConfig, String> {
        let flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        TraceConfig::parse(&flags, |key| {
            env.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn flags_and_environment_make_the_config_flags_first() {
        let c = parse(&[], &[]).unwrap();
        assert_eq!(c.settings, TraceSettings::default());
        assert!(c.exporter.is_none(), "nothing configured, nothing exported");
        let e = parse(&["level=TIMESTAMPS"], &[]).unwrap().exporter.unwrap();
        assert_eq!(e.endpoint, "http://localhost:4318/v1/traces");
        assert_eq!(e.resource, [("service.name".into(), "nereid".into())]);

        let c = parse(
            &[
                "level=TIMESTAMPS",
                "rate=1",
                "count=5",
                "opentelemetry,url=collector:4318/v1/traces",
                "opentelemetry,resource=deployment.environment=test",
                "opentelemetry,bsp_schedule_delay=100",
            ],
            &[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://ignored:1/v1/traces",
                ),
                ("OTEL_SERVICE_NAME", "edge"),
            ],
        )
        .unwrap();
        assert_eq!(c.settings.level, TraceLevel::Timestamps);
        assert_eq!((c.settings.rate, c.settings.count), (1, 5));
        let e = c.exporter.unwrap();
        assert_eq!(e.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(e.schedule_delay, Duration::from_millis(100));
        assert_eq!(e.resource[0], ("service.name".into(), "edge".into()));
        assert_eq!(e.resource[1].0, "deployment.environment");

        let c = parse(
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
        )
        .unwrap()
        .exporter
        .unwrap();
        assert_eq!(
            (c.protocol, c.endpoint.as_str()),
            (Protocol::Grpc, "http://otel:4317/")
        );
        let c = parse(&[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318/")]).unwrap();
        assert_eq!(c.exporter.unwrap().endpoint, "http://otel:4318/v1/traces");
    }

    #[test]
    fn a_bad_setting_is_named() {
        for (flag, needle) in [
            ("level=LOUD", "trace_level"),
            ("rate=x", "trace_rate"),
            ("count=many", "trace_count"),
            ("log_frequency=5", "log_frequency"),
            ("mode=triton", "trace_mode"),
            ("file=/tmp/t.json", "'file'"),
            ("opentelemetry,protocol=thrift", "'protocol'"),
            ("opentelemetry,bsp_schedule_delay=0", "'bsp_schedule_delay'"),
            ("opentelemetry,colour=blue", "unknown setting"),
            ("level", "KEY=VALUE"),
        ] {
            let err = parse(&[flag], &[]).unwrap_err();
            assert!(err.contains(needle) && err.contains(flag), "{flag}: {err}");
        }
        let err = parse(&["opentelemetry,url=https://c:4318/v1/traces"], &[]).unwrap_err();
        assert!(err.contains("in clear"), "{err}");
    }
}
