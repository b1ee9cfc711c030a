//! What this instance knows of its peers, and the verdict the mesh reaches on each: a peer
//! is **down** when a majority of the instances that report on it cannot reach it —
//! this instance by its own polls, every other peer by the `unreachable` list of its
//! fresh document, and the peer itself, when it answers, for itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_routing::health::{Health, Hysteresis};

use crate::state::NodeState;

/// One peer, as this instance's polls have seen it.
#[derive(Debug, Clone)]
pub struct PeerTrack {
    /// Its name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// Reachability from here, with rise/fall.
    reach: Hysteresis,
    /// Its last good document.
    pub last: Option<Arc<NodeState>>,
    /// When a poll last succeeded.
    pub last_ok: Option<Instant>,
    /// The last poll's round-trip time.
    pub rtt: Option<Duration>,
    /// The last poll's error, if it failed.
    pub error: Option<String>,
}

impl PeerTrack {
    /// A peer not polled yet.
    pub fn new(name: &str, region: &str) -> Self {
        PeerTrack {
            name: name.to_string(),
            region: region.to_string(),
            reach: Hysteresis::new(Health::Unknown),
            last: None,
            last_ok: None,
            rtt: None,
            error: None,
        }
    }

    /// Records a successful poll.
    pub fn ok(
        &mut self,
        state: Option<Arc<NodeState>>,
        rtt: Duration,
        now: Instant,
        rise: u32,
        fall: u32,
    ) {
        self.reach.observe(true, rise, fall);
        if let Some(s) = state {
            self.last = Some(s);
        }
        self.last_ok = Some(now);
        self.rtt = Some(rtt);
        self.error = None;
    }

    /// Records a failed poll.
    pub fn failed(&mut self, error: String, rise: u32, fall: u32) {
        self.reach.observe(false, rise, fall);
        self.error = Some(error);
    }

    /// This instance's own verdict: reachable, unreachable, or not polled yet.
    pub fn reach(&self) -> Health {
        self.reach.state()
    }
}

/// One peer in the published view.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    /// Its name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// Whether this instance reaches it (rise/fall over its polls).
    pub reachable: Health,
    /// Its document, while fresh.
    pub state: Option<Arc<NodeState>>,
    /// Time since its last good poll.
    pub age: Option<Duration>,
    /// The last poll's round-trip time.
    pub rtt: Option<Duration>,
    /// The last poll's error.
    pub error: Option<String>,
    /// Reporters that reach it (this instance, other peers, itself).
    pub seen_by: Vec<String>,
    /// Reporters that cannot reach it.
    pub unseen_by: Vec<String>,
    /// The mesh's verdict: a majority of its reporters cannot reach it.
    pub down: bool,
}

/// The mesh as this instance sees it at one moment.
#[derive(Debug, Clone, Default)]
pub struct MeshView {
    /// This instance's name.
    pub me: String,
    /// Every other instance.
    pub peers: Vec<PeerStatus>,
}

impl MeshView {
    /// A peer by name.
    pub fn peer(&self, name: &str) -> Option<&PeerStatus> {
        self.peers.iter().find(|p| p.name == name)
    }

    /// Peers this instance cannot reach (what its own document lists).
    pub fn unreachable(&self) -> Vec<String> {
        self.peers
            .iter()
            .filter(|p| p.reachable == Health::Down)
            .map(|p| p.name.clone())
            .collect()
    }
}

/// Computes the view from `tracks` at `now`: a document older than `fresh` no longer
/// counts.
pub fn view(me: &str, tracks: &[PeerTrack], now: Instant, fresh: Duration) -> MeshView {
    let fresh_state = |t: &PeerTrack| {
        let age = t.last_ok.map(|at| now.saturating_duration_since(at));
        let state = t.last.clone().filter(|_| age.is_some_and(|a| a <= fresh));
        (age, state)
    };
    let states: Vec<(Option<Duration>, Option<Arc<NodeState>>)> =
        tracks.iter().map(fresh_state).collect();
    let peers = tracks
        .iter()
        .zip(&states)
        .map(|(target, (age, state))| {
            let (mut seen_by, mut unseen_by) = (Vec::new(), Vec::new());
            match target.reach() {
                Health::Up => seen_by.push(me.to_string()),
                Health::Down => unseen_by.push(me.to_string()),
                Health::Unknown => {}
            }
            if state.is_some() {
                seen_by.push(target.name.clone());
            }
            for (other, (_, other_state)) in tracks.iter().zip(&states) {
                if other.name == target.name {
                    continue;
                }
                let Some(doc) = other_state else { continue };
                if doc.unreachable.contains(&target.name) {
                    unseen_by.push(other.name.clone());
                } else {
                    seen_by.push(other.name.clone());
                }
            }
            let down = unseen_by.len() * 2 > seen_by.len() + unseen_by.len();
            PeerStatus {
                name: target.name.clone(),
                region: target.region.clone(),
                reachable: target.reach(),
                state: state.clone(),
                age: *age,
                rtt: target.rtt,
                error: target.error.clone(),
                seen_by,
                unseen_by,
                down,
            }
        })
        .collect();
    MeshView {
        me: me.to_string(),
        peers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RegionReport;

    fn doc(name: &str, unreachable: &[&str]) -> Arc<NodeState> {
        Arc::new(NodeState {
            name: name.into(),
            region: "r".into(),
            generation: 1,
            config_digest: "d".into(),
            ready: true,
            draining: false,
            region_health: RegionReport::default(),
            unreachable: unreachable.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn track(name: &str, reachable: bool, d: Option<Arc<NodeState>>, now: Instant) -> PeerTrack {
        let mut t = PeerTrack::new(name, "r");
        if reachable {
            t.ok(d, Duration::from_millis(1), now, 1, 1);
        } else {
            t.failed("refused".into(), 1, 1);
        }
        t
    }

    #[test]
    fn a_dead_instance_is_down_and_a_broken_path_is_not() {
        let now = Instant::now();
        let fresh = Duration::from_secs(3);
        // Three peers: b is dead (nobody reaches it); c cannot be reached from here only.
        let tracks = vec![
            track("b", false, None, now),
            track("c", false, None, now),
            track("d", true, Some(doc("d", &["b"])), now),
        ];
        let v = view("a", &tracks, now, fresh);
        let b = v.peer("b").unwrap();
        assert!(b.down, "{b:?}");
        assert_eq!(b.unseen_by, ["a", "d"]);
        // c: this instance cannot reach it, d can: one against one is no majority.
        let c = v.peer("c").unwrap();
        assert!(!c.down, "{c:?}");
        assert_eq!(
            (c.seen_by.clone(), c.unseen_by.clone()),
            (vec!["d".to_string()], vec!["a".to_string()])
        );
        assert!(!v.peer("d").unwrap().down);
        assert_eq!(v.unreachable(), ["b", "c"]);
    }

    #[test]
    fn alone_with_one_peer_my_polls_decide_and_stale_documents_do_not_count() {
        let now = Instant::now();
        let v = view(
            "a",
            &[track("b", false, None, now)],
            now,
            Duration::from_secs(3),
        );
        assert!(v.peer("b").unwrap().down);
        // A document from long ago says nothing.
        let mut old = track("b", true, Some(doc("b", &[])), now);
        old.last_ok = Some(now - Duration::from_secs(60));
        let v = view("a", &[old], now, Duration::from_secs(3));
        assert!(v.peer("b").unwrap().state.is_none());
    }
}
