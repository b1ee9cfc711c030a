//! Structured logging with `tracing`: text or JSON lines on stderr (journald picks them up).
//! The access log is the `access` target at `info`; pingora's own `log` records are bridged.
//!
//! One pingora record is turned into a metric instead of a log line: "failed to acquire
//! reusable stream", logged at ERROR each time a pooled upstream connection could not be
//! taken over from its idle watcher (with several worker threads it races the hand-over;
//! 0.4–2 % of requests at `threads = 2` under load). The request is not affected — it opens
//! a new connection — so an ERROR per occurrence only buries real errors; the count is
//! `meridian_upstream_pool_reuse_lost_total`.

use std::fmt::{self, Write as _};
use std::sync::OnceLock;

use meridian_config::{LogFormat, Logging};
use prometheus::IntCounter;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
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
        .with(PoolReuseLost)
        .try_init();
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}

/// Pooled upstream connections pingora could not take over: one counter per process,
/// since the log records it comes from are process-wide (every instance's registry
/// includes it).
#[allow(clippy::expect_used)] // a constant metric definition, checked by the tests
pub fn pool_reuse_lost() -> &'static IntCounter {
    static COUNTER: OnceLock<IntCounter> = OnceLock::new();
    COUNTER.get_or_init(|| {
        IntCounter::new(
            "meridian_upstream_pool_reuse_lost_total",
            "Pooled upstream connections pingora could not hand over to a request (its \"failed to acquire reusable stream\"); the request opened a new connection",
        )
        .expect("valid metric definition")
    })
}

/// pingora's message when a pooled upstream connection is lost to the hand-over race.
const POOL_REUSE_LOST: &str = "failed to acquire reusable stream";

/// Counts pingora's "failed to acquire reusable stream" records instead of logging them.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolReuseLost;

impl<S: Subscriber> Layer<S> for PoolReuseLost {
    fn event_enabled(&self, event: &Event<'_>, _cx: Context<'_, S>) -> bool {
        if *event.metadata().level() != Level::ERROR {
            return true;
        }
        let mut visit = MessageIs {
            expected: POOL_REUSE_LOST,
            matched: false,
        };
        event.record(&mut visit);
        if visit.matched {
            pool_reuse_lost().inc();
        }
        !visit.matched
    }
}

/// Whether an event's `message` field is exactly `expected` (compared as it is formatted,
/// without allocating).
struct MessageIs {
    expected: &'static str,
    matched: bool,
}

impl Visit for MessageIs {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.matched = value == self.expected;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let mut rest = Prefix(self.expected);
            self.matched = write!(rest, "{value:?}").is_ok() && rest.0.is_empty();
        }
    }
}

/// A `fmt::Write` that accepts only the text it still expects, consuming it.
struct Prefix(&'static str);

impl fmt::Write for Prefix {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        match self.0.strip_prefix(s) {
            Some(rest) => {
                self.0 = rest;
                Ok(())
            }
            None => Err(fmt::Error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records the messages of the events that reach it.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
            struct Msg(String);
            impl Visit for Msg {
                fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
                    if field.name() == "message" {
                        self.0 = format!("{value:?}");
                    }
                }
            }
            let mut m = Msg(String::new());
            event.record(&mut m);
            self.0.lock().unwrap().push(m.0);
        }
    }

    #[test]
    fn the_pool_race_record_becomes_a_count_and_nothing_else_is_touched() {
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry()
            .with(seen.clone())
            .with(PoolReuseLost);
        let before = pool_reuse_lost().get();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("failed to acquire reusable stream");
            tracing::error!("failed to acquire reusable stream!");
            tracing::error!("failed to acquire");
            tracing::warn!("failed to acquire reusable stream");
            let n = 3;
            tracing::error!("failed to acquire {n} streams");
        });
        assert_eq!(
            *seen.0.lock().unwrap(),
            [
                "failed to acquire reusable stream!",
                "failed to acquire",
                "failed to acquire reusable stream",
                "failed to acquire 3 streams",
            ]
        );
        // Other tests of this process may count too; this one added at least its one.
        assert!(pool_reuse_lost().get() > before);
    }
}
