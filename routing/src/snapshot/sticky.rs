//! Sticky-session tokens: the value of a service's cookie names one backend opaquely (a
//! keyed hash of the service and the backend's stable ID, not its address), the same on
//! every instance sharing the config (the key is the mesh secret when there is one), and
//! it survives reloads and restarts as long as the backend keeps its ID.

use meridian_config::{Config, Service, Sticky};

use super::region::RegionPool;
use crate::selection::fnv1a;

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
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in all {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // Finalize (splitmix64), so that tokens of similar IDs share no digits.
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }

    /// The (region, member) a token names, if it names one of this snapshot's.
    pub fn lookup(&self, token: u64) -> Option<(u16, u16)> {
        let i = self.entries.partition_point(|e| e.0 < token);
        let &(t, r, m) = self.entries.get(i)?;
        (t == token).then_some((r, m))
    }

    /// The token in a cookie value: exactly [`TOKEN_LEN`] hex digits.
    pub fn parse(value: &str) -> Option<u64> {
        if value.len() != TOKEN_LEN {
            return None;
        }
        u64::from_str_radix(value, 16).ok()
    }

    /// The cookie value of a token.
    pub fn format(token: u64) -> String {
        format!("{token:016x}")
    }
}
