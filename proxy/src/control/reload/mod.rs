//! Hot reload: SIGHUP, a change of a watched file, or `POST /reload` → parse → validate →
//! build a new snapshot → one atomic swap; DNS discovery's rebuilds go through the same
//! [`Reloader`], one at a time.
//!
//! A file that fails validation never replaces the running config: the errors are logged,
//! counted (`meridian_reloads_total{result="invalid"}`) and shown in `/status`. Changes a
//! swap cannot apply (listeners, threads, logging setup) are refused as a whole and reported
//! as needing a restart or graceful upgrade; nothing is half-applied.

pub mod diff;
pub mod reloader;
pub mod triggers;
pub mod watch;

pub use reloader::{ReloadError, ReloadOutcome, ReloadResult, Reloader, Trigger};
pub use triggers::ReloadTriggers;
