//! Backend health from active probes: the rise/fall state machine and the lock-free cell
//! that publishes its state. No I/O: the proxy's prober drives it.

use std::sync::atomic::{AtomicU8, Ordering};

/// What active probing says about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not probed yet.
    Unknown,
    /// Passing probes.
    Up,
    /// Failing probes.
    Down,
}

impl Health {
    /// A lower-case name for status output.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Health::Unknown => 0,
            Health::Up => 1,
            Health::Down => 2,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Health::Up,
            2 => Health::Down,
            _ => Health::Unknown,
        }
    }
}

/// Rise/fall hysteresis: `rise` consecutive successes bring a backend up, `fall` consecutive
/// failures take it down. The very first probe decides an unknown backend's state at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    state: Health,
    streak_ok: u32,
    streak_fail: u32,
}

impl Hysteresis {
    /// Starts from a known state (carried over a reload) or `Unknown`.
    pub fn new(state: Health) -> Self {
        Hysteresis {
            state,
            streak_ok: 0,
            streak_fail: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> Health {
        self.state
    }

    /// Feeds one probe result; returns the new state if it changed.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> Option<Health> {
        if ok {
            self.streak_ok = self.streak_ok.saturating_add(1);
            self.streak_fail = 0;
        } else {
            self.streak_fail = self.streak_fail.saturating_add(1);
            self.streak_ok = 0;
        }
        let next = match self.state {
            Health::Unknown => {
                if ok {
                    Health::Up
                } else {
                    Health::Down
                }
            }
            Health::Up if self.streak_fail >= fall => Health::Down,
            Health::Down if self.streak_ok >= rise => Health::Up,
            s => s,
        };
        if next != self.state {
            self.state = next;
            Some(next)
        } else {
            None
        }
    }
}

/// A lock-free cell publishing a backend's probe-derived health.
#[derive(Debug, Default)]
pub struct HealthCell(AtomicU8);

impl HealthCell {
    /// Reads the state.
    pub fn get(&self) -> Health {
        Health::from_u8(self.0.load(Ordering::Relaxed))
    }

    /// Publishes a state.
    pub fn set(&self, h: Health) {
        self.0.store(h.to_u8(), Ordering::Relaxed);
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_probe_decides_then_hysteresis() {
        let mut h = Hysteresis::new(Health::Unknown);
        assert_eq!(h.observe(true, 2, 3), Some(Health::Up));
        assert_eq!(h.observe(false, 2, 3), None);
        assert_eq!(h.observe(false, 2, 3), None);
        assert_eq!(
            h.observe(true, 2, 3),
            None,
            "a success resets the failure streak"
        );
        assert_eq!(h.observe(false, 2, 3), None);
        assert_eq!(h.observe(false, 2, 3), None);
        assert_eq!(h.observe(false, 2, 3), Some(Health::Down));
        assert_eq!(h.observe(true, 2, 3), None);
        assert_eq!(h.observe(true, 2, 3), Some(Health::Up));
        assert_eq!(h.state(), Health::Up);
    }

    #[test]
    fn unknown_failing_goes_down_at_once() {
        let mut h = Hysteresis::new(Health::Unknown);
        assert_eq!(h.observe(false, 2, 3), Some(Health::Down));
    }

    #[test]
    fn carried_state_is_kept() {
        let mut h = Hysteresis::new(Health::Down);
        assert_eq!(
            h.observe(true, 2, 3),
            None,
            "a down backend needs `rise` successes"
        );
        assert_eq!(h.observe(true, 2, 3), Some(Health::Up));
    }
}
