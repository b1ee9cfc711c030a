//! The measurement tick (every 100 ms, and right after every swap): each pool's usable
//! count, the tier in use and its counts, and the smoothed latency to its usable backends;
//! each backend's slow start (it begins when the backend becomes usable) and the gauges.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::Snapshot;

impl Snapshot {
    /// Measures every pool at `now` and publishes the result (see
    /// [`super::RegionState::publish_measurement`]): its usable backends, and the mean of
    /// their smoothed latency estimates. Also refreshes each backend's `up` and weight
    /// gauges and each region's usable count. Returns whether every backend has been
    /// probed at least once.
    pub fn measure(&self, now: Instant) -> bool {
        let latency = &self.config.latency;
        let deadband = (latency.tolerance.as_micros() / 4).min(u128::from(u32::MAX)) as u32;
        let mut all_probed = true;
        let mut by_region = vec![0i64; self.region_usable.len()];
        for (_, ri, region) in self.pools() {
            let mut usable = 0u32;
            // The lowest tier with a usable member, and the latency of that tier's usable
            // members: the ones requests go to.
            let mut tier = u8::MAX;
            let (mut sum, mut in_tier) = (0f64, 0u32);
            let mut tiered = false;
            for m in &region.members {
                let s = &m.state;
                tiered |= m.tier > 0;
                // Relay members are never probed: the mesh speaks for them.
                all_probed &= region.relay || s.probes() > 0;
                let up = s.usable(now);
                s.metrics.up.set(i64::from(up));
                s.observe_usable(up, now);
                let share = s.slow_start_share(now, region.slow_start_ms);
                s.metrics
                    .weight
                    .set((f64::from(m.weight) * share).round() as i64);
                if up {
                    usable += 1;
                    if m.tier < tier {
                        (tier, sum, in_tier) = (m.tier, 0.0, 0);
                    }
                    if m.tier == tier {
                        in_tier += 1;
                        sum += f64::from(s.latency.smooth_estimate_us(now, latency.decay));
                    }
                }
            }
            let state = &region.state;
            let all = region.members.len();
            let (tier_usable, tier_members) = if tiered && tier != u8::MAX {
                let members = region.members.iter().filter(|m| m.tier == tier).count();
                (in_tier, members)
            } else {
                (usable, all)
            };
            state
                .active_tier
                .store(if tiered { tier } else { u8::MAX }, Ordering::Relaxed);
            state.tier_usable.store(tier_usable, Ordering::Relaxed);
            state.tier_members.store(
                u32::try_from(tier_members).unwrap_or(u32::MAX),
                Ordering::Relaxed,
            );
            let measured = if in_tier > 0 {
                sum / f64::from(in_tier)
            } else {
                0.0
            };
            let measured = measured.clamp(0.0, f64::from(u32::MAX)) as u32;
            let measured = state.remote_latency().unwrap_or(measured);
            state.publish_measurement(measured, usable, now, deadband);
            if let Some(n) = by_region.get_mut(ri) {
                *n += i64::from(usable);
            }
        }
        for (gauge, n) in self.region_usable.iter().zip(by_region) {
            gauge.set(n);
        }
        all_probed
    }
}

#[cfg(test)]
mod tests {
    use super::super::RegionPool;
    use super::*;

    #[tokio::test]
    async fn the_tier_in_use_and_its_counts_follow_health() {
        use crate::health::Health;
        let text = "[node]\nregion = \"a\"\n[regions.a]\nlatitude = 1.0\nlongitude = 2.0\nbackends = [\n  { address = \"127.0.0.1:1\" },\n  { address = \"127.0.0.1:2\" },\n  { address = \"127.0.0.1:3\", backup = true },\n]\n[regions.b]\nlatitude = 1.0\nlongitude = 3.0\nbackends = [{ address = \"127.0.0.1:4\" }, { address = \"127.0.0.1:5\" }]\n";
        let snap = Snapshot::of_text(text);
        let (a, b) = (snap.pool(0, 0).unwrap(), snap.pool(0, 1).unwrap());
        let set = |r: &RegionPool, health: &[Health]| {
            for (m, h) in r.members.iter().zip(health) {
                m.state.health.set(*h);
            }
        };
        use Health::{Down, Up};
        let measured = |r: &RegionPool| {
            snap.measure(Instant::now());
            (
                r.state.active_tier(),
                r.state.tier_counts(),
                r.state.usable(),
            )
        };
        set(a, &[Up, Down, Up]);
        assert_eq!(
            measured(a),
            (0, (1, 2), 2),
            "a primary is up: tier 0, half of it"
        );
        set(a, &[Down, Down, Up]);
        assert_eq!(
            measured(a),
            (1, (1, 1), 1),
            "backups only: tier 1, all of it"
        );
        set(a, &[Down, Down, Down]);
        assert_eq!(measured(a), (u8::MAX, (0, 3), 0), "nobody: every tier");
        // A region without tiers: the whole region counts.
        set(b, &[Up, Down]);
        assert_eq!(measured(b), (u8::MAX, (1, 2), 1));
    }
}
