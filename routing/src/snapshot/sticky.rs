//! Sticky-session tokens: the value of a service's cookie names one backend opaquely (a
//! keyed hash of the service and the backend's stable ID, not its address), the same on
//! every instance sharing the config (the key is the mesh secret when there is one), and
//! it survives reloads and restarts as long as the backend keeps its ID.

use meridian_config::{Config, Service, Sticky};

use super::region::RegionPool;
use crate::selection::{fnv1a, fnv1a_of};

/// A service's sticky cookie settings and its members' tokens.
#[derive(Debug, Default)]
pub struct StickyTable {
    /// The cookie's settings; `None`: the service has no sticky sessions.
    pub settings: Option<Sticky>,
    /// (token, region, member), sorted by token.
    entries: Vec<(u64, u16, u16)>,
    /// The key of the tokens.
    key: u64,
}

/// The length of a token as written in the cookie (hex digits).
pub const TOKEN_LEN: usize = 16;

impl StickyTable {
    /// The table of `service`'s pools (`regions`, by region index).
    pub fn build(service: &Service, regions: &[Option<RegionPool>], config: &Config) -> Self {
        let Some(settings) = service.sticky.clone() else {
            return StickyTable::default();
        };
        let key = config
            .mesh
            .secret
            .as_ref()
            .map_or(0x6d65_7269_6469_616e, |s| fnv1a(s.expose().as_bytes()));
        let mut table = StickyTable {
            settings: Some(settings),
            entries: Vec::new(),
            key,
        };
        for (ri, pool) in regions.iter().enumerate() {
            for (mi, m) in pool.iter().flat_map(|p| p.members.iter().enumerate()) {
                let token = table.token(&service.name, &m.state.id);
                table.entries.push((token, ri as u16, mi as u16));
            }
        }
        table.entries.sort_unstable();
        table
    }

    /// The token of backend `id` in service `service`.
    pub fn token(&self, service: &str, id: &str) -> u64 {
        let bytes = self.key.to_be_bytes();
        let all = bytes
            .iter()
            .chain(service.as_bytes())
            .chain(&[0])
            .chain(id.as_bytes());
        // Finalized (splitmix64), so that tokens of similar IDs share no digits.
        fnv1a_of(all)
    }

    /// The (region, member) a token names, if it names one of this snapshot's.
    pub fn lookup(&self, token: u64) -> Option<(u16, u16)> {
        let i = self.entries.partition_point(|e| e.0 < token);
        let &(t, r, m) = self.entries.get(i)?;
        (t == token).then_some((r, m))
    }

    /// The token in a cookie value: exactly [`TOKEN_LEN`] hex digits.
    pub fn parse(value: &str) -> Option<u64> {
        if value.len() != TOKEN_LEN || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(value, 16).ok()
    }

    /// The cookie value of a token.
    pub fn format(token: u64) -> String {
        format!("{token:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshot;

    #[test]
    fn tokens_are_opaque_stable_and_name_one_backend() {
        let text = "[node]\nregion = \"a\"\n[sticky]\ncookie = \"s\"\n[regions.a]\nlatitude = 1.0\nlongitude = 2.0\nbackends = [{ address = \"10.0.0.1:80\" }, { address = \"10.0.0.2:80\" }]\n";
        let snap = Snapshot::of_text(text);
        let table = &snap.services[0].sticky;
        let ids: Vec<&str> = snap
            .pool(0, 0)
            .unwrap()
            .members
            .iter()
            .map(|m| &*m.state.id)
            .collect();
        let (t0, t1) = (
            table.token("default", ids[0]),
            table.token("default", ids[1]),
        );
        assert_ne!(t0, t1);
        assert_eq!(table.lookup(t0), Some((0, 0)));
        assert_eq!(table.lookup(t1), Some((0, 1)));
        assert_eq!(table.lookup(t0 ^ 1), None);
        let written = StickyTable::format(t1);
        assert_eq!(written.len(), TOKEN_LEN);
        assert!(!written.contains("10.0.0"));
        assert_eq!(StickyTable::parse(&written), Some(t1));
        for bad in [
            "",
            "xyz",
            "0123456789abcdeg",
            "0123456789abcdef0",
            "+123456789abcdef",
        ] {
            assert_eq!(StickyTable::parse(bad), None, "{bad}");
        }
        // Another snapshot of the same config agrees (so do other instances and restarts).
        let again = Snapshot::of_text(text);
        assert_eq!(again.services[0].sticky.token("default", ids[1]), t1);
    }
}
