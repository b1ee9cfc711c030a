//! The [`Locator`]: CIDR overrides in front of a MaxMind DB reader.

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net};
use maxminddb::{MaxMindDbError, Reader};

use crate::cache::NetCache;
use crate::centroids::country_info;
use crate::corruption::Corruption;
use crate::record::Record;
use crate::types::{Coordinates, CountryCode, Location, LocationSource};
use crate::verify::verify;

/// The DB-IP Country Lite database built into the binary (see `data/README.md`).
static BUILTIN_DB: &[u8] = include_bytes!("../data/dbip-country-lite.mmdb");

/// The credit DB-IP's licence (CC BY 4.0) requires wherever its data is used or shown.
pub const DBIP_ATTRIBUTION: &str = "IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0";

/// The largest database file [`Locator::open`] reads into memory (2 GiB): commercial
/// databases are a few hundred MB at most; a bigger file is a wrong path, not a database.
pub const MAX_DATABASE_BYTES: u64 = 2 << 30;

/// Why a [`Locator`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GeoIpError {
    /// A database file could not be read, or its metadata not parsed.
    #[error("cannot open GeoIP database {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: MaxMindDbError,
    },
    /// A database file is not a well-formed MaxMind DB file: found by the verification
    /// every file goes through before use.
    #[error("GeoIP database {} is corrupt: {problem}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        #[source]
        problem: Corruption,
    },
    /// A database file is larger than [`MAX_DATABASE_BYTES`].
    #[error("GeoIP database {} is larger than {limit} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// [`MAX_DATABASE_BYTES`].
        limit: u64,
    },
    /// The database built into the binary could not be parsed (a build defect).
    #[error("the built-in GeoIP database is invalid: {0}")]
    Builtin(#[source] MaxMindDbError),
    /// An override has coordinates out of range.
    #[error(
        "GeoIP override {network}: coordinates ({}, {}) out of range",
        coordinates.latitude,
        coordinates.longitude
    )]
    OverrideCoordinates {
        /// The override's network.
        network: IpNet,
        /// The bad coordinates.
        coordinates: Coordinates,
    },
}

/// A static CIDR → location rule, consulted before the database.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Override {
    /// The network it covers; the longest matching prefix wins. An IPv4-mapped IPv6 network
    /// (`::ffff:10.0.0.0/104`) is treated as the IPv4 network it maps.
    pub network: IpNet,
    /// The country of clients in the network.
    pub country: CountryCode,
    /// Their coordinates; the country's centroid when `None`.
    pub coordinates: Option<Coordinates>,
}

/// What database a [`Locator`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseInfo {
    /// The file; `None` for the database built into the binary.
    pub path: Option<PathBuf>,
    /// The metadata's `database_type`, e.g. `"DBIP-Country-Lite"` or `"GeoLite2-City"`.
    pub database_type: String,
    /// When the database was built, in seconds since the Unix epoch.
    pub build_epoch: u64,
    /// The credit its licence requires, when known: [`DBIP_ATTRIBUTION`] for the built-in
    /// database and any database whose type or description mentions DB-IP.
    pub attribution: Option<&'static str>,
}

/// The two kinds of buffer a reader works on.
enum Db {
    /// The built-in file, in the binary's read-only data.
    Static(Reader<&'static [u8]>),
    /// A user file, read into memory and verified.
    Loaded(Reader<Vec<u8>>),
}

/// Client IP → [`Location`]: overrides first, then a MaxMind DB database.
///
/// Built once and shared (it is `Send + Sync`); [`Locator::lookup`] does not allocate and
/// takes no lock. Country-level answers are cached per /24 (IPv4) and /48 (IPv6) network
/// when the database's network for the address is at least that wide.
/// Overrides are scanned linearly, longest prefix first: meant for tens to hundreds of rules.
pub struct Locator {
    db: Db,
    /// IPv6 lookups need an IPv6 database: an IPv4-only tree would answer for the first 32
    /// bits of the address.
    ipv6_db: bool,
    /// IPv4 overrides, longest prefix first (stable: equal prefixes keep config order).
    overrides_v4: Vec<Override>,
    /// IPv6 overrides, likewise.
    overrides_v6: Vec<Override>,
    info: DatabaseInfo,
    /// Database answers by client network (see [`NetCache`]).
    cache: NetCache,
}

/// A location and the network it holds for (see [`Locator::locate`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Located {
    /// The location, as [`Locator::lookup`] gives it.
    pub location: Option<Location>,
    /// The prefix length of the network around the address with this same answer.
    pub prefix_len: u8,
}

impl Locator {
    /// A locator over the DB-IP Country Lite database built into the binary.
    ///
    /// Unlike a file, the built-in database is not verified here: its bytes are fixed when
    /// the binary is built, and the crate's tests verify exactly those bytes.
    ///
    /// # Errors
    ///
    /// [`GeoIpError::OverrideCoordinates`] for an override with coordinates out of range;
    /// [`GeoIpError::Builtin`] if the embedded file does not parse (it is checked by tests).
    pub fn builtin(overrides: Vec<Override>) -> Result<Locator, GeoIpError> {
        let reader = Reader::from_source(BUILTIN_DB).map_err(GeoIpError::Builtin)?;
        let mut info = info_of(&reader.metadata, None);
        info.attribution = Some(DBIP_ATTRIBUTION);
        let ipv6_db = reader.metadata.ip_version == 6;
        Locator::new(Db::Static(reader), ipv6_db, info, overrides)
    }

    /// A locator over a MaxMind DB file (GeoLite2/GeoIP2 City or Country, DB-IP Lite, or
    /// any database with the layouts described in the crate docs).
    ///
    /// The file is read into memory and verified whole before use (every search tree node
    /// and every data record it points at), so a corrupt file is rejected here and never
    /// reaches a lookup, and changing the file afterwards, even in place, does not affect
    /// this locator.
    ///
    /// # Errors
    ///
    /// [`GeoIpError::Open`] naming the file and the cause when it cannot be read or its
    /// metadata not parsed; [`GeoIpError::Corrupt`] naming the file and what is wrong where
    /// when it is not a well-formed MaxMind DB file; [`GeoIpError::TooLarge`];
    /// [`GeoIpError::OverrideCoordinates`] as for [`Locator::builtin`].
    pub fn open(path: &Path, overrides: Vec<Override>) -> Result<Locator, GeoIpError> {
        let bytes = read_database(path)?;
        verify(&bytes).map_err(|problem| GeoIpError::Corrupt {
            path: path.to_path_buf(),
            problem,
        })?;
        let reader = Reader::from_source(bytes).map_err(|source| GeoIpError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let info = info_of(&reader.metadata, Some(path));
        let ipv6_db = reader.metadata.ip_version == 6;
        Locator::new(Db::Loaded(reader), ipv6_db, info, overrides)
    }

    fn new(
        db: Db,
        ipv6_db: bool,
        info: DatabaseInfo,
        overrides: Vec<Override>,
    ) -> Result<Locator, GeoIpError> {
        let (mut overrides_v4, mut overrides_v6) = (Vec::new(), Vec::new());
        for mut rule in overrides {
            if let Some(coordinates) = rule.coordinates {
                if !coordinates.is_valid() {
                    return Err(GeoIpError::OverrideCoordinates {
                        network: rule.network,
                        coordinates,
                    });
                }
            }
            rule.network = canonical(rule.network);
            match rule.network {
                IpNet::V4(_) => overrides_v4.push(rule),
                IpNet::V6(_) => overrides_v6.push(rule),
            }
        }
        overrides_v4.sort_by_key(|o| std::cmp::Reverse(o.network.prefix_len()));
        overrides_v6.sort_by_key(|o| std::cmp::Reverse(o.network.prefix_len()));
        Ok(Locator {
            db,
            ipv6_db,
            overrides_v4,
            overrides_v6,
            info,
            cache: NetCache::new(),
        })
    }

    /// Locates a client address: the longest matching override, else the database record.
    ///
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is looked up as IPv4. `None` when no
    /// override matches and the database has no record with a usable country code for the
    /// address (private, reserved and unallocated space, or a damaged record).
    #[must_use]
    pub fn lookup(&self, ip: IpAddr) -> Option<Location> {
        let ip = ip.to_canonical();
        let overrides = match ip {
            IpAddr::V4(_) => &self.overrides_v4,
            IpAddr::V6(_) => &self.overrides_v6,
        };
        if let Some(rule) = overrides.iter().find(|o| o.network.contains(&ip)) {
            let table = country_info(rule.country);
            return Some(Location {
                country: rule.country,
                continent: table.map(|t| t.0),
                coordinates: rule.coordinates.or(table.map(|t| t.1)),
                source: LocationSource::Override,
            });
        }
        if ip.is_ipv6() && !self.ipv6_db {
            return None;
        }
        if let Some(answer) = self.cache.get(ip) {
            return answer;
        }
        let found = match &self.db {
            Db::Static(reader) => reader.lookup_prefix::<Record<'_>>(ip),
            Db::Loaded(reader) => reader.lookup_prefix::<Record<'_>>(ip),
        };
        // After verification an error can only come from a tree path longer than the
        // address (a node pointing back up): treat as unknown (not cached).
        let (record, prefix_len) = found.ok()?;
        let answer = record
            .and_then(|r| r.resolve())
            .map(|(country, continent, coordinates)| Location {
                country,
                continent,
                coordinates,
                source: LocationSource::Database,
            });
        self.cache.put(ip, prefix_len, answer.as_ref());
        answer
    }

    /// Locates a client address like [`Locator::lookup`], and says how far the answer
    /// reaches: the prefix length of the network around `ip` that every address of gets
    /// the same answer (the database's network for the address, narrowed to the longest
    /// override inside it, if any). This is what a GeoDNS answer's EDNS Client Subnet
    /// scope must say (RFC 7871). Bypasses the per-network cache, which does not keep
    /// prefixes.
    #[must_use]
    pub fn locate(&self, ip: IpAddr) -> Located {
        let ip = ip.to_canonical();
        let (overrides, bits) = match ip {
            IpAddr::V4(_) => (&self.overrides_v4, 32u8),
            IpAddr::V6(_) => (&self.overrides_v6, 128u8),
        };
        let (location, base) =
            if let Some(rule) = overrides.iter().find(|o| o.network.contains(&ip)) {
                let table = country_info(rule.country);
                let loc = Location {
                    country: rule.country,
                    continent: table.map(|t| t.0),
                    coordinates: rule.coordinates.or(table.map(|t| t.1)),
                    source: LocationSource::Override,
                };
                (Some(loc), rule.network.prefix_len())
            } else if ip.is_ipv6() && !self.ipv6_db {
                (None, 0)
            } else {
                let found = match &self.db {
                    Db::Static(reader) => reader.lookup_prefix::<Record<'_>>(ip),
                    Db::Loaded(reader) => reader.lookup_prefix::<Record<'_>>(ip),
                };
                match found {
                    Ok((record, prefix)) => (
                        record.and_then(|r| r.resolve()).map(
                            |(country, continent, coordinates)| Location {
                                country,
                                continent,
                                coordinates,
                                source: LocationSource::Database,
                            },
                        ),
                        u8::try_from(prefix).unwrap_or(bits).min(bits),
                    ),
                    // Unknown, and said only for this address.
                    Err(_) => (None, bits),
                }
            };
        // An override inside the answer's network (not around `ip`) answers differently
        // for its addresses: the answer holds only for networks as narrow as it.
        let network = IpNet::new(ip, base).map(|n| n.trunc()).ok();
        let narrowest = overrides
            .iter()
            .filter(|o| o.network.prefix_len() > base)
            .filter(|o| network.is_some_and(|n| n.contains(&o.network.network())))
            .map(|o| o.network.prefix_len())
            .max()
            .unwrap_or(base);
        Located {
            location,
            prefix_len: narrowest,
        }
    }

    /// What database this locator reads.
    #[must_use]
    pub fn info(&self) -> &DatabaseInfo {
        &self.info
    }
}

impl std::fmt::Debug for Locator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locator")
            .field("info", &self.info)
            .field(
                "overrides",
                &(self.overrides_v4.len() + self.overrides_v6.len()),
            )
            .finish_non_exhaustive()
    }
}

/// An IPv4-mapped IPv6 network (`::ffff:0:0/96` or longer) as the IPv4 network it maps;
/// host bits cleared.
fn canonical(network: IpNet) -> IpNet {
    if let IpNet::V6(v6) = network {
        if let (Some(v4), Some(len)) = (
            v6.network().to_ipv4_mapped(),
            v6.prefix_len().checked_sub(96),
        ) {
            if let Ok(net) = Ipv4Net::new(v4, len) {
                return IpNet::V4(net.trunc());
            }
        }
    }
    network.trunc()
}

/// Reads a whole database file, refusing one larger than [`MAX_DATABASE_BYTES`].
fn read_database(path: &Path) -> Result<Vec<u8>, GeoIpError> {
    let open_error = |e| GeoIpError::Open {
        path: path.to_path_buf(),
        source: MaxMindDbError::Io(e),
    };
    let too_large = || GeoIpError::TooLarge {
        path: path.to_path_buf(),
        limit: MAX_DATABASE_BYTES,
    };
    let file = std::fs::File::open(path).map_err(open_error)?;
    let len = file.metadata().map_err(open_error)?.len();
    if len > MAX_DATABASE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // A device or a file growing while read stops at the limit too.
    file.take(MAX_DATABASE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(open_error)?;
    if bytes.len() as u64 > MAX_DATABASE_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// [`DatabaseInfo`] from a reader's metadata; DB-IP attribution when it names DB-IP.
fn info_of(metadata: &maxminddb::Metadata, path: Option<&Path>) -> DatabaseInfo {
    let mentions_dbip = |s: &str| {
        let s = s.to_ascii_lowercase();
        s.contains("db-ip") || s.contains("dbip")
    };
    let dbip = mentions_dbip(&metadata.database_type)
        || metadata.description.values().any(|d| mentions_dbip(d));
    DatabaseInfo {
        path: path.map(Path::to_path_buf),
        database_type: metadata.database_type.clone(),
        build_epoch: metadata.build_epoch,
        attribution: dbip.then_some(DBIP_ATTRIBUTION),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_database_verifies() {
        let layout = verify(BUILTIN_DB).expect("the built-in database is well-formed");
        let reader = Reader::from_source(BUILTIN_DB).expect("parses");
        assert_eq!(layout.node_count, reader.metadata.node_count);
        assert_eq!(layout.record_size, reader.metadata.record_size);
        assert_eq!(layout.ip_version, reader.metadata.ip_version);
    }
}
