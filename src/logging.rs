//! Log setup: text or JSON lines on stderr, RUST_LOG to override the level at start, and
//! Triton's log settings (`/v2/logging`, `LogSettings`) to change what is written, and how,
//! while the server runs.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
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

/// Lines are JSON objects rather than text. Both formatters are installed; this picks the
/// one that writes.
static JSON: AtomicBool = AtomicBool::new(false);

/// Whether a line of this level is written, by `SEVERITIES`.
fn severity_on(level: &Level) -> bool {
    let bit = match *level {
        Level::ERROR => 0,
        Level::WARN => 1,
        Level::INFO => 2,
        _ => return true,
    };
    SEVERITIES.load(Ordering::Relaxed) & (1 << bit) != 0
}

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
    JSON.store(matches!(format, LogFormat::Json), Ordering::Relaxed);
    let text = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter::filter_fn(|meta| {
            !JSON.load(Ordering::Relaxed) && severity_on(meta.level())
        }));
    let json = tracing_subscriber::fmt::layer()
        .json()
        .with_writer(std::io::stderr)
        .with_filter(filter::filter_fn(|meta| {
            JSON.load(Ordering::Relaxed) && severity_on(meta.level())
        }));
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .init();
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
            JSON.store(settings.format == "json", Ordering::Relaxed);
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
