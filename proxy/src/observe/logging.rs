//! Structured logging with `tracing`: text or JSON lines on stderr (journald picks them up).
//! The access log is the `access` target at `info`; pingora's own `log` records are bridged.

use meridian_config::{LogFormat, Logging};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the global subscriber. Safe to call once per process; later calls are ignored.
pub fn init(logging: &Logging) {
    let mut filter = EnvFilter::try_new(&logging.level).unwrap_or_else(|_| EnvFilter::new("info"));
    if !logging.access_log {
        if let Ok(d) = "access=off".parse() {
            filter = filter.add_directive(d);
        }
    }
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match logging.format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.compact().boxed(),
    };
    let result = tracing_subscriber::registry()
        .with(fmt)
        .with(filter)
        .try_init();
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}
