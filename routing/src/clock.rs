//! Millisecond stamps on tokio's clock, which fit in one atomic beside a value and which
//! tests can pause.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// Milliseconds since a process-wide epoch, on tokio's clock (which tests can pause).
///
/// The epoch is an hour before the first call, so that instants taken a little earlier
/// (another runtime's clock, a paused test clock started before the first call) still map
/// to distinct stamps instead of all saturating to zero.
pub fn now_ms(now: Instant) -> u32 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| now.checked_sub(Duration::from_secs(3600)).unwrap_or(now));
    // Wraps after ~49 days; every user takes differences with `wrapping_sub`.
    (now.saturating_duration_since(epoch).as_millis() & 0xffff_ffff) as u32
}
