//! Log setup: text or JSON lines on stderr, RUST_LOG to override the level at start, and
//! Triton's log settings (`/v2/logging`, `LogSettings`) to change what is written while
//! the server runs.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use nereid_engine::{ApplyLogSettings, LogSettings};
use tracing::Level;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{filter, reload, EnvFilter, Layer, Registry};

use crate::cli::LogFormat;

/// Which of error, warning and info lines are written (bits 0, 1, 2); verbose levels are
/// the reloadable filter's.
static SEVERITIES: AtomicU8 = AtomicU8::new(0b111);

/// The installed subscriber's handles, to hand the log API.
pub(crate) struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
    settings: LogSettings,
}

/// Installs the global subscriber.
pub(crate) fn init(format: LogFormat, verbose: u8) -> Logging {
    let settings = LogSettings {
        verbose_level: u32::from(verbose),
        format: match format {
            LogFormat::Text => "default".into(),
            LogFormat::Json => "json".into(),
        },
        ..LogSettings::default()
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directive(&settings)));
    let (filter, handle) = reload::Layer::new(filter);
    let severities = filter::filter_fn(|meta| {
        let bit = match *meta.level() {
            Level::ERROR => 0,
            Level::WARN => 1,
            Level::INFO => 2,
            _ => return true,
        };
        SEVERITIES.load(Ordering::Relaxed) & (1 << bit) != 0
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(fmt.with_filter(severities)).init(),
        LogFormat::Json => registry.with(fmt.json().with_filter(severities)).init(),
    }
    Logging {
        filter: handle,
        settings,
    }
}

impl Logging {
    /// The settings in force and how the log API changes them.
    pub(crate) fn control(&self) -> (LogSettings, ApplyLogSettings) {
        let filter = self.filter.clone();
        let apply = move |settings: &LogSettings| {
            let bits = u8::from(settings.error)
                | u8::from(settings.warning) << 1
                | u8::from(settings.info) << 2;
            SEVERITIES.store(bits, Ordering::Relaxed);
            if let Err(e) = filter.reload(EnvFilter::new(directive(settings))) {
                eprintln!("cannot change the log level: {e}");
            }
        };
        (self.settings.clone(), Arc::new(apply))
    }
}

/// The most verbose level written.
fn directive(settings: &LogSettings) -> &'static str {
    match settings.verbose_level {
        0 if settings.info => "info",
        0 if settings.warning => "warn",
        0 if settings.error => "error",
        0 => "off",
        1 => "debug",
        _ => "trace",
    }
}
